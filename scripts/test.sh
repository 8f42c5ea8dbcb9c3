#!/usr/bin/env bash
# Installs what is missing, builds everything and runs the whole test suite (CTest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest -j "$(nproc)" --output-on-failure
