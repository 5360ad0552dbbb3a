"""r1fast.integrations.verl against verl 0.9's own code on the same inputs: the policy losses (vanilla with dual
clip, gspo, gpg, sapo) for every loss_agg_mode with and without global-batch normalisers and rollout weights,
agg_loss, kl_penalty, and verl's torch path of linear_cross_entropy (log-probs, entropies, gradients) on both r1fast
backends; install()/uninstall() and verl's external_lib load; the reward functions. Runs where verl is installed
(.ci/run's .venv-verl); skipped elsewhere."""

from __future__ import annotations

import dataclasses
import sys
import warnings

import pytest
import torch

pytest.importorskip("verl")
core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")

import verl.utils.kernel.linear_cross_entropy as verl_lce  # noqa: E402
from verl.utils.experimental.torch_functional import FusedLinearForPPO  # noqa: E402
from verl.utils.import_utils import import_external_libs  # noqa: E402
from verl.workers.config import ActorConfig  # noqa: E402

from r1fast import reference  # noqa: E402
from r1fast.integrations import verl as r1verl  # noqa: E402

RTOL = 1e-6  # fp32, relative to the largest magnitude of verl's result
VERL_LOSSES = {
    "vanilla": core_algos.compute_policy_loss_vanilla,
    "gspo": core_algos.compute_policy_loss_gspo,
    "gpg": core_algos.compute_policy_loss_gpg,
    "sapo": core_algos.compute_policy_loss_sapo,
}
GLOBAL_INFOS = [{}, {"dp_size": 2, "batch_num_tokens": 57, "global_batch_size": 11, "loss_scale_factor": 24}]


@pytest.fixture(autouse=True, scope="module")
def _uninstalled_after():
    yield
    r1verl.uninstall()


def assert_close(got: torch.Tensor, want: torch.Tensor, rtol: float = RTOL, scale: float = 0.0) -> None:
    """|got - want| <= rtol * max(|want|, scale); scale: the magnitude of the terms a sum cancelled (a loss near 0
    is held to the rounding of its terms)."""
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape, got.dtype, want.dtype)
    assert torch.isfinite(want).all()
    scale = want.abs().max().clamp(min=max(scale, 1e-30))
    err = (got - want).abs().max() / scale
    assert err <= rtol, err.item()


def actor_config(**overrides) -> ActorConfig:
    base = dict(strategy="fsdp", rollout_n=4, ppo_micro_batch_size_per_gpu=2, clip_ratio_low=0.2,
                clip_ratio_high=0.28, clip_ratio_c=3.0, tau_pos=1.0, tau_neg=1.05)  # fmt: skip
    return ActorConfig(**{**base, **overrides})


def make_batch(seed: int, b: int = 6, t: int = 12):
    """verl's padded layout: ragged right-padded responses (one fully masked), token-level advantages, old log-probs
    off by up to ~e^1.5 so that both clips and the dual clip act."""
    g = torch.Generator().manual_seed(seed)
    log_prob = -torch.rand(b, t, generator=g) * 3 - 0.05
    old = log_prob + torch.randn(b, t, generator=g) * 0.6
    adv = (torch.randn(b, 1, generator=g) * 1.5).expand(b, t).clone()
    adv[0] = -adv[0].abs() - 0.5
    old[0, 0] = log_prob[0, 0] - 2.0  # ratio e^2 > clip_ratio_c = 3 with A < 0: the dual clip acts
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[0], lengths[-1] = max(int(lengths[0]), 1), 0
    mask = torch.arange(t)[None, :] < lengths[:, None]
    weights = torch.rand(b, t, generator=g) * 2
    return log_prob, old, adv, mask, weights


def run_loss(fn, log_prob, old, adv, mask, mode, config, weights):
    leaf = log_prob.clone().requires_grad_()
    loss, metrics = fn(old_log_prob=old, log_prob=leaf, advantages=adv, response_mask=mask, loss_agg_mode=mode,
                       config=config, rollout_is_weights=weights)  # fmt: skip
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad, metrics


@pytest.mark.parametrize("with_weights", [False, True])
@pytest.mark.parametrize("info", range(len(GLOBAL_INFOS)))
@pytest.mark.parametrize("mode", reference.LOSS_AGG_MODES)
@pytest.mark.parametrize("loss_mode", list(VERL_LOSSES))
def test_policy_loss_matches_verl(loss_mode, mode, info, with_weights, seed):
    log_prob, old, adv, mask, weights = make_batch(seed)
    config = actor_config(loss_agg_mode=mode)
    config.global_batch_info.update(GLOBAL_INFOS[info])
    weights = weights if with_weights else None
    want_loss, want_grad, want_metrics = run_loss(VERL_LOSSES[loss_mode], log_prob, old, adv, mask, mode, config,
                                                  weights)  # fmt: skip
    loss, grad, metrics = run_loss(r1verl._LOSSES[loss_mode], log_prob, old, adv, mask, mode, config, weights)
    # the terms are at most ~4 |A| (sapo's gate, a clipped ratio times its weight): their magnitude, aggregated
    terms = core_algos.agg_loss(4 * adv.abs(), mask, mode, **GLOBAL_INFOS[info]).item()
    assert_close(loss, want_loss, scale=terms)
    assert_close(grad, want_grad)
    assert metrics.keys() == want_metrics.keys()
    for key, value in want_metrics.items():
        assert metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key


@pytest.mark.parametrize("loss_mode", list(VERL_LOSSES))
def test_policy_loss_matches_verl_with_verls_defaults(loss_mode, seed):
    """verl's ActorConfig defaults (clip 0.2 / 0.2, clip_ratio_c 3) and each function's default loss_agg_mode."""
    log_prob, old, adv, mask, _ = make_batch(seed)
    config = ActorConfig(strategy="fsdp", rollout_n=4, ppo_micro_batch_size_per_gpu=2)
    results = []
    for fn in (VERL_LOSSES[loss_mode], r1verl._LOSSES[loss_mode]):
        leaf = log_prob.clone().requires_grad_()
        loss, metrics = fn(old, leaf, adv, mask, config=config)
        results.append((loss.detach(), torch.autograd.grad(loss, leaf)[0], metrics))
    (want_loss, want_grad, want_metrics), (loss, grad, metrics) = results
    assert_close(loss, want_loss, scale=adv.abs().max().item())
    assert_close(grad, want_grad)
    assert metrics == pytest.approx(want_metrics, rel=1e-6, abs=1e-7)


def test_dual_clip_acts_in_the_parity_batch(seed):
    """The vanilla parity above exercises the dual clip: some negative-advantage token has its loss cut to -c A."""
    log_prob, old, adv, mask, _ = make_batch(seed)
    ratio = torch.exp(log_prob - old)
    clipped = -torch.min(ratio * adv, ratio.clamp(0.8, 1.28) * adv)
    dual = reference.dual_clip(clipped, adv, 3.0)
    cut = (adv < 0) & (clipped > -3.0 * adv)
    assert (cut & mask).any()
    assert torch.equal(dual[cut], -3.0 * adv[cut]) and torch.equal(dual[~cut], clipped[~cut])


@pytest.mark.parametrize("info", range(len(GLOBAL_INFOS)))
@pytest.mark.parametrize("mode", reference.LOSS_AGG_MODES)
def test_agg_loss_matches_verl(mode, info, seed):
    g = torch.Generator().manual_seed(seed)
    loss_mat = torch.randn(5, 9, generator=g)
    mask = torch.rand(5, 9, generator=g) > 0.4
    mask[2] = False
    loss_mat[~mask] = 1e4  # padding never enters
    leaf = loss_mat.clone().requires_grad_()
    want = core_algos.agg_loss(leaf, mask, mode, **GLOBAL_INFOS[info])
    (want_grad,) = torch.autograd.grad(want, leaf)
    got = r1verl.agg_loss(leaf, mask, mode, **GLOBAL_INFOS[info])
    (got_grad,) = torch.autograd.grad(got, leaf)
    assert_close(got.detach(), want.detach())
    assert_close(got_grad, want_grad)
    # NaN in the padding: r1fast ignores it in every mode (verl's seq-mean modes propagate it)
    nan_padded = loss_mat.masked_fill(~mask, float("nan"))
    assert_close(r1verl.agg_loss(nan_padded, mask, mode, **GLOBAL_INFOS[info]), want.detach())


def test_agg_loss_refuses_what_verl_refuses():
    x, mask = torch.randn(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match="loss_agg_mode"):
        r1verl.agg_loss(x, mask, "token_mean")
    with pytest.raises(ValueError, match="batch_num_tokens"):
        r1verl.agg_loss(x, mask, "token-mean", dp_size=2)
    with pytest.raises(ValueError, match="global_batch_size"):
        r1verl.agg_loss(x, mask, "seq-mean-token-mean", dp_size=2)


KINDS = [k + plus for k in reference.KL_PENALTIES for plus in ("", "+")]


@pytest.mark.parametrize("kind", KINDS)
def test_kl_penalty_matches_verl(kind, seed):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(4, 7, generator=g) * 4
    ref = logp + torch.randn(4, 7, generator=g) * 2
    ref[0, 0] = logp[0, 0] + 25.0  # verl's clamps act
    out_grad = torch.randn(4, 7, generator=g)
    results = []
    for fn in (core_algos.kl_penalty, r1verl.kl_penalty):
        leaf = logp.clone().requires_grad_()
        value = fn(leaf, ref, kind)
        (grad,) = torch.autograd.grad(value, leaf, out_grad)
        results.append((value.detach(), grad))
    (want, want_grad), (got, got_grad) = results
    assert_close(got, want)
    assert_close(got_grad, want_grad)


def test_kl_penalty_refuses_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        r1verl.kl_penalty(torch.zeros(1, 2), torch.zeros(1, 2), "full")


def lce_results(backend: str, dtype: torch.dtype, temperature: float, seed: int, entropy_grad: bool):
    """(logp, entropy, d hidden, d weight) of verl's use_fused_kernels=False path (FusedLinearForPPO) and of r1fast's
    linear_cross_entropy as installed in verl, for upstream gradients on the log-probs (and on the entropies)."""
    g = torch.Generator().manual_seed(seed)
    b, t, h, v = 3, 5, 32, 97
    hidden = torch.randn(b, t, h, generator=g, dtype=dtype)
    weight = torch.randn(v, h, generator=g, dtype=dtype) * 0.3
    labels = torch.randint(0, v, (b, t), generator=g)
    d_logp = torch.randn(b * t, generator=g, dtype=dtype)
    d_ent = torch.randn(b * t, generator=g, dtype=dtype) * float(entropy_grad)
    results = []
    for kind in ("verl", "r1fast"):
        hl, wl = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        if kind == "verl":
            logp, ent = FusedLinearForPPO(chunk_size=4)(hl, wl, labels, temperature)
            logp, ent = logp.reshape(-1), ent.reshape(-1)
        else:
            r1verl.install(backend=backend)
            logp, ent = verl_lce.linear_cross_entropy(hl, wl, labels, temperature, "none")
        ((logp * d_logp).sum() + (ent * d_ent).sum()).backward()
        results.append((logp.detach(), ent.detach(), hl.grad, wl.grad))
    return results


@pytest.mark.parametrize("entropy_grad", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_linear_cross_entropy_matches_verl_torch_path_fp32(backend, temperature, entropy_grad, seed):
    """float32, the dtype verl's kernel returns. Log-probs to 1e-6; entropies and the gradients (through the
    log-probs and the entropy) to 3e-6 (V-long float32 reductions in another order: verl's own error against float64
    is ~1e-6 here, its entropy gradient 2.5e-6)."""
    want, got = lce_results(backend, torch.float32, temperature, seed, entropy_grad)
    grad_rtol = 3e-6
    for x, y, rtol in zip(got, want, (1e-6, 3e-6, grad_rtol, grad_rtol), strict=True):
        assert_close(x, y, rtol=rtol)


def test_linear_cross_entropy_gradients_through_verl_vanilla_loss(seed):
    """The whole verl actor step on r1fast's Triton path: hidden -> log-probs -> vanilla loss -> d hidden, d weight."""
    g = torch.Generator().manual_seed(seed)
    b, t, h, v = 4, 6, 16, 50
    hidden, weight = torch.randn(b, t, h, generator=g), torch.randn(v, h, generator=g) * 0.3
    labels = torch.randint(0, v, (b, t), generator=g)
    _, old, adv, mask, _ = make_batch(seed, b, t)
    config = actor_config()
    results = []
    for kind in ("verl", "r1fast"):
        hl, wl = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        if kind == "verl":
            logp, _ = FusedLinearForPPO()(hl, wl, labels)
            fn = core_algos.compute_policy_loss_vanilla
        else:
            logp, _ = r1verl.linear_logprobs_entropy(hl, wl, labels, backend="triton")
            fn = r1verl.compute_policy_loss_vanilla
        old_b = logp.detach().reshape(b, t) + (old - old.mean())  # off-policy by the batch's noise
        loss, _ = fn(old_log_prob=old_b, log_prob=logp.reshape(b, t), advantages=adv, response_mask=mask,
                     loss_agg_mode="token-mean", config=config)  # fmt: skip
        loss.backward()
        results.append((loss.detach(), hl.grad, wl.grad))
    for got, want in zip(results[1], results[0], strict=True):
        assert_close(got, want, rtol=2e-6)


def test_linear_logprobs_entropy_refuses_bad_input():
    hidden, weight = torch.randn(2, 3, 8), torch.randn(10, 8)
    with pytest.raises(ValueError, match="weight"):
        r1verl.linear_logprobs_entropy(hidden, torch.randn(10, 7), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="vocabulary"):
        r1verl.linear_logprobs_entropy(hidden, weight, torch.full((2, 3), 10))
    with pytest.raises(ValueError, match="shape"):
        r1verl.linear_logprobs_entropy(hidden, weight, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="dtype"):
        r1verl.linear_logprobs_entropy(hidden, weight.double(), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        r1verl.linear_logprobs_entropy(hidden, weight, torch.zeros(2, 3, dtype=torch.long), 0.0)


def test_policy_loss_refuses_bad_input(seed):
    log_prob, old, adv, mask, _ = make_batch(seed)
    fn = r1verl.compute_policy_loss_vanilla
    with pytest.raises(ValueError, match="shape"):
        fn(old[:, :-1], log_prob, adv, mask, config=actor_config())
    with pytest.raises(ValueError, match="clip_ratio_c"):
        fn(old, log_prob, adv, mask, config=dataclasses.replace(actor_config(), clip_ratio_c=1.0))
    with pytest.raises(ValueError, match="config"):
        fn(old, log_prob, adv, mask)
    with pytest.raises(ValueError, match="loss_agg_mode"):
        fn(old, log_prob, adv, mask, loss_agg_mode="mean", config=actor_config())


def test_unsupported_linear_cross_entropy_goes_to_verl_with_a_warning(monkeypatch):
    calls = []

    class VerlKernel:
        @staticmethod
        def apply(*args):
            calls.append(args)
            return "verl's result"

    monkeypatch.setattr(verl_lce, "LinearCrossEntropy", VerlKernel)
    monkeypatch.setitem(r1verl._STATE, "warned", set())
    hidden, weight, labels = torch.randn(4, 8), torch.randn(10, 8), torch.zeros(4, dtype=torch.long)
    with pytest.warns(UserWarning, match="reduction='mean' is not supported"):
        assert r1verl.linear_cross_entropy(hidden, weight, labels, 1.0, "mean") == "verl's result"
    with pytest.warns(UserWarning, match="dist_process_group"):
        r1verl.linear_cross_entropy(hidden, weight, labels, 1.0, "none", "group")
    assert [c[4:] for c in calls] == [("mean", None), ("none", "group")]


def test_install_and_uninstall_swap_verl_and_back():
    r1verl.uninstall()
    originals = {name: core_algos.get_policy_loss_fn(name) for name in r1verl.LOSS_MODES}
    verl_kernel = verl_lce.linear_cross_entropy
    assert verl_kernel is not r1verl.linear_cross_entropy and not r1verl.installed()
    for _ in range(2):  # idempotent
        r1verl.install()
    for name in r1verl.LOSS_MODES:
        assert core_algos.get_policy_loss_fn(name) is r1verl._LOSSES[name]
    assert core_algos.get_policy_loss_fn("clip_cov") is core_algos.compute_policy_loss_clip_cov  # not covered: verl's
    assert verl_lce.linear_cross_entropy is r1verl.linear_cross_entropy
    r1verl.uninstall()
    assert {name: core_algos.get_policy_loss_fn(name) for name in r1verl.LOSS_MODES} == originals
    assert verl_lce.linear_cross_entropy is verl_kernel and not r1verl.installed()


def test_verl_external_lib_load_installs_and_uninstall_undoes_it():
    """actor_rollout_ref.model.external_lib=r1fast.integrations.verl: verl imports the module by name."""
    r1verl.uninstall()
    vanilla, verl_kernel = core_algos.get_policy_loss_fn("vanilla"), verl_lce.linear_cross_entropy
    name = "r1fast.integrations.verl"
    saved = sys.modules.pop(name)
    try:
        import_external_libs(name)
        loaded = sys.modules[name]
        assert loaded is not saved
        assert core_algos.get_policy_loss_fn("vanilla") is loaded.compute_policy_loss_vanilla
        assert verl_lce.linear_cross_entropy is loaded.linear_cross_entropy
        loaded.uninstall()
        assert core_algos.get_policy_loss_fn("vanilla") is vanilla and verl_lce.linear_cross_entropy is verl_kernel
    finally:
        sys.modules[name] = saved


R1_RIGHT = "<think>\n6 times 7\n</think>\n<answer>\n42\n</answer>"
R1_WRONG = "<think>\n6 times 7\n</think>\n<answer>\n41\n</answer>"


def test_compute_score_is_r1_accuracy_plus_format():
    assert r1verl.compute_score("gsm8k", R1_RIGHT, "42") == {"score": 2.0, "acc": 1.0, "format": 1.0}
    assert r1verl.compute_score("gsm8k", R1_WRONG, "42") == {"score": 1.0, "acc": 0.0, "format": 1.0}
    assert r1verl.compute_score("gsm8k", "The answer is \\boxed{42}.", "42", None, format_weight=0.5) == {
        "score": 1.0, "acc": 1.0, "format": 0.0}  # fmt: skip
    assert r1verl.compute_score("gsm8k", R1_RIGHT, "42", reward="accuracy")["score"] == 1.0
    assert r1verl.compute_score("gsm8k", R1_WRONG, "42", reward="format")["score"] == 1.0


def test_compute_score_batch_equals_per_sample_and_warns_on_unparseable_gold():
    sols = [R1_RIGHT, R1_WRONG, "\\boxed{1/2}", "no answer"]
    golds = ["42", "42", "0.5", "3"]
    batch = r1verl.compute_score_batch(["s"] * 4, sols, golds, [{}] * 4)
    assert batch == [r1verl.compute_score("s", s, gt) for s, gt in zip(sols, golds, strict=True)]
    with pytest.warns(UserWarning, match="cannot parse"):
        assert r1verl.compute_score("s", R1_RIGHT, "")["acc"] == 0.0
    with pytest.raises(ValueError, match="reward"):
        r1verl.compute_score("s", R1_RIGHT, "42", reward="len")
    with pytest.raises(ValueError, match="ground truths"):
        r1verl.compute_score_batch(["s"], [R1_RIGHT], ["1", "2"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r1verl.compute_score("s", R1_RIGHT, 42)  # a non-string gold (verl datasets hold ints) parses


def test_compute_score_through_verls_custom_reward_function_loader():
    """reward.custom_reward_function.path=pkg://r1fast.integrations.verl: verl's loader imports the module by name
    (one module object, one install()) and passes reward_kwargs."""
    reward = pytest.importorskip("verl.trainer.ppo.reward")
    from omegaconf import OmegaConf

    fn_config = {"path": "pkg://r1fast.integrations.verl", "name": "compute_score",
                 "reward_kwargs": {"format_weight": 0.5}}  # fmt: skip
    fn = reward.get_custom_reward_fn(OmegaConf.create({"reward": {"custom_reward_function": fn_config}}))
    got = fn(data_source="gsm8k", solution_str=R1_RIGHT, ground_truth="42", extra_info={})
    assert got == {"score": 1.5, "acc": 1.0, "format": 1.0}
