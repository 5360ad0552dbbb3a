"""A TRL user who moves a config to r1fast gets the same run: every option of r1fast's loss API and of r1fast's
GRPOConfig named as one of TRL 1.16's GRPOConfig fields has TRL's default (read from both dataclasses here)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import r1fast
from r1fast.loss import POLICY_LOSS_DEFAULTS
from r1fast.trainer.config import GRPOConfig

trl = pytest.importorskip("trl")
if trl.__version__ != "1.16.0":
    pytest.skip(f"the defaults are TRL 1.16.0's, found {trl.__version__}", allow_module_level=True)

# Names r1fast shares with TRL whose default differs, each with its reason. Run length and cadence of r1fast's own
# loop, not the math of a step: TRL's max_steps=-1 means "run num_train_epochs", which r1fast's step-counted loop
# does not have; TRL logs every 10 steps (averaging the window) and saves every 500, r1fast logs every step and
# saves by steps and by minutes (checkpointing work owns these three).
NOT_TRLS_DEFAULT = {
    "max_steps": "r1fast counts a run in steps only (no num_train_epochs): -1 has no meaning",
    "logging_steps": "r1fast logs each step's metrics (TRL averages a window of 10)",
    "save_steps": "r1fast also saves every save_every_minutes; 50 steps keeps short runs resumable",
}


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


TRL_DEFAULTS = {f.name: _default(f) for f in dataclasses.fields(trl.GRPOConfig)}


def test_loss_options_have_trls_defaults():
    shared = {name: value for name, value in POLICY_LOSS_DEFAULTS.items() if name in TRL_DEFAULTS}
    assert {"loss_type", "beta", "epsilon", "use_bias_correction_kl", "steps_per_generation"} <= shared.keys()
    assert {name: TRL_DEFAULTS[name] for name in shared} == shared
    # The public functions' own keywords (temperature, ...) too.
    for fn in (r1fast.grpo_loss, r1fast.fused_linear_grpo_loss, r1fast.fused_linear_logprobs, r1fast.GRPOLoss):
        for name, p in inspect.signature(fn).parameters.items():
            if name in TRL_DEFAULTS and p.default is not inspect.Parameter.empty:
                assert p.default == TRL_DEFAULTS[name], (fn.__name__, name)


def test_trainer_config_options_have_trls_defaults():
    ours = {f.name: _default(f) for f in dataclasses.fields(GRPOConfig) if f.name in TRL_DEFAULTS}
    assert {"use_bias_correction_kl", "temperature", "max_completion_length", "lr_scheduler_type"} <= ours.keys()
    differ = {name: (value, TRL_DEFAULTS[name]) for name, value in ours.items() if value != TRL_DEFAULTS[name]}
    assert differ.keys() == NOT_TRLS_DEFAULT.keys(), differ
    assert GRPOConfig().loss_options()["use_bias_correction_kl"] is True
