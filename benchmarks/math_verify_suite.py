"""Math-Verify's own test expectations, read at run time from a checkout of its repository (never copied here).

collect(tests_dir) walks every tests/test_*.py of the checkout with `ast`: each test function's
@pytest.mark.parametrize rows (literals, or simple expressions such as f"{math.sqrt(17):.15f}", evaluated with only
`math` in scope) are bound to the function's parameters, and each `assert` of the function is read as one verdict:

- `assert compare_strings(gold, pred, match_types=..., precision=..., strict=..., ...) == expected`: the test_all.py
  helper; its defaults are read from its `def` in the checkout, positional arguments are bound by its parameter names;
- `assert int(verify(parse(gold), parse(pred))) == expected` (test_yujianll.py): Math-Verify's defaults;
- `assert X`, `assert not X`, `bool(X)` / `int(X)` wrappers of those calls.

Everything else is skipped, counted, with the reason: asserts on parse() output (extraction strings, configs,
normalisation toggles), sympy objects compared directly, tests that mock Math-Verify's internals (timeouts,
raise_on_error), rows whose expectation rests on a non-default verify toggle (strict=False,
allow_set_relation_comp=True: an accuracy reward has one setting), and rows run with a non-default precision whose
expectation does not hold at the default one (Math-Verify itself gives the other verdict at float_rounding=6).

math_verify_verdict() runs a case as its test does: compare_strings re-implemented line for line (latex ->
LatexExtractionConfig(boxed_match_priority=0), expr -> ExprExtractionConfig(), parse both, verify with
float_rounding=precision, strict, allow_set_relation_comp), or parse + verify with the defaults.
"""

from __future__ import annotations

import ast
import itertools
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HELPER = "compare_strings"
TOGGLES = {"strict": True, "allow_set_relation_comp": False}  # verify()'s defaults; other values are config tests
DEFAULT_PRECISION = 6  # verify()'s float_rounding default


@dataclass
class Case:
    file: str
    test: str
    row: int  # 0-based index of the parametrize row (0 for an unparametrized test)
    line: int  # line of the parametrize row in the test file (of the assert when there is none)
    gold: str
    pred: str
    expected: bool
    helper: str  # "compare_strings" or "parse+verify"
    options: dict = field(default_factory=dict)  # compare_strings' arguments after the two strings

    @property
    def where(self) -> str:
        return f"{self.file}::{self.test}[{self.row}]"

    @property
    def group(self) -> str:
        return f"{self.file}::{self.test}"


class Unreadable(Exception):
    pass


def _evaluate(node: ast.AST, row: dict):
    if isinstance(node, ast.Name) and node.id in row:
        return row[node.id]
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        pass
    try:
        code = compile(ast.Expression(body=node), "<math-verify test>", "eval")
        return eval(code, {"__builtins__": {}, "math": math}, dict(row))  # the user's own test file, `math` only
    except Exception as e:  # anything else: a row we cannot read
        raise Unreadable(f"argument not evaluable: {ast.unparse(node)[:60]}") from e


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def _parametrize_rows(fn: ast.FunctionDef) -> list[tuple[dict, int]] | None:
    """The rows of every @pytest.mark.parametrize (their product when there are several), each with the line where
    it starts (of the first decorator's row); None when there is no parametrize."""
    tables = []
    for dec in fn.decorator_list:
        if not (isinstance(dec, ast.Call) and _name(dec) == "parametrize" and len(dec.args) >= 2):
            continue
        names = ast.literal_eval(dec.args[0])
        names = [s.strip() for s in names.split(",")] if isinstance(names, str) else list(names)
        rows = []
        for elt in dec.args[1].elts:
            values = _evaluate(elt, {})
            values = (values,) if len(names) == 1 else tuple(values)
            rows.append((dict(zip(names, values, strict=True)), elt.lineno))
        tables.append(rows)
    if not tables:
        return None
    return [({k: v for row, _ in combo for k, v in row.items()}, combo[0][1]) for combo in itertools.product(*tables)]


def _verdict(test: ast.AST) -> tuple[ast.Call, ast.AST | bool] | str:
    """(the call giving the verdict, the expected node or bool), or why the assert is not a verdict."""
    expected: ast.AST | bool = True
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        test, expected = test.operand, False
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
        test, expected = test.left, test.comparators[0]
    while isinstance(test, ast.Call) and _name(test) in ("int", "bool") and len(test.args) == 1:
        test = test.args[0]
    name = _name(test) if isinstance(test, ast.Call) else ""
    if name == HELPER:
        return test, expected
    if name == "verify":
        if all(isinstance(a, ast.Call) and _name(a) == "parse" and len(a.args) == 1 and not a.keywords
               for a in test.args) and len(test.args) == 2 and not test.keywords:
            return test, expected
        return "verify() on pre-parsed objects or with non-default options"
    if name == "sympy_expr_eq":
        return "sympy objects compared directly (sympy_expr_eq), no strings"
    return "asserts parse() output (extracted strings / extraction and normalisation configs), not a verdict"


def _helper_signature(files: list[Path]) -> tuple[list[str], dict]:
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name == HELPER:
                params = [a.arg for a in node.args.args]
                defaults = [ast.literal_eval(d) for d in node.args.defaults]
                return params, dict(zip(params[len(params) - len(defaults):], defaults, strict=True))
    raise FileNotFoundError(f"no def {HELPER} under the Math-Verify tests")


def collect(tests_dir: Path) -> tuple[list[Case], Counter]:
    """Every (gold, prediction, expected, config) verdict of the checkout's tests, and a Counter of skipped rows
    keyed by (file::test, reason)."""
    files = sorted(Path(tests_dir).glob("test_*.py"))
    if not files:
        raise FileNotFoundError(f"no test_*.py in {tests_dir} (pass the tests/ folder of a Math-Verify checkout)")
    params, defaults = _helper_signature(files)
    cases: list[Case] = []
    skipped: Counter = Counter()
    for path in files:
        for fn in ast.parse(path.read_text(encoding="utf-8")).body:
            if not (isinstance(fn, ast.FunctionDef) and fn.name.startswith("test")):
                continue
            group = f"{path.name}::{fn.name}"
            n_rows = math.prod(len(d.args[1].elts) for d in fn.decorator_list
                               if isinstance(d, ast.Call) and _name(d) == "parametrize" and len(d.args) >= 2)
            asserts = [n for n in ast.walk(fn) if isinstance(n, ast.Assert)]
            if any(_name(n) == "patch" for n in ast.walk(fn)) or any(_name(d) == "patch" for d in fn.decorator_list):
                skipped[group, "mocks Math-Verify internals (timeouts, raise_on_error)"] += len(asserts) * n_rows
                continue
            verdicts = [(node, _verdict(node.test)) for node in asserts]
            for _, verdict in verdicts:
                if isinstance(verdict, str):
                    skipped[group, verdict] += n_rows
            verdicts = [(node, v) for node, v in verdicts if not isinstance(v, str)]
            if not verdicts:
                continue
            try:
                rows = _parametrize_rows(fn) or [({}, 0)]
            except (Unreadable, ValueError, TypeError) as e:
                skipped[group, f"parametrize rows not readable ({e})"] += n_rows * len(verdicts)
                continue
            for (i, (row, row_line)), (node, verdict) in itertools.product(enumerate(rows), verdicts):
                call, expected_node = verdict
                try:
                    expected = expected_node if isinstance(expected_node, bool) else _evaluate(expected_node, row)
                    if _name(call) == HELPER:
                        bound = dict(zip(params, (_evaluate(a, row) for a in call.args), strict=False))
                        bound.update({k.arg: _evaluate(k.value, row) for k in call.keywords})
                        options = {**defaults, **{k: v for k, v in bound.items() if k not in params[:2]}}
                        gold, pred, helper = bound[params[0]], bound[params[1]], HELPER
                    else:
                        gold, pred = (_evaluate(a.args[0], row) for a in call.args)
                        options, helper = {}, "parse+verify"
                except Unreadable as e:
                    skipped[group, str(e)] += 1
                    continue
                toggled = [k for k, v in TOGGLES.items() if k in options and options[k] != v]
                if toggled:
                    skipped[group, f"non-default verify toggle ({', '.join(toggled)})"] += 1
                    continue
                cases.append(Case(path.name, fn.name, i, row_line or node.lineno, str(gold), str(pred),
                                  bool(expected), helper, options))
    return cases, skipped


def math_verify_verdict(case: Case, precision: int | None = None) -> bool:
    """Math-Verify on the case exactly as its test runs it (precision overrides the test's float_rounding)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    if case.helper != HELPER:
        return bool(verify(parse(case.gold), parse(case.pred)))
    targets = []
    for match_type in case.options["match_types"]:
        if match_type == "latex":
            targets.append(LatexExtractionConfig(boxed_match_priority=0))
        elif match_type == "expr":
            targets.append(ExprExtractionConfig())
    return bool(verify(parse(case.gold, targets), parse(case.pred, targets),
                       float_rounding=case.options["precision"] if precision is None else precision,
                       strict=case.options["strict"], allow_set_relation_comp=case.options["allow_set_relation_comp"]))


def run(cases: list[Case], skipped: Counter) -> tuple[list[Case], list[bool]]:
    """Math-Verify's verdict on every case; a case run at a non-default precision whose expectation Math-Verify does
    not reach at the default precision is moved to `skipped` (its expectation is a precision setting's)."""
    kept, verdicts = [], []
    for case in cases:
        precision = case.options.get("precision", DEFAULT_PRECISION)
        if precision != DEFAULT_PRECISION and math_verify_verdict(case, DEFAULT_PRECISION) != case.expected:
            skipped[case.group, f"expectation holds only at float_rounding={precision}"] += 1
            continue
        kept.append(case)
        verdicts.append(math_verify_verdict(case))
    return kept, verdicts
