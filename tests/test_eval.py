"""Evaluation: r1fast.trainer.evaluate on a fixed model equals a direct computation (Hugging Face greedy generate,
the rewards called by hand); GRPOTrainer's eval during training is logged as eval/... and leaves the run unchanged;
`r1fast eval` prints accuracy and format with 95% intervals; the progress bar and the summary table."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch

from r1fast import rewards
from r1fast.cli import main
from r1fast.demo import CharTokenizer, make_policy, problems, solution_text
from r1fast.trainer import GRPOConfig, GRPOTrainer, MetricsLogger, SFTConfig, SFTTrainer, evaluate, read_metrics
from r1fast.trainer.evaluation import confidence_interval
from r1fast.trainer.logging import summary_table

ROWS = problems()[::4]  # 25 problems


@pytest.fixture(scope="module")
def taught_model():
    """The demo's policy after a short cold start: some answers right, some wrong, all in the template."""
    tokenizer = CharTokenizer()
    model = make_policy(tokenizer, seed=0)
    examples = [{"prompt": r["prompt"], "completion": solution_text(r)} for r in problems()]
    config = SFTConfig(rows_per_step=32, max_steps=60, learning_rate=3e-3, lr_scheduler_type="constant",
                       gradient_checkpointing=False, loss_backend="reference")  # fmt: skip
    SFTTrainer(model, tokenizer, examples, config, log_stream=None).train()
    return model.eval()


def test_evaluate_equals_greedy_generate_scored_by_hand(taught_model):
    tokenizer = CharTokenizer()
    config = GRPOConfig(max_completion_length=24, sampler_block_size=8)
    result = evaluate(taught_model, tokenizer, ROWS, ["accuracy", "format"], config)
    texts, lengths = [], []
    with torch.no_grad():
        for row in ROWS:
            ids = torch.tensor([tokenizer.encode(row["prompt"])])
            out = taught_model.generate(ids, max_new_tokens=24, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.eos_token_id)[0, ids.shape[1] :].tolist()  # fmt: skip
            lengths.append(len(out))
            texts.append(tokenizer.decode(out, skip_special_tokens=True))
    assert result.texts == texts
    accuracy = rewards.accuracy_reward(None, texts, solution=[r["solution"] for r in ROWS])
    formats = rewards.format_reward(None, texts)
    m = result.metrics
    assert 0 < m["rewards/accuracy/mean"] < 1, "the fixture should get some answers right and some wrong"
    assert m["rewards/accuracy/mean"] == pytest.approx(sum(accuracy) / len(ROWS))
    assert m["rewards/format/mean"] == pytest.approx(sum(formats) / len(ROWS))
    assert m["reward"] == pytest.approx((sum(accuracy) + sum(formats)) / len(ROWS))
    assert m["completions/mean_length"] == pytest.approx(sum(lengths) / len(ROWS))
    assert m["rewards/accuracy/ci_low"] < m["rewards/accuracy/mean"] < m["rewards/accuracy/ci_high"]


def test_confidence_intervals():
    half = torch.tensor([1.0, 0.0] * 50)
    low, high = confidence_interval(half, 1)  # Wilson, 50 of 100: the textbook [0.404, 0.596]
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    low, high = confidence_interval(torch.ones(20), 1)  # all right: still an interval below 1
    assert 0.8 < low < 0.85 and high == pytest.approx(1.0)
    # several completions per row: the rows are the draws (normal interval of the per-row means); NaN skipped
    values = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, math.nan, 0.5, 0.5])
    per_row = torch.tensor([0.5, 1.0, 0.0, 0.5], dtype=torch.float64)
    low, high = confidence_interval(values, 2)
    assert (low + high) / 2 == pytest.approx(0.5) and high - low == pytest.approx(2 * 1.96 * per_row.std().item() / 2,
                                                                                   rel=1e-3)  # fmt: skip
    assert all(math.isnan(x) for x in confidence_interval(torch.tensor([math.nan, math.nan]), 1))


def test_eval_during_grpo_training_is_logged_and_does_not_change_the_run(tmp_path):
    def run(eval_dataset, out):
        model = make_policy(CharTokenizer(), seed=0)
        config = GRPOConfig(prompts_per_step=4, num_generations=4, micro_batch_size=16, max_completion_length=12,
                            sampler_block_size=4, learning_rate=1e-2, max_steps=3, eval_steps=2, output_dir=str(out),
                            save_steps=0, gradient_checkpointing=False)  # fmt: skip
        GRPOTrainer(model, CharTokenizer(), ["accuracy", "format"], ROWS, config, eval_dataset=eval_dataset,
                    log_stream=None).train()  # fmt: skip
        return model

    evaluated, plain = run(ROWS[:6], tmp_path / "a"), run(None, tmp_path / "b")
    for p, q in zip(evaluated.parameters(), plain.parameters(), strict=True):
        assert torch.equal(p, q)
    records = read_metrics(tmp_path / "a")
    assert [r["step"] for r in records if "eval/rewards/accuracy/mean" in r] == [2, 3]
    assert {"eval/reward", "eval/rewards/format/mean", "eval/completions/mean_length"} <= records[1].keys()
    assert not any(k.startswith("eval/") for r in read_metrics(tmp_path / "b") for k in r)


def test_eval_command_prints_accuracy_and_format_with_intervals(tiny_model_dir, tmp_path, capsys):
    dataset = tmp_path / "data.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:5]))
    args = ["eval", "--model", str(tiny_model_dir), "--dataset", str(dataset), "--set", "max_completion_length=8",
            "--set", "sampler_block_size=4", "--json", str(tmp_path / "m.json")]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "5 rows x 1 completion (greedy)" in out
    assert [line.split()[0] for line in out.splitlines() if "95% CI" in line] == ["accuracy", "format"]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert {"rewards/accuracy/mean", "rewards/format/ci_high", "completions/mean_length"} <= metrics.keys()
    assert main([*args[:4], str(tmp_path / "nope.jsonl")]) == 2
    assert main([*args, "--reward", "language_consistency", "--language", "xx"]) == 2
    assert "xx" in capsys.readouterr().err


def test_progress_bar_and_summary_table():
    stream = io.StringIO()
    logger = MetricsLogger(None, stream, progress_bar=True)
    logger.start(0, 3)
    for step, accuracy in ((1, 0.25), (2, 0.75), (3, 0.5)):
        metrics = {"reward": accuracy + 1, "rewards/accuracy/mean": accuracy, "step_time": 0.5 / step}
        logger.progress(step, metrics)
        logger.log(step, metrics)
    logger.finish()
    text = stream.getvalue()
    assert "3/3" in text and "accuracy=0.5" in text and "step " not in text.split("summary")[0]
    table = summary_table(logger.records)
    assert table in text and table.splitlines()[0] == "summary (steps 1-3)"
    accuracy_row = next(line for line in table.splitlines() if line.startswith("accuracy"))
    assert accuracy_row.split()[1:4] == ["0.25", "0.5", "0.75"] and "step 2" in accuracy_row
    time_row = next(line for line in table.splitlines() if line.startswith("step time"))
    assert time_row.split()[5] == "0.1667" and "(min, step 3)" in time_row
    assert GRPOConfig(disable_tqdm=None).progress_bar(stream) is False  # not a terminal
    assert GRPOConfig(disable_tqdm=False).progress_bar(stream) is True
