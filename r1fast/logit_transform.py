"""The logit transform of a Hugging Face causal LM, read from its config: what the model does to its LM head's output.

Most models sample from softmax(lm_head(h) / temperature). Some transform the head's output first, and a loss or a
sampler that skips the transform computes the gradient and the log-probs of another model:

    Granite (and GraniteMoe*, granite vision/docling)   logits / config.logits_scaling     a scale of 1 / x
    Cohere, Cohere2, Cohere2-MoE                         logits * config.logit_scale         a scale
    Falcon-H1                                            logits * config.lm_head_multiplier  a scale
    Gemma2, Gemma3, Gemma3n, Gemma4, VaultGemma, ...     cap * tanh(logits / cap),            a softcap
                                                         cap = config.final_logit_softcapping
    Muse Glimmer / Spark                                 output_multiplier, then the softcap
    RecurrentGemma (logits_soft_cap), xLSTM (output_logit_soft_cap)   a softcap

These are read as TRL 1.16 reads them for its fused LM head (trl.trainer.utils.add_fused_lm_head: the first scale
found among logit_scale, output_multiplier, lm_head_multiplier, logits_scaling; HyperCLOVA X multiplies by
logits_scaling) plus the two softcaps TRL does not read. A config field that looks like another transform of the
final logits (a name with "logit" and a scale/cap/multiplier word, not in the lists here) raises
UnknownLogitTransformError: r1fast never silently trains a model it computes differently.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

# (config field, how it acts): "scale" multiplies, "inverse" divides, "softcap" caps. Scales in TRL's order.
SCALE_FIELDS = (("logit_scale", "scale"), ("output_multiplier", "scale"), ("lm_head_multiplier", "scale"),
                ("logits_scaling", "inverse"))  # fmt: skip
SOFTCAP_FIELDS = ("final_logit_softcapping", "logits_soft_cap", "output_logit_soft_cap")
# Model types whose logits_scaling multiplies (TRL's reading).
MULTIPLYING_LOGITS_SCALING = ("hyperclovax",)
# Fields whose names look like a logit transform but act elsewhere (attention scores, routers, CLIP-style heads,
# muP input scaling inside the backbone, generation-time options).
UNRELATED_FIELDS = frozenset({
    "attn_logit_softcapping", "attention_logit_cap", "conf_attention_logit_cap", "moe_router_logit_softcapping",
    "router_logit_softcapping", "logit_scale_init_value", "max_logit_scale", "output_router_logits",
    "num_logits_to_keep", "logits_to_keep", "contrastive_logits_temperature", "output_auxiliary_logits",
    "mup_enabled", "attention_invalid_logits_value", "average_logits_per_cell", "lsd_time_logit_std",
    "lsd_time_logit_mean", "router_z_loss_coef", "router_aux_loss_coef",
})  # fmt: skip
_SUSPICIOUS = re.compile(r"(logit.*(scal|cap|mult|temperature|factor))|((scal|cap|mult|factor).*logit)|lm_head_mult|"
                         r"output_mult|logits_mup")  # fmt: skip


class UnknownLogitTransformError(ValueError):
    """The model's config has a logit transform r1fast does not implement (or an ambiguous one)."""


@dataclass(frozen=True)
class LogitTransform:
    """z = softcap(scale * logits) before the temperature; ``softcap`` None = none. See the module docstring."""

    scale: float = 1.0
    softcap: float | None = None

    @property
    def is_identity(self) -> bool:
        return self.scale == 1.0 and self.softcap is None

    def kwargs(self) -> dict[str, Any]:
        """The transform as r1fast.loss's keyword arguments (logit_scale, logit_softcap)."""
        return {"logit_scale": self.scale, "logit_softcap": self.softcap}

    def apply(self, logits):
        """logits [..., V] -> the model's transformed logits (r1fast.reference.transform_logits)."""
        from r1fast.reference import transform_logits

        return transform_logits(logits, self.scale, self.softcap)

    @classmethod
    def from_config(cls, config: Any) -> LogitTransform:
        """The transform of a transformers config (a multimodal config's text config is read).

        Raises UnknownLogitTransformError for a field that looks like a logit transform r1fast does not know, for
        two scales (or two softcaps) set at once, and for a scale or cap that is not a finite number > 0.
        """
        try:
            text = config.get_text_config()
        except (AttributeError, ValueError):  # not a transformers config, or several text configs (encoder-decoder)
            text = config
        fields = _fields(text)
        model_type = getattr(text, "model_type", None)
        scales = [(name, kind, fields[name]) for name, kind in SCALE_FIELDS if fields.get(name) not in (None, 1.0)]
        softcaps = [(name, fields[name]) for name in SOFTCAP_FIELDS if fields.get(name) is not None]
        for name, value in [(n, v) for n, _, v in scales] + softcaps:
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise UnknownLogitTransformError(f"the model config's {name} = {value!r} is not a finite number > 0")
        if len(scales) > 1 or len(softcaps) > 1:
            both = [n for n, _, _ in scales] if len(scales) > 1 else [n for n, _ in softcaps]
            raise UnknownLogitTransformError(f"the model config sets {both} at once: r1fast cannot tell which the "
                                             "model applies")  # fmt: skip
        scale = 1.0
        if scales:
            _, kind, value = scales[0]
            inverse = kind == "inverse" and model_type not in MULTIPLYING_LOGITS_SCALING
            scale = 1.0 / float(value) if inverse else float(value)
        softcap = float(softcaps[0][1]) if softcaps else None
        unknown = sorted(name for name, value in fields.items() if name not in _KNOWN and not _neutral(value))
        if unknown:
            implemented = ", ".join([n for n, _ in SCALE_FIELDS] + list(SOFTCAP_FIELDS))
            raise UnknownLogitTransformError(
                f"the model config ({model_type}) has {unknown}, which look like a transform of the final logits that "
                f"r1fast does not implement (it knows {implemented}); its loss and log-probs would not be the model's"
            )
        return cls(scale, softcap)


_KNOWN = frozenset({name for name, _ in SCALE_FIELDS} | set(SOFTCAP_FIELDS) | UNRELATED_FIELDS)


def _fields(config: Any) -> dict[str, Any]:
    """The config's numeric (or None) attributes that are known transforms or look like one, instance attributes and
    class-level defaults alike (transformers 5's configs are dataclasses)."""
    names = {n for n in set(vars(config)) | set(dir(type(config))) if not n.startswith("_")}
    out = {}
    for name in names:
        if name not in _KNOWN and not _SUSPICIOUS.search(name):
            continue
        value = getattr(config, name, None)
        if value is None or isinstance(value, (int, float)):
            out[name] = value
    return out


def _neutral(value: Any) -> bool:
    """A value that transforms nothing: None, False, 0 (off) or 1 (identity)."""
    return value is None or value is False or (isinstance(value, (int, float)) and float(value) in (0.0, 1.0))
