"""The accuracy reward on the labelled case tables tests/data/accuracy_cases.jsonl and accuracy_adversarial.jsonl.

666 cases in 19 categories, written for r1fast after reading public graders' test suites (Math-Verify, verl,
NeMo-Skills, Qwen2.5-Math, ...) and real model outputs; 283 of them are wrong answers a grader could wrongly
accept (near misses and reward hacks). Each line: category, gold (as a dataset holds it), completion (as a model
writes it), expected (1 or 0: the mathematically right verdict), source.

accuracy_adversarial.jsonl (812 cases, 461 wrong answers) was written independently, by an engineer who read only the
README's semantics and other graders' test suites, to attack the reward: hedges, negations ("cannot be 5"), run-on
completions, boxes inside expressions, qualifiers ("at least 5", "$5$ squared"), unicode signs and digits, problem
restatements. It is held to zero false positives and a floor on the right answers it finds.

A false positive (a wrong answer scored 1.0) is the defect that matters most: an RL policy finds it and farms it,
so every expected-0 case must score 0. The few right answers the reward still misses are listed in KNOWN_MISSES with
the reason; they are strict xfails, so fixing one shows up as a failure to update the list.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from r1fast import rewards

DATA = Path(__file__).parent / "data"


def _load(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


CASES = _load("accuracy_cases.jsonl")
ADVERSARIAL = _load("accuracy_adversarial.jsonl")

# (gold, completion) -> why the reward does not see the right answer yet.
KNOWN_MISSES = {
    ("2\\text{ hours}", "\\boxed{120\\text{ minutes}}"): "units are compared, not converted",
    (
        "\\begin{pmatrix} 3 & 5 \\\\ 7 & 9 \\end{pmatrix}",
        "The sum is $\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix} + \\begin{pmatrix}2 & 3 \\\\ 4 & 5\\end{pmatrix}$",
    ): "no matrix arithmetic",
    (
        "\\begin{pmatrix} -\\frac{7}{4} & -2 \\\\ 4 & \\frac{1}{4} \\end{pmatrix}",
        "\\boxed{\\frac14\\begin{pmatrix}-7&-8\\\\16&1\\end{pmatrix}}",
    ): "no matrix arithmetic",
    ("-2", "\\boxed{\\det\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}}"): "no determinants",
    ("AC", "\\boxed{A, C}"): "a multi-select gold written as one word",
}
KNOWN_MISS_PREFIXES = {
    ("12", "The divisors of 90 are"): "no marker, math or concluding word: the number sits in prose",
}


def _known_miss(case: dict) -> str | None:
    key = (case["gold"], case["completion"])
    if key in KNOWN_MISSES:
        return KNOWN_MISSES[key]
    for (gold, start), why in KNOWN_MISS_PREFIXES.items():
        if case["gold"] == gold and case["completion"].startswith(start):
            return why
    return None


def _params():
    for i, case in enumerate(CASES):
        why = _known_miss(case)
        marks = [pytest.mark.xfail(reason=why, strict=True)] if why else []
        yield pytest.param(case, id=f"{i}-{case['category']}-{'right' if case['expected'] else 'wrong'}", marks=marks)


def test_case_table_is_well_formed():
    assert len(CASES) >= 400
    assert sum(c["expected"] == 0 for c in CASES) >= len(CASES) // 4
    assert {"category", "gold", "completion", "expected", "source"} <= set().union(*CASES)
    per_category = Counter(c["category"] for c in CASES)
    assert len(per_category) >= 15 and min(per_category.values()) >= 15
    assert len({(c["gold"], c["completion"]) for c in CASES}) == len(CASES)
    assert all(_known_miss(c) is None or c["expected"] == 1 for c in CASES), "a known miss must be a right answer"


@pytest.mark.parametrize("case", list(_params()))
def test_accuracy_on_case(case):
    score = rewards.accuracy_reward(None, [case["completion"]], solution=[case["gold"]])[0]
    extracted = rewards.extract_answer(case["completion"])
    assert score == float(case["expected"]), (case["gold"], case["completion"], extracted)


def test_no_false_positive_in_one_batch():
    """The same verdicts from one threaded batch call (as the trainer makes it), and no wrong answer scored 1."""
    completions = [c["completion"] for c in CASES]
    golds = [c["gold"] for c in CASES]
    scores = rewards.accuracy_reward(None, completions, solution=golds, threads=2)
    pairs = list(zip(CASES, scores, strict=True))
    false_positives = [(c["gold"], c["completion"]) for c, s in pairs if s and not c["expected"]]
    assert false_positives == []
    right = sum((s == 1.0) == bool(c["expected"]) for c, s in zip(CASES, scores, strict=True))
    assert right == len(CASES) - sum(_known_miss(c) is not None for c in CASES)


def test_adversarial_table_has_no_false_positive():
    assert len(ADVERSARIAL) >= 800 and sum(c["expected"] == 0 for c in ADVERSARIAL) >= 400
    scores = rewards.accuracy_reward(None, [c["completion"] for c in ADVERSARIAL],
                                     solution=[c["gold"] for c in ADVERSARIAL])
    pairs = list(zip(ADVERSARIAL, scores, strict=True))
    false_positives = [(c["gold"], c["completion"]) for c, s in pairs if s and not c["expected"]]
    assert false_positives == []
    # The right answers it misses are ambiguous on purpose (a correction after the answer, "negative 5" in words,
    # number words, base subscripts): 19 of 351 when this was written.
    missed = sum(1 for c, s in pairs if c["expected"] and s != 1.0)
    assert missed <= 20, missed
