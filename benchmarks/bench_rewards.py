"""Rewards benchmark: samples/s of every C++ reward, next to Math-Verify and a pure-Python regex checker.

Workload (speed): 4,096 synthetic R1-format completions of ~2,000 characters (a <think> block of math-flavoured
prose, an <answer> block with \\boxed{...}), seeded; gold answers of 11 kinds (integers, negatives, fractions,
decimals, thousands separators, percentages, tuples, intervals, surds, pi multiples, choice letters), ~70% of
predictions an equivalent rewriting of the gold, the rest wrong. Each reward is timed end to end from Python (encoding
included) with threads=1 and threads=all, best of --repeats.

Agreement (agreement): the labelled case table tests/data/accuracy_cases.jsonl (one JSON object a line: category,
gold, completion, expected 0/1, source), per category and in total: r1fast right, Math-Verify right, r1fast's
agreement with Math-Verify where Math-Verify is right, the cases only one of them gets right, false positives
(expected 0 scored 1) and false negatives of each. r1fast end to end, `accuracy_reward(None, [completion],
solution=[gold])`, a None (gold unparseable) counted as 0; Math-Verify end to end as a user calls it, with its default
configs and timeouts: `verify(parse(gold_wrapped), parse(completion))`, where gold_wrapped is the gold as is when it
contains `$`, `\\boxed` or `\\(` and `"$" + gold + "$"` otherwise (without delimiters Math-Verify's LaTeX
extraction finds nothing: parse("\\frac12") and parse("(1,2)") are empty). Cases where either is wrong:
benchmarks/out/accuracy_disagreements.md.

Math-Verify's own tests (suite, with --math-verify-tests PATH, a checkout of github.com/huggingface/Math-Verify):
math_verify_suite.py reads the (gold, prediction, expected, config) verdicts of its tests/ with `ast` at run time
(nothing of them is copied here), runs Math-Verify as each test does and r1fast end to end on the same strings (the
gold through the accuracy reward's gold path, the prediction as the completion); the same counts per test function,
the skipped rows with their reasons; cases where either is wrong: benchmarks/out/math_verify_suite_disagreements.md.
Target (the issue): >= 95% agreement with Math-Verify where Math-Verify is right, 0 false positives, on Math-Verify's
own expectations.

Worst-case time per sample on adversarial inputs (adversarial).

--only PART... runs some of speed, agreement, suite, adversarial (speed is the slow one). Prints markdown tables and
writes the same rows to benchmarks/out/bench_rewards.json (the parts run replace theirs, the others are kept).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import subprocess
import time
from fractions import Fraction
from importlib import metadata
from pathlib import Path

from r1fast import rewards

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
CASES = ROOT / "tests" / "data" / "accuracy_cases.jsonl"

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


def mv_gold(gold: str) -> str:
    """The gold as a Math-Verify user passes it: as is when it carries math delimiters or a \\boxed, else in $...$."""
    return gold if any(m in gold for m in ("$", "\\boxed", "\\(")) else f"${gold}$"


def math_verify_accuracy(completions: list[str], golds: list[str]) -> list[float] | None:
    try:
        from math_verify import parse, verify
    except ImportError:
        return None
    out = []
    for c, g in zip(completions, golds, strict=True):
        gp = parse(mv_gold(g))
        if not gp:
            out.append(-1.0)
            continue
        out.append(1.0 if verify(gp, parse(c)) else 0.0)
    return out


# ---------------------------------------------------------------------------------- agreement accounting


def r1fast_right_answers(golds: list[str], completions: list[str]) -> tuple[list[bool], int]:
    """r1fast end to end, one call per case; None (gold unparseable) counts as 0. Also the number of Nones."""
    scores = [rewards.accuracy_reward(None, [c], solution=[g], threads=1)[0]
              for g, c in zip(golds, completions, strict=True)]
    return [s == 1.0 for s in scores], sum(s is None for s in scores)


def agreement_stats(expected: list[bool], r1: list[bool], mv: list[bool]) -> dict:
    mv_right = [i for i, e in enumerate(expected) if mv[i] == e]
    n = len(expected)

    def pct(k: int, of: int) -> float | None:
        return 100 * k / of if of else None

    return {
        "n": n,
        "expected_0": sum(not e for e in expected),
        "r1fast_right_pct": pct(sum(a == e for a, e in zip(r1, expected, strict=True)), n),
        "math_verify_right_pct": pct(len(mv_right), n),
        "agreement_where_mv_right_pct": pct(sum(r1[i] == mv[i] for i in mv_right), len(mv_right)),
        "only_r1fast_right": sum(r1[i] == e != mv[i] for i, e in enumerate(expected)),
        "only_math_verify_right": sum(mv[i] == e != r1[i] for i, e in enumerate(expected)),
        "r1fast_false_pos": sum(r1[i] and not e for i, e in enumerate(expected)),
        "math_verify_false_pos": sum(mv[i] and not e for i, e in enumerate(expected)),
        "r1fast_false_neg": sum(e and not r1[i] for i, e in enumerate(expected)),
        "math_verify_false_neg": sum(e and not mv[i] for i, e in enumerate(expected)),
    }


def agreement_rows(key: str, groups: list[str], expected: list[bool], r1: list[bool], mv: list[bool]) -> list[dict]:
    """agreement_stats per group (in order of first appearance) and in total."""
    rows = []
    for g in dict.fromkeys(groups):
        idx = [i for i, x in enumerate(groups) if x == g]
        rows.append({key: g, **agreement_stats([expected[i] for i in idx], [r1[i] for i in idx], [mv[i] for i in idx])})
    return rows + [{key: "total", **agreement_stats(expected, r1, mv)}]


COLUMNS = (("n", "n"), ("expected_0", "exp. 0"), ("r1fast_right_pct", "r1fast right %"),
           ("math_verify_right_pct", "MV right %"), ("agreement_where_mv_right_pct", "agree where MV right %"),
           ("only_r1fast_right", "only r1fast right"), ("only_math_verify_right", "only MV right"),
           ("r1fast_false_pos", "FP r1fast"), ("math_verify_false_pos", "FP MV"),
           ("r1fast_false_neg", "FN r1fast"), ("math_verify_false_neg", "FN MV"))


def pct_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def print_agreement_table(key: str, title: str, rows: list[dict]) -> None:
    """The rows as a markdown table; the last one (the total) in bold."""
    print(f"\n| {title} | " + " | ".join(h for _, h in COLUMNS) + " |")
    print("| --- |" + " ---: |" * len(COLUMNS))
    for i, r in enumerate(rows):
        name = str(r[key]).replace("|", "\\|")
        cells = [pct_s(r[c]) if c.endswith("_pct") else str(r[c]) for c, _ in COLUMNS]
        print(f"| {f'**{name}**' if i == len(rows) - 1 else name} | " + " | ".join(cells) + " |")


def md_cell(text: str, keep: int = 400) -> str:
    """A table cell: the text as code, newlines shown as ⏎, pipes escaped, the middle of a long text elided."""
    if len(text) > keep:
        text = f"{text[: keep // 3]} … {text[-(keep - keep // 3):]}"
    text = text.replace("\r", "").replace("\n", "⏎").replace("|", "\\|")
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if text.strip() else ""


def write_disagreements(path: Path, title: str, header: list[str], rows: list[list[str]], verdicts: list[tuple]) -> int:
    """Rows where r1fast and Math-Verify are not both right, in three sections; verdicts[i] = (expected, mv, r1).
    header/rows: the leading columns (already formatted) before gold | completion | expected | MV | r1fast."""
    sections = {"r1fast wrong, Math-Verify right": lambda e, m, r: r != e == m,
                "r1fast right, Math-Verify wrong": lambda e, m, r: m != e == r,
                "both wrong": lambda e, m, r: m != e != r}
    lines, listed = [f"# {title}", ""], 0
    for name, keep in sections.items():
        picked = [(row, v) for row, v in zip(rows, verdicts, strict=True) if keep(*v)]
        lines += [f"## {name} ({len(picked)})", "", "| " + " | ".join(header) + " | expected | MV | r1fast |",
                  "|" + " --- |" * len(header) + " ---: | ---: | ---: |"]
        lines += ["| " + " | ".join(row) + " | " + " | ".join(str(int(x)) for x in v) + " |" for row, v in picked]
        lines.append("")
        listed += len(picked)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return listed


def load_cases(path: Path) -> list[dict]:
    cases = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            case = json.loads(line)
            if case["expected"] not in (0, 1):
                raise ValueError(f"{path}:{line_no}: expected must be 0 or 1, got {case['expected']!r}")
            cases.append({**case, "line": line_no})
    return cases


def agreement_on_case_table(path: Path) -> dict | None:
    """The labelled case table: r1fast and Math-Verify per category, disagreements to benchmarks/out/."""
    try:
        from math_verify import parse, verify
    except ImportError:
        print("\nagreement: Math-Verify is not installed, skipped")
        return None
    cases = load_cases(path)
    t = time.perf_counter()
    expected = [c["expected"] == 1 for c in cases]
    r1, nones = r1fast_right_answers([c["gold"] for c in cases], [c["completion"] for c in cases])
    r1_s = time.perf_counter() - t
    t = time.perf_counter()
    mv = [bool(verify(parse(mv_gold(c["gold"])), parse(c["completion"]))) for c in cases]
    mv_s = time.perf_counter() - t
    rows = agreement_rows("category", [c["category"] for c in cases], expected, r1, mv)
    print(f"\nagreement on {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {len(cases)} cases, "
          f"Math-Verify {metadata.version('math-verify')} ({mv_s:.1f} s) vs r1fast ({r1_s * 1e3:.1f} ms); "
          f"r1fast None (gold unparseable, counted 0): {nones}")
    print_agreement_table("category", "category", rows)
    verdicts = [(e, m, r) for e, m, r in zip(expected, mv, r1, strict=True)]
    listed = write_disagreements(
        OUT / "accuracy_disagreements.md", f"r1fast vs Math-Verify on {path}",
        ["line", "category", "gold", "completion"],
        [[str(c["line"]), c["category"].replace("|", "\\|"), md_cell(c["gold"]), md_cell(c["completion"])]
         for c in cases], verdicts)
    print(f"{listed} cases where r1fast or Math-Verify is wrong: {OUT / 'accuracy_disagreements.md'}")
    wrong = [{"line": c["line"], "category": c["category"], "gold": c["gold"], "completion": c["completion"],
              "expected": int(e), "math_verify": int(m), "r1fast": int(r)}
             for c, (e, m, r) in zip(cases, verdicts, strict=True) if not e == m == r]
    return {"cases": str(path), "math_verify_version": metadata.version("math-verify"), "r1fast_none": nones,
            "rows": rows, "not_both_right": wrong}


def agreement_on_math_verify_suite(checkout: Path) -> dict:
    """Math-Verify's own test expectations (see math_verify_suite.py), r1fast on the same strings."""
    from math_verify_suite import collect, run

    tests = checkout / "tests" if (checkout / "tests").is_dir() else checkout
    commit = subprocess.run(["git", "-C", str(tests), "rev-parse", "HEAD"], capture_output=True, text=True)
    commit_s = commit.stdout.strip() if commit.returncode == 0 else "unknown (not a git work tree)"
    collected, skipped = collect(tests)
    t = time.perf_counter()
    cases, mv = run(collected, skipped)
    mv_s = time.perf_counter() - t
    expected = [c.expected for c in cases]
    r1, nones = r1fast_right_answers([c.gold for c in cases], [c.pred for c in cases])
    rows = agreement_rows("test", [c.group for c in cases], expected, r1, mv)
    total = rows[-1]
    print(f"\nMath-Verify's own tests ({tests}, commit {commit_s}) run with Math-Verify "
          f"{metadata.version('math-verify')} ({mv_s:.1f} s): {len(cases) + sum(skipped.values())} verdicts "
          f"found, {len(cases)} compared, {sum(skipped.values())} skipped; r1fast None (counted 0): {nones}")
    print(f"Math-Verify agrees with its expectations on {pct_s(total['math_verify_right_pct'])}%, r1fast on "
          f"{pct_s(total['r1fast_right_pct'])}%; r1fast agrees with Math-Verify where Math-Verify is right on "
          f"{pct_s(total['agreement_where_mv_right_pct'])}% (target >= 95%); r1fast false positives "
          f"{total['r1fast_false_pos']} (target 0), false negatives {total['r1fast_false_neg']}")
    print_agreement_table("test", "test file::function", rows)
    print("\n| skipped | reason | rows |\n| --- | --- | ---: |")
    for (group, reason), k in sorted(skipped.items()):
        print(f"| {group} | {reason} | {k} |")
    verdicts = [(e, m, r) for e, m, r in zip(expected, mv, r1, strict=True)]
    out = OUT / "math_verify_suite_disagreements.md"

    def config(c) -> str:  # the match types, and what differs from verify()'s defaults
        if not c.options:
            return "parse+verify defaults"
        extra = [f"{k}={v}" for k, v in c.options.items()
                 if k != "match_types" and v != {"precision": 6, "strict": True}.get(k, False)]
        return " ".join(["+".join(c.options["match_types"]), *extra])

    listed = write_disagreements(
        out, f"r1fast vs Math-Verify on Math-Verify's own tests ({tests}, commit {commit_s})",
        ["case", "line", "config", "gold", "prediction"],
        [[c.where, str(c.line), config(c), md_cell(c.gold), md_cell(c.pred)] for c in cases], verdicts)
    print(f"{listed} cases where r1fast or Math-Verify is wrong: {out}")
    wrong = [{"case": c.where, "line": c.line, "config": c.options, "gold": c.gold, "prediction": c.pred,
              "expected": int(e), "math_verify": int(m), "r1fast": int(r)}
             for c, (e, m, r) in zip(cases, verdicts, strict=True) if not e == m == r]
    return {"tests": str(tests), "commit": commit_s, "math_verify_version": metadata.version("math-verify"),
            "compared": len(cases), "skipped": [{"test": g, "reason": r, "rows": k} for (g, r), k in skipped.items()],
            "r1fast_none": nones, "rows": rows, "not_both_right": wrong}


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
    # from fuzzing the rewrite: each was once a crash or quadratic
    "1,000 braces around one answer": "\\boxed{" + "{" * 1000 + "1" + "}" * 1000 + "}",
    "1 MB of '<a' (tag near-misses)": "<a" * 500_000,
    "1 MB of '$1$ ' (math spans)": "$1$ " * 250_000,
    "1 MB of unclosed \\(": "\\(" * 500_000,
    "20,000 inline spans across lines": "the answer is " + "\\( a\n" * 20_000 + "\\)",
    "32-item list of expressions": "\\boxed{"
    + ", ".join(f"\\frac{{x^3}}{{7}}\\sqrt{{y+1}}+\\sin(z)+{i}" for i in range(32)) + "}",
    "32-item list of large surds": "\\boxed{" + ", ".join(f"\\sqrt{{{999999999989 - i}}}" for i in range(32)) + "}",
    "system of solutions vs a number": "\\boxed{x=1, y=2; x=3, y=4}",
    "1 MB of ':' (turn markers)": ":" * 1_000_000,
    "1 MB of '<|im' (chat tokens)": "<|im" * 250_000,
    "1 MB of 'Human:' lines": "\nHuman:" * 125_000,
}


PARTS = ("speed", "agreement", "suite", "adversarial")


def speed(args: argparse.Namespace, cpus: int) -> dict:
    """Throughput of every reward (and its Python peers), then the share of the synthetic workload scored right."""
    completions, golds, truth, _ = workload(args.n)
    mean_len = sum(map(len, completions)) / len(completions)
    print(f"{args.n} completions, mean {mean_len:.0f} chars")

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

    ours = rewards.accuracy_reward(None, completions, solution=golds)
    ours_right = sum((s == 1.0) == ok for s, ok in zip(ours, truth, strict=True)) / n
    py_right = sum((s == 1.0) == ok for s, ok in zip(python_regex_accuracy(completions, golds), truth, strict=True)) / n
    print(f"\nsynthetic workload, share scored right: r1fast {ours_right:.4f}, pure-Python regex {py_right:.4f}")
    return {"n": n, "mean_chars": mean_len, "throughput": rows,
            "synthetic_right": {"r1fast": ours_right, "pure_python_regex": py_right}}


def adversarial(repeats: int) -> list[dict]:
    """Worst case: each adversarial input as completion and as gold, best of --repeats (other helpers share the
    CPU)."""
    print("\n| adversarial input | accuracy, ms per sample | all rewards, ms per sample |")
    print("| --- | ---: | ---: |")
    worst = []
    for name, text in ADVERSARIAL.items():
        pair = [text, "\\boxed{5}"]
        acc = best_time(lambda pair=pair: rewards.accuracy_reward(None, pair, solution=pair[::-1], threads=1),
                        repeats) / 2

        def every(text: str = text) -> None:
            rewards.format_reward(None, [text], threads=1)
            rewards.tag_count_reward(None, [text], threads=1)
            rewards.language_consistency_reward(None, [text], threads=1)
            rewards.countdown_reward(None, [text], target=24, nums=[1, 2, 3, 4], threads=1)
            rewards.reasoning_steps_reward(None, [text], threads=1)
            rewards.repetition_penalty_reward(None, [text], threads=1)

        allr = best_time(every, repeats)
        worst.append({"input": name, "bytes": len(text.encode("utf-8", "surrogatepass")), "accuracy_ms": acc * 1e3,
                      "all_rewards_ms": allr * 1e3})
        print(f"| {name} | {acc * 1e3:.3f} | {allr * 1e3:.3f} |")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=PARTS, default=PARTS, metavar="PART",
                        help=f"run only these parts, of {', '.join(PARTS)} (default: all; suite needs "
                             "--math-verify-tests)")
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--math-verify-n", type=int, default=512, help="samples timed for Math-Verify (slow)")
    parser.add_argument("--cases", type=Path, default=CASES, help="the labelled case table (JSON lines)")
    parser.add_argument("--math-verify-tests", type=Path, metavar="PATH",
                        help="a checkout of the Math-Verify repository, or its tests/ folder")
    args = parser.parse_args()
    if "suite" in args.only and args.math_verify_tests is None and args.only != PARTS:
        parser.error("--only suite needs --math-verify-tests PATH (a checkout of github.com/huggingface/Math-Verify)")

    cpus = os.cpu_count() or 1
    machine = f"{platform.processor() or platform.machine()}, {cpus} cores, Python {platform.python_version()}"
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line)
        machine = f"{model}, {cpus} cores"
    except (OSError, StopIteration):
        pass
    print(f"machine: {machine}; parts: {', '.join(p for p in PARTS if p in args.only)}")

    so = Path(rewards._C.__file__)
    build = f"{so.name}, sha1 {hashlib.sha1(so.read_bytes()).hexdigest()[:12]}, built {time.ctime(so.stat().st_mtime)}"
    print(f"r1fast extension: {build}")

    path = OUT / "bench_rewards.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result["machine"], result["r1fast_build"] = machine, build
    if "speed" in args.only:
        result.update(speed(args, cpus))
    if "agreement" in args.only:
        result["agreement"] = agreement_on_case_table(args.cases)
    if "suite" in args.only:
        if args.math_verify_tests is None:
            print("\nMath-Verify's own tests: skipped (no --math-verify-tests PATH)")
        else:
            result["math_verify_suite"] = agreement_on_math_verify_suite(args.math_verify_tests)
    if "adversarial" in args.only:
        result["adversarial"] = adversarial(args.repeats)

    OUT.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path} (the parts run replace theirs, the others are kept)")


if __name__ == "__main__":
    main()
