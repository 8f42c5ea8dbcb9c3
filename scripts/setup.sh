#!/usr/bin/env bash
# Installs every build and test dependency of segslim from Debian 12 packages.
# Idempotent: re-running only installs what is missing. Needs root (or sudo).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev            # LibTorch 1.13: training ops and autograd
  libdnnl-dev             # oneDNN 2.6: inference engine
  ocl-icd-opencl-dev opencl-headers  # Debian's dnnl CMake config requires OpenCL (its GPU runtime)
  libonnx-dev libprotobuf-dev protobuf-compiler  # ONNX model I/O, checker, shape inference
  libopencv-dev           # image I/O and resizing
  libyaml-cpp-dev libcli11-dev libfmt-dev libspdlog-dev nlohmann-json3-dev
  libgloo-dev             # headers for c10d/Gloo distributed training
  libgtest-dev libgmock-dev
  python3-torch python3-onnx python3-numpy  # tooling only: golden fixtures, reference export
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
