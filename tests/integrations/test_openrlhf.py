"""r1fast.integrations.openrlhf against OpenRLHF 0.11's own PolicyLoss on the same inputs (ppo and gspo, dual clip,
token- and sequence-level aggregation with and without the global normalisers, the token-level train/rollout
correction in mask and clip modes): loss, gradient and every returned metric; the loud fallback; patch()/unpatch();
reward_func loaded by OpenRLHF's own executor. Runs where OpenRLHF is installed (.ci/run's .venv-openrlhf)."""

from __future__ import annotations

import importlib
import os
import sys
import types
import warnings

import pytest
import torch

openrlhf = pytest.importorskip("openrlhf")
pytest.importorskip("deepspeed")  # openrlhf.models.utils imports it at the top
if "openrlhf.models" not in sys.modules and importlib.util.find_spec("flash_attn") is None:
    # openrlhf/models/__init__.py imports the actor, which imports flash_attn (a CUDA build); the loss module itself
    # needs torch and deepspeed. Without flash_attn the package is entered without running its __init__.
    package = types.ModuleType("openrlhf.models")
    package.__path__ = [os.path.join(os.path.dirname(openrlhf.__file__), "models")]
    sys.modules["openrlhf.models"] = package

import openrlhf.models.loss as host_loss  # noqa: E402

from r1fast.integrations import openrlhf as r1orl  # noqa: E402

RTOL = 1e-6
CORRECTIONS = {  # name -> PolicyLoss keyword arguments
    "off": {},
    "token-mask": dict(is_correction_level="token", is_correction_mode="mask", is_correction_threshold=(0.5, 2.0)),
    "token-clip": dict(is_correction_level="token", is_correction_mode="clip", is_correction_threshold=(0.5, 2.0)),
}
GLOBALS = [{}, {"dp_size": 2, "batch_num_tokens": 61.0, "global_batch_size": 13.0}]


@pytest.fixture(autouse=True, scope="module")
def _unpatched_after():
    yield
    r1orl.unpatch()


def assert_close(got, want, rtol: float = RTOL, scale: float = 0.0) -> None:
    """|got - want| <= rtol * max(|want|, scale) (scale: the magnitude of the terms a sum cancelled)."""
    if want is None:
        assert got is None
        return
    assert got.shape == want.shape and got.dtype == want.dtype
    assert torch.isfinite(want).all()
    err = (got - want).abs().max() / want.abs().max().clamp(min=max(scale, 1e-30))
    assert err <= rtol, err.item()


def make_batch(seed: int, b: int = 6, t: int = 10):
    """OpenRLHF's layout: right-padded actions (ragged, one row fully padded), per-token advantages, old and rollout
    log-probs off the current ones so that the clip, the dual clip and the correction's band all act."""
    g = torch.Generator().manual_seed(seed)
    log_probs = -torch.rand(b, t, generator=g) * 3 - 0.05
    old = log_probs + torch.randn(b, t, generator=g) * 0.6
    rollout = old + torch.randn(b, t, generator=g) * 0.6
    adv = (torch.randn(b, 1, generator=g) * 1.5).expand(b, t).clone()
    adv[0] = -adv[0].abs() - 0.5
    old[0, 0] = log_probs[0, 0] - 2.0  # ratio e^2 > dual_clip = 3 with A < 0
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[-1] = 0
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()
    mask[-2] = 1.0  # a full row
    return log_probs, old, rollout, adv, mask


def run(loss_fn, log_probs, old, rollout, adv, mask, extra):
    leaf = log_probs.clone().requires_grad_()
    loss, *metrics = loss_fn(leaf, old, adv, action_mask=mask, rollout_log_probs=rollout, **extra)
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad, metrics


@pytest.mark.parametrize("extra", range(len(GLOBALS)))
@pytest.mark.parametrize("correction", list(CORRECTIONS))
@pytest.mark.parametrize("token_level_loss", [True, False])
@pytest.mark.parametrize("dual_clip", [None, 3.0])
@pytest.mark.parametrize("policy_loss_type", ["ppo", "gspo"])
def test_policy_loss_matches_openrlhf(policy_loss_type, dual_clip, token_level_loss, correction, extra, seed):
    log_probs, old, rollout, adv, mask = make_batch(seed)
    kwargs = dict(clip_eps_low=0.2, clip_eps_high=0.28, dual_clip=dual_clip, token_level_loss=token_level_loss,
                  policy_loss_type=policy_loss_type, **CORRECTIONS[correction])  # fmt: skip
    results = [run(cls(**kwargs), log_probs, old, rollout, adv, mask, GLOBALS[extra])
               for cls in (host_loss.PolicyLoss, r1orl.R1FastPolicyLoss)]  # fmt: skip
    (want_loss, want_grad, want_metrics), (loss, grad, metrics) = results
    terms = (adv.abs() * 3 * mask).sum() / mask.sum()  # the magnitude of one token's term
    assert_close(loss, want_loss, scale=terms.item())
    assert_close(grad, want_grad)
    for got, want in zip(metrics, want_metrics, strict=True):
        assert_close(got, want)


def test_policy_loss_matches_openrlhf_with_its_defaults(seed):
    """PolicyLoss() and forward's defaults: ppo, clip 0.2 / 0.2, no dual clip, token level, no correction."""
    log_probs, old, _, adv, mask = make_batch(seed)
    results = []
    for cls in (host_loss.PolicyLoss, r1orl.R1FastPolicyLoss):
        leaf = log_probs.clone().requires_grad_()
        loss, *metrics = cls()(leaf, old, adv, mask)
        results.append((loss.detach(), torch.autograd.grad(loss, leaf)[0], metrics))
    (want_loss, want_grad, want_metrics), (loss, grad, metrics) = results
    assert_close(loss, want_loss, scale=adv.abs().max().item())
    assert_close(grad, want_grad)
    for got, want in zip(metrics, want_metrics, strict=True):
        assert_close(got, want)


def test_unsupported_correction_falls_back_to_openrlhf_with_a_warning(seed, monkeypatch):
    monkeypatch.setattr(r1orl, "_WARNED", set())
    log_probs, old, rollout, adv, mask = make_batch(seed)
    for kwargs, what in ((dict(is_correction_level="seq"), "sequence-level"),
                         (dict(is_correction_level="token", is_correction_gating="tv",
                               is_correction_threshold=(0.0, 0.3)), "gated by tv")):  # fmt: skip
        want = run(host_loss.PolicyLoss(**kwargs), log_probs, old, rollout, adv, mask, {})
        with pytest.warns(UserWarning, match=what):
            got = run(r1orl.R1FastPolicyLoss(**kwargs), log_probs, old, rollout, adv, mask, {})
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_policy_loss_refuses_bad_input(seed):
    log_probs, old, rollout, adv, mask = make_batch(seed)
    with pytest.raises(ValueError, match="old_log_probs"):
        r1orl.R1FastPolicyLoss()(log_probs, old[:, :-1], adv, mask)
    with pytest.raises(ValueError, match="rollout_log_probs"):
        r1orl.R1FastPolicyLoss(is_correction_level="token")(log_probs, old, adv, mask)
    with pytest.raises(ValueError, match="is_correction_mode"):  # OpenRLHF's own constructor check, inherited
        r1orl.R1FastPolicyLoss(is_correction_mode="drop")


def test_patch_swaps_policy_loss_and_unpatch_restores_it():
    r1orl.unpatch()
    modules = [sys.modules[name] for name in ("openrlhf.models.loss", "openrlhf.models")]
    original = host_loss.PolicyLoss
    assert original is not r1orl.R1FastPolicyLoss and not r1orl.patched()
    if not hasattr(modules[1], "PolicyLoss"):  # the package entered without its __init__ (see the top)
        modules[1].PolicyLoss = original
    for _ in range(2):  # idempotent
        r1orl.patch()
    assert all(m.PolicyLoss is r1orl.R1FastPolicyLoss for m in modules) and r1orl.patched()
    from openrlhf.models import PolicyLoss  # what the actor module's import binds after the patch

    assert PolicyLoss is r1orl.R1FastPolicyLoss
    r1orl.unpatch()
    assert all(m.PolicyLoss is original for m in modules) and not r1orl.patched()


R1_RIGHT = "<think>\n6 times 7\n</think>\n<answer>\n42\n</answer>"
R1_WRONG = "<think>\n6 times 7\n</think>\n<answer>\n41\n</answer>"


def test_reward_func_scores_r1_accuracy_plus_format():
    prompts = ["<|im_start|>user\nWhat is 6 * 7?<|im_end|>\n<|im_start|>assistant\n"] * 3
    queries = [prompts[0] + R1_RIGHT + "<|im_end|>", prompts[0] + R1_WRONG + "<|im_end|><|endoftext|>",
               prompts[0] + "It is \\boxed{42}."]  # fmt: skip
    out = r1orl.reward_func(queries, prompts, ["42", "42", "42"])
    assert out["rewards"].tolist() == [2.0, 1.0, 1.0] and out["scores"].tolist() == [2.0, 1.0, 1.0]
    assert out["extra_logs"]["accuracy"].tolist() == [1.0, 0.0, 1.0]
    assert out["extra_logs"]["format"].tolist() == [1.0, 1.0, 0.0]
    assert out["rewards"].dtype == torch.float32
    with pytest.warns(UserWarning, match="cannot parse"):
        assert r1orl.reward_func([R1_RIGHT], [""], [""])["rewards"].tolist() == [1.0]
    with pytest.raises(ValueError, match="labels"):
        r1orl.reward_func(queries, prompts, ["42"])


def test_reward_func_as_openrlhfs_custom_reward_file():
    """OpenRLHF's executor loads reward_func from the file given as the remote reward URL."""
    agent = pytest.importorskip("openrlhf.utils.agent")
    executor = agent.SingleTurnAgentExecutor(remote_rm_url=r1orl.__file__)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = executor.reward_func(["Q: 6*7? " + R1_RIGHT], ["Q: 6*7? "], [42])
    assert out["rewards"].tolist() == [2.0]
