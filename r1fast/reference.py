"""The specification: plain PyTorch for every piece of math r1fast's kernels compute.

Semantics and option names follow TRL 1.16's ``GRPOTrainer`` (``_compute_loss`` and the advantage code of
``_generate_and_score_completions``); ``tests/parity`` proves the two equal. Every fast path in r1fast must equal
this module. Nothing here is tuned for speed: it is written to be read next to the papers.

Shapes: B sequences, T completion positions, V vocabulary, F reward functions, G = num_generations.
All functions work in the dtype they are given (float64 in tests); low-precision logits are upcast to float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")
CLIP_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo")  # PPO-style two-sided clip of the ratio
TOKEN_SUM_LOSS_TYPES = ("dapo", "cispo", "vespo")  # aggregated over the generation batch's completion tokens
VLLM_IMPORTANCE_SAMPLING_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
KL_KINDS = ("k1", "k2", "k3")
SCALE_REWARDS = ("group", "batch", "none")
MULTI_OBJECTIVE_AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64; everything else is computed in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------------------------
# Log-probabilities and entropy
# --------------------------------------------------------------------------------------------------------------


def transform_logits(
    logits: torch.Tensor, logit_scale: float = 1.0, logit_softcap: float | None = None
) -> torch.Tensor:
    """The model's own transform of its LM head's output, applied before temperature (as its generation does).

    logit_scale multiplies (Cohere's config.logit_scale; Granite divides by config.logits_scaling, a scale of 1/x);
    logit_softcap caps softly, cap * tanh(x / cap) (Gemma2/Gemma3's config.final_logit_softcapping), after the scale.
    logits: [..., V] float. Returns [..., V] in logits' dtype. r1fast.logit_transform reads both from a model config.
    """
    if logit_scale != 1.0:
        logits = logits * logit_scale
    if logit_softcap is not None:
        logits = logit_softcap * torch.tanh(logits / logit_softcap)
    return logits


def _scores(logits: torch.Tensor, temperature: float, logit_scale: float, logit_softcap: float | None) -> torch.Tensor:
    """z = transform_logits(logits) / temperature in the compute dtype: the sampling distribution is softmax(z)."""
    return transform_logits(logits.to(_compute_dtype(logits)), logit_scale, logit_softcap) / temperature


def selective_log_softmax(
    logits: torch.Tensor,
    index: torch.Tensor,
    temperature: float = 1.0,
    *,
    logit_scale: float = 1.0,
    logit_softcap: float | None = None,
) -> torch.Tensor:
    """log softmax(transform_logits(logits) / temperature) at the sampled token.

    logits: [..., V] float; index: [...] int64 in [0, V). Returns [...] in float32 (float64 for float64 logits).
    """
    z = _scores(logits, temperature, logit_scale, logit_softcap)
    return z.gather(-1, index.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, dim=-1)


def entropy_from_logits(
    logits: torch.Tensor, temperature: float = 1.0, *, logit_scale: float = 1.0, logit_softcap: float | None = None
) -> torch.Tensor:
    """Entropy of softmax(z), z = transform_logits(logits) / temperature: H = logsumexp(z) - sum_v p_v z_v.

    logits: [..., V] float. Returns [...] in float32 (float64 for float64 logits).
    """
    z = _scores(logits, temperature, logit_scale, logit_softcap)
    p = torch.softmax(z, dim=-1)
    return torch.logsumexp(z, dim=-1) - (p * z).sum(-1)


def per_token_kl(logps: torch.Tensor, ref_logps: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token estimator of KL(pi_theta || pi_ref) from samples of pi_theta (Schulman, "Approximating KL").

    k1 = log(pi/pi_ref); k2 = (log(pi/pi_ref))^2 / 2; k3 = pi_ref/pi - log(pi_ref/pi) - 1 (unbiased, >= 0;
    the one GRPO and TRL use). logps, ref_logps: [B, T]. Returns [B, T].
    """
    if kind not in KL_KINDS:
        raise ValueError(f"kind must be one of {KL_KINDS}, got {kind!r}")
    log_ratio = ref_logps - logps
    if kind == "k1":
        return -log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    return torch.exp(log_ratio) - log_ratio - 1


# --------------------------------------------------------------------------------------------------------------
# The policy loss
# --------------------------------------------------------------------------------------------------------------


def check_loss_config(
    loss_type: str,
    importance_sampling_level: str,
    beta: float,
    epsilon: float,
    epsilon_high: float | None,
    delta: float | None,
    ref_logps_given: bool,
    *,
    top_entropy_quantile: float = 1.0,
    off_policy_mask_threshold: float | None = None,
    entropy_coef: float = 0.0,
) -> None:
    """Raise ValueError for a configuration TRL would reject or that has no meaning."""
    if not 0.0 <= top_entropy_quantile <= 1.0:
        raise ValueError(f"top_entropy_quantile must be in [0, 1], got {top_entropy_quantile}")
    if off_policy_mask_threshold is not None and not math.isfinite(off_policy_mask_threshold):
        raise ValueError(f"off_policy_mask_threshold must be a finite number or None, got {off_policy_mask_threshold}")
    if not math.isfinite(entropy_coef):
        raise ValueError(f"entropy_coef must be a finite number, got {entropy_coef}")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
        raise ValueError(
            f"importance_sampling_level must be one of {IMPORTANCE_SAMPLING_LEVELS}, got {importance_sampling_level!r}"
        )
    if not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be a finite number >= 0, got {beta}")
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon}")
    if epsilon_high is not None and not (math.isfinite(epsilon_high) and epsilon_high >= 0):
        raise ValueError(f"epsilon_high must be a finite number >= 0 or None, got {epsilon_high}")
    if delta is not None and not (math.isfinite(delta) and delta > 0):
        raise ValueError(f"delta must be a finite number > 0 or None, got {delta}")
    if beta != 0.0 and not ref_logps_given:
        raise ValueError("beta != 0 needs ref_logps (the reference model's per-token log-probs)")


def importance_log_weights(log_ratio: torch.Tensor, mask: torch.Tensor, level: str) -> torch.Tensor:
    """log of the importance ratio pi_theta / pi_old.

    token: the per-token log ratio, [B, T]. sequence (GSPO): the masked mean of the log ratio over the completion,
    [B, 1]. log_ratio, mask: [B, T].
    """
    if level == "token":
        return log_ratio
    return ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)


def per_token_policy_loss(
    logps: torch.Tensor,
    coef_1: torch.Tensor,
    advantages: torch.Tensor,
    *,
    loss_type: str,
    epsilon_low: float,
    epsilon_high: float,
    delta: float | None,
    sapo_temperature_pos: float,
    sapo_temperature_neg: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-token surrogate loss before the KL term and aggregation.

    logps: [B, T]; coef_1 = pi_theta / pi_old: [B, T] (token level) or [B, 1] (sequence level);
    advantages: [B, 1]. Returns (per_token_loss [B, T] or [B, 1], coef_1 after the delta clamp, used by metrics).
    """
    if loss_type == "cispo":
        # CISPO (MiniMax-M1): clip the ratio from above, stop its gradient, weight the log-prob by it.
        clamped = torch.clamp(coef_1, max=epsilon_high).detach()
        return -clamped * advantages * logps, coef_1
    if loss_type == "sapo":
        # SAPO: a soft sigmoid gate of the ratio in place of the hard clip; temperature by the advantage's sign.
        tau = torch.where(advantages > 0, sapo_temperature_pos, sapo_temperature_neg)
        return -torch.sigmoid(tau * (coef_1 - 1)) * 4 / tau * advantages, coef_1
    # PPO clip (GRPO, DAPO's clip-higher with epsilon_high; delta = the two-sided clip of INTELLECT-2).
    coef_2 = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)
    if delta is not None:
        coef_1 = torch.clamp(coef_1, max=delta)
    return -torch.min(coef_1 * advantages, coef_2 * advantages), coef_1


def aggregate_loss(
    per_token_loss: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: str,
    max_completion_length: int | None,
    num_items_in_batch: float | torch.Tensor | None,
    gradient_accumulation_steps: int,
    steps_per_generation: int | None,
    num_processes: int,
) -> torch.Tensor:
    """Reduce the masked per-token loss [B, T] to a scalar, as each loss type's paper (and TRL) prescribes.

    grpo, sapo: mean over sequences of the per-sequence token mean.  bnpo: mean over the batch's tokens.
    dr_grpo: sum / (B * max_completion_length).  luspo: mean over sequences of the per-sequence token sum.
    dapo, cispo, vespo: sum / (num_items_in_batch / num_processes * gradient_accumulation_steps /
    steps_per_generation),
    num_items_in_batch being the completion tokens of the whole generation batch (default: this batch's),
    steps_per_generation None meaning gradient_accumulation_steps (TRL's default). dr_grpo's max_completion_length
    None means T. All but dapo/cispo are divided by gradient_accumulation_steps.
    """
    masked = per_token_loss * mask
    gas = gradient_accumulation_steps
    if loss_type in ("grpo", "sapo"):
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / gas
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1.0) / gas
    if loss_type == "dr_grpo":
        length = mask.size(1) if max_completion_length is None else max_completion_length
        return masked.sum() / (per_token_loss.size(0) * length) / gas
    if loss_type == "luspo":
        return masked.sum(-1).mean() / gas
    # dapo, cispo, vespo
    items = (
        mask.sum()
        if num_items_in_batch is None
        else torch.as_tensor(num_items_in_batch, dtype=mask.dtype, device=mask.device)
    )
    steps = gas if steps_per_generation is None else steps_per_generation
    normalizer = items.clamp(min=1.0) / num_processes * gas / steps
    return masked.sum() / normalizer


def high_entropy_mask(
    entropies: torch.Tensor,
    mask: torch.Tensor,
    top_entropy_quantile: float,
    gather_entropies: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """TRL's entropy mask (top_entropy_quantile; "Beyond the 80/20 Rule"): the policy gradient flows only through the
    tokens whose entropy is at least the (1 - q) quantile (torch.quantile, linear interpolation) of the batch's
    completion-token entropies. entropies, mask: [B, T]. Returns [B, T] bool, False on padding (everywhere when no
    process has a completion token). gather_entropies: maps this process's completion-token entropies [n] float32 to
    every process's [N] (TRL's quantile is over the tokens of all processes); None: this process's tokens alone.
    """
    valid = mask.bool()
    tokens = entropies.detach()[valid]
    if gather_entropies is not None:
        tokens = gather_entropies(tokens.float())  # a collective: every process calls it, with or without tokens
    if tokens.numel() == 0:
        return torch.zeros_like(valid)
    threshold = torch.quantile(tokens, 1.0 - top_entropy_quantile)
    return ((entropies.detach() * mask) >= threshold) & valid


def off_policy_mask(
    advantages: torch.Tensor, logps: torch.Tensor, sampling_logps: torch.Tensor, mask: torch.Tensor, threshold: float
) -> torch.Tensor:
    """DeepSeek-V3.2's off-policy sequence mask (TRL's off_policy_mask_threshold): a sequence with a negative
    advantage is dropped when its mean per-token log pi_sampler - log pi_theta (a KL estimate, NaN counted as 0)
    exceeds the threshold. advantages: [B, 1] or [B, T]; logps, sampling_logps, mask: [B, T]. Returns the keep mask,
    [B, 1] (or [B, T]) in mask's dtype, without gradient.
    """
    kl = torch.nan_to_num(sampling_logps - logps.detach(), nan=0.0)
    mean_kl = (kl * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)
    return ((advantages >= 0) | (mean_kl <= threshold)).to(mask.dtype)


@torch.no_grad()
def vespo_weights(
    advantages: torch.Tensor,
    log_ratio: torch.Tensor,
    mask: torch.Tensor,
    importance_sampling_ratio: torch.Tensor | None,
    *,
    k_pos: float,
    lambda_pos: float,
    k_neg: float,
    lambda_neg: float,
) -> torch.Tensor:
    """VESPO's gamma weight of the sequence ratio, phi(w) = e^lambda w^k e^(-lambda w) (phi(1) = 1), in log space and
    without gradient; w = exp(sum over the completion of the clamped log pi_theta / pi_old), times the sampler
    correction's ratio when given. k, lambda by the advantage's sign (TRL's vespo_k_pos, ...). advantages: [B, 1];
    log_ratio, mask: [B, T]; importance_sampling_ratio: [B, T] or [B, 1]. Returns [B, 1].
    """
    lower = math.log(1e-8)
    log_w = (log_ratio.clamp(-20.0, 20.0) * mask).sum(-1, keepdim=True)
    if importance_sampling_ratio is not None:
        log_w = log_w + torch.log(importance_sampling_ratio).clamp(lower, 20.0).sum(-1, keepdim=True)
    log_w = log_w.clamp(lower, 20.0)
    nonneg = advantages >= 0
    k = torch.where(nonneg, k_pos, k_neg)
    lam = torch.where(nonneg, lambda_pos, lambda_neg).clamp(min=1e-4)
    return torch.exp(lam + k * log_w - lam * torch.exp(log_w)).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)


def vllm_importance_sampling_ratio(
    old_logps: torch.Tensor,
    sampling_logps: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "sequence_mask",
    clip_min: float | None = None,
    clip_max: float | None = 3.0,
) -> torch.Tensor:
    """The train/inference mismatch correction TRL applies with vLLM (vllm_importance_sampling_mode, _clip_min,
    _clip_max): the ratio pi_old / pi_sampler per token (token_*) or per sequence (sequence_*: the product over the
    completion), truncated to [clip_min, clip_max] (*_truncate) or set to 0 outside it (*_mask). A sampler log-prob
    of NaN counts as no mismatch. old_logps, sampling_logps, mask: [B, T]. Returns [B, T] or [B, 1].
    """
    if mode not in VLLM_IMPORTANCE_SAMPLING_MODES:
        raise ValueError(f"mode must be one of {VLLM_IMPORTANCE_SAMPLING_MODES}, got {mode!r}")
    diff = torch.nan_to_num((old_logps - sampling_logps) * mask, nan=0.0)
    ratio = torch.exp(diff.sum(-1, keepdim=True) if mode.startswith("sequence") else diff)
    if mode.endswith("truncate"):
        return torch.clamp(ratio, min=clip_min, max=clip_max)
    low = -math.inf if clip_min is None else clip_min
    high = math.inf if clip_max is None else clip_max
    return ratio.masked_fill((ratio < low) | (ratio > high), 0.0)


def per_token_objective(
    logps: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    old_logps: torch.Tensor | None,
    ref_logps: torch.Tensor | None,
    *,
    loss_type: str,
    beta: float,
    epsilon_low: float,
    epsilon_high: float,
    delta: float | None,
    importance_sampling_level: str,
    use_bias_correction_kl: bool,
    sapo_temperature_pos: float,
    sapo_temperature_neg: float,
    importance_sampling_ratio: torch.Tensor | None = None,
    sampling_logps: torch.Tensor | None = None,
    off_policy_mask_threshold: float | None = None,
    entropy_mask: torch.Tensor | None = None,
    vespo_k_pos: float = 2.0,
    vespo_lambda_pos: float = 3.0,
    vespo_k_neg: float = 3.0,
    vespo_lambda_neg: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The per-token loss of policy_loss before aggregation, in TRL's order: the surrogate (vespo: -phi * A * logp),
    times the off-policy sequence mask, the entropy mask and the sampler correction's importance_sampling_ratio
    (not for vespo, whose phi takes it), plus beta * k3 KL.

    logps, mask, old_logps, ref_logps, sampling_logps: [B, T] in logps' dtype (old_logps None = on-policy;
    sampling_logps None = old_logps); advantages: [B, 1] or [B, T]; importance_sampling_ratio: [B, T] or [B, 1];
    entropy_mask: [B, T] (high_entropy_mask). Returns (per_token_loss [B, T] (or [B, 1] at sequence level with no
    per-token factor), coef_1 after the delta clamp, kl [B, T] or None). At token level, without the off-policy
    mask and for loss types other than vespo, each token's loss depends on that token's logp only.
    """
    if old_logps is None:
        old_logps = logps.detach()
    log_ratio = logps - old_logps
    coef_1 = torch.exp(importance_log_weights(log_ratio, mask, importance_sampling_level))

    kl = None
    if beta != 0.0:
        kl = per_token_kl(logps, ref_logps, "k3")
        if use_bias_correction_kl:
            kl = kl * coef_1

    if loss_type == "vespo":
        phi = vespo_weights(advantages, log_ratio.detach(), mask, importance_sampling_ratio, k_pos=vespo_k_pos,
                            lambda_pos=vespo_lambda_pos, k_neg=vespo_k_neg, lambda_neg=vespo_lambda_neg)  # fmt: skip
        per_token_loss = -phi * advantages * logps
    else:
        per_token_loss, coef_1 = per_token_policy_loss(
            logps,
            coef_1,
            advantages,
            loss_type=loss_type,
            epsilon_low=epsilon_low,
            epsilon_high=epsilon_high,
            delta=delta,
            sapo_temperature_pos=sapo_temperature_pos,
            sapo_temperature_neg=sapo_temperature_neg,
        )
    if off_policy_mask_threshold is not None:
        sampled = old_logps if sampling_logps is None else sampling_logps
        per_token_loss = per_token_loss * off_policy_mask(advantages, logps, sampled, mask, off_policy_mask_threshold)
    if entropy_mask is not None:
        per_token_loss = per_token_loss * entropy_mask
    if importance_sampling_ratio is not None and loss_type != "vespo":
        per_token_loss = per_token_loss * importance_sampling_ratio
    if kl is not None:
        per_token_loss = per_token_loss + beta * kl
    return per_token_loss, coef_1, kl


def _global_masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    """Token mean of x [B, T] under mask, or the plain mean of x [B, 1] (one value per sequence)."""
    if x.shape[1] == 1:
        return (x.sum() / max(x.shape[0], 1)).item()
    return ((x * mask).sum() / mask.sum().clamp(min=1.0)).item()


def _masked_seq_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x.squeeze(1)
    return (x * mask).sum(-1) / mask.sum(-1)


def _nan_extreme(x: torch.Tensor, fn) -> float:
    x = x[~torch.isnan(x)]
    return float("nan") if x.numel() == 0 else fn(x).item()


def entropy_bonus(
    entropies: torch.Tensor, mask: torch.Tensor, entropy_mask: torch.Tensor | None, gradient_accumulation_steps: int
) -> torch.Tensor:
    """The mean entropy of the tokens the policy gradient acts on (mask, times the entropy mask when there is one),
    divided by gradient_accumulation_steps: TRL's entropy bonus is loss - entropy_coef * this. entropies, mask:
    [B, T]. Returns a scalar."""
    effective = mask if entropy_mask is None else mask * entropy_mask
    return (entropies * effective).sum() / effective.sum().clamp(min=1.0) / gradient_accumulation_steps


def applied_entropy_coef(entropy_coef: float, last_world_entropy: float, entropy_target: float) -> float:
    """The coefficient TRL's adaptive entropy bonus (use_adaptive_entropy) applies during an optimizer step: the
    controller's entropy_coef while the entropy measured over the previous step (every process's tokens) is at or
    below entropy_target, else 0 (no bonus while the policy is exploring enough; inf before the first step)."""
    return entropy_coef if last_world_entropy <= entropy_target else 0.0


def adaptive_entropy_coef(
    entropy_coef: float,
    world_entropy: float,
    *,
    entropy_target: float = 0.2,
    entropy_coef_delta: float = 0.005,
    entropy_coef_min: float = 0.0,
    entropy_coef_max: float = 1.0,
) -> float:
    """TRL's adaptive entropy controller, at an optimizer-step boundary: entropy_coef grows by entropy_coef_delta
    (up to entropy_coef_max) when the step's token-mean entropy over every process (world_entropy: the sum of the
    entropies the bonus acted on over their count, every micro-batch of the step) is at or below entropy_target,
    else shrinks by it (down to entropy_coef_min). TRL's option names and defaults."""
    if world_entropy <= entropy_target:
        return min(entropy_coef + entropy_coef_delta, entropy_coef_max)
    return max(entropy_coef - entropy_coef_delta, entropy_coef_min)


def policy_loss(
    logps: torch.Tensor,
    completion_mask: torch.Tensor,
    advantages: torch.Tensor,
    old_logps: torch.Tensor | None = None,
    ref_logps: torch.Tensor | None = None,
    entropies: torch.Tensor | None = None,
    sampling_logps: torch.Tensor | None = None,
    importance_sampling_ratio: torch.Tensor | None = None,
    *,
    loss_type: str = "dapo",
    beta: float = 0.0,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    delta: float | None = None,
    importance_sampling_level: str = "token",
    max_completion_length: int | None = 512,
    num_items_in_batch: float | torch.Tensor | None = None,
    gradient_accumulation_steps: int = 1,
    steps_per_generation: int | None = None,
    num_processes: int = 1,
    use_bias_correction_kl: bool = True,
    sapo_temperature_pos: float = 1.0,
    sapo_temperature_neg: float = 1.05,
    top_entropy_quantile: float = 1.0,
    off_policy_mask_threshold: float | None = None,
    entropy_coef: float = 0.0,
    vespo_k_pos: float = 2.0,
    vespo_lambda_pos: float = 3.0,
    vespo_k_neg: float = 3.0,
    vespo_lambda_neg: float = 2.0,
    gather_entropies: Callable[[torch.Tensor], torch.Tensor] | None = None,
    entropy_bonus_stats: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO's clipped-ratio policy loss with a per-token k3 KL penalty, as TRL 1.16 computes it in training mode.

    logps: [B, T] log-probs of the completion tokens under the policy (differentiable).
    completion_mask: [B, T], 1 for completion tokens, 0 for padding (any float or int/bool dtype).
    advantages: [B] or [B, 1] (or [B, T]); old_logps, ref_logps: [B, T] or None. old_logps None means on-policy
    (old = logps.detach()); ref_logps is needed when beta != 0. entropies: [B, T], the policy's per-token entropies
    (differentiable for the entropy bonus), needed when top_entropy_quantile < 1 or entropy_coef != 0.
    sampling_logps: [B, T], the sampler's log-probs, read by the off-policy mask (default: old_logps).
    importance_sampling_ratio: [B, T] or [B, 1], the sampler correction (vllm_importance_sampling_ratio) that
    multiplies the per-token policy loss (vespo: enters phi).
    Options, TRL's names: loss_type (vespo with vespo_k_pos, vespo_lambda_pos, vespo_k_neg, vespo_lambda_neg),
    top_entropy_quantile (high_entropy_mask), off_policy_mask_threshold (off_policy_mask), entropy_coef (loss -
    entropy_coef * entropy_bonus). Every option named as in TRL 1.16's GRPOConfig has TRL's default and meaning
    (use_bias_correction_kl True, max_completion_length 512, steps_per_generation None = gradient_accumulation_steps).
    gather_entropies: the entropy mask's quantile over every process's tokens (high_entropy_mask).
    entropy_bonus_stats: the adaptive entropy bonus is on (TRL's use_adaptive_entropy; entropy_coef is then the
    coefficient applied this step, applied_entropy_coef): report what its controller reads.
    Returns (scalar loss in logps' dtype, metrics): kl (beta != 0), clip_ratio/{low,high,region}_mean,
    clip_ratio/low_min, clip_ratio/high_max (clip loss types), cispo_clip_ratio (cispo), vespo/phi_seq_mean (vespo),
    policy_loss (entropy_coef != 0 or entropy_bonus_stats: the loss before the bonus, TRL's scale),
    entropy_bonus/sum and entropy_bonus/tokens (entropy_bonus_stats: the sum of the entropies the bonus acts on and
    their count, which adaptive_entropy_coef's world_entropy adds up over a step's micro-batches and processes).
    Raises ValueError on an unknown loss_type / importance_sampling_level or a meaningless config value.
    """
    check_loss_config(loss_type, importance_sampling_level, beta, epsilon, epsilon_high, delta, ref_logps is not None,
                      top_entropy_quantile=top_entropy_quantile, off_policy_mask_threshold=off_policy_mask_threshold,
                      entropy_coef=entropy_coef)  # fmt: skip
    if entropies is None and (top_entropy_quantile < 1.0 or entropy_coef != 0.0 or entropy_bonus_stats):
        raise ValueError("top_entropy_quantile < 1, entropy_coef != 0 and entropy_bonus_stats need the per-token "
                         "entropies")  # fmt: skip
    mask = completion_mask.to(logps.dtype)
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    advantages = advantages.to(logps.dtype)
    epsilon_low = epsilon
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    entropy_mask = (high_entropy_mask(entropies, mask, top_entropy_quantile, gather_entropies)
                    if top_entropy_quantile < 1.0 else None)  # fmt: skip
    vespo = dict(vespo_k_pos=vespo_k_pos, vespo_lambda_pos=vespo_lambda_pos, vespo_k_neg=vespo_k_neg,
                 vespo_lambda_neg=vespo_lambda_neg)  # fmt: skip

    per_token_loss, coef_1, kl = per_token_objective(
        logps,
        mask,
        advantages,
        old_logps,
        ref_logps,
        loss_type=loss_type,
        beta=beta,
        epsilon_low=epsilon_low,
        epsilon_high=epsilon_high,
        delta=delta,
        importance_sampling_level=importance_sampling_level,
        use_bias_correction_kl=use_bias_correction_kl,
        sapo_temperature_pos=sapo_temperature_pos,
        sapo_temperature_neg=sapo_temperature_neg,
        importance_sampling_ratio=importance_sampling_ratio,
        sampling_logps=sampling_logps,
        off_policy_mask_threshold=off_policy_mask_threshold,
        entropy_mask=entropy_mask,
        **vespo,
    )

    loss = aggregate_loss(
        per_token_loss,
        mask,
        loss_type=loss_type,
        max_completion_length=max_completion_length,
        num_items_in_batch=num_items_in_batch,
        gradient_accumulation_steps=gradient_accumulation_steps,
        steps_per_generation=steps_per_generation,
        num_processes=num_processes,
    )

    metrics: dict[str, float] = {}
    if entropy_coef != 0.0 or entropy_bonus_stats:
        # TRL logs the policy term as it stands before the accumulation divisor (after it for the token-sum types).
        scale = 1 if loss_type in TOKEN_SUM_LOSS_TYPES else gradient_accumulation_steps
        metrics["policy_loss"] = (loss.detach() * scale).item()
    if entropy_coef != 0.0:
        loss = loss - entropy_coef * entropy_bonus(entropies, mask, entropy_mask, gradient_accumulation_steps)
    if entropy_bonus_stats:
        effective = mask if entropy_mask is None else mask * entropy_mask
        metrics["entropy_bonus/sum"] = (entropies.detach() * effective).sum().item()
        metrics["entropy_bonus/tokens"] = effective.sum().item()
    with torch.no_grad():
        if kl is not None:
            metrics["kl"] = _global_masked_mean(kl, mask)
        if loss_type in CLIP_LOSS_TYPES:
            low = ((coef_1 < 1 - epsilon_low) & (advantages < 0)).to(mask.dtype)
            high = ((coef_1 > 1 + epsilon_high) & (advantages > 0)).to(mask.dtype)
            region = torch.maximum(low, high)
            metrics["clip_ratio/low_mean"] = _global_masked_mean(low, mask)
            metrics["clip_ratio/high_mean"] = _global_masked_mean(high, mask)
            metrics["clip_ratio/region_mean"] = _global_masked_mean(region, mask)
            metrics["clip_ratio/low_min"] = _nan_extreme(_masked_seq_mean(low, mask), torch.min)
            metrics["clip_ratio/high_max"] = _nan_extreme(_masked_seq_mean(high, mask), torch.max)
        elif loss_type == "cispo":
            clipped = ((coef_1 > epsilon_high) & (advantages > 0)).to(mask.dtype)
            metrics["cispo_clip_ratio"] = _global_masked_mean(clipped, mask)
        elif loss_type == "vespo":
            log_ratio = logps.detach() - (logps.detach() if old_logps is None else old_logps)
            phi = vespo_weights(advantages, log_ratio, mask, importance_sampling_ratio, k_pos=vespo_k_pos,
                                lambda_pos=vespo_lambda_pos, k_neg=vespo_k_neg,
                                lambda_neg=vespo_lambda_neg)  # fmt: skip
            metrics["vespo/phi_seq_mean"] = _global_masked_mean(phi, mask)
    return loss, metrics


def grpo_loss(
    logits: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    advantages: torch.Tensor,
    old_logps: torch.Tensor | None = None,
    ref_logps: torch.Tensor | None = None,
    sampling_logps: torch.Tensor | None = None,
    importance_sampling_ratio: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    logit_scale: float = 1.0,
    logit_softcap: float | None = None,
    **config,
) -> tuple[torch.Tensor, dict[str, float]]:
    """selective_log_softmax and entropy_from_logits, then policy_loss, with the entropy metric.

    logits: [B, T, V], row t scores completion_ids[:, t] (TRL's convention after slicing off the prompt and the
    last position), as the LM head outputs them: logit_scale and logit_softcap are the model's transform_logits.
    completion_ids: [B, T] int64; completion_mask: [B, T]; the rest as in policy_loss (the entropies are these
    logits', differentiable when the entropy bonus is on).
    Returns (loss, metrics) with metrics["entropy"] added: the token mean of the entropy of softmax(z / T).
    """
    transform = dict(logit_scale=logit_scale, logit_softcap=logit_softcap)
    logps = selective_log_softmax(logits, completion_ids, temperature, **transform)
    bonus = config.get("entropy_coef", 0.0) != 0.0
    entropy = entropy_from_logits(logits if bonus else logits.detach(), temperature, **transform)
    loss, metrics = policy_loss(logps, completion_mask, advantages, old_logps, ref_logps, entropy, sampling_logps,
                                importance_sampling_ratio, **config)  # fmt: skip
    metrics["entropy"] = _global_masked_mean(entropy.detach(), completion_mask.to(entropy.dtype))
    return loss, metrics


# --------------------------------------------------------------------------------------------------------------
# verl's and OpenRLHF's variants (r1fast.integrations.verl / .openrlhf): their option names and numerics
# --------------------------------------------------------------------------------------------------------------

LOSS_AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
KL_PENALTIES = ("kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3")  # each also with a "+" suffix


def dual_clip(per_token_loss: torch.Tensor, advantages: torch.Tensor, clip_ratio_c: float) -> torch.Tensor:
    """Dual-clip PPO (Ye et al. 2019, arXiv:1912.09729; verl's clip_ratio_c, OpenRLHF's dual_clip): where the
    advantage is negative, the clipped loss is also bounded by -clip_ratio_c * A, so one token with a huge ratio cannot
    dominate. per_token_loss: [B, T], the PPO clip's -min(r A, clip(r) A); advantages: [B, 1] or [B, T]."""
    return torch.where(advantages < 0, torch.minimum(per_token_loss, -clip_ratio_c * advantages), per_token_loss)


def gspo_token_log_weights(
    logps: torch.Tensor, old_logps: torch.Tensor, mask: torch.Tensor, max_log_weight: float | None = None
) -> torch.Tensor:
    """GSPO-token's log ratio (Zheng et al. 2025, arXiv:2507.18071, eq. 13; verl's "gspo"): log s_i,t =
    sg[log s_i] + log pi(y_t) - sg[log pi(y_t)], s_i the length-normalised sequence ratio (importance_log_weights at
    sequence level). Its value is log s_i at every token; its gradient is each token's own. verl caps it at
    max_log_weight (10). logps, old_logps, mask: [B, T]. Returns [B, T]."""
    sequence = importance_log_weights(logps - old_logps, mask, "sequence").detach()
    log_weights = logps - logps.detach() + sequence
    return log_weights if max_log_weight is None else log_weights.clamp(max=max_log_weight)


def policy_gradient_loss(logps: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """The plain policy-gradient surrogate -A * log pi (REINFORCE; GPG, Chu et al. 2025, arXiv:2504.02546, verl's
    "gpg"). logps: [B, T]; advantages: [B, 1] or [B, T]. Returns [B, T]."""
    return -advantages * logps


def aggregate_loss_by_mode(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    loss_agg_mode: str,
    *,
    dp_size: int = 1,
    batch_num_tokens: float | torch.Tensor | None = None,
    global_batch_size: float | torch.Tensor | None = None,
    loss_scale_factor: float | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss [B, T] by verl's loss_agg_mode, with its global-batch normalisers (verl's agg_loss;
    OpenRLHF's token_level_loss True / False are token-mean / seq-mean-token-mean).

    token-mean: sum / batch_num_tokens (the global batch's tokens; default this batch's) * dp_size. token-sum:
    sum * dp_size. seq-mean-token-sum: the per-sequence token sums over global_batch_size (default: this batch's
    sequences with a token) * dp_size; -norm: further divided by loss_scale_factor (default T).
    seq-mean-token-mean: the same over per-sequence token means. Masked entries never enter, NaN included.
    dp_size * (gradients averaged over dp_size ranks) makes the sum over the global batch. Raises ValueError for an
    unknown mode, or dp_size > 1 without the global count the mode needs.
    """
    if loss_agg_mode not in LOSS_AGG_MODES:
        raise ValueError(f"loss_agg_mode must be one of {LOSS_AGG_MODES}, got {loss_agg_mode!r}")
    m = mask.to(loss_mat.dtype)
    masked = torch.where(mask.bool(), loss_mat, 0.0) * m
    if loss_agg_mode == "token-sum":
        return masked.sum() * dp_size
    if loss_agg_mode == "token-mean":
        if batch_num_tokens is None:
            if dp_size > 1:
                raise ValueError("loss_agg_mode token-mean with dp_size > 1 needs batch_num_tokens (global)")
            batch_num_tokens = m.sum()
        return masked.sum() / batch_num_tokens * dp_size
    tokens = m.sum(-1)
    seq_losses = masked.sum(-1) if loss_agg_mode != "seq-mean-token-mean" else masked.sum(-1) / (tokens + 1e-8)
    has_tokens = (tokens > 0).to(loss_mat.dtype)
    if global_batch_size is None:
        if dp_size > 1:
            raise ValueError(f"loss_agg_mode {loss_agg_mode} with dp_size > 1 needs global_batch_size")
        global_batch_size = has_tokens.sum()
    loss = (torch.where(has_tokens.bool(), seq_losses, 0.0) * has_tokens).sum() / global_batch_size * dp_size
    if loss_agg_mode == "seq-mean-token-sum-norm":
        loss = loss / (mask.shape[-1] if loss_scale_factor is None else loss_scale_factor)
    return loss


def kl_penalty(logps: torch.Tensor, ref_logps: torch.Tensor, kind: str = "low_var_kl") -> torch.Tensor:
    """verl's per-token KL penalty by name (kl_loss_type / kl_penalty): kl = k1, mse = k2 (per_token_kl), abs =
    |log pi - log pi_ref|, low_var_kl = k3 with verl's clamps (log ratio to [-20, 20], the estimate to [-10, 10]).
    A "+" suffix (k3+, low_var_kl+, ...) keeps the value and takes k2's gradient (straight through; k2's is the
    unbiased gradient of KL). logps, ref_logps: [B, T]. Returns [B, T]. Raises ValueError for an unknown kind."""
    base = kind[:-1] if kind.endswith("+") else kind
    if base not in KL_PENALTIES:
        raise ValueError(f"kind must be one of {KL_PENALTIES} (optionally with '+'), got {kind!r}")
    if base in ("kl", "k1"):
        value = per_token_kl(logps, ref_logps, "k1")
    elif base == "abs":
        value = (logps - ref_logps).abs()
    elif base in ("mse", "k2"):
        value = per_token_kl(logps, ref_logps, "k2")
    else:
        log_ratio = (ref_logps - logps).clamp(-20.0, 20.0)
        value = (torch.exp(log_ratio) - log_ratio - 1).clamp(-10.0, 10.0)
    if not kind.endswith("+") or base in ("mse", "k2"):
        return value
    k2 = per_token_kl(logps, ref_logps, "k2")
    return k2 - k2.detach() + value.detach()


# --------------------------------------------------------------------------------------------------------------
# Group-relative advantages
# --------------------------------------------------------------------------------------------------------------


def nanstd(x: torch.Tensor, dim: int | None = None, keepdim: bool = False) -> torch.Tensor:
    """Bessel-corrected standard deviation ignoring NaNs; NaN where fewer than two values are present."""
    if dim is None:
        x, dim = x.reshape(-1), 0
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    variance = torch.nanmean((x - mean) ** 2, dim=dim, keepdim=True)
    count = (~torch.isnan(x)).sum(dim=dim, keepdim=True)
    variance = variance * torch.where(count > 1, count / (count - 1), torch.full_like(variance, float("nan")))
    std = variance.sqrt()
    return std if keepdim else std.squeeze(dim)


def group_advantages(
    rewards_per_func: torch.Tensor,
    num_generations: int,
    *,
    reward_weights: torch.Tensor | list[float] | None = None,
    scale_rewards: str | bool = "group",
    multi_objective_aggregation: str = "sum_then_normalize",
) -> torch.Tensor:
    """GRPO's group-relative advantages (DeepSeekMath eq. 3; TRL's options for scaling and multiple rewards).

    rewards_per_func: [N, F] float, N = prompts * num_generations with each prompt's G completions adjacent;
    NaN where a reward function returned None. reward_weights: [F] (default ones).
    scale_rewards: "group" (divide by the group's std), "batch" (by the batch std), "none" (Dr. GRPO); True/False
    mean "group"/"none". multi_objective_aggregation: "sum_then_normalize" (weight-sum the rewards, then normalise
    per group) or "normalize_then_sum" (GDPO: normalise each reward per group, weight-sum, normalise over the batch).
    A completion every reward skipped, and a group with fewer than two scored completions, gets advantage 0; a
    zero-std group gives 0, never NaN. Returns [N] in rewards_per_func's dtype.
    """
    scale_rewards = {True: "group", False: "none"}.get(scale_rewards, scale_rewards)
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {SCALE_REWARDS}, got {scale_rewards!r}")
    if multi_objective_aggregation not in MULTI_OBJECTIVE_AGGREGATIONS:
        raise ValueError(
            f"multi_objective_aggregation must be one of {MULTI_OBJECTIVE_AGGREGATIONS}, got "
            f"{multi_objective_aggregation!r}"
        )
    if rewards_per_func.dim() != 2:
        raise ValueError(f"rewards_per_func must be [N, F], got shape {tuple(rewards_per_func.shape)}")
    n, f = rewards_per_func.shape
    if num_generations < 1 or n % num_generations != 0:
        raise ValueError(f"num_generations={num_generations} must be >= 1 and divide the {n} completions")
    dtype = rewards_per_func.dtype if rewards_per_func.is_floating_point() else torch.float32
    rewards_per_func = rewards_per_func.to(dtype)
    weights = torch.ones(f, dtype=dtype) if reward_weights is None else torch.as_tensor(reward_weights, dtype=dtype)
    if weights.shape != (f,):
        raise ValueError(f"reward_weights must have {f} entries, got shape {tuple(weights.shape)}")
    weights = weights.to(rewards_per_func.device)
    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    g = num_generations

    if multi_objective_aggregation == "sum_then_normalize":
        rewards = (rewards_per_func * weights).nansum(dim=1)
        rewards[unscorable] = float("nan")
        mean = torch.nanmean(rewards.view(-1, g), dim=1).repeat_interleave(g)
        if scale_rewards == "batch":
            std = nanstd(rewards).expand_as(rewards) if n > 1 else torch.zeros_like(rewards)
        else:
            std = nanstd(rewards.view(-1, g), dim=1).repeat_interleave(g) if g > 1 else torch.zeros_like(rewards)
        advantages = rewards - mean
        if scale_rewards != "none":
            advantages = advantages / (std + 1e-4)
    else:
        grouped = rewards_per_func.view(-1, g, f)
        mean_k = torch.nanmean(grouped, dim=1, keepdim=True)
        std_k = nanstd(grouped, dim=1, keepdim=True) if g > 1 else torch.zeros_like(mean_k)
        rewards = (((grouped - mean_k) / (std_k + 1e-4)).view(-1, f) * weights).nansum(dim=1)
        rewards[unscorable] = float("nan")
        std = nanstd(rewards).expand_as(rewards) if n > 1 else torch.zeros_like(rewards)
        advantages = (rewards - torch.nanmean(rewards)) / (std + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


# --------------------------------------------------------------------------------------------------------------
# Paged attention (the sampler's KV cache)
# --------------------------------------------------------------------------------------------------------------


def gather_paged_kv(cache: torch.Tensor, block_table: torch.Tensor, context_len: int) -> torch.Tensor:
    """The first context_len cached positions of one sequence, in order.

    cache: [num_blocks, block_size, H_kv, D]; block_table: [>= ceil(context_len / block_size)] int block ids.
    Returns [context_len, H_kv, D].
    """
    block_size = cache.shape[1]
    positions = torch.arange(context_len, device=cache.device)
    blocks = block_table.long()[positions // block_size]
    return cache[blocks, positions % block_size]


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Causal attention of each sequence's newest queries over its paged KV cache (GQA by head grouping).

    q: [N_q, H_q, D], the queries of S sequences packed back to back; sequence s owns rows
    query_start_loc[s]:query_start_loc[s + 1] and those are the last positions of its context_lens[s] tokens
    (decode: one query per sequence). k_cache, v_cache: [num_blocks, block_size, H_kv, D] holding every context
    token, the new ones included; H_q % H_kv == 0. block_tables: [S, max_blocks] int; context_lens: [S] int;
    query_start_loc: [S + 1] int. Softmax in float32. Returns [N_q, H_q, D] in q's dtype.
    """
    out = torch.empty_like(q)
    group = q.shape[1] // k_cache.shape[2]
    for s in range(block_tables.shape[0]):
        start, stop, n_ctx = int(query_start_loc[s]), int(query_start_loc[s + 1]), int(context_lens[s])
        if stop == start:
            continue
        k = gather_paged_kv(k_cache, block_tables[s], n_ctx).float().repeat_interleave(group, dim=1)
        v = gather_paged_kv(v_cache, block_tables[s], n_ctx).float().repeat_interleave(group, dim=1)
        qs = q[start:stop].float()
        scores = torch.einsum("qhd,khd->hqk", qs, k) * scale
        q_pos = torch.arange(n_ctx - (stop - start), n_ctx, device=q.device)
        causal = torch.arange(n_ctx, device=q.device)[None, :] <= q_pos[:, None]
        scores = scores.masked_fill(~causal, float("-inf"))
        out[start:stop] = torch.einsum("hqk,khd->qhd", torch.softmax(scores, dim=-1), v).to(q.dtype)
    return out
