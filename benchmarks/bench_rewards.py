"""Rewards benchmark: samples/s of every C++ reward, next to Math-Verify and a pure-Python regex checker.

Workload: 4,096 synthetic R1-format completions of ~2,000 characters (a <think> block of math-flavoured prose, an
<answer> block with \\boxed{...}), seeded; gold answers of 11 kinds (integers, negatives, fractions, decimals,
thousands separators, percentages, tuples, intervals, surds, pi multiples, choice letters), ~70% of predictions an
equivalent rewriting of the gold, the rest wrong. Each reward is timed end to end from Python (encoding included)
with threads=1 and threads=all, best of --repeats.

Also: agreement with Math-Verify (parse + verify, when installed) on a labelled case set (the table of
tests/test_rewards_accuracy.py plus the generated pairs); worst-case time per sample on adversarial inputs.

Prints one table and writes the same rows to benchmarks/out/bench_rewards.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sys
import time
from fractions import Fraction
from pathlib import Path

from r1fast import rewards

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"

WORDS = ("we", "compute", "the", "value", "of", "then", "so", "therefore", "let", "consider", "sum", "product",
         "equation", "which", "gives", "since", "check", "again", "wait", "hence", "number", "terms", "both", "sides")


def gold_and_prediction(rng: random.Random) -> tuple[str, str, bool]:
    """A gold answer, a predicted answer, and whether they are equal (by construction)."""
    kind = rng.randrange(11)
    a, b = rng.randint(1, 999), rng.randint(2, 99)
    correct = rng.random() < 0.7
    if kind == 0:
        gold, same, other = str(a), f"{a}", str(a + 1)
    elif kind == 1:
        gold, same, other = f"-{a}", f"-{a}.0", str(a)
    elif kind == 2:
        f = Fraction(a, b)
        gold, other = f"\\frac{{{a}}}{{{b}}}", f"\\frac{{{b}}}{{{a}}}"
        same = f"\\dfrac{{{f.numerator}}}{{{f.denominator}}}"
        if f == Fraction(b, a):
            other = f"\\frac{{{a + 1}}}{{{b}}}"
    elif kind == 3:
        gold, same, other = f"{a}.{b:02d}", f"{a}.{b:02d}0", f"{a}.{b + 1:02d}"
    elif kind == 4:
        n = a * 1000 + b
        gold, same, other = str(n), f"{a},{b:03d}", str(n + 10)
    elif kind == 5:
        gold, same, other = f"{a}\\%", f"{a}", f"{a + 5}\\%"
    elif kind == 6:
        gold, same, other = f"({a}, {b})", f"({a},{b})", f"({b}, {a})" if a != b else f"({a}, {b + 1})"
    elif kind == 7:
        gold, same, other = f"[{a}, {a + b})", f"[{a},{a + b})", f"({a}, {a + b})"
    elif kind == 8:
        gold, same, other = f"{b}\\sqrt{{3}}", f"\\sqrt{{{3 * b * b}}}", f"{b}\\sqrt{{2}}"
    elif kind == 9:
        gold, same, other = f"\\frac{{{a}\\pi}}{{{b}}}", f"\\frac{{{a}}}{{{b}}}\\pi", f"\\frac{{{a + b}\\pi}}{{{b}}}"
    else:
        letter = "ABCDE"[a % 5]
        gold, same, other = letter, f"\\text{{({letter})}}", "ABCDE"[(a + 1) % 5]
    return gold, same if correct else other, correct


def completion(rng: random.Random, predicted: str, length: int = 2000) -> str:
    parts = []
    size = 0
    while size < length - 120:
        if rng.random() < 0.2:
            s = f"${rng.randint(1, 99)} + {rng.randint(1, 99)} = {rng.randint(2, 198)}$"
        else:
            s = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) + "."
        parts.append(s)
        size += len(s) + 1
    think = " ".join(parts)
    return f"<think>\n{think}\n</think>\n<answer>\nThe answer is $\\boxed{{{predicted}}}$.\n</answer>"


def workload(n: int, seed: int = 0) -> tuple[list[str], list[str], list[bool], list[str]]:
    rng = random.Random(seed)
    completions, golds, truth, preds = [], [], [], []
    for _ in range(n):
        gold, pred, ok = gold_and_prediction(rng)
        completions.append(completion(rng, pred))
        golds.append(gold)
        truth.append(ok)
        preds.append(pred)
    return completions, golds, truth, preds


# ------------------------------------------------------------------------- pure-Python regex baseline


def _last_boxed(text: str) -> str | None:
    idx = text.rfind("\\boxed")
    if idx < 0:
        return None
    depth, start = 0, None
    for i in range(idx, len(text)):
        if text[i] == "{":
            depth += 1
            start = i if start is None else start
        elif text[i] == "}":
            depth -= 1
            if depth == 0 and start is not None:
                return text[start + 1 : i]
    return None


_STRIP = [(re.compile(r"\\[dt]frac"), r"\\frac"), (re.compile(r"\\left|\\right|\\!|\\,|\s+|\$"), ""),
          (re.compile(r"\\text\{(.*?)\}"), r"\1"), (re.compile(r"\^\{?\\circ\}?"), ""), (re.compile(r"\\%"), "")]


def _strip(s: str) -> str:
    for pat, rep in _STRIP:
        s = pat.sub(rep, s)
    m = re.fullmatch(r"\\frac\{(-?\d+)\}\{(\d+)\}", s)
    if m and int(m.group(2)):
        s = str(Fraction(int(m.group(1)), int(m.group(2))))
    return s


def python_regex_accuracy(completions: list[str], golds: list[str]) -> list[float]:
    """A verl-style checker: last \\boxed{}, a few regex clean-ups, string or float equality."""
    out = []
    for c, g in zip(completions, golds, strict=True):
        a = _last_boxed(c)
        if a is None:
            out.append(0.0)
            continue
        a, gs = _strip(a), _strip(g)
        ok = a == gs
        if not ok:
            try:
                ok = abs(float(Fraction(a)) - float(Fraction(gs))) < 1e-9
            except (ValueError, ZeroDivisionError):
                ok = False
        out.append(1.0 if ok else 0.0)
    return out


def open_r1_python() -> dict:
    """open-r1's pure-Python format / tag-count / reasoning-steps / repetition rewards, per completion."""
    fmt = re.compile(r"^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>$", re.DOTALL | re.MULTILINE)
    steps = re.compile(r"(Step \d+:|^\d+\.|\n-|\n\*|First,|Second,|Next,|Finally,)")
    tags = ("<think>\n", "\n</think>\n", "\n<answer>\n", "\n</answer>")

    def repetition(text: str, n: int = 3) -> float:
        words = text.lower().split()
        if len(words) < n:
            return 0.0
        grams = list(zip(*[words[i:] for i in range(n)], strict=False))
        return -(1 - len(set(grams)) / len(grams))

    return {
        "format (strict)": lambda c: 1.0 if fmt.match(c) else 0.0,
        "tag_count": lambda c: sum(0.25 for t in tags if c.count(t) == 1),
        "reasoning_steps": lambda c: min(1.0, len(steps.findall(c)) / 3),
        "repetition_penalty (3-gram)": repetition,
    }


# ----------------------------------------------------------------------------------------- Math-Verify


def math_verify_accuracy(completions: list[str], golds: list[str]) -> list[float] | None:
    try:
        from math_verify import parse, verify
    except ImportError:
        return None
    out = []
    for c, g in zip(completions, golds, strict=True):
        gp = parse(f"${g}$")
        if not gp:
            out.append(-1.0)
            continue
        out.append(1.0 if verify(gp, parse(c)) else 0.0)
    return out


# -------------------------------------------------------------------------------------------- timing


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


ADVERSARIAL = {
    "power tower 5^5^5^5^5": "\\boxed{5^{5^{5^{5^5}}}}",
    "10,000 nested braces": "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
    "300 nested \\frac": "\\boxed{" + "\\frac{1}{" * 300 + "2" + "}" * 300 + "}",
    "1 MB of text": "x" * 1_000_000,
    "1 MB of '{'": "{" * 1_000_000,
    "50,000 unclosed \\boxed{": "\\boxed{" * 50_000,
    "factorial chain 9!!!!!!!!!": "\\boxed{9!!!!!!!!!}",
    "sum of 100 large surds": "\\boxed{" + "+".join(["\\sqrt{999999999989}"] * 100) + "}",
    "2,000-digit integer": "\\boxed{" + "9" * 2000 + "}",
    "10^{10^{10^{10}}}": "\\boxed{10^{10^{10^{10}}}}",
    "5,000 nested parentheses": "\\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}",
    "1/2004! vs 1/2006!": "\\boxed{\\frac{1}{2004!}}",
    "invalid UTF-8 + lone surrogates": "\ud800\udfff" * 1000 + "\\boxed{1}",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--math-verify-n", type=int, default=512, help="samples timed for Math-Verify (slow)")
    args = parser.parse_args()

    cpus = os.cpu_count() or 1
    completions, golds, truth, preds = workload(args.n)
    mean_len = sum(map(len, completions)) / len(completions)
    machine = f"{platform.processor() or platform.machine()}, {cpus} cores, Python {platform.python_version()}"
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line)
        machine = f"{model}, {cpus} cores"
    except (OSError, StopIteration):
        pass
    print(f"machine: {machine}; {args.n} completions, mean {mean_len:.0f} chars")

    n = args.n
    calls = {
        "accuracy": lambda t: rewards.accuracy_reward(None, completions, solution=golds, threads=t),
        "format (strict)": lambda t: rewards.format_reward(None, completions, threads=t),
        "tag_count": lambda t: rewards.tag_count_reward(None, completions, threads=t),
        "language_consistency (en)": lambda t: rewards.language_consistency_reward(None, completions, threads=t),
        "countdown": lambda t: rewards.countdown_reward(None, completions, target=24, nums=[1, 2, 3, 4], threads=t),
        "reasoning_steps": lambda t: rewards.reasoning_steps_reward(None, completions, threads=t),
        "repetition_penalty (3-gram)": lambda t: rewards.repetition_penalty_reward(None, completions, threads=t),
    }
    rows = []
    for name, fn in calls.items():
        t1 = best_time(lambda fn=fn: fn(1), args.repeats)
        tall = best_time(lambda fn=fn: fn(0), args.repeats)
        rows.append({"reward": name, "impl": "r1fast (C++)", "samples_per_s_1_thread": n / t1,
                     f"samples_per_s_{cpus}_threads": n / tall, "scaling": t1 / tall})

    t = best_time(lambda: python_regex_accuracy(completions, golds), max(1, args.repeats // 2))
    rows.append({"reward": "accuracy", "impl": "pure-Python regex (verl-style)", "samples_per_s_1_thread": n / t})
    for name, fn in open_r1_python().items():
        t = best_time(lambda fn=fn: [fn(c) for c in completions], max(1, args.repeats // 2))
        rows.append({"reward": name, "impl": "open-r1's Python (re / str)", "samples_per_s_1_thread": n / t})
    m = min(args.math_verify_n, n)
    mv_t = time.perf_counter()
    mv_scores = math_verify_accuracy(completions[:m], golds[:m]) if m > 0 else None
    mv_t = time.perf_counter() - mv_t
    if mv_scores is not None:
        rows.append({"reward": "accuracy", "impl": f"Math-Verify parse+verify ({m} samples)",
                     "samples_per_s_1_thread": m / mv_t})

    print(f"\n| reward | implementation | samples/s, 1 thread | samples/s, {cpus} threads | scaling |")
    print("| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        multi = r.get(f"samples_per_s_{cpus}_threads")
        multi_s = f"{multi:,.0f}" if multi else "-"
        scale = f"{r['scaling']:.2f}x" if "scaling" in r else "-"
        print(f"| {r['reward']} | {r['impl']} | {r['samples_per_s_1_thread']:,.0f} | {multi_s} | {scale} |")

    # Correctness on the synthetic workload, then agreement with Math-Verify on the labelled case set.
    ours = rewards.accuracy_reward(None, completions, solution=golds)
    ours_right = sum((s == 1.0) == ok for s, ok in zip(ours, truth, strict=True)) / n
    py_right = sum((s == 1.0) == ok for s, ok in zip(python_regex_accuracy(completions, golds), truth, strict=True)) / n
    print(f"\nsynthetic workload, share scored right: r1fast {ours_right:.4f}, pure-Python regex {py_right:.4f}")
    agreement = None
    if mv_scores is not None:
        sys.path.insert(0, str(ROOT / "tests"))
        from test_rewards_accuracy import EQUAL_CASES

        cases = [(g, p, ok) for g, p, ok in EQUAL_CASES]
        cases += [(g, p, ok) for g, p, ok in zip(golds[:1000], preds[:1000], truth[:1000], strict=True)]
        mv = math_verify_accuracy([f"\\boxed{{{p}}}" for _, p, _ in cases], [g for g, _, _ in cases])
        r1 = [1.0 if rewards.answers_equal(g, p) else 0.0 for g, p, _ in cases]
        mv_right = [i for i, (_, _, ok) in enumerate(cases) if (mv[i] == 1.0) == ok]
        agree = sum(r1[i] == mv[i] for i in mv_right) / max(1, len(mv_right))
        r1_right = sum((r1[i] == 1.0) == cases[i][2] for i in range(len(cases))) / len(cases)
        print(f"case set: {len(cases)} labelled pairs ({len(EQUAL_CASES)} table + {len(cases) - len(EQUAL_CASES)} "
              f"generated); Math-Verify right on {len(mv_right)}, r1fast right on {r1_right:.4f} of all")
        print(f"agreement with Math-Verify where Math-Verify is right: {agree:.4f}")
        diffs = [(cases[i][0], cases[i][1], cases[i][2], mv[i], r1[i]) for i in range(len(cases)) if mv[i] != r1[i]]
        print("differences (gold | predicted | truth | Math-Verify | r1fast):")
        for d in diffs:
            print(f"  {d[0]!r} | {d[1]!r} | {d[2]} | {d[3]} | {d[4]}")
        agreement = {"cases": len(cases), "math_verify_right": len(mv_right), "agreement_where_mv_right": agree,
                     "r1fast_right": r1_right, "differences": diffs}

    # Worst case: each adversarial input as completion and as gold, best of --repeats (other helpers share the CPU).
    print("\n| adversarial input | accuracy, ms per sample | all rewards, ms per sample |")
    print("| --- | ---: | ---: |")
    worst = []
    for name, text in ADVERSARIAL.items():
        pair = [text, "\\boxed{5}"]
        acc = best_time(lambda pair=pair: rewards.accuracy_reward(None, pair, solution=pair[::-1], threads=1),
                        args.repeats) / 2

        def every(text: str = text) -> None:
            rewards.format_reward(None, [text], threads=1)
            rewards.tag_count_reward(None, [text], threads=1)
            rewards.language_consistency_reward(None, [text], threads=1)
            rewards.countdown_reward(None, [text], target=24, nums=[1, 2, 3, 4], threads=1)
            rewards.reasoning_steps_reward(None, [text], threads=1)
            rewards.repetition_penalty_reward(None, [text], threads=1)

        allr = best_time(every, args.repeats)
        worst.append({"input": name, "bytes": len(text.encode("utf-8", "surrogatepass")), "accuracy_ms": acc * 1e3,
                      "all_rewards_ms": allr * 1e3})
        print(f"| {name} | {acc * 1e3:.3f} | {allr * 1e3:.3f} |")

    OUT.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine, "n": n, "mean_chars": mean_len, "throughput": rows, "agreement": agreement,
              "adversarial": worst}
    (OUT / "bench_rewards.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {OUT / 'bench_rewards.json'}")


if __name__ == "__main__":
    main()
