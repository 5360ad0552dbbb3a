"""A TRL user who moves a config to r1fast gets the same run: every option of r1fast's loss API, of r1fast's
GRPOConfig and of its SFTConfig named as one of TRL 1.16's GRPOConfig (SFTConfig) fields has TRL's default (read
from both dataclasses here)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import r1fast
from r1fast.loss import POLICY_LOSS_DEFAULTS
from r1fast.trainer.config import GRPOConfig
from r1fast.trainer.sft import SFTConfig

trl = pytest.importorskip("trl")
if trl.__version__ != "1.16.0":
    pytest.skip(f"the defaults are TRL 1.16.0's, found {trl.__version__}", allow_module_level=True)

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
    assert {"use_bias_correction_kl", "temperature", "max_completion_length", "lr_scheduler_type", "max_steps",
            "logging_steps", "save_steps", "vllm_importance_sampling_mode", "use_adaptive_entropy"} <= ours.keys()
    differ = {name: (value, TRL_DEFAULTS[name]) for name, value in ours.items() if value != TRL_DEFAULTS[name]}
    assert not differ, differ
    assert GRPOConfig().loss_options()["use_bias_correction_kl"] is True


def test_sft_config_options_have_trls_defaults():
    trl_sft = {f.name: _default(f) for f in dataclasses.fields(trl.SFTConfig)}
    ours = {f.name: _default(f) for f in dataclasses.fields(SFTConfig) if f.name in trl_sft}
    assert {"learning_rate", "max_length", "completion_only_loss", "padding_free", "max_steps"} <= ours.keys()
    differ = {name: (value, trl_sft[name]) for name, value in ours.items() if value != trl_sft[name]}
    assert not differ, differ
