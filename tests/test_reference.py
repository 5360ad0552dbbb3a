"""Self-consistency of r1fast.reference (TRL parity lives in tests/parity/)."""

import math

import pytest
import torch

from r1fast import reference as ref


def test_selective_log_softmax_and_entropy_match_definitions(seed):
    logits = torch.randn(3, 5, 37, dtype=torch.float64) * 3
    index = torch.randint(0, 37, (3, 5))
    for temperature in (1.0, 0.7):
        logp = torch.log_softmax(logits / temperature, -1)
        torch.testing.assert_close(ref.selective_log_softmax(logits, index, temperature),
                                   logp.gather(-1, index[..., None])[..., 0])
        torch.testing.assert_close(ref.entropy_from_logits(logits, temperature), -(logp.exp() * logp).sum(-1))


def test_low_precision_logits_are_computed_in_float32(seed):
    logits = torch.randn(4, 50).bfloat16()
    index = torch.randint(0, 50, (4,))
    out = ref.selective_log_softmax(logits, index)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref.selective_log_softmax(logits.double(), index).float())


def test_kl_estimators(seed):
    logps, ref_logps = -torch.rand(2, 6, dtype=torch.float64), -torch.rand(2, 6, dtype=torch.float64)
    r = ref_logps - logps
    torch.testing.assert_close(ref.per_token_kl(logps, ref_logps, "k1"), -r)
    torch.testing.assert_close(ref.per_token_kl(logps, ref_logps, "k2"), r**2 / 2)
    k3 = ref.per_token_kl(logps, ref_logps, "k3")
    assert (k3 >= 0).all()
    torch.testing.assert_close(k3, r.exp() - r - 1)
    with pytest.raises(ValueError, match="kind"):
        ref.per_token_kl(logps, ref_logps, "k4")


@pytest.mark.parametrize("loss_type", ref.LOSS_TYPES)
def test_on_policy_loss_gradient_is_the_policy_gradient(loss_type, seed):
    # On policy (old = logps.detach(), ratio 1, no clipping), d loss / d logp_t = -A_b * w_t, with w_t the loss
    # type's token weight. Check that gradient against the aggregation weights directly.
    B, T = 4, 7
    logps = (-torch.rand(B, T, dtype=torch.float64)).requires_grad_()
    mask = (torch.rand(B, T) > 0.3).double()
    mask[0] = 0  # an all-masked row
    adv = torch.randn(B, dtype=torch.float64)
    loss, _ = ref.policy_loss(logps, mask, adv, loss_type=loss_type, max_completion_length=10, epsilon_high=5.0)
    loss.backward()
    lengths = mask.sum(-1, keepdim=True).clamp(min=1)
    weight = {
        "grpo": mask / lengths / B, "sapo": mask / lengths / B, "bnpo": mask / mask.sum(), "dr_grpo": mask / (B * 10),
        "luspo": mask / B, "dapo": mask / mask.sum(), "cispo": mask / mask.sum(),
        "vespo": mask / mask.sum(),  # phi(1) = 1 on policy
    }[loss_type]
    torch.testing.assert_close(logps.grad, -adv[:, None] * weight)


def test_policy_loss_rejects_bad_config():
    logps, mask, adv = torch.zeros(1, 2), torch.ones(1, 2), torch.zeros(1)
    with pytest.raises(ValueError, match="loss_type"):
        ref.policy_loss(logps, mask, adv, loss_type="ppo")
    with pytest.raises(ValueError, match="importance_sampling_level"):
        ref.policy_loss(logps, mask, adv, importance_sampling_level="batch")
    with pytest.raises(ValueError, match="ref_logps"):
        ref.policy_loss(logps, mask, adv, beta=0.1)


def test_group_advantages_zero_std_and_unscorable_give_zero():
    rewards = torch.tensor([[1.0], [1.0], [1.0], [0.0], [float("nan")], [2.0], [float("nan")], [float("nan")]])
    adv = ref.group_advantages(rewards, num_generations=2)
    assert not torch.isnan(adv).any()
    assert adv[:2].eq(0).all()  # zero-std group
    assert adv[4].eq(0) and adv[6:].eq(0).all()  # unscorable completions and an all-None group
    assert adv[2] > 0 > adv[3]


def test_vllm_importance_sampling_ratio_modes_are_trls():
    # TRL's _generate_and_score_completions with vLLM: pi_old / pi_sampler per token or per sequence (the masked
    # sum of log differences), truncated to [clip_min, clip_max] or zeroed outside it; NaN sampler log-probs and
    # padding count as no mismatch.
    old = torch.tensor([[0.0, 0.0, 0.0], [-1.0, -2.0, 0.0]], dtype=torch.float64)
    sampled = torch.tensor([[-1.5, 0.2, float("nan")], [-1.0, -1.0, 5.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    token = torch.exp(torch.tensor([[1.5, -0.2, 0.0], [0.0, -1.0, 0.0]], dtype=torch.float64))
    f = ref.vllm_importance_sampling_ratio
    torch.testing.assert_close(f(old, sampled, mask, "token_truncate", None, 3.0), token.clamp(max=3.0))
    torch.testing.assert_close(f(old, sampled, mask, "token_mask", 0.5, 3.0), token.masked_fill(token > 3, 0.0)
                               .masked_fill(token < 0.5, 0.0))  # fmt: skip
    sequence = torch.exp(torch.tensor([[1.3], [-1.0]], dtype=torch.float64))
    torch.testing.assert_close(f(old, sampled, mask, "sequence_truncate", 0.5, 3.0), sequence.clamp(0.5, 3.0))
    torch.testing.assert_close(f(old, sampled, mask, "sequence_mask", 0.5, 4.0), torch.tensor([[sequence[0, 0]],
                               [0.0]], dtype=torch.float64))  # fmt: skip
    with pytest.raises(ValueError, match="mode"):
        f(old, sampled, mask, "batch_mask")


def test_off_policy_and_entropy_masks_and_vespo_weights():
    # DeepSeek-V3.2's mask keeps a sequence with a non-negative advantage or a mean KL estimate <= the threshold.
    logps = torch.zeros(3, 2, dtype=torch.float64)
    sampling = torch.tensor([[0.5, 0.5], [0.5, float("nan")], [0.05, 0.05]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    adv = torch.tensor([[-1.0], [1.0], [-1.0]], dtype=torch.float64)
    keep = ref.off_policy_mask(adv, logps, sampling, mask, 0.1)
    torch.testing.assert_close(keep, torch.tensor([[0.0], [1.0], [1.0]], dtype=torch.float64))
    # the top 40% of the completion tokens by entropy (torch.quantile's interpolation), padding never
    entropies = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    want = torch.tensor([[False, False, False], [True, True, False]])
    assert torch.equal(ref.high_entropy_mask(entropies, mask, 0.4), want)
    # vespo: phi(1) = 1; phi(w) = e^lambda w^k e^(-lambda w)
    log_ratio = torch.tensor([[0.1, 0.2], [0.0, 0.0]], dtype=torch.float64)
    adv = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    phi = ref.vespo_weights(adv, log_ratio, torch.ones(2, 2, dtype=torch.float64), None, k_pos=2.0, lambda_pos=3.0,
                            k_neg=3.0, lambda_neg=2.0)  # fmt: skip
    w = math.exp(0.3)
    torch.testing.assert_close(phi, torch.tensor([[math.exp(3.0) * w**2 * math.exp(-3.0 * w)], [1.0]],
                                                 dtype=torch.float64))  # fmt: skip
