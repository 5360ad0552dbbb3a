"""Checkpoints survive crashes: a write killed at any stage leaves the previous checkpoint or the new one, never a mix;
damaged files are found by the manifest and skipped with a warning; `train --resume latest` after SIGKILLs at every
stage of a write (and at random moments) ends bit-identical to a run never interrupted; from_pretrained loads one."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import time

import pytest
import torch
from safetensors.torch import load_file

from r1fast.demo import CharTokenizer, make_policy, problems
from r1fast.trainer import CheckpointError, CheckpointWarning, GRPOConfig, GRPOTrainer, read_metrics, verify_checkpoint
from r1fast.trainer.checkpoint import (
    SAVE_STAGES,
    finish_interrupted_saves,
    latest_checkpoint,
    rotate_checkpoints,
    save_checkpoint,
)


def short(prompts, completions, completion_ids, **_):
    return [1.0 if len(ids) <= 6 else 0.0 for ids in completion_ids]


def trainer(output_dir, **config) -> GRPOTrainer:
    tokenizer = CharTokenizer()
    config = GRPOConfig(**{**dict(prompts_per_step=2, num_generations=4, micro_batch_size=8, max_completion_length=12,
                                  sampler_block_size=4, learning_rate=1e-2, save_steps=1, output_dir=str(output_dir)),
                           **config})  # fmt: skip
    return GRPOTrainer(make_policy(tokenizer, seed=0), tokenizer, [short], problems()[:16], config, log_stream=None)


def damage(path, how: str, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(data[: rng.randrange(len(data))])
    elif how == "flip":
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
    else:
        path.unlink()


DAMAGES = [("model.safetensors", "truncate"), ("optimizer.safetensors", "flip"), ("model.safetensors", "flip"),
           ("trainer_state.json", "flip"), ("manifest.json", "flip"), ("manifest.json", "remove"),
           ("config.json", "remove"), ("generation_config.json", "truncate")]  # fmt: skip


def test_a_damaged_checkpoint_is_named_in_a_warning_and_the_previous_one_is_used(tmp_path, seed):
    rng = random.Random(seed)
    tr = trainer(tmp_path / "run", max_steps=3)
    tr.train()
    newest = tmp_path / "run" / "checkpoint-3"
    shutil.copytree(newest, tmp_path / "pristine")
    for file, how in DAMAGES:
        shutil.rmtree(newest)
        shutil.copytree(tmp_path / "pristine", newest)
        damage(newest / file, how, rng)
        with pytest.warns(CheckpointWarning, match=f"skipping {newest}"):
            assert latest_checkpoint(tmp_path / "run") == tmp_path / "run" / "checkpoint-2", (file, how)
        with pytest.raises(CheckpointError, match="checkpoint-3"):
            verify_checkpoint(newest)
    resumed = trainer(tmp_path / "run", max_steps=3)
    with pytest.warns(CheckpointWarning):
        resumed.train(resume_from="latest")  # resumes from 2 and writes checkpoint-3 again
    assert verify_checkpoint(newest)["step"] == 3
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == [1, 2, 3]
    for a, b in zip(tr.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def killed_write(path, model, optimizer, stage: str) -> None:
    """save_checkpoint in a forked child that the testing hook SIGKILLs at `stage`."""
    os.environ["R1FAST_TEST_KILL_AT"] = f"{path.name}:{stage}"
    try:
        pid = os.fork()
        if pid == 0:
            try:
                save_checkpoint(path, model, optimizer, {"step": 9}, step=9, config_hash="new")
            finally:
                os._exit(0)
    finally:
        del os.environ["R1FAST_TEST_KILL_AT"]
    deadline = time.monotonic() + 60
    while (status := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert status[0] == pid and os.WIFSIGNALED(status[1]) and os.WTERMSIG(status[1]) == signal.SIGKILL


@pytest.mark.parametrize("replacing", [False, True], ids=["first-write", "rewrite"])
def test_a_write_killed_at_any_stage_leaves_the_old_checkpoint_or_the_new_one(tmp_path, replacing):
    model = make_policy(CharTokenizer(), seed=0)
    optimizer = torch.optim.AdamW(model.parameters())
    path = tmp_path / "checkpoint-9"
    for stage in SAVE_STAGES:
        if path.exists():
            shutil.rmtree(path)
        if replacing:
            save_checkpoint(path, model, None, {"step": 9}, step=9, config_hash="old")
        if stage == "retired" and not replacing:
            continue  # only a replacing write retires a folder
        killed_write(path, model, optimizer, stage)
        finish_interrupted_saves(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == (["checkpoint-9"] if path.exists() else [])
        # Once the manifest is written the new checkpoint is complete: it wins, unless the old one still holds the
        # name (a rewrite killed before the old one was moved aside).
        new_wins = stage in ("retired", "renamed") or (stage == "manifest" and not replacing)
        if new_wins:
            assert verify_checkpoint(path)["config_hash"] == "new" and (path / "optimizer.safetensors").exists()
        elif replacing:  # the old one, untouched
            assert verify_checkpoint(path)["config_hash"] == "old"
        else:
            assert not path.exists(), stage


def test_from_pretrained_loads_a_checkpoint_of_a_tied_model(tmp_path):
    from transformers import AutoModelForCausalLM

    tr = trainer(tmp_path, max_steps=2)
    tr.train()
    assert tr.model.config.tie_word_embeddings
    for folder in ("checkpoint-2", "final"):
        loaded = AutoModelForCausalLM.from_pretrained(tmp_path / folder)
        assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
        for (name, a), b in zip(tr.model.state_dict().items(), loaded.state_dict().values(), strict=True):
            assert torch.equal(a, b), name
    assert not (tmp_path / "final" / "optimizer.safetensors").exists()


def test_save_total_limit_keeps_the_newest_and_spares_later_steps(tmp_path):
    tr = trainer(tmp_path, max_steps=5, save_total_limit=2)
    tr.train()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-5"]
    # A run resumed from an older step: the later checkpoints it will rewrite are not counted or removed.
    assert rotate_checkpoints(tmp_path, keep=1, newest_step=4) == []
    assert rotate_checkpoints(tmp_path, keep=1, newest_step=5) == [tmp_path / "checkpoint-4"]


def test_save_every_minutes_saves_when_due_and_zero_turns_it_off(tmp_path):
    trainer(tmp_path / "due", max_steps=3, save_steps=0, save_every_minutes=1e-9).train()  # due after every step
    assert sorted(p.name for p in (tmp_path / "due").glob("checkpoint-*")) == [f"checkpoint-{i}" for i in (1, 2, 3)]
    trainer(tmp_path / "off", max_steps=3, save_steps=0, save_every_minutes=0).train()  # the end only
    assert sorted(p.name for p in (tmp_path / "off").glob("checkpoint-*")) == ["checkpoint-3"]


# -- SIGKILL through the CLI ---------------------------------------------------------------------------------------

ROWS = [{"prompt": f"{a}+{a}=", "solution": str(2 * a)} for a in range(8)]
STEPS = 6


@pytest.fixture(scope="module")
def run_args(tiny_model_dir, tmp_path_factory):
    """The arguments of the run every kill test repeats, without --output-dir (a learnable reward: weights move)."""
    data = tmp_path_factory.mktemp("data") / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return ["train", "--model", tiny_model_dir, "--dataset", data, "--reward", "format", "--reward", "length",
            "--set", "prompts_per_step=2", "--set", "num_generations=4", "--set", "micro_batch_size=8",
            "--set", "max_completion_length=8", "--set", "sampler_block_size=4", "--set", "learning_rate=0.01",
            "--set", f"max_steps={STEPS}", "--set", "save_steps=1", "--set", "logging_steps=1"]  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(run_args, tmp_path_factory, module_cli):
    out = tmp_path_factory.mktemp("uninterrupted")
    result = module_cli.run([*run_args, "--output-dir", out])
    assert result.returncode == 0, result.stderr
    return out


def assert_same_run(got, want) -> None:
    """Bit-identical weights and optimizer state at the end, every step's metrics once and equal, nothing left over."""
    assert [m["step"] for m in read_metrics(got)] == list(range(1, STEPS + 1))
    for a, b in zip(read_metrics(got), read_metrics(want), strict=True):
        for key in ("reward", "loss", "grad_norm", "completions/mean_length", "learning_rate"):
            assert a[key] == b[key], (a["step"], key)
    for file in (f"checkpoint-{STEPS}/model.safetensors", f"checkpoint-{STEPS}/optimizer.safetensors",
                 "final/model.safetensors"):  # fmt: skip
        a, b = load_file(got / file), load_file(want / file)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), file
    assert not [p.name for p in got.iterdir() if p.suffix in (".tmp", ".old")]


def resumed_step(out: str) -> int:
    """The step a run's output says it resumed from (0: it started afresh)."""
    found = re.search(r"^resumed from .*checkpoint-(\d+) at step (\d+)$", out, re.M)
    assert found or "no checkpoint to resume from" in out, out
    return int(found[2]) if found else 0


def test_sigkill_at_every_stage_of_checkpoint_writes_then_resume_ends_bit_identical(run_args, uninterrupted,
                                                                                       tmp_path, cli):  # fmt: skip
    out = tmp_path / "run"
    args = [*run_args, "--output-dir", out]

    def killed_at(kill_at: str, resume: bool = True) -> str:
        result = cli.run([*args, *(["--resume", "latest"] if resume else [])], env={"R1FAST_TEST_KILL_AT": kill_at})
        assert result.returncode == -signal.SIGKILL, result.stderr
        assert "Traceback" not in result.stderr
        return result.stdout + result.stderr

    def flip_a_byte(file) -> None:
        damage(file, "flip", random.Random())

    killed_at("checkpoint-2:model", resume=False)  # the first write of checkpoint-2 half done
    assert resumed_step(killed_at("checkpoint-3:manifest")) == 1  # checkpoint-3 complete but not in place...
    log = killed_at("checkpoint-4:started")
    assert f"completed {out / 'checkpoint-3'}" in log and resumed_step(log) == 3  # ...so it is put in place
    assert resumed_step(killed_at("checkpoint-4:optimizer")) == 3
    assert resumed_step(killed_at("checkpoint-4:files")) == 3
    assert resumed_step(killed_at("checkpoint-4:renamed")) == 3
    flip_a_byte(out / "checkpoint-4" / "optimizer.safetensors")
    log = killed_at("checkpoint-4:model")  # rewriting the damaged checkpoint-4
    assert "warning: skipping" in log and "checkpoint-4: optimizer.safetensors does not match" in log
    assert resumed_step(log) == 3
    log = killed_at("checkpoint-4:retired")  # the damaged one moved aside, the new one not yet in place
    assert "warning: skipping" in log and resumed_step(log) == 3
    log = killed_at("checkpoint-5:renamed")
    assert "warning" not in log and resumed_step(log) == 4
    (out / "checkpoint-5" / "model.safetensors").write_bytes(b"")  # truncated to nothing
    result = cli.run([*args, "--resume", "latest"])
    assert result.returncode == 0 and "checkpoint-5: model.safetensors has 0 bytes" in result.stderr
    assert resumed_step(result.stdout) == 4
    assert_same_run(out, uninterrupted)


def test_sigkill_at_random_moments_then_resume_ends_bit_identical(run_args, uninterrupted, tmp_path, cli, seed):
    rng = random.Random(seed)
    out = tmp_path / "run"
    args = [*run_args, "--output-dir", out]
    last_logged, resume = None, []
    for _ in range(4):
        # Saves made slow (7 pauses of 0.1 s), so that most random moments after the first step fall inside one.
        process = cli.start([*args, *resume], env={"R1FAST_TEST_SLOW_SAVE": "0.1"})
        lines = cli.read_until(process, "step")
        if last_logged is not None:  # the previous kill lost at most the step whose checkpoint it interrupted
            assert resumed_step("".join(lines)) in (last_logged - 1, last_logged)
        time.sleep(rng.uniform(0.0, 0.8))
        process.kill()
        lines += process.communicate()[0].splitlines(keepends=True)
        if process.returncode == 0:
            break  # the run ended before the kill
        logged = [int(line.split()[1]) for line in lines if line.startswith("step ")]
        last_logged, resume = (logged[-1] if logged else 0), ["--resume", "latest"]
    result = cli.run([*args, "--resume", "latest"])
    assert result.returncode == 0, result.stderr
    assert_same_run(out, uninterrupted)
