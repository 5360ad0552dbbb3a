"""One GRPO step of r1fast's trainer against TRL 1.16's GRPOTrainer on the same completions.

r1fast's sampler generates the groups; TRL's `_generate` is replaced by a lookup of those same completions, so both
trainers score, advantage and differentiate identical data. Compared: advantages, the loss and every parameter's
gradient (TRL's `compute_loss` on the batch `_generate_and_score_completions` builds, with its left-padded prompts
and attention mask, against r1fast's right-padded micro-batches through the fused LM-head loss).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM

from r1fast.trainer import GRPOConfig as R1Config
from r1fast.trainer import GRPOTrainer as R1Trainer

PROMPTS = ["w1 w2 w3", "w4 w5", "w6 w7 w8 w9", "w10"]
G = 4


def word_numbers(completion: str) -> list[int]:
    return [int(w[1:]) for w in completion.split() if w.startswith("w") and w[1:].isdigit()]


def reward_even(completions, **_):
    """Share of the completion's words 'w<n>' with n even (spread across any group of random completions)."""
    return [sum(n % 2 == 0 for n in ns) / max(1, len(ns)) for ns in map(word_numbers, completions)]


def reward_first_word(completions, **_):
    """(n mod 3) / 2 of the first word 'w<n>', None when there is none (exercises TRL's None handling)."""
    return [None if not ns else (ns[0] % 3) / 2 for ns in map(word_numbers, completions)]


@pytest.mark.parametrize("loss_type, beta, temperature", [("grpo", 0.0, 1.0), ("dapo", 0.04, 0.7),
                                                          ("dr_grpo", 0.0, 0.9), ("bnpo", 0.04, 1.0)])  # fmt: skip
def test_one_step_gradient_equals_trl(make_trainer, tiny_checkpoint, monkeypatch, loss_type, beta, temperature, seed):
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tiny_checkpoint)
    model = Qwen2ForCausalLM.from_pretrained(tiny_checkpoint).eval()
    config = R1Config(prompts_per_step=len(PROMPTS), num_generations=G, micro_batch_size=len(PROMPTS) * G,
                      max_completion_length=8, temperature=temperature, loss_type=loss_type, beta=beta,
                      reward_weights=[1.0, 0.5], sampler_block_size=4, loss_backend="reference")  # fmt: skip
    ours = R1Trainer(model, tokenizer, [reward_even, reward_first_word], [{"prompt": p} for p in PROMPTS], config,
                     log_stream=None)  # fmt: skip
    rollout = ours.generate([{"prompt": p} for p in PROMPTS], seed=seed)
    assert rollout.advantages.abs().sum() > 0
    model.zero_grad()
    metrics = ours.loss_and_backward(ours.micro_batches(rollout), None, None if beta == 0 else
                                     [ours._logps(ours.ref_model, b) for b in ours.micro_batches(rollout)])  # fmt: skip
    want = {name: p.grad.clone() for name, p in model.named_parameters()}

    trl = make_trainer(reward_funcs=[reward_even, reward_first_word], num_generations=G,
                       per_device_train_batch_size=len(PROMPTS) * G, max_completion_length=8,
                       temperature=temperature, loss_type=loss_type, beta=beta, reward_weights=[1.0, 0.5])  # fmt: skip

    def replay(prompts):
        # TRL asks for each prompt G times in a row; hand it r1fast's completions in the same order.
        assert prompts == [p for p in PROMPTS for _ in range(G)]
        prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        assert prompt_ids == rollout.prompt_ids
        return prompt_ids, rollout.completion_ids, None, rollout.texts, None, {}, None, None

    monkeypatch.setattr(trl, "_generate", replay)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = trl._generate_and_score_completions([{"prompt": p} for p in PROMPTS for _ in range(G)])
    torch.testing.assert_close(batch["advantages"].float(), rollout.advantages, rtol=1e-5, atol=1e-6)
    trl.model.zero_grad()
    trl.model.train(False)
    loss = trl.compute_loss(trl.model, batch)
    loss.backward()
    assert metrics["loss"] == pytest.approx(loss.item(), rel=1e-5, abs=1e-7)
    for name, p in trl.model.named_parameters():
        scale = want[name].abs().max().item()
        torch.testing.assert_close(want[name], p.grad, rtol=1e-4, atol=1e-5 * scale + 1e-9, msg=name)
