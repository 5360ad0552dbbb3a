"""The README's main job: `python -m r1fast demo` learns. Cold-start SFT (SFTTrainer) teaches the R1 template, then
GRPO raises the greedy accuracy well beyond what SFT reached (seed 0: 33% -> 75%)."""

from __future__ import annotations

import pytest

from r1fast.demo import CharTokenizer, problems, run_demo, solution_text


def test_demo_sft_teaches_the_template_and_grpo_raises_greedy_accuracy():
    results = run_demo(stream=None)
    assert results["initial"].accuracy == 0.0 and results["initial"].format == 0.0
    assert results["after_sft"].format == 1.0
    assert results["after_grpo"].format >= 0.95
    assert results["after_grpo"].accuracy >= results["after_sft"].accuracy + 0.15, results


def test_demo_tokenizer_round_trips_the_template_and_rejects_other_characters():
    tokenizer = CharTokenizer()
    text = "7+8=" + solution_text({"prompt": "7+8=", "solution": "15"})
    ids = tokenizer.encode(text + "<eos>")
    assert tokenizer.decode(ids) == text + "<eos>" and tokenizer.decode(ids, skip_special_tokens=True) == text
    assert ids.count(tokenizer.ids["<think>"]) == 1 and ids[-1] == tokenizer.eos_token_id
    assert len(problems()) == 100
    with pytest.raises(ValueError, match="no token for '\\*'"):
        tokenizer.encode("7*8")


def test_demo_phases_can_be_skipped():
    results = run_demo(sft_steps=0, grpo_steps=0, stream=None)
    assert results["initial"] == results["after_sft"] == results["after_grpo"]
