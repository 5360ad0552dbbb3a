"""r1fast.logit_transform: the transform read from a config is what the model's forward does to its head's output."""

from __future__ import annotations

import pytest
import torch
import transformers

from r1fast.logit_transform import LogitTransform, UnknownLogitTransformError

SHAPE = dict(vocab_size=53, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, pad_token_id=None, bos_token_id=None,
             eos_token_id=None)  # fmt: skip
# family -> (model class, config class, the config's transform fields, the expected (scale, softcap))
FAMILIES = {
    "granite": ("GraniteForCausalLM", "GraniteConfig", dict(logits_scaling=8.0), (0.125, None)),
    "cohere": ("CohereForCausalLM", "CohereConfig", dict(logit_scale=0.25), (0.25, None)),
    "cohere2": ("Cohere2ForCausalLM", "Cohere2Config", dict(logit_scale=0.5), (0.5, None)),
    "gemma2": ("Gemma2ForCausalLM", "Gemma2Config", dict(final_logit_softcapping=0.3, head_dim=8), (1.0, 0.3)),
    "gemma3": ("Gemma3ForCausalLM", "Gemma3TextConfig", dict(final_logit_softcapping=0.2, head_dim=8), (1.0, 0.2)),
    "llama": ("LlamaForCausalLM", "LlamaConfig", {}, (1.0, None)),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_transform_read_from_the_config_is_the_models_own(family):
    model_name, config_name, fields, (scale, softcap) = FAMILIES[family]
    config = getattr(transformers, config_name)(**SHAPE, **fields)
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(config).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(20.0)  # logits of std ~2: the softcap bends them
        ids = torch.randint(0, 53, (2, 6))
        out = model(input_ids=ids, output_hidden_states=True)
        raw = model.get_output_embeddings()(out.hidden_states[-1])
    transform = LogitTransform.from_config(model.config)
    assert transform.scale == pytest.approx(scale) and transform.softcap == softcap
    torch.testing.assert_close(transform.apply(raw), out.logits, rtol=1e-5, atol=1e-6)
    if not transform.is_identity:
        assert (raw - out.logits).abs().max() > 1e-2  # the transform matters here


def test_a_multimodal_config_is_read_through_its_text_config():
    config = transformers.Gemma3Config(text_config=dict(final_logit_softcapping=30.0))
    assert LogitTransform.from_config(config) == LogitTransform(1.0, 30.0)
    assert LogitTransform.from_config(transformers.Cohere2VisionConfig()).scale == 0.0625


def test_hyperclovax_multiplies_by_logits_scaling_as_trl_reads_it():
    config = transformers.LlamaConfig(**SHAPE)
    config.logits_scaling = 4.0
    assert LogitTransform.from_config(config).scale == 0.25
    config.model_type = "hyperclovax"
    assert LogitTransform.from_config(config).scale == 4.0


def test_unknown_ambiguous_or_meaningless_transforms_raise():
    def config(**fields):
        c = transformers.LlamaConfig(**SHAPE)
        for name, value in fields.items():
            setattr(c, name, value)
        return c

    with pytest.raises(UnknownLogitTransformError, match="logits_mup_width_multiplier"):
        LogitTransform.from_config(config(logits_mup_width_multiplier=4.0))  # Inkling
    with pytest.raises(UnknownLogitTransformError, match="output_logits_multiplier"):
        LogitTransform.from_config(config(output_logits_multiplier=2.0))  # a name r1fast has never seen
    with pytest.raises(UnknownLogitTransformError, match="at once"):
        LogitTransform.from_config(config(logit_scale=0.5, logits_scaling=8.0))
    with pytest.raises(UnknownLogitTransformError, match="finite number > 0"):
        LogitTransform.from_config(config(final_logit_softcapping=-30.0))
    assert isinstance(UnknownLogitTransformError("x"), ValueError)
    # Neutral values and fields that act elsewhere (attention, routers) are not transforms of the final logits.
    plain = config(logit_scale=None, logits_scaling=1.0, attn_logit_softcapping=50.0, output_router_logits=False,
                   router_logit_softcapping=30.0)  # fmt: skip
    assert LogitTransform.from_config(plain).is_identity
