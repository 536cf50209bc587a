"""The command line: options reach the configuration they name."""

from __future__ import annotations

import pytest
from metarouter.cli import app
from typer.testing import CliRunner


class _CapturedConfigError(Exception):
    """Raised by the stand-in for the evaluation, carrying the configuration it was given."""


@pytest.fixture
def captured_eval_config(monkeypatch):
    import metarouter.evaluation.runner as runner

    def capture(cfg, out, data=None, **_):
        raise _CapturedConfigError(cfg)

    monkeypatch.setattr(runner, "run_evaluation", capture)

    def run(*args: str):
        result = CliRunner().invoke(app, ["eval", "--out", "unused", *args])
        assert isinstance(result.exception, _CapturedConfigError), result.output
        return result.exception.args[0]

    return run


def test_eval_runs_the_active_track_and_the_training_variant_by_default(captured_eval_config):
    cfg = captured_eval_config()
    assert cfg.active and cfg.train_variant


def test_eval_can_skip_the_active_track_and_the_training_variant(captured_eval_config):
    cfg = captured_eval_config("--no-active", "--no-train-variant")
    assert not cfg.active and not cfg.train_variant
    quick = captured_eval_config("--quick", "--no-active")
    assert not quick.active and quick.datasets == ("llmrouter",)
