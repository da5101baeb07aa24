"""`hf_rm`: a learned reward model, any `AutoModelForSequenceClassification` checkpoint.

The reward model scores `question + separator + completion` (or the tokenizer's chat template with a user and
an assistant turn, when it has one). Optionally the scores are standardised with a running mean/std over
every score seen so far, which keeps the reward scale steady while the policy drifts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rlx.data.base import Problem
from rlx.rewards.base import register_reward


class RunningMeanStd:
    """Welford's running mean and (population) variance; numerically stable for long runs."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self._sum_sq_dev = 0.0

    def update(self, values: Sequence[float]) -> None:
        for value in values:
            self.count += 1
            delta = value - self.mean
            self.mean += delta / self.count
            self._sum_sq_dev += delta * (value - self.mean)

    @property
    def std(self) -> float:
        return math.sqrt(self._sum_sq_dev / self.count) if self.count else 0.0


class HFRewardModel:
    def __init__(
        self,
        model_path: str,
        batch_size: int = 8,
        max_length: int = 1024,
        normalize: bool = False,
        device: str = "cpu",
        label_index: int | None = None,
        use_chat_template: bool | None = None,
        separator: str = "\n\n",
        eps: float = 1e-6,
    ) -> None:
        import torch  # lazy: importing this module (to register the reward) must stay cheap
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_path).to(device).eval()
        self.device = device
        self.batch_size = max(1, batch_size)
        self.max_length = max_length
        self.separator = separator
        self.label_index = self._pick_label(label_index)
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        self.use_chat_template = has_template if use_chat_template is None else use_chat_template
        self._prepare_padding()
        self.normalizer = RunningMeanStd() if normalize else None
        self.eps = eps
        self.last_raw_scores: list[float] = []

    def _pick_label(self, label_index: int | None) -> int:
        num_labels = self.model.config.num_labels
        if label_index is None:
            if num_labels != 1:
                raise ValueError(f"the model has {num_labels} labels: set label_index to the one to use")
            return 0
        if not -num_labels <= label_index < num_labels:
            raise ValueError(f"label_index {label_index} out of range for {num_labels} labels")
        return label_index

    def _prepare_padding(self) -> None:
        # Sequence classifiers read the score at the last non-pad token, so batching needs a pad id that
        # the model knows. Right padding + left truncation keeps the end of long completions.
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "left"
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def _text(self, question: str, completion: str) -> str:
        if self.use_chat_template:
            chat = [{"role": "user", "content": question}, {"role": "assistant", "content": completion}]
            return self.tokenizer.apply_chat_template(chat, tokenize=False)
        return question + self.separator + completion

    def raw_scores(self, texts: Sequence[str]) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            with self._torch.inference_mode():
                logits = self.model(**batch).logits
            scores.extend(logits[:, self.label_index].float().tolist())
        return scores

    def __call__(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        texts = [self._text(p.question, c) for p, c in zip(problems, completions)]
        scores = self.raw_scores(texts)
        self.last_raw_scores = scores
        if self.normalizer is None:
            return scores
        self.normalizer.update(scores)
        mean, std = self.normalizer.mean, self.normalizer.std
        return [(score - mean) / (std + self.eps) for score in scores]


@register_reward("hf_rm")
def hf_rm_reward(
    model_path: str,
    batch_size: int = 8,
    max_length: int = 1024,
    normalize: bool = False,
    device: str = "cpu",
    label_index: int | None = None,
    use_chat_template: bool | None = None,
    separator: str = "\n\n",
    eps: float = 1e-6,
) -> HFRewardModel:
    """Config: model_path (required), batch_size, max_length (tokens; long inputs lose their start),
    normalize (running mean/std standardisation), device, label_index (required when the head has more
    than one label), use_chat_template (None = when the tokenizer has one), separator (between question and
    completion without a chat template), eps."""
    return HFRewardModel(
        model_path,
        batch_size=batch_size,
        max_length=max_length,
        normalize=normalize,
        device=device,
        label_index=label_index,
        use_chat_template=use_chat_template,
        separator=separator,
        eps=eps,
    )
