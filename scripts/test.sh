#!/usr/bin/env bash
# Installs what the build needs, builds everything (CUDA too when nvcc is found) and runs every
# test. This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build=${THAW_BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DTHAW_TESTS=ON -DCMAKE_BUILD_TYPE="${THAW_BUILD_TYPE:-RelWithDebInfo}" ${THAW_CMAKE_ARGS:-}
cmake --build "$build"
ctest --test-dir "$build" --output-on-failure --timeout 900 -j"$(nproc)"
