"""`python -m r1fast`: the demo as the README runs it, and `train` on a local checkpoint and a JSONL file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from r1fast.cli import main
from r1fast.trainer import read_metrics


def test_demo_command_runs_sft_then_grpo_and_writes_metrics_and_a_checkpoint(tmp_path):
    command = [sys.executable, "-m", "r1fast", "demo", "--sft-steps", "20", "--grpo-steps", "3", "--logging-steps",
               "1", "--output-dir", str(tmp_path)]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "cold-start SFT: 20 steps" in out.stdout and "after_grpo" in out.stdout
    assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2, 3]
    assert (tmp_path / "checkpoint-3" / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A Qwen2 checkpoint with a character-level tokenizer (digits, '+', '=', the R1 tags, <eos>), saved locally."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    path = tmp_path_factory.mktemp("tiny-qwen2-chars")
    pieces = ["<eos>", "<think>", "</think>", "<answer>", "</answer>", *"0123456789+=\n"]
    backend = Tokenizer(models.WordLevel({p: i for i, p in enumerate(pieces)}, unk_token="<eos>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("</?think>|</?answer>|."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(pieces), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         eos_token_id=0, bos_token_id=None, pad_token_id=None)  # fmt: skip
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_train_command_trains_logs_checkpoints_and_resumes(tiny_model_dir, tmp_path):
    dataset = tmp_path / "data.jsonl"
    dataset.write_text("".join(json.dumps({"prompt": f"{a}+{a}=", "solution": str(2 * a)}) + "\n" for a in range(8)))
    (tmp_path / "config.json").write_text(json.dumps({"prompts_per_step": 2, "num_generations": 4,
                                                      "micro_batch_size": 4, "max_completion_length": 8}))  # fmt: skip
    common = ["train", "--model", str(tiny_model_dir), "--dataset", str(dataset), "--reward", "format",
              "--reward", "accuracy", "--output-dir", str(tmp_path / "run"), "--config", str(tmp_path / "config.json"),
              "--set", "learning_rate=1e-3", "--set", "sampler_block_size=4"]  # fmt: skip
    assert main([*common, "--set", "max_steps=2", "--set", "save_steps=1"]) == 0
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == [1, 2]
    state = json.loads((tmp_path / "run" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["config"]["micro_batch_size"] == 4 and state["config"]["learning_rate"] == 1e-3
    assert main([*common, "--set", "max_steps=3", "--resume", "latest"]) == 0
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == [1, 2, 3]


def test_train_command_reports_bad_input_in_one_line(tiny_model_dir, tmp_path, capsys):
    dataset = tmp_path / "data.jsonl"
    dataset.write_text('{"prompt": "1+1=", "solution": "2"}\n{"question": "2+2="}\n')
    common = ["train", "--model", str(tiny_model_dir), "--reward", "format", "--output-dir", str(tmp_path)]
    assert main([*common, "--dataset", str(dataset)]) == 2
    assert "data.jsonl:2: each row must be an object with a 'prompt'" in capsys.readouterr().err
    dataset.write_text('{"prompt": "1+1=", "solution": "2"}\n')
    assert main([*common, "--dataset", str(dataset), "--set", "learning_rat=1"]) == 2
    assert "unknown GRPOConfig field" in capsys.readouterr().err
    assert main([*common, "--dataset", str(dataset), "--set", "micro_batch_size=3"]) == 2
    assert "micro_batch_size=3 must divide" in capsys.readouterr().err
    assert main([*common, "--dataset", str(dataset), "--set", "novalue"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main([*common, "--dataset", str(dataset), "--reward", "no_such_reward"]) == 2
    assert "unknown reward 'no_such_reward'" in capsys.readouterr().err
    assert main(["demo", "--temperature", "-1"]) == 2
    assert "temperature" in capsys.readouterr().err
    assert main(["demo", "--grpo-steps", "-1"]) == 2


def test_chat_prompts_go_through_the_chat_template_once(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1fast.trainer import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = ("{% for m in messages %}{{ m['content'] }}={% endfor %}"
                               "{% if add_generation_prompt %}<think>{% endif %}")  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rows = [{"prompt": [{"role": "user", "content": "1+2"}], "solution": "3"}]
    trainer = GRPOTrainer(model, tokenizer, ["accuracy"], rows, GRPOConfig(prompts_per_step=1, num_generations=2,
                          micro_batch_size=2, max_completion_length=4), log_stream=None)  # fmt: skip
    assert trainer._encode_prompt(rows[0]) == tokenizer.encode("1+2=<think>")
    rollout = trainer.generate(rows, seed=0)
    assert rollout.prompt_ids == [tokenizer.encode("1+2=<think>")] * 2


def test_train_command_under_torchrun_on_two_cpu_ranks(tiny_model_dir, tmp_path):
    dataset = tmp_path / "data.jsonl"
    dataset.write_text("".join(json.dumps({"prompt": f"{a}+{a}=", "solution": str(2 * a)}) + "\n" for a in range(8)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "r1fast",
               "train", "--model", str(tiny_model_dir), "--dataset", str(dataset), "--reward", "format",
               "--output-dir", str(tmp_path / "run"), "--set", "prompts_per_step=2", "--set", "num_generations=2",
               "--set", "micro_batch_size=4", "--set", "max_completion_length=6", "--set", "max_steps=2",
               "--set", "sampler_block_size=4"]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == [1, 2]  # rank 0 alone writes
    state = json.loads((tmp_path / "run" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["world_size"] == 2
