"""Loggers: metrics.jsonl always, W&B mirrored per optimizer step, sample tables per step, failures tolerated,
and the API key never written anywhere."""

from __future__ import annotations

import json
import sys
import time
import types
import warnings
from dataclasses import replace
from pathlib import Path

import pytest

from rlx.config import ConfigError, LoggerConfig, to_dataclass
from rlx.logger import JsonlLogger, WandbLogger, build_logger, redact, sweep_id_from_dir

FAKE_KEY = "0123456789abcdef0123456789abcdef0fakekey"  # 40 characters, like a real key
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sample_rows(n: int = 2) -> list[dict]:
    return [{"prompt": f"1+{i}=", "completion": f"{i + 1}\n", "reward": float(i), "advantages": [0.5, -0.25, 1.0],
             "tokens": ["1", "+", "\n"], "knots": [1, 3]} for i in range(n)]


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def wandb_cfg(**overrides) -> LoggerConfig:
    return replace(LoggerConfig(name="wandb", mode="offline", project="rlx-test"), **overrides)


# ------------------------------------------------------------------------------------------- JSONL
def test_old_build_logger_call_still_gives_the_jsonl_logger(tmp_path):
    logger = build_logger(LoggerConfig(), tmp_path)
    assert isinstance(logger, JsonlLogger)
    logger.log(0, {"test_accuracy": 0.25})
    logger.log(3, {"reward_mean": 0.5, "final": True})
    logger.close()
    assert read_rows(tmp_path / "metrics.jsonl") == [{"step": 0, "test_accuracy": 0.25},
                                                     {"final": True, "reward_mean": 0.5, "step": 3}]


def test_jsonl_samples_are_one_file_set_per_step(tmp_path):
    logger = build_logger(LoggerConfig(log_samples_every=5, num_samples=2), tmp_path)
    assert [s for s in range(0, 21) if logger.wants_samples(s)] == [5, 10, 15, 20]
    images = logger.log_samples(5, sample_rows(3))  # 3 rows given, num_samples=2 kept
    logger.log_samples(10, sample_rows(1))
    logger.close()
    assert [p.name for p in images] == ["step_000005_0.png", "step_000005_1.png"]
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in images)
    rows = read_rows(tmp_path / "samples" / "step_000005.jsonl")
    assert [r["prompt"] for r in rows] == ["1+0=", "1+1="]
    assert rows[1]["advantages"] == [0.5, -0.25, 1.0] and rows[1]["knots"] == [1, 3] and rows[1]["step"] == 5
    assert len(read_rows(tmp_path / "samples" / "step_000010.jsonl")) == 1  # step 5's dump is still there


def test_sample_rows_missing_a_field_are_rejected(tmp_path):
    logger = build_logger(LoggerConfig(), tmp_path)
    with pytest.raises(ValueError, match="advantages"):
        logger.log_samples(1, [{"prompt": "p", "completion": "c", "reward": 1.0, "tokens": [], "knots": []}])


def test_log_summary_merges_into_summary_json(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"accuracy_before": 0.1, "algo": "trepo"}))
    logger = build_logger(LoggerConfig(), tmp_path)
    logger.log_summary({"accuracy_after": 0.4})
    logger.close()
    assert json.loads((tmp_path / "summary.json").read_text()) == {"accuracy_before": 0.1, "algo": "trepo",
                                                                   "accuracy_after": 0.4}


def test_logger_config_is_strict():
    cfg = to_dataclass(LoggerConfig, {"name": "wandb", "tags": ["a", "b"], "group": "g"}, "logger")
    assert cfg.tags == ["a", "b"] and cfg.group == "g" and cfg.mode == "online"
    with pytest.raises(ConfigError, match=r"logger\.mode"):
        to_dataclass(LoggerConfig, {"name": "wandb", "mode": "sometimes"}, "logger")
    with pytest.raises(ConfigError, match=r"logger\.log_samples_every"):
        to_dataclass(LoggerConfig, {"log_samples_every": -1}, "logger")


# ------------------------------------------------------------------------------------------- W&B (recorded)
class FakeRun:
    def __init__(self, fail_on_log: bool = False):
        self.logged: list[tuple[dict, int]] = []
        self.summary: dict = {}
        self.metrics: list[tuple] = []
        self.finished = False
        self.fail_on_log = fail_on_log

    def define_metric(self, name, step_metric=None):
        self.metrics.append((name, step_metric))

    def log(self, data, step=None):
        if self.fail_on_log:
            raise ConnectionError("network is unreachable")
        self.logged.append((data, step))

    def finish(self, exit_code=0, quiet=False):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    """A stand-in `wandb` module that records init kwargs and the run's calls."""
    module = types.SimpleNamespace(init_kwargs=None, run=FakeRun(), init_error=None)

    def init(**kwargs):
        if module.init_error is not None:
            raise module.init_error
        module.init_kwargs = kwargs
        return module.run

    module.init = init
    module.Settings = lambda **kw: kw
    module.Table = lambda columns: types.SimpleNamespace(columns=columns, data=[],
                                                         add_data=lambda *row: None)
    module.Image = lambda path: ("image", path)
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_wandb_logs_every_metric_at_the_optimizer_step(tmp_path, fake_wandb):
    logger = build_logger(wandb_cfg(tags=["t1"], run_name="r"), tmp_path,
                          resolved_config="algo:\n  name: trepo\n  gamma: 0.95\n")
    logger.log(0, {"test_accuracy": 0.1})
    logger.log(7, {"reward_mean": 0.5})
    logger.log_samples(7, sample_rows(2))
    logger.log_summary({"accuracy_after": 0.3})
    logger.close()
    init = fake_wandb.init_kwargs
    assert init["config"] == {"algo": {"name": "trepo", "gamma": 0.95}}  # YAML text is parsed for W&B
    assert (init["mode"], init["project"], init["tags"], init["name"]) == ("offline", "rlx-test", ["t1"], "r")
    assert init["dir"] == str(tmp_path)
    run = fake_wandb.run
    assert ("*", "optimizer_step") in run.metrics
    assert [step for _, step in run.logged] == [0, 7, 7]
    assert run.logged[1][0] == {"reward_mean": 0.5, "optimizer_step": 7}
    assert "samples/step_000007" in run.logged[2][0]  # a key per step: tables are never overwritten
    assert run.summary == {"accuracy_after": 0.3} and run.finished
    assert [r["step"] for r in read_rows(tmp_path / "metrics.jsonl")] == [0, 7]  # the JSONL mirror


def test_wandb_init_failure_warns_once_and_keeps_jsonl(tmp_path, fake_wandb):
    fake_wandb.init_error = RuntimeError(f"bad key {FAKE_KEY}")
    with pytest.warns(RuntimeWarning, match="W&B logging failed"):
        logger = build_logger(wandb_cfg(), tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any further warning would fail the test
        for step in range(1, 4):
            logger.log(step, {"reward_mean": step / 10})
        logger.log_samples(2, sample_rows(1))
        logger.close()
    assert not logger.active
    assert [r["step"] for r in read_rows(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    assert (tmp_path / "samples" / "step_000002_0.png").exists()


def test_wandb_failure_mid_run_warns_once_and_redacts_the_key(tmp_path, fake_wandb, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    fake_wandb.run = FakeRun(fail_on_log=True)
    fake_wandb.run.log = lambda data, step=None: (_ for _ in ()).throw(ConnectionError(f"401 for {FAKE_KEY}"))
    logger = build_logger(wandb_cfg(), tmp_path)
    with pytest.warns(RuntimeWarning) as caught:
        for step in range(1, 5):
            logger.log(step, {"reward_mean": 1.0})
    logger.close()
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "ConnectionError" in messages[0]
    assert FAKE_KEY not in messages[0] and "<redacted>" in messages[0]
    assert fake_wandb.run.finished  # the broken run is closed, not left dangling
    assert len(read_rows(tmp_path / "metrics.jsonl")) == 4


def test_disabled_mode_never_touches_wandb(tmp_path, fake_wandb):
    fake_wandb.init_error = AssertionError("wandb.init must not be called")
    logger = build_logger(wandb_cfg(mode="disabled"), tmp_path)
    logger.log(1, {"x": 1.0})
    logger.close()
    assert fake_wandb.init_kwargs is None and read_rows(tmp_path / "metrics.jsonl") == [{"step": 1, "x": 1.0}]


def test_group_precedence(tmp_path, fake_wandb):
    assert build_logger(wandb_cfg(), tmp_path / "a", sweep_id="s1").group == "s1"
    assert build_logger(wandb_cfg(group="mine"), tmp_path / "b", sweep_id="s1").group == "mine"
    assert build_logger(wandb_cfg(), tmp_path / "c").group is None  # a single run outside Hydra: no group


def test_sweep_id_from_dir(monkeypatch, tmp_path):
    assert sweep_id_from_dir("multirun/2025-01-02/10-00-00") == "2025-01-02-10-00-00"
    assert sweep_id_from_dir("multirun/gamma_lambda/2025-01-02/10-00-00") == "gamma_lambda-2025-01-02-10-00-00"
    monkeypatch.chdir(tmp_path)
    assert sweep_id_from_dir(tmp_path / "multirun" / "d" / "t") == "d-t"
    assert sweep_id_from_dir("/elsewhere/scratch/sweeps/s1") == "scratch-sweeps-s1"


def test_redact_walks_nested_values():
    value = {"a": [FAKE_KEY, {"b": f"x{FAKE_KEY}y"}], FAKE_KEY: 1, "n": 3}
    assert redact(value, FAKE_KEY) == {"a": ["<redacted>", {"b": "x<redacted>y"}], "<redacted>": 1, "n": 3}
    assert redact(value, None) is value


# ------------------------------------------------------------------------------------------- W&B (real, offline)
def settled_offline_run(run_dir: Path, needle: bytes, timeout_s: float = 60.0) -> bytes:
    """The one offline run file's bytes once they hold `needle` and stop growing. The W&B service writes the
    file from its own process, so on a loaded machine it may still be filling when `finish()` returns: poll
    (bounded) instead of reading once."""
    deadline, last = time.monotonic() + timeout_s, None
    while True:
        runs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
        data = runs[0].read_bytes() if len(runs) == 1 else None
        if data is not None and needle in data and data == last:
            return data
        if time.monotonic() > deadline:
            pytest.fail(f"{len(runs)} offline run files; {len(data or b'')} bytes, needle present: "
                        f"{data is not None and needle in data}, after {timeout_s} s")
        last = data
        time.sleep(0.5)


def test_real_offline_run_keeps_the_api_key_out_of_the_run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)  # anything W&B writes to the working directory lands in tmp_path as well
    run_dir = tmp_path / "run"
    config = {"algo": {"name": "trepo"}, "note": f"user pasted {FAKE_KEY}"}
    logger = build_logger(wandb_cfg(log_samples_every=1), run_dir, resolved_config=config, sweep_id="sweep-x")
    assert isinstance(logger, WandbLogger) and logger.active
    logger.log(0, {"test_accuracy": 0.1})
    logger.log(1, {"reward_mean": 0.5, "tokens_policy": 10})
    logger.log_samples(1, sample_rows(2))
    logger.log(1, {"test_accuracy": 0.2, "final": True})
    logger.log_summary({"accuracy_after": 0.2})
    logger.close()
    settled_offline_run(run_dir, b"sweep-x")  # the group reached W&B
    assert len(read_rows(run_dir / "metrics.jsonl")) == 3
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 5
    leaked = [p for p in files if FAKE_KEY.encode() in p.read_bytes()]
    assert leaked == []


def test_metrics_jsonl_is_strict_json(tmp_path):
    logger = JsonlLogger(tmp_path / "metrics.jsonl")
    logger.log(3, {"loss": float("nan"), "grad_norm": float("inf"), "ok": 1.5, "nested": [float("-inf")]})
    logger.log_summary({"accuracy_after": float("nan")})
    logger.close()
    line = (tmp_path / "metrics.jsonl").read_text().strip()
    assert json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c}")) == {
        "step": 3, "loss": None, "grad_norm": None, "ok": 1.5, "nested": [None]}
    assert json.loads((tmp_path / "summary.json").read_text())["accuracy_after"] is None
