"""r1fast inside OpenRLHF 0.11.x: its PPO/GRPO policy loss, and a custom reward function on r1fast's C++ rewards.

``patch()`` replaces OpenRLHF's ``PolicyLoss`` by ``R1FastPolicyLoss`` (a subclass: same constructor, same forward
and return values) in ``openrlhf.models.loss``, ``openrlhf.models`` and, when already imported, the actor module
``openrlhf.trainer.ray.ppo_actor`` that builds it; ``unpatch()`` puts OpenRLHF's class back. In a Ray run the patch
must happen in every actor process: start Ray with ``runtime_env={"worker_process_setup_hook":
"r1fast.integrations.openrlhf.patch"}`` (OpenRLHF's ``train_ppo_ray`` keeps an already initialised Ray, and
``ray job submit --runtime-env-json`` takes the same key).

The forward computes OpenRLHF's objective with r1fast.reference's functions: the ratio (ppo: exp of the log ratio
clamped to [-20, 20]; gspo: the length-normalised sequence ratio, against the rollout's log-probs when the
correction is on), the clip to [1 - clip_eps_low, 1 + clip_eps_high], the dual clip, the train/rollout correction at
token level gated by the ratio (mask: TIS's token mask; clip: truncation), and the token-level or sequence-level
aggregation with OpenRLHF's global normalisers. What it does not cover falls back to OpenRLHF's own forward with a
warning: a sequence-level correction or one gated by binary_kl / tv, and a missing action_mask.

``reward_func(queries, prompts, labels)`` is the function OpenRLHF loads from the file given to ``--remote_rm_url``
(``--reward.remote_url``): pass this module's file.
"""

from __future__ import annotations

import re
import sys
import warnings
from typing import Any

import openrlhf.models.loss as host_loss
import torch

from r1fast import reference
from r1fast.integrations._rewards import r1_rewards

# Modules that hold OpenRLHF's PolicyLoss under that name, in import order.
_MODULES = ("openrlhf.models.loss", "openrlhf.models", "openrlhf.trainer.ray.ppo_actor")
_ORIGINALS: dict[str, type] = {}
_WARNED: set[str] = set()


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """OpenRLHF's metric mean, sum(x * mask) / sum(mask)."""
    return (x * mask).sum() / mask.sum()


class R1FastPolicyLoss(host_loss.PolicyLoss):
    """OpenRLHF's PolicyLoss (same constructor: clip_eps_low, clip_eps_high, dual_clip, token_level_loss,
    policy_loss_type "ppo" / "gspo", is_correction_level, is_correction_mode, is_correction_gating,
    is_correction_threshold) with its forward on r1fast.reference (see the module docstring)."""

    def _fallback_reason(self, action_mask: torch.Tensor | None) -> str | None:
        if action_mask is None:
            return "a PolicyLoss without action_mask"
        if self.policy_loss_type not in ("ppo", "gspo"):
            return f"policy_loss_type {self.policy_loss_type!r}"
        if self.policy_loss_type == "ppo" and self.is_correction_level == "seq":
            return "the sequence-level train/rollout correction (is_correction_level=seq)"
        gated = self.is_correction_gating != "ratio"
        if self.policy_loss_type == "ppo" and self.is_correction_level != "off" and gated:
            return f"the train/rollout correction gated by {self.is_correction_gating}"
        return None

    def forward(
        self,
        log_probs: torch.Tensor,
        old_log_probs: torch.Tensor,
        advantages: torch.Tensor,
        action_mask: torch.Tensor | None = None,
        rollout_log_probs: torch.Tensor | None = None,
        dp_size: int = 1,
        batch_num_tokens: float | None = None,
        global_batch_size: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """log_probs (differentiable), old_log_probs, action_mask (0/1 or bool), rollout_log_probs: [B, T];
        advantages: [B, T] or [B, 1]. dp_size, batch_num_tokens (token level), global_batch_size (sequence level):
        OpenRLHF's global normalisers (None: this batch, and dp_size unused). Returns OpenRLHF's (loss, clip_ratio,
        ppo_kl, vllm_kl, is_filter_ratio): a scalar loss in log_probs' dtype and scalar metrics (the last two None
        without the correction). Raises ValueError on mismatched shapes or a correction without rollout_log_probs."""
        reason = self._fallback_reason(action_mask)
        if reason is not None:
            if reason not in _WARNED:
                _WARNED.add(reason)
                warnings.warn(f"r1fast: {reason} is not supported; using OpenRLHF's PolicyLoss", stacklevel=2)
            return super().forward(log_probs, old_log_probs, advantages, action_mask, rollout_log_probs, dp_size,
                                   batch_num_tokens, global_batch_size)  # fmt: skip
        shape = tuple(log_probs.shape)
        for name, x in (("old_log_probs", old_log_probs), ("action_mask", action_mask),
                        ("rollout_log_probs", rollout_log_probs)):  # fmt: skip
            if x is not None and tuple(x.shape) != shape:
                raise ValueError(f"{name} must have log_probs' shape {shape}, got {tuple(x.shape)}")
        correction = self.is_correction_level != "off"
        if correction and rollout_log_probs is None:
            raise ValueError(f"is_correction_level={self.is_correction_level!r} needs rollout_log_probs")
        mask = action_mask.to(log_probs.dtype)
        raw_log_ratio = log_probs - old_log_probs
        if self.policy_loss_type == "ppo":
            ratio = torch.exp(raw_log_ratio.clamp(-20.0, 20.0))
        else:  # GSPO: one ratio per sequence, on the padded token grid
            base = log_probs - rollout_log_probs if correction else raw_log_ratio
            ratio = torch.exp(reference.importance_log_weights(base, mask, "sequence")) * mask
        per_token, _ = reference.per_token_policy_loss(
            log_probs, ratio, advantages, loss_type="grpo", epsilon_low=self.clip_eps_low,
            epsilon_high=self.clip_eps_high, delta=None, sapo_temperature_pos=1.0, sapo_temperature_neg=1.0,
        )  # fmt: skip
        if self.dual_clip is not None:
            per_token = reference.dual_clip(per_token, advantages, self.dual_clip)

        vllm_kl = is_filter_ratio = None
        if correction and self.policy_loss_type == "ppo":  # token level, gated by the ratio pi_train / pi_rollout
            low, high = self.is_correction_threshold
            mode = "token_truncate" if self.is_correction_mode == "clip" else "token_mask"
            old, rollout = old_log_probs.detach(), rollout_log_probs.detach()
            per_token = per_token * reference.vllm_importance_sampling_ratio(old, rollout, mask, mode, low, high)
            with torch.no_grad():
                ratio_is = torch.exp(old - rollout)
                is_filter_ratio = _masked_mean(((ratio_is < low) | (ratio_is > high)).to(mask.dtype), mask)
                vllm_kl = _masked_mean(rollout - old, mask)

        mode = "token-mean" if self.token_level_loss else "seq-mean-token-mean"
        count = batch_num_tokens if self.token_level_loss else global_batch_size
        loss = reference.aggregate_loss_by_mode(
            per_token, mask, mode, dp_size=dp_size if count is not None else 1, batch_num_tokens=batch_num_tokens,
            global_batch_size=global_batch_size,
        )  # fmt: skip
        with torch.no_grad():
            clipped = ratio.clamp(1 - self.clip_eps_low, 1 + self.clip_eps_high) * advantages < ratio * advantages
            clip_ratio = _masked_mean(clipped.to(mask.dtype), mask)
            ppo_kl = _masked_mean(-raw_log_ratio, mask)
        return loss, clip_ratio, ppo_kl, vllm_kl, is_filter_ratio


def patch() -> None:
    """Put R1FastPolicyLoss in place of OpenRLHF's PolicyLoss in every module that holds it (idempotent; a module
    imported after the patch reads the patched name from openrlhf.models)."""
    for name in _MODULES:
        module = sys.modules.get(name)
        if module is None or not hasattr(module, "PolicyLoss"):
            continue
        _ORIGINALS.setdefault(name, module.PolicyLoss)
        module.PolicyLoss = R1FastPolicyLoss


def unpatch() -> None:
    """Put OpenRLHF's PolicyLoss back wherever patch() replaced it (a no-op when nothing is patched)."""
    for name, original in list(_ORIGINALS.items()):
        if name in sys.modules:
            sys.modules[name].PolicyLoss = original
        del _ORIGINALS[name]


def patched() -> bool:
    """Whether patch() is in effect."""
    return bool(_ORIGINALS)


# Special tokens OpenRLHF's decode keeps after the answer (ChatML / Llama-3's <|...|>, Llama-2's </s>).
_TRAILING_SPECIAL = re.compile(r"(?:\s*(?:<\|[^<>|]*\|>|</s>))+\s*$")


def completion_of(query: str, prompt: str) -> str:
    """The completion inside one of OpenRLHF's queries: the text after the prompt (the whole query when it does not
    start with the prompt), without the special tokens decode kept at its end."""
    text = query[len(prompt) :] if query.startswith(prompt) else query
    return _TRAILING_SPECIAL.sub("", text)


def reward_func(
    queries: list[str],
    prompts: list[str],
    labels: list[Any],
    *,
    format_weight: float = 1.0,
    strict_format: bool = True,
    threads: int = 0,
    **_: Any,
) -> dict[str, Any]:
    """OpenRLHF's custom reward function: DeepSeek-R1's accuracy + format_weight * format on r1fast's C++ rewards.

    queries: decoded prompt + completion per sample; prompts: the prompts; labels: the gold answers (the dataset's
    --label_key). Returns {"rewards": [n] float32, "scores": the same, "extra_logs": {"accuracy": [n],
    "format": [n]}}; a gold answer r1fast cannot parse scores accuracy 0 (warned). Raises ValueError on unequal
    lengths.
    """
    n = len(queries)
    if len(prompts) != n or len(labels) != n:
        raise ValueError(f"{n} queries, {len(prompts)} prompts, {len(labels)} labels")
    completions = [completion_of(q, p) for q, p in zip(queries, prompts, strict=True)]
    accuracy, template = (
        torch.tensor(x, dtype=torch.float32)
        for x in r1_rewards(completions, labels, strict_format=strict_format, threads=threads)
    )
    total = accuracy + format_weight * template
    return {"rewards": total, "scores": total.clone(), "extra_logs": {"accuracy": accuracy, "format": template}}
