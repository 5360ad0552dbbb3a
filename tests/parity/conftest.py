"""Tiny checkpoints and a tokenizer made in the test (no downloads): a Qwen2, and Granite-, Cohere- and Gemma2-shaped
models whose logits the model transforms (logits_scaling, logit_scale, final_logit_softcapping); TRL 1.16
GRPOTrainers built on them."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
trl = pytest.importorskip("trl")
if trl.__version__ != "1.16.0":
    pytest.skip(f"parity tests match trl 1.16.0, found {trl.__version__}", allow_module_level=True)

from datasets import Dataset  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import (  # noqa: E402
    CohereConfig,
    CohereForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    GraniteConfig,
    GraniteForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

VOCAB = 122
PAD_ID, EOS_ID = 120, 121


SHAPE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, pad_token_id=PAD_ID, eos_token_id=EOS_ID)
# family -> (model class, config). The transformed families get a head 20x the default init, so that their logits
# (std ~2) are large enough for the scale and the softcap (cap 1.5) to change every token's distribution: a loss
# that skipped the transform would be far off.
FAMILIES = {
    "qwen2": (Qwen2ForCausalLM, lambda: Qwen2Config(tie_word_embeddings=False, **SHAPE)),
    "granite": (GraniteForCausalLM, lambda: GraniteConfig(logits_scaling=8.0, tie_word_embeddings=False, **SHAPE)),
    "cohere": (CohereForCausalLM, lambda: CohereConfig(logit_scale=0.0625, **SHAPE)),  # tied embeddings
    "gemma2": (Gemma2ForCausalLM, lambda: Gemma2Config(final_logit_softcapping=1.5, head_dim=8, **SHAPE)),
}
HEAD_GAIN = 20.0


def save_checkpoint(path: Path, family: str) -> Path:
    """A 2-layer model of `family` with a word-level tokenizer 'w0'..'w119', saved to `path`."""
    vocab = {f"w{i}": i for i in range(PAD_ID)} | {"<pad>": PAD_ID, "<eos>": EOS_ID}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="w0")
    model_class, config = FAMILIES[family]
    torch.manual_seed(1234)
    model = model_class(config())
    if family != "qwen2":
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(HEAD_GAIN)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A 2-layer Qwen2 (GQA, qkv bias, untied head) with a word-level tokenizer 'w0'..'w119', saved to disk."""
    return save_checkpoint(tmp_path_factory.mktemp("tiny-qwen2"), "qwen2")


@pytest.fixture(scope="session")
def family_checkpoint(tmp_path_factory, tiny_checkpoint) -> Callable[[str], Path]:
    """family -> its tiny checkpoint (see FAMILIES), each saved once per session."""
    paths = {"qwen2": tiny_checkpoint}

    def get(family: str) -> Path:
        if family not in paths:
            paths[family] = save_checkpoint(tmp_path_factory.mktemp(f"tiny-{family}"), family)
        return paths[family]

    return get


@pytest.fixture(scope="session")
def make_trainer(family_checkpoint, tmp_path_factory) -> Callable[..., GRPOTrainer]:
    """Builds (and caches) a GRPOTrainer (or trainer_class, a subclass) on the tiny checkpoint of `family`; keyword
    arguments go to GRPOConfig."""
    cache: dict[tuple, GRPOTrainer] = {}

    def build(reward_funcs=None, trainer_class=GRPOTrainer, family="qwen2", **config) -> GRPOTrainer:
        key = (trainer_class, family, tuple(id(f) for f in reward_funcs or ()), repr(sorted(config.items())))
        if key in cache:
            return cache[key]
        config = {"num_generations": 4, "per_device_train_batch_size": 4, "max_completion_length": 8} | config
        args = GRPOConfig(
            output_dir=str(tmp_path_factory.mktemp("out")),
            report_to=[],
            use_cpu=True,
            bf16=False,
            logging_steps=1,
            **config,
        )
        checkpoint = family_checkpoint(family)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(checkpoint)
        dataset = Dataset.from_dict({"prompt": ["w1 w2 w3"] * 8})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = trainer_class(
                model=str(checkpoint),
                reward_funcs=reward_funcs or [lambda completions, **_: [0.0] * len(completions)],
                args=args,
                train_dataset=dataset,
                processing_class=tokenizer,
            )
        cache[key] = trainer
        return trainer

    return build
