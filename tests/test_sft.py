"""SFTTrainer: the fused log-probs' gradient against autograd through the float64 reference, the loss and gradients
against TRL's own SFTTrainer on the same rows, padding-free packing against padded rows, and a short run through the
shared loop (eval/loss, TensorBoard event files, resume)."""

from __future__ import annotations

import copy

import pytest
import torch

import r1fast
from r1fast import reference
from r1fast.demo import CharTokenizer, make_policy, problems, solution_text
from r1fast.trainer import DatasetRowError, SFTConfig, SFTTrainer, read_metrics

ROWS = [{"prompt": r["prompt"], "completion": solution_text(r)} for r in problems()[:24]]


@pytest.mark.parametrize("backend", ["triton", "reference"])
@pytest.mark.parametrize("transform", [{}, {"logit_softcap": 3.0, "logit_scale": 0.5}])
def test_fused_linear_logprobs_gradient_matches_autograd_through_the_reference(backend, transform, seed):
    n, h, v = 13, 16, 70
    hidden = torch.randn(n, h, dtype=torch.float32, requires_grad=True)
    weight = (0.3 * torch.randn(v, h)).requires_grad_()
    bias = (0.1 * torch.randn(v)).requires_grad_()
    ids = torch.randint(0, v, (n,))
    upstream = torch.randn(n)
    logp = r1fast.fused_linear_logprobs(hidden, weight, ids, bias=bias, temperature=0.8, backend=backend,
                                        chunk_size=5, **transform)  # fmt: skip
    (logp * upstream).sum().backward()
    x64 = [t.detach().double().requires_grad_() for t in (hidden, weight, bias)]
    want = reference.selective_log_softmax(x64[0] @ x64[1].t() + x64[2], ids, 0.8, **transform)
    (want * upstream.double()).sum().backward()
    torch.testing.assert_close(logp.double(), want.detach(), rtol=1e-5, atol=1e-5)
    for got, ref in zip((hidden, weight, bias), x64, strict=True):
        torch.testing.assert_close(got.grad.double(), ref.grad, rtol=1e-4, atol=1e-5)


def _trainer(model, config, rows=ROWS, **kwargs):
    return SFTTrainer(model, CharTokenizer(), rows, config, log_stream=None, **kwargs)


def _loss_and_grads(model, config, rows):
    trainer = _trainer(model, config, rows)
    model.zero_grad(set_to_none=True)
    loss = trainer.loss_and_backward(trainer.micro_batches(trainer.train_dataset))
    return loss, {name: p.grad.clone() for name, p in model.named_parameters()}


def test_padding_free_packing_equals_padded_rows_and_any_micro_batch_size():
    model = make_policy(CharTokenizer(), seed=0)
    base = dict(gradient_checkpointing=False, loss_backend="reference")
    loss, grads = _loss_and_grads(model, SFTConfig(padding_free=False, micro_batch_tokens=10_000, **base), ROWS[:6])
    for packing in (dict(padding_free=True, micro_batch_tokens=10_000), dict(padding_free=True, micro_batch_tokens=60),
                    dict(padding_free=False, micro_batch_tokens=30)):  # fmt: skip
        trainer = _trainer(model, SFTConfig(**packing, **base), ROWS[:6])
        batches = trainer.micro_batches(trainer.train_dataset)
        if packing["padding_free"]:  # one row per micro-batch, positions restarting at every sequence
            assert all(b["input_ids"].shape[0] == 1 for b in batches)
            assert int((batches[0]["position_ids"] == 0).sum()) >= 2
        assert (len(batches) == 1) == (packing["micro_batch_tokens"] == 10_000)
        other_loss, other = _loss_and_grads(model, SFTConfig(**packing, **base), ROWS[:6])
        assert other_loss == pytest.approx(loss, rel=1e-5)
        for name in grads:
            torch.testing.assert_close(other[name], grads[name], rtol=1e-4, atol=1e-6)


def test_sft_loss_and_gradients_match_trls_sfttrainer(tiny_model_dir, tmp_path):
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [{"prompt": r["prompt"], "completion": solution_text(r)} for r in problems()[3:9]]
    ours = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    theirs = copy.deepcopy(ours)
    args = trl.SFTConfig(output_dir=str(tmp_path / "trl"), report_to="none", per_device_train_batch_size=len(rows),
                         gradient_checkpointing=False, use_cpu=True, max_length=64)  # fmt: skip
    trl_trainer = trl.SFTTrainer(model=theirs, args=args, train_dataset=datasets.Dataset.from_list(rows),
                                 processing_class=tokenizer)  # fmt: skip
    batch = trl_trainer.data_collator([trl_trainer.train_dataset[i] for i in range(len(rows))])
    theirs.train()
    trl_loss = trl_trainer.compute_loss(theirs, batch)
    trl_loss.backward()

    for backend in ("reference", "triton"):
        config = SFTConfig(gradient_checkpointing=False, max_length=64, loss_backend=backend)
        trainer = SFTTrainer(ours, tokenizer, rows, config, log_stream=None)
        # the same tokens, and the same trained positions (TRL's labels != -100, shifted by one)
        for example, ids, labels in zip(trainer.train_dataset, batch["input_ids"], batch["labels"], strict=True):
            assert example.ids == ids[: len(example.ids)].tolist()
            assert example.label_mask == (labels[: len(example.ids)] != -100).int().tolist()
        ours.zero_grad(set_to_none=True)
        ours.train()
        loss = trainer.loss_and_backward(trainer.micro_batches(trainer.train_dataset))
        assert loss == pytest.approx(trl_loss.item(), rel=1e-5)
        their_grads = dict(theirs.named_parameters())
        for name, p in ours.named_parameters():
            torch.testing.assert_close(p.grad, their_grads[name].grad, rtol=1e-4, atol=1e-6, msg=name)


def test_sft_run_logs_eval_loss_to_jsonl_and_tensorboard_and_resumes_bit_identically(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def run(steps, out, resume=None):
        model = make_policy(CharTokenizer(), seed=0)
        config = SFTConfig(rows_per_step=8, max_steps=steps, learning_rate=3e-3, gradient_checkpointing=False,
                           lr_scheduler_type="constant", eval_steps=2, output_dir=str(out), save_steps=2,
                           report_to="tensorboard", loss_backend="reference")  # fmt: skip
        trainer = _trainer(model, config, eval_dataset=ROWS[:8])
        trainer.train(resume_from=resume)
        return trainer

    straight = run(4, tmp_path / "a")
    run(2, tmp_path / "b")
    resumed = run(4, tmp_path / "b", resume="latest")
    for (name, p), q in zip(straight.model.named_parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q), name
    records = read_metrics(tmp_path / "a")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert [r["step"] for r in records if "eval/loss" in r] == [2, 4]
    assert records[-1]["eval/loss"] < records[1]["eval/loss"] and records[-1]["loss"] < records[0]["loss"]
    trained = sum(len(e.ids) for step in range(4) for e in straight.rows_of_batch(step, 8))
    assert records[-1]["num_tokens"] == resumed.num_tokens == trained
    untimed = lambda rs: [{k: v for k, v in r.items() if k != "step_time"} for r in rs]  # noqa: E731
    assert untimed(read_metrics(tmp_path / "b")) == untimed(records)
    events = EventAccumulator(str(tmp_path / "a" / "runs")).Reload()
    assert {"train/loss", "train/grad_norm", "eval/loss"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("eval/loss")] == [2, 4]
    # TRL's logging: reports (TensorBoard, console) every logging_steps (10) steps, and at evaluations, with the
    # mean of the steps since the last report; metrics.jsonl has every step.
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4]
    assert events.Scalars("train/loss")[0].value == pytest.approx((records[0]["loss"] + records[1]["loss"]) / 2)


def test_sft_rows_are_checked_before_step_one():
    model = make_policy(CharTokenizer(), seed=0)
    bad = [*ROWS[:3], {"prompt": "1+1="}, {"prompt": "1+1=", "completion": ""}]
    with pytest.raises(DatasetRowError, match=r"train_dataset\[3\].*'completion'.*and 1 more bad row"):
        _trainer(model, SFTConfig(), bad)
    with pytest.raises(DatasetRowError, match=r"eval_dataset\[0\]: no completion token is left"):
        _trainer(model, SFTConfig(max_length=8), [{"prompt": "1+1=", "completion": "2"}],
                 eval_dataset=[{"prompt": "1234+5678=", "completion": "6912"}])
    with pytest.raises(ValueError, match="rows_per_step must be an int >= 1"):
        SFTConfig(rows_per_step=0)
    with pytest.raises(ValueError, match="report_to: unknown"):
        SFTConfig(report_to="mlflow")


def test_r1_template_puts_the_prompt_in_the_r1_zero_instruction():
    from r1fast.trainer.config import R1_SYSTEM_PROMPT, apply_template

    text = apply_template("r1", "What is 2+3?")
    assert text.startswith(R1_SYSTEM_PROMPT) and text.endswith("User: What is 2+3?. Assistant:")
    assert "<think> reasoning process here </think> <answer> answer here </answer>" in text
    chat = apply_template("r1", [{"role": "user", "content": "What is 2+3?"}])
    assert chat == [{"role": "system", "content": R1_SYSTEM_PROMPT}, {"role": "user", "content": "What is 2+3?"}]
    own = [{"role": "system", "content": "mine"}, {"role": "user", "content": "hi"}]
    assert apply_template("r1", own) == own and apply_template("Q: {prompt}", "x") == "Q: x"
