"""The accuracy reward: extraction, normalisation and comparison rules, table-driven and property-based."""

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from r1fast import rewards

# (gold, predicted answer, equal?)
EQUAL_CASES = [
    # integers, decimals, signs
    ("42", "42", True),
    ("42", "43", False),
    ("-3", "-3", True),
    ("-3", "3", False),
    ("3", "3.0", True),
    ("3", "3.00", True),
    ("0.5", ".5", True),
    ("+7", "7", True),
    # thousands separators
    ("7425000", "7,425,000", True),
    ("1000", "1 000", True),
    ("11111", "11,\\!111", True),
    ("7425", "7{,}425", True),
    # fractions and mixed numbers
    ("0.5", "\\frac{1}{2}", True),
    ("\\frac{1}{2}", "\\dfrac{1}{2}", True),
    ("\\frac{1}{2}", "\\tfrac12", True),
    ("\\frac{1}{2}", "1/2", True),
    ("\\frac{2}{4}", "\\frac{1}{2}", True),
    ("\\frac{5}{2}", "2\\frac{1}{2}", True),
    ("-\\frac{5}{2}", "-2\\frac{1}{2}", True),
    ("\\frac{1}{3}", "0.333333", True),
    ("\\frac{1}{3}", "0.33", False),
    ("\\frac{1}{3}", "\\frac{1}{4}", False),
    # percentages
    ("50\\%", "0.5", True),
    ("50\\%", "50", True),
    ("50%", "50\\%", True),
    ("10\\%", "0.2", False),
    # scientific notation
    ("1500", "1.5\\times10^3", True),
    ("1500", "1.5 \\cdot 10^{3}", True),
    ("1500", "1.5e3", True),
    ("0.0015", "1.5\\times 10^{-3}", True),
    # units, degrees, dollars
    ("5", "5\\text{ cm}", True),
    ("5", "5 \\mathrm{m}", True),
    ("5", "5\\mbox{ apples}", True),
    ("30", "30^\\circ", True),
    ("30", "30^{\\circ}", True),
    ("5", "\\$5", True),
    ("5.50", "\\$5.5", True),
    # equations
    ("5", "x = 5", True),
    ("x=5", "5", True),
    ("y = 2x + 3", "y=2x+3", True),
    ("5", "x = 6", False),
    # powers, factorials, binomials
    ("1024", "2^{10}", True),
    ("1024", "2^10", True),
    ("120", "5!", True),
    ("10", "\\binom{5}{2}", True),
    ("\\frac{1}{2004!}", "\\frac{1}{2006!}", False),
    # surds and pi
    ("2\\sqrt{3}", "\\sqrt{12}", True),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{\\sqrt2}{2}", True),
    ("\\frac{3\\pi}{4}", "0.75\\pi", True),
    ("\\frac{3\\pi}{4}", "\\frac34\\pi", True),
    ("2\\pi", "\\pi", False),
    ("2-\\sqrt{3}", "\\frac{1}{2+\\sqrt{3}}", True),
    ("\\sqrt{2}", "\\sqrt{3}", False),
    ("3", "\\sqrt{9}", True),
    ("2", "\\sqrt[3]{8}", True),
    # tuples, intervals, sets, lists
    ("(1,2)", "(1, 2)", True),
    ("(1,2)", "(2,1)", False),
    ("(1,2)", "[1,2]", False),
    ("[1,2)", "[1, 2)", True),
    ("(-\\infty, 3]", "(-\\infty,3]", True),
    ("(-\\infty, 3]", "(-\\infty,3)", False),
    ("(-\\infty,2)\\cup(3,\\infty)", "(3,\\infty)\\cup(-\\infty,2)", True),
    ("\\{1,2,3\\}", "\\{3,2,1\\}", True),
    ("1, 2, 3", "3, 1, 2", True),
    ("1, 2, 3", "1, 2", False),
    ("\\{1, 2\\}", "\\{1, 2, 2\\}", True),  # sets: repeats do not count
    ("\\{3\\}", "3", True),
    ("\\frac{3}{4}", "3:4", True),
    ("(\\frac12, 3)", "(0.5, 3)", True),
    ("[879, 905)", "[879,905)", True),  # a comma inside brackets separates items, never thousands
    ("(1, 234)", "(1,234)", True),
    # multiple choice
    ("C", "(C)", True),
    ("C", "\\text{C}", True),
    ("C", "\\textbf{(C)}", True),
    ("C", "D", False),
    # text
    ("\\text{Monday}", "Monday", True),
    ("x^2+1", "x^2 + 1", True),
    ("x \\leq 5", "x\\le 5", True),
    # expressions in variables: equal at three fixed rational points
    ("x^2-1", "(x-1)(x+1)", True),
    ("a+b", "b+a", True),
    ("2x+3", "3+2x", True),
    ("y = 2x + 3", "y = 3 + x \\cdot 2", True),
    ("\\frac{x}{2}", "0.5x", True),
    ("x^2+1", "x^2-1", False),
    ("x+y", "x+z", False),
    ("2x", "2", False),
    ("\\text{Monday}", "\\text{dayMon}", False),  # words are text, not products of letters
    ("A", "a", True),  # multiple-choice letters ignore case
    ("(1,2)", "1, 2", True),  # a tuple matches the same items written bare, in order
    ("(1,2)", "2, 1", False),
    ("3\\text{ cm}^2", "3", True),
    ("x \\geq 5", "x \\le 5", False),
]


@pytest.mark.parametrize("gold,predicted,expected", EQUAL_CASES)
def test_answers_equal_table(gold, predicted, expected):
    assert rewards.answers_equal(gold, predicted) is expected


EXTRACT_CASES = [
    ("so \\boxed{1}, finally \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("nested \\boxed{\\frac{a}{\\sqrt{b}}} ok", "\\frac{a}{\\sqrt{b}}"),
    ("\\fbox{7}", "7"),
    ("thus $\\boxed 5$", "5"),
    ("<think>\\boxed{1}</think>\n<answer>\n42\n</answer>", "42"),
    ("<think>x</think><answer>so it is \\boxed{3}</answer>", "3"),
    ("Natalia sold 48 clips.\n#### 72", "72"),
    ("The final answer is $12$.", "12"),
    ("Therefore the answer is C.", "C"),
    ("Answer: (B)", "B"),
    ("**Answer:** 17", "17"),
    ("nothing to see", "nothing to see"),  # a bare answer is the whole text (here: text, equal to no number)
    ("$\\boxed{1}\\boxed{2}$", "1, 2"),
    ("Final Answer: The final answer is $100$. I hope it is correct.", "100"),
    ("The answer is $12$ dollars.", "12"),
    ("<answer>\n42 apples\n</answer>", "42"),
    ("<think>\\boxed{5}</think>", ""),
    ("\\boxed{unclosed", ""),
]


@pytest.mark.parametrize("text,answer", EXTRACT_CASES)
def test_extract_answer_table(text, answer):
    assert rewards.extract_answer(text) == answer


def test_accuracy_reward_trl_signature_and_gold_columns():
    completions = [
        [{"role": "assistant", "content": "<think>\n...\n</think>\n<answer>\n\\boxed{\\frac{1}{2}}\n</answer>"}],
        [{"role": "assistant", "content": "The answer is 3."}],
        [{"role": "assistant", "content": "\\boxed{4}"}],
    ]
    assert rewards.accuracy_reward(None, completions, solution=["0.5", "4", "$4$"]) == [1.0, 0.0, 1.0]
    assert rewards.accuracy_reward(None, completions, answer=["0.5", "3", "4"]) == [1.0, 1.0, 1.0]
    # GSM8K-style gold with a worked solution ending in '#### n', MATH-style gold with \boxed
    assert rewards.accuracy_reward(None, ["\\boxed{72}"], answer=["48 + 24 = 72\n#### 72"]) == [1.0]
    assert rewards.accuracy_reward(None, ["\\boxed{72}"], solution=["so $\\boxed{72}$."]) == [1.0]


def test_accuracy_none_when_gold_cannot_be_parsed():
    out = rewards.accuracy_reward(None, ["\\boxed{1}"] * 4, solution=["", "$$", "9" * 5000, "\\frac{1}{2"])
    assert out == [None, None, None, None]


# The seven defects of the old reward (issue 9), as met through accuracy_reward(None, [completion], solution=[gold]).
DEFECTS = [
    # 1. a gold equation compared by its right side only
    ("x^2+y^2=25", "\\boxed{25}", 0.0),
    ("2x+3y=6", "\\boxed{6}", 0.0),
    ("x = 3", "\\boxed{y = 3}", 0.0),
    ("x = 3", "\\boxed{3}", 1.0),
    # 2. \text{...} after a number dropped as a unit, gluing digits
    ("12\\text{ and }13", "\\boxed{1213}", 0.0),
    ("6 \\text{ and } 8", "\\boxed{68}", 0.0),
    ("6 \\text{ and } 8", "\\boxed{6,8}", 1.0),
    # 3. several boxes in the gold
    ("$\\boxed{1}\\boxed{2}$", "\\boxed{2}", 0.0),
    ("$\\boxed{1}\\boxed{2}$", "\\boxed{1} and \\boxed{2}", 1.0),
    # 4. a relative tolerance that accepted wrong integers
    ("123456789", "\\boxed{123456700.0}", 0.0),
    ("1000000", "\\boxed{1000000.9}", 0.0),
    # 5. the marker took the rest of the line or block
    ("100", "The final answer is $100$. I hope it is correct.", 1.0),
    ("12", "The answer is $12$ dollars.", 1.0),
    ("42", "<answer>\n42 apples\n</answer>", 1.0),
    # 6. thousands separators
    ("1000.99", "\\boxed{1,000.99}", 1.0),
    ("32349", "\\boxed{32,\\! 349}", 1.0),
    # 7. spellings of relations
    ("x \\geq 3", "\\boxed{x >= 3}", 1.0),
    ("x \\leq 3", "\\boxed{x <= 3}", 1.0),
    ("x < 3", "\\boxed{x \\lt 3}", 1.0),
    ("x > 3", "\\boxed{x \\gt 3}", 1.0),
    ("x \\neq 3", "\\boxed{x != 3}", 1.0),
]


@pytest.mark.parametrize("gold,completion,expected", DEFECTS)
def test_issue_9_defects_stay_fixed(gold, completion, expected):
    assert rewards.accuracy_reward(None, [completion], solution=[gold]) == [expected]


# Hedging: several candidate answers where the gold has one never score.
@pytest.mark.parametrize(
    "completion",
    [
        "\\boxed{1}, \\boxed{2}",
        "\\boxed{1} or \\boxed{2}",
        "The answer is A or B or C.",
        "\\boxed{A, B, C, D}",
        "\\boxed{2 \\text{ or } 3}",
        "\\boxed{\\pm 2}",
        "\\boxed{x = 2 \\text{ or } x = 3}",
    ],
)
def test_several_candidates_for_one_gold_score_zero(completion):
    gold = "A" if "A" in completion else "2"
    assert rewards.accuracy_reward(None, [completion], solution=[gold]) == [0.0]


@pytest.mark.parametrize(
    "completion,expected",
    [
        ("The answer is not 5.", 0.0),
        ("Therefore, x is not 5.", 0.0),
        ("Final Answer: it can't be 5.", 0.0),
        ("Therefore, there are 5 ways.", 1.0),
        ("Final Answer: Jane started growing it 5 hours ago.", 1.0),
    ],
)
def test_a_number_in_a_sentence_counts_only_when_stated(completion, expected):
    assert rewards.accuracy_reward(None, [completion], solution=["5"]) == [expected]


def test_decimals_match_only_as_correct_roundings():
    score = lambda gold, pred: rewards.accuracy_reward(None, [f"\\boxed{{{pred}}}"], solution=[gold])[0]  # noqa: E731
    assert score("\\frac{1}{3}", "0.333333") == 1.0
    assert score("\\frac{1}{3}", "0.3333333333") == 1.0
    assert score("\\frac{1}{3}", "0.33") == 0.0  # too few digits to stand for 1/3
    assert score("\\frac{2}{3}", "0.666666") == 0.0  # not the correct rounding (0.666667)
    assert score("\\pi", "3.14159") == 1.0  # pi correctly rounded to 6 significant digits
    assert score("\\pi", "3.1416") == 0.0  # only 5
    assert score("\\pi", "3.14160") == 0.0  # 6 digits, but not the correct rounding
    assert score("5.10", "5.1") == 1.0
    assert score("1500", "1.5e3") == 1.0
    assert score("100", "99.99999") == 0.0
    assert score("100", "100.0") == 1.0


def test_accuracy_rel_tol_is_configurable():
    assert rewards.accuracy_reward(None, ["\\boxed{3.14}"], solution=["\\pi"]) == [0.0]
    assert rewards.accuracy_reward(None, ["\\boxed{3.14}"], solution=["\\pi"], rel_tol=1e-3) == [1.0]
    # exact answers never use the tolerance
    assert rewards.accuracy_reward(None, ["\\boxed{\\frac{1000001}{1000000}}"], solution=["1"], rel_tol=1e-3) == [0.0]


def test_accuracy_rejects_bad_arguments():
    with pytest.raises(TypeError):
        rewards.accuracy_reward(None, ["\\boxed{1}"])
    with pytest.raises(ValueError):
        rewards.accuracy_reward(None, ["\\boxed{1}", "x"], solution=["1", "2", "3"])
    with pytest.raises(ValueError):
        rewards.accuracy_reward(None, ["\\boxed{1}"], solution=["1"], rel_tol=-1.0)
    with pytest.raises(ValueError):
        rewards.accuracy_reward(None, ["\\boxed{1}"], solution=["1"], threads=-2)


def test_completions_may_be_bytes_chat_lists_or_none():
    completions = [b"\\boxed{1}", [{"role": "assistant", "content": "\\boxed{1}"}], None, "\\boxed{1}"]
    assert rewards.accuracy_reward(None, completions, solution="1") == [1.0, 1.0, 0.0, 1.0]


def test_non_text_items_are_rejected_by_the_extension():
    from r1fast import _C

    with pytest.raises(TypeError):
        _C.accuracy_batch([1], ["1"])


def test_accuracy_deterministic_across_threads():
    golds = [str(i) for i in range(2000)]
    completions = [f"so \\boxed{{{i if i % 3 else i + 1}}}" for i in range(2000)]
    one = rewards.accuracy_reward(None, completions, solution=golds, threads=1)
    assert one == rewards.accuracy_reward(None, completions, solution=golds, threads=4)
    assert one == [0.0 if i % 3 == 0 else 1.0 for i in range(2000)]


# Random arithmetic in LaTeX against Python's exact Fraction arithmetic: checks precedence, signs, \frac, powers.
def _latex_expr(draw, depth: int) -> tuple[str, Fraction]:
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        n = draw(st.integers(0, 60))
        return str(n), Fraction(n)
    op = draw(st.sampled_from(["+", "-", "\\cdot", "frac", "paren", "pow", "neg"]))
    a, va = _latex_expr(draw, depth - 1)
    if op == "paren":
        return f"({a})", va
    if op == "neg":
        return f"-({a})", -va
    if op == "pow":
        k = draw(st.integers(0, 3))
        return f"({a})^{{{k}}}", va**k
    b, vb = _latex_expr(draw, depth - 1)
    if op == "frac":
        if vb == 0:
            return f"({a})+({b})", va + vb
        return f"\\frac{{{a}}}{{{b}}}", va / vb
    if op == "+":
        return f"{a}+{b}", va + vb
    if op == "-":
        return f"{a}-({b})", va - vb
    return f"({a})\\cdot({b})", va * vb


@st.composite
def latex_arithmetic(draw) -> tuple[str, Fraction]:
    return _latex_expr(draw, 4)


def _as_latex(v: Fraction) -> str:
    sign = "-" if v < 0 else ""
    v = abs(v)
    return f"{sign}{v.numerator}" if v.denominator == 1 else f"{sign}\\frac{{{v.numerator}}}{{{v.denominator}}}"


@settings(max_examples=300, deadline=None)
@given(latex_arithmetic())
def test_arithmetic_matches_exact_fractions(case):
    text, value = case
    assert rewards.answers_equal(_as_latex(value), text), (text, value)
    assert not rewards.answers_equal(_as_latex(value + Fraction(1, 7)), text), (text, value)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**12), st.integers(1, 10**6))
def test_numbers_in_any_spelling(n, d):
    grouped = f"{n:,}"
    assert rewards.answers_equal(str(n), grouped)
    assert rewards.answers_equal(str(n), f"{n}.0")
    frac = Fraction(n, d)
    assert rewards.answers_equal(f"\\frac{{{n}}}{{{d}}}", _as_latex(frac))
    assert rewards.answers_equal(f"\\frac{{{n}}}{{{d}}}", f"{n}/{d}")
    assert not rewards.answers_equal(str(n), str(n + 1))
