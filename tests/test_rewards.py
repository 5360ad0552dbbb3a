"""Rule-based rewards (r1fast._C through r1fast.rewards)."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from r1fast import rewards

OPEN_R1_FORMAT = re.compile(r"^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>$", re.DOTALL | re.MULTILINE)


def open_r1_tag_count(text: str) -> float:
    tags = ("<think>\n", "\n</think>\n", "\n<answer>\n", "\n</answer>")
    return sum(0.25 for tag in tags if text.count(tag) == 1)


FORMAT_CASES = [
    ("<think>\nreason\n</think>\n<answer>\n42\n</answer>", 1.0, 1.0),
    ("<think>\n\n</think>\n<answer>\n\n</answer>", 1.0, 1.0),
    ("<think>\na\n</think>\n<answer>\nb\n</answer>\nmore text", 1.0, 0.0),
    ("<think>\na\n</think>\n<answer>\nb\n</answer> trailing", 0.0, 0.0),
    ("  <think>a</think>\n<answer> b </answer>\n", 0.0, 1.0),
    ("<think>a</think><answer>b</answer><answer>c</answer>", 0.0, 0.0),
    ("<answer>b</answer><think>a</think>", 0.0, 0.0),
    ("", 0.0, 0.0),
]


@pytest.mark.parametrize("text,strict,lenient", FORMAT_CASES)
def test_format_reward_strict_and_lenient(text, strict, lenient):
    assert rewards.format_reward(None, [text]) == [strict]
    assert rewards.format_reward(None, [text], strict=False) == [lenient]


def test_format_reward_reads_chat_messages():
    chat = [[{"role": "assistant", "content": "<think>\nx\n</think>\n<answer>\n1\n</answer>"}]]
    assert rewards.format_reward(prompts=None, completions=chat) == [1.0]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "\n", " ", "x", "é", "\x00"]),
                max_size=16).map("".join))
def test_strict_format_and_tag_count_equal_open_r1(text):
    assert rewards.format_reward(None, [text]) == [1.0 if OPEN_R1_FORMAT.match(text) else 0.0]
    assert rewards.tag_count_reward(None, [text]) == [open_r1_tag_count(text)]


def test_batch_is_deterministic_across_thread_counts():
    texts = [f"<think>\n{i}\n</think>\n<answer>\n{i}\n</answer>" * (i % 3) for i in range(1000)]
    one = rewards.tag_count_reward(None, texts, threads=1)
    assert one == rewards.tag_count_reward(None, texts, threads=4)
    assert one == [open_r1_tag_count(t) for t in texts]
