"""A tiny Qwen2 checkpoint and tokenizer made in the test (no downloads), and TRL 1.16 GRPOTrainers built on it."""

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
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

VOCAB = 122
PAD_ID, EOS_ID = 120, 121


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A 2-layer Qwen2 (GQA, qkv bias, untied head) with a word-level tokenizer 'w0'..'w119', saved to disk."""
    path = tmp_path_factory.mktemp("tiny-qwen2")
    vocab = {f"w{i}": i for i in range(PAD_ID)} | {"<pad>": PAD_ID, "<eos>": EOS_ID}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="w0")
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
    )
    torch.manual_seed(1234)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def make_trainer(tiny_checkpoint, tmp_path_factory) -> Callable[..., GRPOTrainer]:
    """Builds (and caches) a GRPOTrainer (or trainer_class, a subclass) on the tiny checkpoint; keyword arguments
    go to GRPOConfig."""
    cache: dict[tuple, GRPOTrainer] = {}

    def build(reward_funcs=None, trainer_class=GRPOTrainer, **config) -> GRPOTrainer:
        key = (trainer_class, tuple(id(f) for f in reward_funcs or ()), repr(sorted(config.items())))
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
        tokenizer = PreTrainedTokenizerFast.from_pretrained(tiny_checkpoint)
        dataset = Dataset.from_dict({"prompt": ["w1 w2 w3"] * 8})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = trainer_class(
                model=str(tiny_checkpoint),
                reward_funcs=reward_funcs or [lambda completions, **_: [0.0] * len(completions)],
                args=args,
                train_dataset=dataset,
                processing_class=tokenizer,
            )
        cache[key] = trainer
        return trainer

    return build
