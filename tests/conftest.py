"""Test-wide setup: Triton kernels run in the interpreter on CPU-only machines; `gpu` tests skip without CUDA. Shared
fixtures: a tiny local Hugging Face model folder, and `python -m r1fast` in a subprocess."""

import os
import subprocess
import sys

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    # Must be set before triton is imported anywhere.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def seed() -> int:
    """A fresh seed per test run (printed on failure), so every run draws new random inputs."""
    s = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(s)
    return s


@pytest.fixture(scope="session")
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


class CLI:
    """`python -m r1fast <args>` in subprocesses (one thread each: 2-core CI, and the same floats every run)."""

    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, args: list, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Starts the command (text pipes; env: extra environment variables)."""
        command = [sys.executable, "-m", "r1fast", *map(str, args)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, **self.env, **(env or {})})  # fmt: skip
        self.started.append(process)
        return process

    def run(self, args: list, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Runs the command to its end; returns its exit code and output."""
        process = self.start(args, env)
        out, err = process.communicate(timeout=300)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    @staticmethod
    def read_until(process: subprocess.Popen, prefix: str) -> list[str]:
        """The process's stdout lines up to the first that starts with prefix (fewer if the process ends first)."""
        lines: list[str] = []
        while not (lines and lines[-1].startswith(prefix)):
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
        return lines

    def kill_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def cli():
    """A CLI runner whose processes are killed at the end of the test."""
    runner = CLI()
    yield runner
    runner.kill_all()


@pytest.fixture(scope="module")
def module_cli():
    """A CLI runner for module-scoped fixtures."""
    runner = CLI()
    yield runner
    runner.kill_all()
