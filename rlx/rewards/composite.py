"""`composite`: a weighted sum of named rewards, r = sum_i w_i * r_i (TRePO arXiv 2506.02553 Remark 5, Eq. 30).

Config, e.g. from YAML:
    components:
      - {name: gsm8k, weight: 1.0}
      - {name: format, weight: 1.0, bonus: 0.1}        # extra keys are that component's config
      - {name: hf_rm, weight: 0.5, config: {model_path: /ckpt/rm, normalize: true}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rlx.data.base import Problem
from rlx.rewards.base import REWARDS, RewardFn, Scores, register_reward, score

_RESERVED_KEYS = {"name", "weight", "config"}


class CompositeReward:
    """`last_parts[label]` holds each component's unweighted scores from the latest call (for logging)."""

    def __init__(self, components: Sequence[tuple[str, float, RewardFn]]) -> None:
        self.components = list(components)
        self.last_parts: dict[str, list[float]] = {}

    def __call__(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        return self.score(problems, completions).rewards

    def score(self, problems: Sequence[Problem], completions: Sequence[str]) -> Scores:
        """The weighted sum, with the verdicts of the first component that grades answers (None if none does)."""
        totals = [0.0] * len(completions)
        self.last_parts, verdicts = {}, None
        for label, weight, reward in self.components:
            part = score(reward, problems, completions)
            if len(part.rewards) != len(completions):
                message = f"reward {label!r} returned {len(part.rewards)} scores for {len(completions)} completions"
                raise ValueError(message)
            self.last_parts[label] = list(part.rewards)
            totals = [total + weight * value for total, value in zip(totals, part.rewards)]
            verdicts = part.verdicts if verdicts is None else verdicts
        return Scores(totals, verdicts)


def _build_component(spec: Mapping[str, Any]) -> tuple[str, float, RewardFn]:
    if "name" not in spec:
        raise ValueError(f"composite component needs a 'name': {dict(spec)}")
    name = str(spec["name"])
    if name == "composite":
        raise ValueError("a composite reward cannot contain another composite")
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r} in composite; registered: {sorted(REWARDS)}")
    config = dict(spec.get("config") or {})
    config.update({key: value for key, value in spec.items() if key not in _RESERVED_KEYS})
    return name, float(spec.get("weight", 1.0)), REWARDS[name](**config)


def _unique_labels(names: Sequence[str]) -> list[str]:
    """The component name, with `#k` appended when the same reward appears more than once."""
    return [
        name if names.count(name) == 1 else f"{name}#{names[:index].count(name)}"
        for index, name in enumerate(names)
    ]


def check_components(components: Sequence[Mapping[str, Any]] = ()) -> None:
    """Config-time check (nothing is built): every component names a registered reward and only its keys."""
    from rlx.rewards.registry import check_reward_options

    if not components:
        raise ValueError("reward_model.components: a composite reward needs at least one component")
    valid = sorted(name for name in REWARDS if name != "composite")
    for i, spec in enumerate(components):
        where = f"reward_model.components[{i}]"
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ValueError(f"{where}.name: required (a mapping like {{name: format, weight: 1.0}}); "
                             f"valid names: {valid}")
        if spec["name"] not in valid:
            raise ValueError(f"{where}.name: unknown reward {spec['name']!r}; valid: {valid}")
        options = {**(spec.get("config") or {}), **{k: v for k, v in spec.items() if k not in _RESERVED_KEYS}}
        check_reward_options(str(spec["name"]), options, where)


@register_reward("composite")
def composite_reward(components: Sequence[Mapping[str, Any]]) -> CompositeReward:
    """Config: components = list of {name, weight=1.0, config={...} and/or the component's own keys}."""
    if not components:
        raise ValueError("composite reward needs at least one component")
    built = [_build_component(spec) for spec in components]
    labels = _unique_labels([name for name, _, _ in built])
    return CompositeReward([(label, weight, fn) for label, (_, weight, fn) in zip(labels, built)])


composite_reward.check_options = check_components  # run by rlx.config before any reward or model is built
