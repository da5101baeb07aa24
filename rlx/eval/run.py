"""`rlx eval`: greedy accuracy of a model on a test split, printed and written to JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rlx.config import EvalConfig
from rlx.data.tasks import build_task
from rlx.models.load import load_causal_lm, load_tokenizer, resolve_model_path
from rlx.sampling.base import GenRequest
from rlx.sampling.factory import build_sampler
from rlx.train.loop import seed_everything


def evaluate(cfg: EvalConfig) -> dict:
    started = time.time()
    seed_everything(cfg.seed)
    task = build_task(cfg.data, train_size=0, seed=cfg.seed)
    problems = task.test if cfg.eval.size is None else task.test[: cfg.eval.size]
    model_path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(model_path)
    model = load_causal_lm(model_path, cfg.model.dtype)
    sampler = build_sampler(cfg.sampler, model, tokenizer, model_path, cfg.model.dtype)
    prompts = [task.prompt(p) for p in problems]
    requests = [GenRequest(tuple(tokenizer.encode(text)), 0.0, cfg.eval.max_new_tokens, 0) for text in prompts]
    generations = sampler.generate(requests)
    sampler.close()
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for problem, prompt, gen in zip(problems, prompts, generations):
        completion = tokenizer.decode(gen.token_ids, skip_special_tokens=True)
        records.append({"id": problem.id, "prompt": prompt, "completion": completion, "answer": problem.answer,
                        "correct": task.is_correct(problem, completion)})
    with (out_dir / "samples.jsonl").open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    accuracy = sum(r["correct"] for r in records) / max(1, len(records))
    result = {"model": model_path, "data": task.name, "n": len(records), "accuracy": accuracy,
              "wall_seconds": time.time() - started}
    (out_dir / "eval.json").write_text(json.dumps(result, indent=2))
    print(f"[rlx] {task.name}: greedy accuracy {accuracy:.3f} on {len(records)} problems ({model_path})")
    print(f"[rlx] results in {out_dir / 'eval.json'}")
    return result
