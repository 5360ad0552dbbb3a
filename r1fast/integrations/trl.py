"""r1fast's fused LM-head GRPO loss as the loss of TRL's GRPOTrainer.

``R1FastGRPOTrainer`` is ``trl.GRPOTrainer`` with ``_compute_loss`` replaced: the policy's final hidden states go
through ``r1fast.fused_linear_grpo_loss`` (Triton on CUDA: the [tokens, vocab] logits never exist), with TRL's own
config (loss_type incl. vespo, beta, epsilon/epsilon_high, delta, importance_sampling_level, temperature, the
accumulation normalisers, use_bias_correction_kl, SAPO temperatures, the entropy mask top_entropy_quantile, the
off-policy mask off_policy_mask_threshold, the vLLM importance-sampling correction's ratio, the static entropy bonus
entropy_coef, vespo's k and lambda) and TRL's metric names. The model's logit transform
(Granite's logits_scaling, Cohere's logit_scale, Gemma2/3's final_logit_softcapping, ...) is read from its config by
r1fast.logit_transform and applied inside the fused loss, as TRL's own fused head applies it. Everything else —
generation, rewards, advantages, the optimizer — stays TRL's.

Configurations the fused loss does not cover fall back to TRL's own ``_compute_loss`` (warned once, with the reason):

- a logit transform r1fast does not know (r1fast.logit_transform.UnknownLogitTransformError): its loss would be
  another model's;
- vision inputs: the fused path runs a text-only forward for the hidden states; TRL's forward splits the image
  tensors per batch, model by model;
- an MoE auxiliary loss: the router's load-balancing loss comes out of TRL's own forward;
- the adaptive entropy bonus (use_adaptive_entropy): its controller reads each micro-batch's entropy sum over the
  tokens the bonus acts on, which the fused loss does not return;
- the entropy mask over several processes: TRL's quantile is over every process's tokens, r1fast's over this
  process's;
- a loss type r1fast does not implement.

    from r1fast.integrations.trl import R1FastGRPOTrainer
    trainer = R1FastGRPOTrainer(model=..., reward_funcs=..., args=trl.GRPOConfig(...), train_dataset=...)
"""

from __future__ import annotations

import warnings

import torch
import trl

from r1fast import reference
from r1fast.logit_transform import LogitTransform, UnknownLogitTransformError
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
        try:
            self.r1fast_logit_transform: LogitTransform | None = LogitTransform.from_config(self.model.config)
            self._logit_transform_error = None
        except UnknownLogitTransformError as e:
            self.r1fast_logit_transform, self._logit_transform_error = None, str(e)

    def _fallback_reason(self, inputs: dict) -> str | None:
        """Why this batch must go through TRL's own loss, or None."""
        if self._logit_transform_error is not None:
            return f"the model's logit transform ({self._logit_transform_error})"
        if any(inputs.get(k) is not None for k in _VISION_KEYS):
            return "vision inputs"
        if self.loss_type not in reference.LOSS_TYPES:
            return f"loss_type {self.loss_type!r}"
        if getattr(self, "aux_loss_enabled", False):
            return "an MoE auxiliary loss"
        if getattr(self, "use_adaptive_entropy", False):
            return "the adaptive entropy bonus (use_adaptive_entropy)"
        if self.top_entropy_quantile < 1.0 and self.accelerator.num_processes > 1:
            return "the entropy mask over several processes (top_entropy_quantile < 1)"
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
        # TRL multiplies the loss by the sampler correction's ratio with vLLM; vespo reads it whenever it is there.
        ratio = inputs.get("importance_sampling_ratio")
        if self.loss_type != "vespo" and not (self.use_vllm and self.vllm_importance_sampling_correction):
            ratio = None
        bonus = getattr(self, "_entropy_bonus_enabled", False)
        loss, metrics = fused_linear_grpo_loss(
            hidden, weight, completion_ids, mask, inputs["advantages"], inputs.get("old_per_token_logps"),
            inputs.get("ref_per_token_logps") if self.beta != 0.0 else None,
            inputs.get("sampling_per_token_logps") if self.off_policy_mask_threshold is not None else None, ratio,
            bias=bias,
            backend=self.r1fast_loss_backend, chunk_size=self.r1fast_chunk_size, temperature=self.temperature,
            **self.r1fast_logit_transform.kwargs(),
            loss_type=self.loss_type, beta=self.beta, epsilon=self.epsilon_low, epsilon_high=self.epsilon_high,
            delta=self.args.delta, importance_sampling_level=self.importance_sampling_level,
            max_completion_length=self.max_completion_length, num_items_in_batch=inputs.get("num_items_in_batch"),
            gradient_accumulation_steps=accumulation,
            steps_per_generation=self.args.steps_per_generation if mode == "train" else 1,
            num_processes=self.accelerator.num_processes, use_bias_correction_kl=self.args.use_bias_correction_kl,
            sapo_temperature_pos=self.args.sapo_temperature_pos, sapo_temperature_neg=self.args.sapo_temperature_neg,
            top_entropy_quantile=self.top_entropy_quantile, off_policy_mask_threshold=self.off_policy_mask_threshold,
            entropy_coef=self.entropy_coef if bonus else 0.0, vespo_k_pos=self.args.vespo_k_pos,
            vespo_lambda_pos=self.args.vespo_lambda_pos, vespo_k_neg=self.args.vespo_k_neg,
            vespo_lambda_neg=self.args.vespo_lambda_neg,
        )  # fmt: skip
        # TRL's metric names; each process's masked means, averaged over processes.
        for key, value in metrics.items():
            gathered = self.accelerator.gather(torch.tensor([float(value)], device=loss.device))
            self._metrics[mode][key].append(gathered.nanmean().item())
        if bonus and mode == "train" and self.accelerator.sync_gradients:
            self._metrics[mode]["entropy_coef"].append(self.entropy_coef)
        return loss
