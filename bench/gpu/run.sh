#!/usr/bin/env bash
# Runs every GPU check and benchmark of the CUDA backend and writes one JSON document.
# Builds nothing: give it a build directory made with the CUDA backend on (nvcc found).
#
#   bench/gpu/run.sh BUILD_DIR [OUT_JSON] [WORK_DIR]
#
# What it runs (ratios are to references measured in the same run):
#   tests   the GPU tests (ctest -R '[Cc]uda|Gpu': cuda_*, CudaDevice.*, CudaLoader.*, NodeParts' GPU
#           slot): counts of passed, failed and skipped
#   load    thaw bench load --device cuda on llama-3-8b (bf16): the DRAM tier into the GPU
#           against one pinned cudaMemcpy of the same size, and the cold load from SSD
#   engine  thaw bench engine --device cuda on llama-3.2-1b (bf16): batch-1 decode as a fraction
#           of the GPU's memory bandwidth, batch 32 and 128 throughput, prefill TFLOP/s against a
#           plain cuBLAS GEMM
#   hf      when python3 has torch, transformers and safetensors: safetensors.torch.load_file
#           (device="cuda") and from_pretrained on the same 8B model, and transformers' generate
#           at batch 32 and 128 on the 1B model; else the reason they were not run
# The models are made by `thaw make-model` (deterministic random weights, real shapes) in
# WORK_DIR (default: a directory beside OUT_JSON): about 35 GB for both, and 16 GB more while
# bench load holds its copy of the 8B checkpoint (it removes it when done).
set -euo pipefail

build=${1:?usage: bench/gpu/run.sh BUILD_DIR [OUT_JSON] [WORK_DIR]}
out=${2:-gpu-bench.json}
work=${3:-$(dirname "$out")/gpu-bench-models}
thaw="$build/apps/thaw"
[[ -x $thaw ]] || { echo "no thaw binary at $thaw" >&2; exit 2; }
mkdir -p "$work"
log() { echo "[gpu-bench] $*" >&2; }

# --- tests -----------------------------------------------------------------------------------
log "GPU tests"
tests_log="$work/ctest.log"
set +e
ctest --test-dir "$build" -R '[Cc]uda|Gpu' --output-on-failure >"$tests_log" 2>&1
tests_rc=$?
set -e
passed=$(grep -cE 'Test +#[0-9]+: .* Passed' "$tests_log" || true)
failed=$(grep -cE '\*\*\*Failed|\*\*\*Exception|\*\*\*Timeout' "$tests_log" || true)
# Only the per-test result lines: ctest lists every skipped test a second time in its summary.
skipped=$(grep -cE 'Test +#[0-9]+: .*\*\*\*Skipped' "$tests_log" || true)
log "tests: $passed passed, $failed failed, $skipped skipped (exit $tests_rc; $tests_log)"

# --- models ----------------------------------------------------------------------------------
make_model() { # preset -> checkpoint dir
  local preset=$1 hf="$work/$1-hf" ck="$work/$1-ck"
  if [[ ! -d $ck ]]; then
    [[ -d $hf ]] || "$thaw" make-model "$hf" --preset "$preset" --tokenizer llama2 --seed 1 \
      --dtype bf16 >&2
    "$thaw" convert "$hf" "$ck" >&2
  fi
}
log "models"
make_model llama-3.2-1b
make_model llama-3-8b

# --- thaw ------------------------------------------------------------------------------------
log "bench load (8B, GPU)"
load_json=$("$thaw" bench load "$work/llama-3-8b-ck" --device cuda --copies 1 --rounds 3 \
  --source "$work/llama-3-8b-hf" --json)
log "bench engine (1B, GPU)"
engine_json=$("$thaw" bench engine "$work/llama-3.2-1b-ck" --device cuda --batch 1,32,128 \
  --prompt-len 128 --gen 64 --repeats 3 --json)

# --- Hugging Face, where it can run ------------------------------------------------------------
hf_json='{"run": false, "reason": "python3 with torch, transformers and safetensors not found"}'
if python3 -c 'import torch, transformers, safetensors' 2>/dev/null; then
  log "Hugging Face references"
  hf_json=$(python3 - "$work/llama-3-8b-hf" "$work/llama-3.2-1b-hf" <<'PY'
import glob, json, sys, time
import torch, transformers
from safetensors.torch import load_file
big, small = sys.argv[1], sys.argv[2]
out = {"run": True, "torch": torch.__version__, "transformers": transformers.__version__}
def timed(f):
    torch.cuda.synchronize(); t = time.perf_counter(); r = f(); torch.cuda.synchronize()
    return time.perf_counter() - t, r
files = sorted(glob.glob(big + "/*.safetensors"))
t, tensors = timed(lambda: [load_file(f, device="cuda") for f in files])
out["safetensors_load_file_seconds"] = t
del tensors; torch.cuda.empty_cache()
t, model = timed(lambda: transformers.AutoModelForCausalLM.from_pretrained(
    big, torch_dtype=torch.bfloat16, device_map="cuda"))
out["from_pretrained_seconds"] = t
del model; torch.cuda.empty_cache()
model = transformers.AutoModelForCausalLM.from_pretrained(small, torch_dtype=torch.bfloat16,
                                                          device_map="cuda")
gen = {}
for batch in (32, 128):
    ids = torch.randint(3, model.config.vocab_size, (batch, 128), device="cuda")
    model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)  # warm up
    t, _ = timed(lambda: model.generate(ids, max_new_tokens=64, min_new_tokens=64,
                                        do_sample=False))
    gen[str(batch)] = batch * 64 / t
out["generate_tokens_per_s"] = gen
print(json.dumps(out))
PY
)
fi

cat >"$out" <<JSON
{
  "device": "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)",
  "tests": {"exit": $tests_rc, "passed": $passed, "failed": $failed, "skipped": $skipped},
  "load": $load_json,
  "engine": $engine_json,
  "hf": $hf_json
}
JSON
log "wrote $out"
