"""r1fast.reference's verl / OpenRLHF variants against r1fast's own TRL-semantics functions where the math meets, in
float64 (no host needed: these run in every environment; the hosts' own code is in test_verl.py / test_openrlhf.py):
verl's aggregation modes are TRL's bnpo / grpo / dr_grpo on batches without empty rows, GSPO-token under
seq-mean-token-mean is TRL's sequence-level GSPO (value and gradient), verl's KL names are per_token_kl's estimators,
the dual clip bounds what it should and nothing else."""

from __future__ import annotations

import pytest
import torch

from r1fast import reference


def batch(seed: int, b: int = 5, t: int = 8, empty_row: bool = False):
    g = torch.Generator().manual_seed(seed)
    logps = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    old = logps + torch.randn(b, t, generator=g, dtype=torch.float64) * 0.4
    adv = torch.randn(b, 1, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    if empty_row:
        lengths[-1] = 0
    mask = (torch.arange(t)[None, :] < lengths[:, None]).to(torch.float64)
    return logps, old, adv, mask


TRL_EQUIVALENT = {"token-mean": "bnpo", "seq-mean-token-mean": "grpo", "seq-mean-token-sum-norm": "dr_grpo"}


@pytest.mark.parametrize("mode", list(TRL_EQUIVALENT))
def test_aggregation_modes_are_trls_loss_types(mode, seed):
    _, _, _, mask = batch(seed)
    x = torch.randn(mask.shape, dtype=torch.float64)
    got = reference.aggregate_loss_by_mode(x, mask, mode, loss_scale_factor=11)
    want = reference.aggregate_loss(x, mask, loss_type=TRL_EQUIVALENT[mode], max_completion_length=11,
                                    num_items_in_batch=None, gradient_accumulation_steps=1, steps_per_generation=None,
                                    num_processes=1)  # fmt: skip
    # verl divides each sequence's sum by its token count + 1e-8: a relative 1e-8 of each term
    atol = 1e-8 * x.abs().max().item() if mode == "seq-mean-token-mean" else 1e-12
    torch.testing.assert_close(got, want, rtol=1e-12, atol=atol)


def test_aggregation_global_normalisers_and_empty_rows(seed):
    _, _, _, mask = batch(seed, empty_row=True)
    x = torch.randn(mask.shape, dtype=torch.float64)
    total, tokens = (x * mask).sum(), mask.sum(-1)
    per_seq_mean = ((x * mask).sum(-1) / tokens.clamp(min=1))[tokens > 0]
    agg = reference.aggregate_loss_by_mode
    torch.testing.assert_close(agg(x, mask, "token-sum", dp_size=3), 3 * total)
    torch.testing.assert_close(agg(x, mask, "token-mean", dp_size=2, batch_num_tokens=50.0), total / 50 * 2)
    torch.testing.assert_close(agg(x, mask, "seq-mean-token-mean"), per_seq_mean.mean())  # empty row left out
    torch.testing.assert_close(agg(x, mask, "seq-mean-token-sum", dp_size=4, global_batch_size=16), total / 16 * 4)
    with pytest.raises(ValueError, match="loss_agg_mode"):
        agg(x, mask, "seq-mean")


def test_gspo_token_under_seq_mean_token_mean_is_trls_sequence_level_gspo(seed):
    logps, old, adv, mask = batch(seed)
    results = []
    for kind in ("gspo-token", "trl"):
        leaf = logps.clone().requires_grad_()
        if kind == "trl":
            loss, _ = reference.policy_loss(leaf, mask, adv, old, loss_type="grpo", epsilon=0.2, epsilon_high=0.28,
                                            importance_sampling_level="sequence")  # fmt: skip
        else:
            ratio = torch.exp(reference.gspo_token_log_weights(leaf, old, mask))
            per_token, _ = reference.per_token_policy_loss(leaf, ratio, adv, loss_type="grpo", epsilon_low=0.2,
                                                           epsilon_high=0.28, delta=None, sapo_temperature_pos=1.0,
                                                           sapo_temperature_neg=1.0)  # fmt: skip
            loss = reference.aggregate_loss_by_mode(per_token, mask, "seq-mean-token-mean")
        (grad,) = torch.autograd.grad(loss, leaf)
        results.append((loss.detach(), grad * mask))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-7, atol=1e-7)  # seq-mean-token-mean's 1e-8
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-7, atol=1e-12)


def test_gspo_token_weights_value_and_cap(seed):
    logps, old, _, mask = batch(seed)
    w = reference.gspo_token_log_weights(logps, old, mask)
    sequence = reference.importance_log_weights(logps - old, mask, "sequence")
    torch.testing.assert_close(w, sequence.expand_as(w))
    assert (reference.gspo_token_log_weights(logps, old - 50, mask, max_log_weight=10.0) <= 10.0).all()


@pytest.mark.parametrize("kind,trl_kind", [("kl", "k1"), ("k1", "k1"), ("mse", "k2"), ("k2", "k2"), ("k3", "k3"),
                                           ("low_var_kl", "k3")])  # fmt: skip
def test_kl_penalty_names_are_per_token_kl(kind, trl_kind, seed):
    logps, ref, _, _ = batch(seed)  # |log ratio| well inside verl's clamps
    torch.testing.assert_close(reference.kl_penalty(logps, ref, kind), reference.per_token_kl(logps, ref, trl_kind))


def test_kl_penalty_plus_takes_k2s_gradient_and_keeps_its_value(seed):
    logps, ref, _, _ = batch(seed)
    grads = []
    for kind in ("k3+", "k2"):
        leaf = logps.clone().requires_grad_()
        value = reference.kl_penalty(leaf, ref, kind)
        grads.append(torch.autograd.grad(value.sum(), leaf)[0])
        if kind == "k3+":
            torch.testing.assert_close(value.detach(), reference.per_token_kl(logps, ref, "k3"))
    torch.testing.assert_close(grads[0], grads[1])
    assert reference.kl_penalty(logps, logps + 30.0, "low_var_kl").max() == 10.0  # verl's clamp
    with pytest.raises(ValueError, match="kind"):
        reference.kl_penalty(logps, ref, "full")


def test_dual_clip_bounds_negative_advantage_losses_only():
    loss = torch.tensor([[5.0, 5.0, 0.5, -1.0]])
    adv = torch.tensor([[-1.0, 1.0, -1.0, -2.0]])
    torch.testing.assert_close(reference.dual_clip(loss, adv, 3.0), torch.tensor([[3.0, 5.0, 0.5, -1.0]]))
    torch.testing.assert_close(reference.policy_gradient_loss(torch.tensor([[-2.0]]), torch.tensor([[0.5]])),
                               torch.tensor([[1.0]]))  # fmt: skip
