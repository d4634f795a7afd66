#!/usr/bin/env bash
# The main job, end to end, on a fresh machine: install, build, make a model with deterministic
# random weights (stories15M's shape, the real Llama 2 tokenizer), convert it to a thaw
# checkpoint, show it, load it (cold from disk, then from the DRAM tier), printing how fast, and
# generate text with it through the CPU engine (random weights: the words are nonsense).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build=${THAW_BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTHAW_TESTS=OFF
cmake --build "$build" --target thaw
thaw="$build/apps/thaw"
work=${THAW_DEMO_DIR:-$build/demo}
preset=${THAW_DEMO_PRESET:-stories15m}
mkdir -p "$work"
rm -rf "$work/hf" "$work/ckpt"
"$thaw" make-model --preset "$preset" --tokenizer assets/tokenizers/llama2/tokenizer.json \
  --seed 42 --dtype fp32 "$work/hf"
"$thaw" convert "$work/hf" "$work/ckpt"
"$thaw" inspect "$work/ckpt" | head -12
"$thaw" bench load "$work/ckpt" --source "$work/hf" --copies 2
"$thaw" generate "$work/ckpt" --prompt "Once upon a time" --max-tokens 48 --seed 1 --stream
