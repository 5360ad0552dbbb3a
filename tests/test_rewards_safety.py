"""Any input is safe: no exception, bounded time per sample, on random and adversarial text."""

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from r1fast import rewards

# Generous bound per sample for CI machines under load; the benchmark measures the real worst case.
PER_SAMPLE_SECONDS = 0.05

LATEX_PIECES = ["\\pm", "\\le", "<", ">", ";", " and ", " or ", "\\in", "\\approx", "|", "\\begin{pmatrix}",
                "\\end{pmatrix}", "&", "\\\\", "\\overline{", "\\(", "\\)", "\\[", "\\]", "i", "y", "The answer is ",
                "Therefore ", "\\boxed{", "\\frac{", "\\sqrt{", "\\sqrt[", "{", "}", "(", ")", "[", "]", "^", "_", "!",
                "%", "\\pi", "\\infty", "\\cup", "\\{", "\\}", ",", "=", "+", "-", "*", "/", "\\cdot", "\\times",
                "\\text{", "\\left(", "\\right)", "0", "1", "9", "99999", ".", "e", "x", "\\binom{", "<answer>",
                "</answer>", "<think>", "####", "Answer:", "\\dfrac", "\\log_", "\\sin", " ", "\n", "$", "\\"]


def all_rewards(texts):
    n = len(texts)
    golds = list(reversed(texts))
    rewards.accuracy_reward(None, texts, solution=golds)
    rewards.format_reward(None, texts)
    rewards.format_reward(None, texts, strict=False)
    rewards.tag_count_reward(None, texts)
    rewards.language_consistency_reward(None, texts, language="en")
    rewards.language_consistency_reward(None, texts, language="ja", think_only=False)
    rewards.countdown_reward(None, texts, target=[24] * n, nums=[[1, 2, 3, 4]] * n)
    rewards.reasoning_steps_reward(None, texts)
    rewards.repetition_penalty_reward(None, texts)
    rewards.len_reward(None, texts, solution=golds)
    rewards.cosine_scaled_reward(None, texts, solution=golds)
    for t in texts:
        rewards.extract_answer(t)


def assert_fast(texts, rounds=1):
    start = time.perf_counter()
    for _ in range(rounds):
        all_rewards(texts)
    per_sample = (time.perf_counter() - start) / (rounds * max(1, len(texts)))
    assert per_sample < PER_SAMPLE_SECONDS * 12  # 12 rewards per sample above


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(max_size=300), min_size=1, max_size=4))
def test_random_unicode_is_safe(texts):
    assert_fast(texts)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.sampled_from(LATEX_PIECES), max_size=80).map("".join), min_size=1, max_size=4))
def test_random_latex_is_safe(texts):
    assert_fast(texts)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 3000), st.sampled_from(["\\frac{", "{", "\\sqrt{", "(", "^{", "\\boxed{", "5^{"]))
def test_random_nesting_is_safe(depth, opener):
    closer = "".join(")" if c == "(" else "}" if c == "{" else "" for c in opener[-1:])
    text = "\\boxed{" + opener * depth + "1" + closer * depth + "}"
    assert_fast([text, text[: len(text) // 2]])


def test_lone_surrogates_and_invalid_utf8_are_accepted():
    texts = ["\ud800\\boxed{1}", "\udfff", b"\xff\xfe\\boxed{1}\x80", "\x00\\boxed{\x00}"]
    all_rewards(texts)
    assert rewards.accuracy_reward(None, texts[:1], solution=["1"]) == [1.0]
    assert rewards.accuracy_reward(None, [texts[2]], solution=["1"]) == [1.0]


# Found by fuzzing the C++ (libFuzzer + ASan): each once crashed or took far over a millisecond.
FUZZ_FINDINGS = [
    ("d;{x=3\\text{or}x=4}", "5"),  # a system of solutions against a scalar recursed without end
    ("The solutions are \\boxed{x=1, y=2; x=3, y=4}.", "5"),
    ("\\boxed{5}", "x=1, y=2; x=3, y=4"),
    ("\\boxed{p=5, q=2; p=7, q=2}", "p=5"),
    ("\\boxed{" + "{" * 1000 + "1" + "}" * 1000 + "}", "1"),  # peeling braces one layer at a time
    ("\\[" * 4000, "1"),  # each unclosed \[ searched to the end
    ("\\[\\(" * 10_000, "1"),
    ("\\( a\n" * 20_000 + "\\)", "1"),
    ("the answer is " + "\\( a\n" * 20_000 + "\\)", "1"),
    ("<a" * 500_000, "1"),
    ("$1$ " * 250_000, "1"),
]


def test_fuzz_findings_stay_fixed():
    for completion, gold in FUZZ_FINDINGS:
        start = time.perf_counter()
        assert rewards.accuracy_reward(None, [completion], solution=[gold]) in ([0.0], [1.0], [None])
        assert rewards.accuracy_reward(None, [gold], solution=[completion]) in ([0.0], [1.0], [None])
        assert time.perf_counter() - start < 0.1, completion[:50]


def test_adversarial_inputs_are_bounded():
    tower = "\\boxed{5^{5^{5^{5^5}}}}"
    huge_frac = "\\boxed{" + "\\frac{1}{" * 1000 + "2" + "}" * 1000 + "}"
    texts = [
        tower,
        "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
        huge_frac,
        "x" * 1_000_000,
        "\\boxed{" * 50_000,
        "\\boxed{9!!!!!!!!!}",
        "\\boxed{" + "+".join(["\\sqrt{999999999989}"] * 200) + "}",
        "\\boxed{" + "9" * 2000 + "}",
        "\\boxed{10^{10^{10^{10}}}}",
        "<answer>" + "(" * 5000 + "1" + ")" * 5000 + "</answer>",
        "Answer: " + "answer is " * 20_000,
    ]
    for t in texts:
        start = time.perf_counter()
        assert rewards.accuracy_reward(None, [t], solution=[t]) in ([0.0], [1.0], [None])
        assert rewards.accuracy_reward(None, [t], solution=["5"]) in ([0.0], [1.0])
        assert time.perf_counter() - start < 0.5, t[:50]
    assert rewards.accuracy_reward(None, [tower], solution=["3"]) == [0.0]
    all_rewards(texts)
