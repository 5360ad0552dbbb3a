"""open-r1's reward family, TinyZero's countdown, and the reward registry."""

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from r1fast import rewards

STEP_PATTERN = re.compile(r"(Step \d+:|^\d+\.|\n-|\n\*|First,|Second,|Next,|Finally,)")


def open_r1_reasoning_steps(text: str) -> float:
    return min(1.0, len(STEP_PATTERN.findall(text)) / 3)


def open_r1_repetition(text: str, n: int, max_penalty: float) -> float:
    if text == "" or len(text.split()) < n:
        return 0.0
    words = text.lower().split()
    grams = list(zip(*[words[i:] for i in range(n)], strict=False))  # open-r1's zip truncates
    return (1 - len(set(grams)) / len(grams)) * max_penalty


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["Step ", "1", "23", ":", ".", "\n", "-", "*", "First,", "Next,", "Finally,",
                                 "Second,", " ", "x"]), max_size=20).map("".join))
def test_reasoning_steps_equals_open_r1_regex(text):
    assert rewards.reasoning_steps_reward(None, [text]) == [open_r1_reasoning_steps(text)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "A", "ß", "É", "é", " ", "\n", "\u3000", "\xa0", "\u2003", "x y"]),
                max_size=30).map("".join), st.integers(1, 4))
def test_repetition_penalty_equals_open_r1(text, n):
    assert rewards.repetition_penalty_reward(None, [text], ngram_size=n, max_penalty=-0.5) == [
        pytest.approx(open_r1_repetition(text, n, -0.5))
    ]


def test_repetition_penalty_validates():
    with pytest.raises(ValueError):
        rewards.repetition_penalty_reward(None, ["a"], max_penalty=0.5)
    with pytest.raises(ValueError):
        rewards.repetition_penalty_reward(None, ["a"], ngram_size=0)


def test_len_reward_follows_kimi_formula():
    completions = ["\\boxed{1}", "\\boxed{1} " + "x" * 10, "\\boxed{2} " + "x" * 20]
    out = rewards.len_reward(None, completions, solution=["1", "1", "1"])
    lengths = [len(c) for c in completions]
    lo, hi = min(lengths), max(lengths)
    lam = [0.5 - (n - lo) / (hi - lo) for n in lengths]
    assert out == pytest.approx([lam[0], lam[1], min(0.0, lam[2])])
    assert rewards.len_reward(None, ["a", "b"], solution=["1", "1"]) == [0.0, 0.0]


def test_cosine_scaled_reward_follows_open_r1():
    text = "\\boxed{1}" + "x" * 491  # 500 characters: cos(pi / 2) = 0
    correct, wrong, skipped = rewards.cosine_scaled_reward(None, [text, text, text], solution=["1", "2", ""])
    assert correct == pytest.approx(0.5 + 0.5 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert wrong == pytest.approx(-0.5 + 0.5 * (-0.5) * (1 + math.cos(math.pi / 2)))
    assert skipped == 1.0


def test_soft_overlong_punishment_follows_dapo():
    ids = [[0] * 10, [0] * 15, [0] * 20, [0] * 21]
    out = rewards.soft_overlong_punishment_reward(None, ["", "", "", ""], completion_ids=ids,
                                                  max_completion_len=20, soft_punish_cache=10)
    assert out == [0.0, -0.5, -1.0, -1.0]
    with pytest.raises(TypeError):
        rewards.soft_overlong_punishment_reward(None, [""])


COUNTDOWN_CASES = [
    ("<answer>(3 + 5) * 2</answer>", 1.0),
    ("<think>try</think>\n<answer> 2 * (5 + 3) </answer>", 1.0),
    ("<answer>3 * 5 + 2</answer>", 0.1),  # wrong value
    ("<answer>(3 + 5) * 2 * 1</answer>", 0.1),  # 1 is not given
    ("<answer>(3 + 5) * 2 + 3 - 3</answer>", 0.1),  # 3 used three times
    ("<answer>16</answer>", 0.1),
    ("<answer>2(3+5)</answer>", 0.1),  # implicit product is not arithmetic here
    ("<answer>__import__('os')</answer>", 0.1),  # never evaluated
    ("<answer>2 ** 3 * 5 - 3 * 8</answer>", 0.1),
    ("no answer block", 0.0),
]


@pytest.mark.parametrize("text,expected", COUNTDOWN_CASES)
def test_countdown_table(text, expected):
    assert rewards.countdown_reward(None, [text], target=[16], nums=[[3, 5, 2]]) == [expected]


def test_countdown_division_and_power():
    assert rewards.countdown_reward(None, ["<answer>(8 / 3) * 6</answer>"], target=16, nums=[8, 3, 6]) == [1.0]
    assert rewards.countdown_reward(None, ["<answer>2 ** 4</answer>"], target=16, nums=[2, 4]) == [1.0]
    assert rewards.countdown_reward(None, ["<answer>5 / (2 - 2)</answer>"], target=16, nums=[5, 2, 2]) == [0.1]
    with pytest.raises(TypeError):
        rewards.countdown_reward(None, ["x"])


def test_registry_names_get_register_and_score():
    assert {"accuracy", "format", "tag_count", "language_consistency", "countdown", "reasoning_steps", "length",
            "cosine_scaled", "soft_overlong", "repetition_penalty"} <= set(rewards.names())
    assert rewards.get("accuracy") is rewards.accuracy_reward
    with pytest.raises(ValueError):
        rewards.get("nope")

    def half(prompts, completions, **kwargs):
        return [0.5 if i % 2 else None for i in range(len(completions))]

    rewards.register("test_half", half, overwrite=True)
    with pytest.raises(ValueError):
        rewards.register("test_half", half)
    completions = ["<think>\na\n</think>\n<answer>\n\\boxed{1}\n</answer>", "\\boxed{2}"]
    per_function, total = rewards.score(["accuracy", "format", "test_half"], None, completions,
                                        weights=[1.0, 0.5, 2.0], solution=["1", "1"])
    assert per_function == [[1.0, 1.0, None], [0.0, 0.0, 0.5]]
    assert total == [1.5, 1.0]
    with pytest.raises(ValueError):
        rewards.score(["accuracy"], None, completions, weights=[1.0, 2.0], solution=["1", "1"])

    # A TRL-style reward (completions first, everything by keyword) works unchanged.
    def trl_style(completions, solution, **kwargs):
        return [float(c.endswith(s + "}")) for c, s in zip(completions, solution, strict=True)]

    per_function, _ = rewards.score([trl_style], ["p", "q"], ["\\boxed{1}", "\\boxed{3}"], solution=["1", "2"])
    assert per_function == [[1.0], [0.0]]
