"""r1fast as verl's backend (verl 0.9.x): loaded by ``actor_rollout_ref.model.external_lib=r1fast.integrations.verl``.

Importing this module calls ``install()``, which swaps in, through verl's own extension points:

- the policy losses ``vanilla`` (PPO clip with clip_ratio_low/high and dual clip clip_ratio_c), ``gspo`` (GSPO-token),
  ``gpg`` and ``sapo`` in verl's registry (``core_algos.POLICY_LOSS_REGISTRY``, the table ``register_policy_loss``
  fills and ``get_policy_loss_fn`` reads), computed by r1fast.reference's functions with verl's ``loss_agg_mode``
  and global-batch normalisers (``config.global_batch_info``). verl's other loss modes (dppo_tv, dppo_kl, clip_cov,
  kl_cov, geo_mean, dro, cispo, bypass_mode) stay verl's;
- ``verl.utils.kernel.linear_cross_entropy.linear_cross_entropy``, the function verl's ``use_fused_kernels=True``
  forward imports when it runs: hidden [.., H] @ weight [V, H]^T -> (log-probs, entropies) [N] float32 with a
  backward, here on r1fast's kernels, a chunk of tokens at a time (the [N, V] logits never exist; float32 logits
  like verl's kernel). What it does not cover — a ``reduction`` other than "none", a vocabulary split over a
  ``dist_process_group`` — goes to verl's own kernel with a warning.

``uninstall()`` puts verl's functions back. ``compute_score`` / ``compute_score_batch`` are verl custom reward
functions on r1fast's C++ rewards; ``kl_penalty`` and ``agg_loss`` equal verl's (r1fast.reference.kl_penalty,
aggregate_loss_by_mode).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import verl.trainer.ppo.core_algos as core_algos
import verl.utils.kernel.linear_cross_entropy as verl_lce

from r1fast import loss as r1loss
from r1fast import reference
from r1fast.integrations._rewards import r1_rewards

LOSS_MODES = ("vanilla", "gspo", "gpg", "sapo")
BACKENDS = r1loss.BACKENDS

# What install() replaced, restored by uninstall(): ("registry", name) -> verl's loss; (module, attr) -> verl's lce.
_ORIGINALS: dict[tuple[str, str], Any] = {}
_STATE = {"backend": "auto", "warned": set()}


def _warn_once(reason: str) -> None:
    if reason not in _STATE["warned"]:
        _STATE["warned"].add(reason)
        warnings.warn(f"r1fast: {reason}; using verl's own implementation", stacklevel=3)


# ------------------------------------------------------------------------------------------------------------------
# Policy losses (verl's PolicyLossFn signature)
# ------------------------------------------------------------------------------------------------------------------


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """verl's metric mean: sum(x * mask) / (sum(mask) + 1e-8)."""
    m = mask.to(x.dtype)
    return (torch.where(mask.bool(), x, 0.0) * m).sum() / (m.sum() + 1e-8)


def _check_inputs(old_log_prob, log_prob, advantages, response_mask, rollout_is_weights, config) -> None:
    if config is None:
        raise ValueError("verl's policy loss needs the actor config (config=None)")
    if type(config).__name__ == "AlgoConfig":
        raise TypeError("the policy loss takes the actor config (ActorConfig), not verl's AlgoConfig")
    for name, x in (("old_log_prob", old_log_prob), ("log_prob", log_prob), ("advantages", advantages)):
        if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
            raise TypeError(f"{name} must be a floating-point tensor")
    shape = tuple(log_prob.shape)
    if log_prob.dim() != 2:
        raise ValueError(f"log_prob must be [B, T], got shape {shape}")
    tensors = (("old_log_prob", old_log_prob), ("advantages", advantages), ("response_mask", response_mask))
    for name, x in (*tensors, ("rollout_is_weights", rollout_is_weights)):
        if x is None and name == "rollout_is_weights":
            continue
        if tuple(x.shape) != shape:
            raise ValueError(f"{name} must have log_prob's shape {shape}, got {tuple(x.shape)}")
        if x.device != log_prob.device:
            raise ValueError(f"{name} is on {x.device}, log_prob on {log_prob.device}")


def _clip_range(config) -> tuple[float, float]:
    low = config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio
    high = config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio
    return float(low), float(high)


def _clipped(
    logps: torch.Tensor, ratio: torch.Tensor, advantages: torch.Tensor, low: float, high: float
) -> torch.Tensor:
    """The PPO clip's per-token loss -min(r A, clip(r, 1 - low, 1 + high) A) (r1fast.reference's)."""
    per_token, _ = reference.per_token_policy_loss(
        logps, ratio, advantages, loss_type="grpo", epsilon_low=low, epsilon_high=high, delta=None,
        sapo_temperature_pos=1.0, sapo_temperature_neg=1.0,
    )  # fmt: skip
    return per_token


def _aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str, config, weights) -> torch.Tensor:
    if weights is not None:  # verl's rollout correction (importance weights, rejection masks)
        per_token = per_token * weights
    info = dict(getattr(config, "global_batch_info", None) or {})
    return agg_loss(per_token, mask, mode, **info)


def _clip_metrics(ratio, advantages, mask, low, high) -> torch.Tensor:
    """verl's pg_clipfrac: the share of tokens whose clipped term is the larger loss."""
    clipped = -advantages * ratio.clamp(1 - low, 1 + high) > -advantages * ratio
    return _masked_mean(clipped.to(ratio.dtype), mask)


def compute_policy_loss_vanilla(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """verl's "vanilla" PPO loss: ratio exp(clamp(log_prob - old_log_prob, -20, 20)), clip to [1 - clip_ratio_low,
    1 + clip_ratio_high], dual clip at clip_ratio_c (default 3) for negative advantages, times rollout_is_weights,
    reduced by loss_agg_mode with config.global_batch_info.

    old_log_prob, log_prob, advantages, response_mask (bool or 0/1), rollout_is_weights: [B, T], one device; log_prob
    differentiable. config: verl's ActorConfig (clip_ratio, clip_ratio_low, clip_ratio_high, clip_ratio_c,
    global_batch_info). Returns (scalar loss in log_prob's dtype, verl's metrics actor/pg_clipfrac, actor/ppo_kl,
    actor/pg_clipfrac_lower). Raises TypeError / ValueError on bad input or clip_ratio_c <= 1.
    """
    _check_inputs(old_log_prob, log_prob, advantages, response_mask, rollout_is_weights, config)
    low, high = _clip_range(config)
    clip_ratio_c = float(config.get("clip_ratio_c", 3.0))
    if not clip_ratio_c > 1.0:
        raise ValueError(f"clip_ratio_c (dual clip) must be > 1, got {clip_ratio_c}")
    log_ratio = (log_prob - old_log_prob).clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)
    clipped = _clipped(log_prob, ratio, advantages, low, high)
    per_token = reference.dual_clip(clipped, advantages, clip_ratio_c)
    loss = _aggregate(per_token, response_mask, loss_agg_mode, config, rollout_is_weights)
    with torch.no_grad():
        lower = (clipped > -advantages * clip_ratio_c) & (advantages < 0)
        metrics = {
            "actor/pg_clipfrac": _clip_metrics(ratio, advantages, response_mask, low, high).item(),
            "actor/ppo_kl": _masked_mean(-log_ratio, response_mask).item(),
            "actor/pg_clipfrac_lower": _masked_mean(lower.to(ratio.dtype), response_mask).item(),
        }
    return loss, metrics


def compute_policy_loss_gspo(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "seq-mean-token-mean",
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """verl's "gspo": the PPO clip of GSPO-token's ratio (r1fast.reference.gspo_token_log_weights, capped at
    e^10), no dual clip. Arguments, shapes and metrics as compute_policy_loss_vanilla (pg_clipfrac_lower is 0)."""
    _check_inputs(old_log_prob, log_prob, advantages, response_mask, rollout_is_weights, config)
    low, high = _clip_range(config)
    mask = response_mask.to(log_prob.dtype)
    ratio = torch.exp(reference.gspo_token_log_weights(log_prob, old_log_prob, mask, max_log_weight=10.0))
    per_token = _clipped(log_prob, ratio, advantages, low, high)
    loss = _aggregate(per_token, response_mask, loss_agg_mode, config, rollout_is_weights)
    with torch.no_grad():
        metrics = {
            "actor/pg_clipfrac": _clip_metrics(ratio, advantages, response_mask, low, high).item(),
            "actor/ppo_kl": _masked_mean(old_log_prob - log_prob, response_mask).item(),
            "actor/pg_clipfrac_lower": 0.0,
        }
    return loss, metrics


def compute_policy_loss_gpg(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """verl's "gpg": -A * log_prob (r1fast.reference.policy_gradient_loss), reduced by loss_agg_mode. Shapes as
    compute_policy_loss_vanilla; no metrics."""
    _check_inputs(old_log_prob, log_prob, advantages, response_mask, rollout_is_weights, config)
    per_token = reference.policy_gradient_loss(log_prob, advantages)
    return _aggregate(per_token, response_mask, loss_agg_mode, config, rollout_is_weights), {}


def compute_policy_loss_sapo(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "seq-mean-token-mean",
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """verl's "sapo": SAPO's soft gate of the token ratio (r1fast.reference.per_token_policy_loss, loss_type sapo)
    with config.tau_pos / tau_neg; always reduced seq-mean-token-mean, as verl does whatever loss_agg_mode says.
    Shapes as compute_policy_loss_vanilla; metrics actor/ppo_kl (the clip fractions are 0)."""
    _check_inputs(old_log_prob, log_prob, advantages, response_mask, rollout_is_weights, config)
    log_ratio = (log_prob - old_log_prob).clamp(-20.0, 20.0)
    per_token, _ = reference.per_token_policy_loss(
        log_prob, torch.exp(log_ratio), advantages, loss_type="sapo", epsilon_low=0.0, epsilon_high=0.0, delta=None,
        sapo_temperature_pos=float(config.tau_pos), sapo_temperature_neg=float(config.tau_neg),
    )  # fmt: skip
    loss = _aggregate(per_token, response_mask, "seq-mean-token-mean", config, rollout_is_weights)
    with torch.no_grad():
        metrics = {"actor/pg_clipfrac": 0.0, "actor/ppo_kl": _masked_mean(-log_ratio, response_mask).item(),
                   "actor/pg_clipfrac_lower": 0.0}  # fmt: skip
    return loss, metrics


_LOSSES = {
    "vanilla": compute_policy_loss_vanilla,
    "gspo": compute_policy_loss_gspo,
    "gpg": compute_policy_loss_gpg,
    "sapo": compute_policy_loss_sapo,
}


def agg_loss(
    loss_mat: torch.Tensor,
    loss_mask: torch.Tensor,
    loss_agg_mode: str,
    dp_size: int = 1,
    batch_num_tokens: float | torch.Tensor | None = None,
    global_batch_size: float | torch.Tensor | None = None,
    loss_scale_factor: float | None = None,
) -> torch.Tensor:
    """verl's agg_loss signature on r1fast.reference.aggregate_loss_by_mode. loss_mat, loss_mask: [B, T]. Returns a
    scalar. Raises ValueError for an unknown mode or a missing global count with dp_size > 1."""
    return reference.aggregate_loss_by_mode(
        loss_mat, loss_mask, loss_agg_mode, dp_size=dp_size, batch_num_tokens=batch_num_tokens,
        global_batch_size=global_batch_size, loss_scale_factor=loss_scale_factor,
    )  # fmt: skip


def kl_penalty(logprob: torch.Tensor, ref_logprob: torch.Tensor, kl_penalty: str) -> torch.Tensor:
    """verl's kl_penalty signature on r1fast.reference.kl_penalty (kl, abs, mse, low_var_kl, k1/k2/k3, "+"
    straight-through variants). logprob, ref_logprob: [B, T]. Returns [B, T]. verl's "full" is not supported
    (ValueError), as in verl, which raises NotImplementedError."""
    return reference.kl_penalty(logprob, ref_logprob, kl_penalty)


# ------------------------------------------------------------------------------------------------------------------
# Fused log-probs + entropy (verl's linear_cross_entropy)
# ------------------------------------------------------------------------------------------------------------------


def linear_logprobs_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
    *,
    backend: str = "auto",
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log softmax(hidden @ weight.T / temperature) at labels and the entropy of that softmax, differentiable with
    respect to hidden and weight (both outputs), never holding the [N, V] logits on the Triton backend.

    hidden: [..., H] bf16/fp16/fp32 (fp64 on the reference backend); weight: [V, H], same dtype and device; labels:
    [...] integer in [0, V). The logits are float32 (float32 accumulation, never rounded to hidden's dtype), as in
    verl's kernel. Returns (logp [N], entropy [N]), N = hidden.numel() // H, float32 (float64 for float64 inputs on
    the reference backend). backend: r1fast.loss's ("auto": Triton on CUDA). Raises TypeError / ValueError on bad
    input.
    """
    r1loss._check_float("hidden", hidden)
    if hidden.dim() < 2:
        raise ValueError(f"hidden must be [..., H] with tokens, got shape {tuple(hidden.shape)}")
    logp, entropy = r1loss.fused_linear_logprobs(hidden, weight, labels, temperature=temperature, return_entropy=True,
                                                 backend=backend, chunk_size=chunk_size,
                                                 fp32_head=hidden.dtype != torch.float64)  # fmt: skip
    return logp.reshape(-1), entropy.reshape(-1)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
    reduction: str = "none",
    dist_process_group: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """verl's ``linear_cross_entropy`` (hidden, weight, labels, temperature, reduction, dist_process_group) ->
    (log_probs [N], entropy [N]) float32, on linear_logprobs_entropy with install()'s backend. hidden: [B, T, H] or
    [N, H]; weight: [V, H]; labels: [B, T] or [N]. reduction != "none" and a dist_process_group (vocabulary split
    over ranks) go to verl's own kernel, with a warning."""
    if reduction != "none" or dist_process_group is not None:
        what = f"reduction={reduction!r}" if reduction != "none" else "a vocabulary split over dist_process_group"
        _warn_once(f"linear_cross_entropy with {what} is not supported")
        return verl_lce.LinearCrossEntropy.apply(hidden, weight, labels, temperature, reduction, dist_process_group)
    return linear_logprobs_entropy(hidden, weight, labels, temperature, backend=_STATE["backend"])


# ------------------------------------------------------------------------------------------------------------------
# install / uninstall
# ------------------------------------------------------------------------------------------------------------------

# Modules that bind linear_cross_entropy at import time (the others import it inside the forward, from verl_lce).
_LCE_MODULES = ("verl.utils.kernel.linear_cross_entropy", "verl.models.mcore.model_forward_fused",
                "verl.models.mcore.model_forward_1f1b_overlap")  # fmt: skip


def install(backend: str = "auto") -> None:
    """Swap r1fast's policy losses (LOSS_MODES) into verl's registry and its linear_cross_entropy into verl (and into
    the modules that already bound it). backend: r1fast.loss's, for linear_cross_entropy. Idempotent; the
    originals are kept for uninstall()."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    _STATE["backend"] = backend
    for name, fn in _LOSSES.items():
        key = ("registry", name)
        if key not in _ORIGINALS:
            _ORIGINALS[key] = core_algos.POLICY_LOSS_REGISTRY.get(name)
        core_algos.register_policy_loss(name)(fn)
    for module_name in _LCE_MODULES:
        module = sys.modules.get(module_name)
        if module is None or not hasattr(module, "linear_cross_entropy"):
            continue
        key = ("lce", module_name)
        if key not in _ORIGINALS:
            _ORIGINALS[key] = module.linear_cross_entropy
        module.linear_cross_entropy = linear_cross_entropy


def uninstall() -> None:
    """Put back everything install() replaced (a no-op when nothing is installed)."""
    for (kind, name), original in list(_ORIGINALS.items()):
        if kind == "registry":
            if original is None:
                core_algos.POLICY_LOSS_REGISTRY.pop(name, None)
            else:
                core_algos.POLICY_LOSS_REGISTRY[name] = original
        elif name in sys.modules:
            sys.modules[name].linear_cross_entropy = original
        del _ORIGINALS[(kind, name)]


def installed() -> bool:
    """Whether install() is in effect."""
    return bool(_ORIGINALS)


# ------------------------------------------------------------------------------------------------------------------
# Rewards (verl's custom_reward_function)
# ------------------------------------------------------------------------------------------------------------------


def compute_score_batch(
    data_sources: Sequence[Any],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Any] | None = None,
    *,
    reward: str = "r1",
    format_weight: float = 1.0,
    strict_format: bool = True,
    threads: int = 0,
    **_: Any,
) -> list[dict[str, float]]:
    """verl's batch reward function (BatchRewardManager: ``reward_manager=batch``): one dict per sample with
    "score" (the reward), "acc" (r1fast's accuracy: 1.0 / 0.0) and "format" (the R1 template: 1.0 / 0.0).

    reward: "r1" (score = acc + format_weight * format, DeepSeek-R1's accuracy and format rewards), "accuracy" or
    "format". A gold answer r1fast cannot parse scores acc 0.0, with a warning. The C++ rewards run on ``threads``
    threads (0 = all cores) with the GIL released. Raises ValueError for an unknown reward or unequal lengths.
    """
    if reward not in ("r1", "accuracy", "format"):
        raise ValueError(f"reward must be 'r1', 'accuracy' or 'format', got {reward!r}")
    n = len(solution_strs)
    if len(ground_truths) != n or len(data_sources) != n:
        raise ValueError(f"{n} solutions, {len(ground_truths)} ground truths, {len(data_sources)} data sources")
    out = []
    for accuracy, template in zip(*r1_rewards(solution_strs, ground_truths, strict_format=strict_format,
                                              threads=threads), strict=True):  # fmt: skip
        total = {"r1": accuracy + format_weight * template, "accuracy": accuracy, "format": template}[reward]
        out.append({"score": total, "acc": accuracy, "format": template})
    return out


def compute_score(
    data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any = None, **kwargs: Any
) -> dict[str, float]:
    """verl's per-sample reward function (custom_reward_function.name=compute_score): compute_score_batch on one
    sample; kwargs (custom_reward_function.reward_kwargs) as there."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], **kwargs)[0]


install()
