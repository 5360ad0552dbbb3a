"""r1fast's fused LM-head GRPO loss as the loss of TRL's GRPOTrainer.

``R1FastGRPOTrainer`` is ``trl.GRPOTrainer`` with ``_compute_loss`` replaced: the policy's final hidden states go
through ``r1fast.fused_linear_grpo_loss`` (Triton on CUDA: the [tokens, vocab] logits never exist), with TRL's own
config (loss_type, beta, epsilon/epsilon_high, delta, importance_sampling_level, temperature, the accumulation
normalisers, use_bias_correction_kl, SAPO temperatures) and TRL's metric names. Everything else — generation,
rewards, advantages, the optimizer — stays TRL's.

Configurations the fused loss does not cover fall back to TRL's own ``_compute_loss`` (warned once): vision inputs,
an entropy mask (top_entropy_quantile < 1), the off-policy mask, vLLM importance-sampling correction, the entropy
bonus, MoE auxiliary losses and loss types r1fast does not implement (vespo).

    from r1fast.integrations.trl import R1FastGRPOTrainer
    trainer = R1FastGRPOTrainer(model=..., reward_funcs=..., args=trl.GRPOConfig(...), train_dataset=...)
"""

from __future__ import annotations

import warnings

import torch
import trl

from r1fast import reference
from r1fast.loss import fused_linear_grpo_loss

_VISION_KEYS = ("pixel_values", "image_grid_thw", "pixel_attention_mask", "image_sizes", "spatial_shapes")


class R1FastGRPOTrainer(trl.GRPOTrainer):
    """trl.GRPOTrainer whose loss is r1fast's fused LM-head GRPO loss (see the module docstring). ``loss_backend``
    ("auto", "triton", "reference") and ``chunk_size`` go to r1fast.fused_linear_grpo_loss."""

    def __init__(self, *args, loss_backend: str = "auto", chunk_size: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.r1fast_loss_backend = loss_backend
        self.r1fast_chunk_size = chunk_size
        self._warned_fallback = False

    def _fallback_reason(self, inputs: dict) -> str | None:
        """Why this batch must go through TRL's own loss, or None."""
        if any(inputs.get(k) is not None for k in _VISION_KEYS):
            return "vision inputs"
        if self.loss_type not in reference.LOSS_TYPES:
            return f"loss_type {self.loss_type!r}"
        if self.top_entropy_quantile < 1.0:
            return "top_entropy_quantile < 1"
        if self.off_policy_mask_threshold is not None:
            return "off_policy_mask_threshold"
        if self.use_vllm and self.vllm_importance_sampling_correction:
            return "vLLM importance-sampling correction"
        if getattr(self, "_entropy_bonus_enabled", False):
            return "the entropy bonus"
        if getattr(self, "aux_loss_enabled", False):
            return "an MoE auxiliary loss"
        return None

    def _compute_loss(self, model, inputs):
        reason = self._fallback_reason(inputs)
        if reason is not None:
            if not self._warned_fallback:
                warnings.warn(f"r1fast: {reason} is not supported by the fused loss; using TRL's loss", stacklevel=2)
                self._warned_fallback = True
            return super()._compute_loss(model, inputs)

        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        length = completion_ids.size(1)
        # Through the (possibly wrapped) model, so DDP / DeepSpeed see the forward; logits of one position only.
        with self.accelerator.autocast():
            outputs = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                            logits_to_keep=1, use_cache=False)  # fmt: skip
        hidden = outputs.hidden_states[-1][:, -length - 1 : -1]  # row t predicts completion token t
        head = self.accelerator.unwrap_model(model).get_output_embeddings()
        weight, bias = head.weight, head.bias
        if self.args.cast_lm_head_to_fp32:
            hidden, weight = hidden.float(), weight.float()
            bias = None if bias is None else bias.float()
        elif hidden.dtype != weight.dtype:  # autocast: hidden in the autocast dtype
            hidden = hidden.to(weight.dtype)

        mode = "train" if self.model.training else "eval"
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1
        loss, metrics = fused_linear_grpo_loss(
            hidden, weight, completion_ids, mask, inputs["advantages"], inputs.get("old_per_token_logps"),
            inputs.get("ref_per_token_logps") if self.beta != 0.0 else None, bias=bias,
            backend=self.r1fast_loss_backend, chunk_size=self.r1fast_chunk_size, temperature=self.temperature,
            loss_type=self.loss_type, beta=self.beta, epsilon=self.epsilon_low, epsilon_high=self.epsilon_high,
            delta=self.args.delta, importance_sampling_level=self.importance_sampling_level,
            max_completion_length=self.max_completion_length, num_items_in_batch=inputs.get("num_items_in_batch"),
            gradient_accumulation_steps=accumulation,
            steps_per_generation=self.args.steps_per_generation if mode == "train" else 1,
            num_processes=self.accelerator.num_processes, use_bias_correction_kl=self.args.use_bias_correction_kl,
            sapo_temperature_pos=self.args.sapo_temperature_pos, sapo_temperature_neg=self.args.sapo_temperature_neg,
        )  # fmt: skip
        # TRL's metric names; each process's masked means, averaged over processes.
        for key, value in metrics.items():
            gathered = self.accelerator.gather(torch.tensor([float(value)], device=loss.device))
            self._metrics[mode][key].append(gathered.nanmean().item())
        return loss
