"""Range errors state the bounds that exist and never print None as a bound: `algo.clip_eps must be > 0.0`,
not `must be in (0.0, None]` (rlx/algos/checks.py and every config dataclass's `validate`)."""

from __future__ import annotations

import dataclasses

import pytest

from rlx import algos
from rlx.algos.checks import check_range
from rlx.config import (
    SAMPLERS,
    EvalSettings,
    LoggerConfig,
    LoRAConfig,
    ModelConfig,
    OverlongPenaltyConfig,
    TrainerConfig,
    to_dataclass,
)
from rlx.data.configs import DATASETS


@pytest.mark.parametrize(("bounds", "value", "message"), [
    ({"lo": 0.0}, -1.0, "algo.k must be >= 0.0, got -1.0"),
    ({"lo": 0.0, "lo_open": True}, 0.0, "algo.k must be > 0.0, got 0.0"),
    ({"hi": 1.0}, 2.0, "algo.k must be <= 1.0, got 2.0"),
    ({"hi": 1.0, "hi_open": True}, 1.0, "algo.k must be < 1.0, got 1.0"),
    ({"lo": 0.0, "hi": 1.0, "lo_open": True}, 0.0, "algo.k must be in (0.0, 1.0], got 0.0"),
    ({"lo": 0.0, "hi": 1.0, "hi_open": True}, 1.0, "algo.k must be in [0.0, 1.0), got 1.0"),
])
def test_check_range_states_only_the_bounds_it_has(bounds, value, message):
    with pytest.raises(ValueError) as err:
        check_range("k", value, **bounds)
    assert str(err.value) == message


def test_one_sided_algorithm_ranges_read_as_inequalities():
    with pytest.raises(ValueError, match=r"^algo\.clip_eps must be > 0\.0, got -0\.5$"):
        dataclasses.replace(algos.get("ppo").config_cls(), clip_eps=-0.5).validate()
    with pytest.raises(ValueError, match=r"^algo\.kl\.beta must be >= 0\.0, got -1\.0$"):
        algos.KLConfig(beta=-1.0).validate()


def numeric_paths(obj, prefix: str = "") -> list[str]:
    """Dotted paths of the int/float fields of a config dataclass, nested dataclasses included."""
    paths = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            paths += numeric_paths(value, f"{prefix}{f.name}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            paths.append(prefix + f.name)
    return paths


def replaced(obj, path: str, value):
    head, _, rest = path.partition(".")
    return dataclasses.replace(obj, **{head: replaced(getattr(obj, head), rest, value) if rest else value})


CONFIGS = {**{f"algo={name}": algo.config_cls for name, algo in algos.REGISTRY.items()},
           **{f"sampler={name}": cls for name, cls in SAMPLERS.items()},
           "data=arith": DATASETS["arith"],  # the other data sets have no numeric key
           "train": TrainerConfig, "model": ModelConfig, "model.lora": LoRAConfig, "logger": LoggerConfig,
           "eval": EvalSettings, "reward_model.overlong_penalty": OverlongPenaltyConfig}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_no_range_message_prints_none_as_a_bound(name):
    """Every numeric key of every config, set far below and far above any range: each message that results
    names the key and has no None in it."""
    default = CONFIGS[name]()
    messages = []
    for path in numeric_paths(default):
        for value in (-10**9, 10**9):
            try:
                replaced(default, path, value).validate()
            except ValueError as err:
                messages.append(str(err))
                assert path.rpartition(".")[2] in str(err), f"{path}={value}: {err}"
    assert messages, f"{name}: no numeric key is range-checked"
    assert not [m for m in messages if "None" in m], [m for m in messages if "None" in m]


def test_a_union_type_error_names_the_types_plainly():
    with pytest.raises(ValueError, match=r"^algo\.num_branch_points: expected int or str, got 1\.5$"):
        to_dataclass(algos.get("trepo").config_cls, {"name": "trepo", "num_branch_points": 1.5}, "algo")
