"""`rlx eval`: sample a model on a test split, grade, and report pass@k / maj@n / accuracy.

Writes into `output_dir`:
  eval.json      the metrics (accuracy = pass@1 = mean over samples, pass@k, maj@n, breakdowns) and the
                 protocol that produced them (template name and sha256, answer style, n, temperature, ...)
  samples.jsonl  one row per sample: prompt, completion, extracted answer, verdict
`eval.n=1 eval.temperature=0` (the default) is greedy accuracy.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rlx.data.base import Problem
from rlx.data.tasks import Task, load_task
from rlx.eval.metrics import breakdown, maj_at_n, mean_accuracy, pass_at_k_table
from rlx.sampling.base import Generation, GenRequest, request_seed

if TYPE_CHECKING:
    from rlx.config import EvalConfig

log = logging.getLogger(__name__)


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    started = time.time()
    from rlx.models.load import load_causal_lm, load_tokenizer
    from rlx.recipes import resolve_model_path
    from rlx.sampling.factory import build_sampler
    from rlx.train.metrics import seed_everything

    seed_everything(cfg.seed)
    task = load_task(cfg.data, train_size=0, seed=cfg.seed)  # data errors surface before any model is loaded
    problems = task.test if cfg.eval.size is None else task.test[: cfg.eval.size]
    model_path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(model_path)
    task = task.with_tokenizer(tokenizer)  # chat templates need the model's tokenizer
    model = load_causal_lm(model_path, cfg.model.dtype).to("cuda" if torch.cuda.is_available() else "cpu")
    model.eval()
    sampler = build_sampler(cfg.sampler, model, tokenizer, model_path, cfg.model.dtype, seed=cfg.seed)
    try:
        prompts = [task.prompt(p) for p in problems]
        chat = task.prompt_info is not None and task.prompt_info.chat_applied
        requests = build_requests(tokenizer, prompts, cfg, task.name, chat)
        generations = sampler.generate(requests)
    finally:
        sampler.close()
    completions = [tokenizer.decode(g.token_ids, skip_special_tokens=True) for g in generations]
    samples = grade_samples(task, problems, prompts, requests, generations, completions, cfg.eval.n)
    result = summarize(task, problems, samples, cfg)
    result.update(model=model_path, wall_seconds=round(time.time() - started, 3))
    write_results(Path(cfg.output_dir), result, samples)
    print(format_table(result))
    print(f"[rlx] results in {Path(cfg.output_dir) / 'eval.json'}")
    return result


def build_requests(tokenizer, prompts: list[str], cfg: EvalConfig, phase: str, chat: bool) -> list[GenRequest]:
    """n requests per prompt, problem-major; each with its own seed so that samples differ and reproduce."""
    # A chat-rendered prompt already holds its special tokens: encoding must not add another BOS.
    requests = []
    for i, text in enumerate(prompts):
        ids = tuple(tokenizer.encode(text, add_special_tokens=not chat))
        for j in range(cfg.eval.n):
            seed = request_seed(cfg.seed, 0, f"eval/{phase}", i * cfg.eval.n + j)
            requests.append(GenRequest(ids, cfg.eval.temperature, cfg.eval.max_new_tokens, seed))
    return requests


def grade_samples(task: Task, problems: list[Problem], prompts: list[str], requests: list[GenRequest],
                  generations: list[Generation], completions: list[str], n: int) -> list[dict[str, Any]]:
    """One row per sample, graded in a single batch through the task's judge (one pass through the pool)."""
    repeated = [p for p in problems for _ in range(n)]
    verdicts = task.verdicts(repeated, completions)
    tag = task.prompt_info.sha256 if task.prompt_info else None
    return [
        {"data": task.name, "id": problem.id, "sample": index % n, "prompt": prompts[index // n],
         "completion": completion, "extracted": verdict.extracted, "answer": problem.answer,
         "correct": verdict.correct, "status": verdict.status, "finished": gen.finished,
         "num_tokens": len(gen.token_ids), "seed": request.seed, "template_sha256": tag}
        for index, (problem, request, gen, completion, verdict)
        in enumerate(zip(repeated, requests, generations, completions, verdicts, strict=True))
    ]


def problem_records(problems: list[Problem], samples: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Per problem: its samples' verdicts and extracted answers, and its meta (for breakdowns)."""
    return [
        {"id": p.id, "correct": [s["correct"] for s in samples[i * n:(i + 1) * n]],
         "extracted": [s["extracted"] for s in samples[i * n:(i + 1) * n]], "meta": p.meta}
        for i, p in enumerate(problems)
    ]


def summarize(task: Task, problems: list[Problem], samples: list[dict[str, Any]], cfg: EvalConfig) -> dict[str, Any]:
    records = problem_records(problems, samples, cfg.eval.n)
    accuracy = mean_accuracy(records)
    result: dict[str, Any] = {
        "data": task.name,
        "num_problems": len(problems),
        "n": cfg.eval.n,
        "temperature": cfg.eval.temperature,
        "max_new_tokens": cfg.eval.max_new_tokens,
        "seed": cfg.seed,
        "accuracy": accuracy,  # = pass@1, the mean over all samples (greedy accuracy when n=1, T=0)
        "pass@k": {str(k): v for k, v in pass_at_k_table(records).items()},
        "maj@n": maj_at_n(records),  # majority vote over the n samples (= accuracy when n=1)
        "no_answer_rate": _rate(samples, lambda s: s["extracted"] is None),
        "truncated_rate": _rate(samples, lambda s: not s["finished"]),
        "grader_failures": sum(s["status"] in ("timeout", "crash") for s in samples),
        "screened": sum(s["status"] == "screened" for s in samples),  # pathological answers, scored 0 unchecked
        **(task.prompt_info.as_dict() if task.prompt_info else {}),
        "answer_style": task.answer_style,
        "skipped_rows": dict(task.skipped_rows),
    }
    if task.breakdown_keys:
        result["breakdown"] = breakdown(records, task.breakdown_keys)
    return result


def _rate(samples: list[dict[str, Any]], flag) -> float:
    return sum(map(flag, samples)) / max(1, len(samples))


def write_results(out_dir: Path, result: dict[str, Any], samples: list[dict[str, Any]]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "samples.jsonl").open("w") as f:
        f.writelines(json.dumps(s) + "\n" for s in samples)
    (out_dir / "eval.json").write_text(json.dumps(result, indent=2))


def headline(result: dict[str, Any]) -> dict[str, float]:
    """The metrics worth a column: accuracy, pass@k (k > 1), maj@n."""
    row = {"accuracy": result["accuracy"]}
    row.update({f"pass@{k}": v for k, v in result["pass@k"].items() if k != "1"})
    if result["n"] > 1:
        row[f"maj@{result['n']}"] = result["maj@n"]
    return row


def format_table(result: dict[str, Any]) -> str:
    mode = "greedy" if result["temperature"] == 0 else f"T={result['temperature']:g}"
    chat = "chat" if result.get("chat_template_applied") else "plain"
    lines = [f"[rlx] {result['data']}: {result['num_problems']} problems x {result['n']} samples ({mode}), "
             f"template {result.get('prompt_template')} ({chat}, sha256 {result.get('template_sha256')}), "
             f"answer style {result['answer_style']}"]
    rows = [(name, f"{value:.3f}") for name, value in headline(result).items()]
    rows.append(("no answer / truncated", f"{result['no_answer_rate']:.3f} / {result['truncated_rate']:.3f}"))
    for key, groups in result.get("breakdown", {}).items():
        rows += [(f"{key}={value}", f"{stats['accuracy']:.3f}  (n={stats['n']})") for value, stats in groups.items()]
    width = max(len(name) for name, _ in rows)
    lines += [f"  {name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def format_summary(results: list[dict[str, Any]]) -> str:
    """One row per data set, for a multi-data-set eval."""
    columns = list(dict.fromkeys(name for r in results for name in headline(r)))
    lines = ["[rlx] summary", "  " + f"{'data':<12}" + "".join(f"{c:>10}" for c in columns)]
    for r in results:
        row = headline(r)
        lines.append("  " + f"{r['data']:<12}" + "".join(f"{row[c]:>10.3f}" if c in row else f"{'-':>10}"
                                                         for c in columns))
    return "\n".join(lines)
