#!/usr/bin/env bash
# Configures (once) and builds segslim. Builds are serialized through a lock file because the
# machines have 2 cores: two concurrent builds only thrash.
#   scripts/build.sh [target...]       (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
exec 9>/tmp/segslim-build.lock
flock 9
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
if [ $# -eq 0 ]; then
  cmake --build "$BUILD_DIR" -j "$JOBS"
else
  for t in "$@"; do cmake --build "$BUILD_DIR" -j "$JOBS" --target "$t"; done
fi
