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


def test_demo_command_runs_sft_then_grpo_and_writes_metrics_checkpoints_and_plots(tmp_path):
    command = [sys.executable, "-m", "r1fast", "demo", "--sft-steps", "20", "--grpo-steps", "3", "--logging-steps",
               "1", "--eval-steps", "2", "--output-dir", str(tmp_path)]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "cold-start SFT: 20 steps" in out.stdout and "after_grpo" in out.stdout
    assert [m["step"] for m in read_metrics(tmp_path / "sft")] == list(range(1, 21))
    grpo = read_metrics(tmp_path / "grpo")
    assert [m["step"] for m in grpo] == [1, 2, 3]
    assert [m["step"] for m in grpo if "eval/rewards/accuracy/mean" in m] == [2, 3]
    assert (tmp_path / "grpo" / "checkpoint-3" / "model.safetensors").is_file()
    assert (tmp_path / "sft" / "final" / "model.safetensors").is_file()
    assert (tmp_path / "sft" / "plots" / "loss.png").stat().st_size > 1000
    assert (tmp_path / "grpo" / "plots" / "reward.png").stat().st_size > 1000


def test_version_usage_and_help_list_every_config_key(capsys):
    import dataclasses

    from r1fast import __version__
    from r1fast.trainer import GRPOConfig, SFTConfig
    from r1fast.trainer.config import FIELD_HELP

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"r1fast {__version__}"
    for command, config in (("train", GRPOConfig), ("sft", SFTConfig)):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert out.startswith(f"usage: r1fast {command} ")
        for f in dataclasses.fields(config):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            assert f.name in FIELD_HELP, f"{f.name} has no meaning in FIELD_HELP"
            assert f"  {f.name} = {json.dumps(default)}: {FIELD_HELP[f.name]}" in out
    for command in ("eval", "plot", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert capsys.readouterr().out.startswith(f"usage: r1fast {command} ")


def test_sft_command_trains_on_prompt_completion_rows_evaluates_and_plots(tiny_model_dir, tmp_path, capsys):
    rows = [{"prompt": f"{a}+{a}=", "completion": f"<think>\n{a}+{a}\n</think>\n<answer>\n{2 * a}\n</answer>"}
            for a in range(8)]  # fmt: skip
    data, evals = write_rows(tmp_path / "sft.jsonl", rows), write_rows(tmp_path / "eval.jsonl", rows[:3])
    args = ["sft", "--model", tiny_model_dir, "--dataset", data, "--eval-dataset", evals, "--output-dir",
            tmp_path / "run", "--set", "rows_per_step=4", "--set", "max_steps=3", "--set", "eval_steps=2",
            "--set", "learning_rate=1e-2", "--set", "gradient_checkpointing=false"]  # fmt: skip
    assert main(list(map(str, args))) == 0
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2, 3] and [r["step"] for r in records if "eval/loss" in r] == [2, 3]
    assert records[-1]["loss"] < records[0]["loss"]
    assert (tmp_path / "run" / "final" / "config.json").is_file()
    assert (tmp_path / "run" / "plots" / "loss.png").is_file()
    out = capsys.readouterr().out
    assert "summary (steps 1-3)" in out
    write_rows(tmp_path / "eval.jsonl", [rows[0], {"prompt": "1+1="}])
    assert main(list(map(str, [*args, "--overwrite"]))) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'eval.jsonl'}:2: each row needs 'prompt' and 'completion' " \
        "(or 'messages'), got columns ['prompt']\n"


def test_train_command_evaluates_and_scores_language_consistency_in_the_given_language(tiny_model_dir, tmp_path,
                                                                                      monkeypatch):  # fmt: skip
    from r1fast import rewards

    languages = []
    real = rewards.get("language_consistency")

    def spy(prompts, completions, **columns):
        languages.extend(columns["language"])
        return real(prompts, completions, **columns)

    monkeypatch.setitem(rewards._REGISTRY, "language_consistency", spy)
    data, evals = write_rows(tmp_path / "data.jsonl", ROWS), write_rows(tmp_path / "eval.jsonl", ROWS[:2])
    args = ["train", "--model", tiny_model_dir, "--dataset", data, "--eval-dataset", evals, "--reward", "accuracy",
            "--reward", "language_consistency", "--language", "zh", "--output-dir", tmp_path / "run", *SMALL,
            "--set", "max_steps=2", "--set", "eval_steps=1", "--no-plots"]  # fmt: skip
    assert main(list(map(str, args))) == 0
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records if "eval/rewards/language_consistency/mean" in r] == [1, 2]
    assert set(languages) == {"zh"} and len(languages) == 2 * 2 * 2 + 2 * 2  # 2 steps of 2 x 2, 2 evals of 2 rows
    assert not (tmp_path / "run" / "plots").exists()


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


# -- a run never loses work: one-line errors before step 1, clean stops, resume -----------------------------------

ROWS = [{"prompt": f"{a}+{a}=", "solution": str(2 * a)} for a in range(8)]
SMALL = ["--set", "prompts_per_step=2", "--set", "num_generations=2", "--set", "micro_batch_size=4",
         "--set", "max_completion_length=8", "--set", "sampler_block_size=4",
         "--set", "logging_steps=1"]  # a console line every step, which the signal tests wait for  # fmt: skip


def write_rows(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def with_row(line: int, row) -> list:
    """ROWS with `row` as line `line` (1-based) of the file."""
    return [*ROWS[: line - 1], row, *ROWS[line - 1 :]]


def model_with_vocab(tiny_model_dir, folder, vocab_size: int):
    """The tiny model's tokenizer beside a model with a smaller vocabulary (a tokenizer/model mismatch)."""
    import shutil

    from transformers import AutoConfig, Qwen2ForCausalLM

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.vocab_size = vocab_size
    Qwen2ForCausalLM(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, folder / name)
    return folder


# (what is wrong, dataset rows, extra arguments, what the one line says)
BAD_INPUTS = [
    ("empty prompt", with_row(5, {"prompt": "", "solution": "0"}), [], "data.jsonl:5: the prompt is empty"),
    ("prompt is a number", with_row(3, {"prompt": 7}), [],
     "data.jsonl:3: a prompt must be a string or a list of chat messages, got int"),
    ("prompt too long", with_row(8, {"prompt": "1+" * 40 + "1="}), ["--set", "max_prompt_length=null"],
     "data.jsonl:8: a prompt of 82 tokens does not fit max_model_len=64 with max_completion_length=8; set "
     "max_prompt_length <= 56"),
    ("no gold column", [{"prompt": "1+1="}] * 3, ["--reward", "accuracy"],
     "data.jsonl:1: reward 'accuracy' cannot score this row: accuracy needs the gold answers in a dataset column"),
    ("gold column missing late", with_row(6, {"prompt": "1+1="}), ["--reward", "accuracy"],
     "data.jsonl:6: reward 'accuracy' cannot score this row"),
    ("chat without a chat template", with_row(2, {"prompt": [{"role": "user", "content": "1+1"}]}), [],
     "data.jsonl:2: the prompt is a chat (a list of messages) but the tokenizer has no chat template"),
    ("not JSON", with_row(4, "{oops"), [], "data.jsonl:4: not JSON"),
    ("not an object", with_row(2, "[1, 2]"), [], "data.jsonl:2: each row must be an object with a 'prompt' column"),
    ("several bad rows", [*ROWS, {"prompt": ""}, {"prompt": ""}], [], "data.jsonl:9: the prompt is empty (and 1 "
     "more bad row: line 10)"),
    ("one generation", ROWS, ["--set", "num_generations=1"], "num_generations must be an int >= 2, got 1"),
    ("default completion length", ROWS, ["--set", "max_completion_length=256"],
     "max_completion_length=256 leaves no room for a prompt in the model's context of 64 tokens"),
    ("greedy", ROWS, ["--set", "temperature=0"], "temperature must be > 0"),
    ("reward weights", ROWS, ["--reward", "accuracy", "--set", "reward_weights=[1.0]"],
     "reward_weights has 1 entries for 2 rewards"),
    ("indivisible batch", ROWS, ["--set", "micro_batch_size=3"], "micro_batch_size=3 must divide"),
    ("unknown key", ROWS, ["--set", "learning_rat=1"], "unknown GRPOConfig field"),
    ("unknown reward", ROWS, ["--reward", "no_such_reward"], "unknown reward 'no_such_reward'"),
    ("bad device", ROWS, ["--device", "nonsense"], "--device 'nonsense' is not a device"),
    ("absent GPU", ROWS, ["--device", "cuda:99"], "--device cuda:99: "),
    ("no such checkpoint", ROWS, ["--resume", "nowhere/checkpoint-3"], "nowhere/checkpoint-3: no such checkpoint"),
    ("config file missing", ROWS, ["--config", "nowhere.json"], "No such file or directory: 'nowhere.json'"),
]


@pytest.mark.parametrize("rows, extra, message", [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_every_bad_input_is_one_line_and_exit_code_2_before_step_1(tiny_model_dir, tmp_path, capsys, rows, extra,
                                                                    message):  # fmt: skip
    data = write_rows(tmp_path / "data.jsonl", rows)
    args = ["train", "--model", tiny_model_dir, "--dataset", data, "--reward", "format", "--output-dir",
            tmp_path / "run", *SMALL, *extra]  # fmt: skip
    assert main(list(map(str, args))) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert "step" not in out and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_model_and_output_folder_problems_are_one_line_at_once(tiny_model_dir, tmp_path, capsys):
    import time

    data = write_rows(tmp_path / "data.jsonl", ROWS)
    (tmp_path / "empty").mkdir()
    (tmp_path / "config-only").mkdir()
    (tmp_path / "config-only" / "config.json").write_text("{}")
    (tmp_path / "a-file").write_text("")
    cases = [
        (tmp_path / "missing", tmp_path / "run", "no such folder (a local Hugging Face model folder is expected)"),
        (tmp_path / "empty", tmp_path / "run", "no config.json, so not a Hugging Face model folder"),
        (tmp_path / "config-only", tmp_path / "run", "no weights (model.safetensors"),
        (model_with_vocab(tiny_model_dir, tmp_path / "small-vocab", 10), tmp_path / "run",
         "data.jsonl:1: the prompt has token id 16, outside the model's vocabulary of 10"),
        (tiny_model_dir, tmp_path / "a-file", "is a file, not a folder"),
    ]  # fmt: skip
    for model, output_dir, message in cases:
        start = time.perf_counter()
        args = ["train", "--model", model, "--dataset", data, "--reward", "format", "--output-dir", output_dir, *SMALL]
        assert main(list(map(str, args))) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
        assert time.perf_counter() - start < 5  # no hub look-up, no retries


def test_used_output_folder_changed_config_and_finished_run_each_say_so(tiny_model_dir, tmp_path, capsys):
    data = write_rows(tmp_path / "data.jsonl", ROWS)
    common = ["train", "--model", tiny_model_dir, "--dataset", data, "--reward", "format", "--output-dir",
              tmp_path / "run", *SMALL, "--set", "max_steps=2"]  # fmt: skip
    run = lambda *extra: main(list(map(str, [*common, *extra])))  # noqa: E731
    assert run() == 0
    capsys.readouterr()
    assert run() == 2
    assert "already holds a run (checkpoint-2, final, metrics.jsonl): continue it with --resume latest" in (
        capsys.readouterr().err)
    assert run("--resume", "latest", "--set", "learning_rate=0.5") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was trained with another config (learning_rate 1e-06 -> 0.5)" in err
    assert run("--resume", "latest") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == ("the run is finished: checkpoint-2 is at step 2 and max_steps=2 (raise max_steps to train "
                       "further)")  # fmt: skip
    (tmp_path / "run" / "checkpoint-2" / "model.safetensors").write_bytes(b"\0" * 10)
    assert run("--resume", tmp_path / "run" / "checkpoint-2") == 2
    assert "checkpoint-2: model.safetensors has 10 bytes, the manifest says" in capsys.readouterr().err
    assert run("--overwrite", "--set", "max_steps=1") == 0  # replaces the run: metrics start again at step 1
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == [1]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint-1", "final", "metrics.jsonl", "plots"]


def test_a_bad_row_late_in_the_file_stops_the_command_before_step_1(tiny_model_dir, tmp_path, cli):
    # The run: an empty prompt at line 138 of 201 used to train 13 steps and then raise.
    rows = [{"prompt": f"{a % 10}+{a % 7}=", "solution": str(a % 10 + a % 7)} for a in range(201)]
    rows[137]["prompt"] = ""
    data = write_rows(tmp_path / "data.jsonl", rows)
    process = cli.start(["train", "--model", tiny_model_dir, "--dataset", data, "--reward", "accuracy",
                         "--output-dir", tmp_path / "run", *SMALL])  # fmt: skip
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2
    assert err == f"error: {data}:138: the prompt is empty\n" and out == ""
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_sigint_finishes_the_step_saves_and_exits_0_then_resume_continues(tiny_model_dir, tmp_path, cli):
    import signal

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1fast.trainer import verify_checkpoint

    data = write_rows(tmp_path / "data.jsonl", ROWS)
    common = ["train", "--model", tiny_model_dir, "--dataset", data, "--reward", "length", "--output-dir",
              tmp_path / "run", *SMALL, "--set", "learning_rate=0.01"]  # fmt: skip
    process = cli.start([*common, "--set", "max_steps=500"])
    assert cli.read_until(process, "step     2")[-1].startswith("step     2")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0 and "Traceback" not in err, err
    step = read_metrics(tmp_path / "run")[-1]["step"]
    assert step >= 2 and [m["step"] for m in read_metrics(tmp_path / "run")] == list(range(1, step + 1))
    where = tmp_path / "run" / f"checkpoint-{step}"
    assert out.splitlines()[-1] == f"stopped by SIGINT after step {step}: saved {where} (continue with --resume latest)"
    assert verify_checkpoint(where)["step"] == step

    process = cli.start([*common, "--set", f"max_steps={step + 1}", "--resume", "latest"])
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert out.splitlines()[0] == f"resumed from {where} at step {step}"
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == list(range(1, step + 2))  # no step twice
    # Both the last checkpoint and the final export load with from_pretrained, tokenizer included.
    checkpoint, final = (AutoModelForCausalLM.from_pretrained(tmp_path / "run" / name)
                         for name in (f"checkpoint-{step + 1}", "final"))  # fmt: skip
    for a, b in zip(checkpoint.state_dict().values(), final.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(final.lm_head.weight, AutoModelForCausalLM.from_pretrained(tiny_model_dir).lm_head.weight)
    assert AutoTokenizer.from_pretrained(tmp_path / "run" / "final").encode("1+1=") == [6, 15, 6, 16]


def test_a_second_sigint_stops_at_once_and_leaves_only_complete_checkpoints(tiny_model_dir, tmp_path, cli):
    import signal
    import time

    from r1fast.trainer import latest_checkpoint, verify_checkpoint

    data = write_rows(tmp_path / "data.jsonl", ROWS)
    process = cli.start(["train", "--model", tiny_model_dir, "--dataset", data, "--reward", "format",
                         "--output-dir", tmp_path / "run", *SMALL, "--set", "max_steps=500"],
                        env={"R1FAST_TEST_SLOW_SAVE": "0.5"})  # the stop's checkpoint takes 3.5 s to write
    assert cli.read_until(process, "step     1")[-1].startswith("step     1")
    process.send_signal(signal.SIGINT)
    time.sleep(1.0)  # inside the checkpoint write
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert err == "interrupted: stopped at once, without a checkpoint of the current step\n"
    for path in (tmp_path / "run").glob("checkpoint-*"):
        assert path.name.endswith(".tmp") or verify_checkpoint(path)
    assert latest_checkpoint(tmp_path / "run") is None or verify_checkpoint(latest_checkpoint(tmp_path / "run"))
