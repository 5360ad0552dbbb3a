"""r1fast's fused LM-head GRPO loss as the loss of TRL's GRPOTrainer.

``R1FastGRPOTrainer`` is ``trl.GRPOTrainer`` with ``_compute_loss`` replaced: the policy's final hidden states go
through ``r1fast.fused_linear_grpo_loss`` (Triton on CUDA: the [tokens, vocab] logits never exist), with TRL's own
config (loss_type incl. vespo, beta, epsilon/epsilon_high, delta, importance_sampling_level, temperature, the
accumulation normalisers, use_bias_correction_kl, SAPO temperatures, the entropy mask top_entropy_quantile, the
off-policy mask off_policy_mask_threshold, the vLLM importance-sampling correction's ratio, the static entropy bonus
entropy_coef and the adaptive one use_adaptive_entropy, vespo's k and lambda) and TRL's metric names; the
entropy mask's quantile is over every process's tokens, as in TRL. The model's logit transform
(Granite's logits_scaling, Cohere's logit_scale, Gemma2/3's final_logit_softcapping, ...) is read from its config by
r1fast.logit_transform and applied inside the fused loss, as TRL's own fused head applies it. Everything else —
generation, rewards, advantages, the optimizer — stays TRL's.

Configurations the fused loss does not cover fall back to TRL's own ``_compute_loss`` (warned once, with the reason):

- a logit transform r1fast does not know (r1fast.logit_transform.UnknownLogitTransformError): its loss would be
  another model's;
- vision inputs: the fused path runs a text-only forward for the hidden states; TRL's forward splits the image
  tensors per batch, model by model;
- an MoE auxiliary loss: the router's load-balancing loss comes out of TRL's own forward;
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
        return None

    def _gather_entropies(self, local: torch.Tensor) -> torch.Tensor:
        """Every process's completion-token entropies [N] from this process's [n], as TRL's entropy mask gathers
        them (padded to one length with a negative sentinel, which no entropy can equal, then dropped)."""
        sentinel = -1e9
        padded = self.accelerator.pad_across_processes(local, dim=0, pad_index=sentinel)
        gathered = self.accelerator.gather(padded)
        return gathered[gathered != sentinel]

    def _update_adaptive_entropy(self, metrics: dict[str, float], device: torch.device) -> None:
        """TRL's adaptive entropy controller: this micro-batch's entropy sum and token count join the step's window;
        at the optimizer-step boundary the window's totals over every process set the next step's coefficient."""
        stats = torch.tensor([metrics.pop("entropy_bonus/sum"), metrics.pop("entropy_bonus/tokens")],
                             dtype=torch.float32, device=device)  # fmt: skip
        self._entropy_window_stats = stats if self._entropy_window_stats is None else self._entropy_window_stats + stats
        if self.accelerator.sync_gradients:
            window = self.accelerator.reduce(self._entropy_window_stats, reduction="sum")
            world_entropy = (window[0] / window[1].clamp(min=1.0)).item()
            self.entropy_coef = reference.adaptive_entropy_coef(
                self.entropy_coef, world_entropy, entropy_target=self.args.entropy_target,
                entropy_coef_delta=self.args.entropy_coef_delta, entropy_coef_min=self.args.entropy_coef_min,
                entropy_coef_max=self.args.entropy_coef_max,
            )  # fmt: skip
            self._last_world_entropy = world_entropy
            self._entropy_window_stats = None

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
        adaptive = bonus and getattr(self, "use_adaptive_entropy", False)
        # Every micro-batch of an optimizer step applies the coefficient set at the end of the previous step.
        coef = 0.0 if not bonus else self.entropy_coef
        if adaptive:
            coef = reference.applied_entropy_coef(self.entropy_coef, self._last_world_entropy,
                                                  self.args.entropy_target)  # fmt: skip
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
            entropy_coef=coef, entropy_bonus_stats=adaptive,
            gather_entropies=self._gather_entropies if self.accelerator.num_processes > 1 else None,
            vespo_k_pos=self.args.vespo_k_pos,
            vespo_lambda_pos=self.args.vespo_lambda_pos, vespo_k_neg=self.args.vespo_k_neg,
            vespo_lambda_neg=self.args.vespo_lambda_neg,
        )  # fmt: skip
        if adaptive and mode == "train":
            self._update_adaptive_entropy(metrics, loss.device)
        elif adaptive:  # evaluation never moves the controller, and its window statistics are not metrics
            del metrics["entropy_bonus/sum"], metrics["entropy_bonus/tokens"]
        # TRL's metric names; each process's masked means, averaged over processes.
        for key, value in metrics.items():
            gathered = self.accelerator.gather(torch.tensor([float(value)], device=loss.device))
            self._metrics[mode][key].append(gathered.nanmean().item())
        if bonus and mode == "train" and self.accelerator.sync_gradients:
            self._metrics[mode]["entropy_coef"].append(self.entropy_coef)
        return loss
