// Answer comparison: the structure of an answer and the accuracy reward built on extract + normalize + expr.
//
// An answer is one of: a scalar expression, a tuple or interval ((a, b), [a, b), \langle a, b \rangle), a list or
// set (a, b; a and b; a or b; \{a, b\}; several boxes; a \pm b), a union of intervals, a relation (an equation,
// a system, an inequality that is not on one variable), a matrix, or text. Rules (gold vs predicted):
// - scalars: exact where both sides evaluate exactly (rationals, surds, pi multiples), else numerically in complex
//   long double at kSamplePoints irregular points (signs mixed) for every variable: equal when every point agrees
//   to ~1e-12 relatively and at least one point is defined on both sides;
// - a decimal literal against a value it does not equal exactly: equal only when it is that value correctly
//   rounded at its own written precision with >= 6 significant digits (1/3 = 0.333333, 1/3 != 0.33, and no wrong
//   integer is ever accepted), or, when rel_tol > 0, within rel_tol relatively;
// - p% equals p and p/100;
// - equations as equations: L1 = R1 equals L2 = R2 when L2 - R2 = c (L1 - R1) for a constant c != 0; a gold
//   assignment `x = 3` (one variable on the left) also equals the bare value 3; a predicted equation chain equals
//   a gold value through its last right-hand side (`2+3 = 5` for 5); never one side of a gold equation alone;
// - inequalities on one variable are interval sets (-2 \le x \le 7 = [-2, 7], x > 3 = (3, \infty)), as are
//   x \in S and unions; other inequalities compare like equations with c > 0 (or c < 0 when flipped);
// - tuples and intervals in order with the same brackets; lists and sets order-free (repeats free); a one-element
//   list is its element; a list never equals a different single answer (hedging scores 0);
// - matrices element-wise (a row or column vector also equals the tuple of its entries);
// - text compares as canonical text; single letters (multiple choice) ignore case.
#pragma once

#include <string_view>

namespace r1fast::rewards {

struct AccuracyOptions {
  double rel_tol = 0.0;  // > 0: a decimal also matches any value within this relative error (physics-style)
};

enum class Verdict : int { kWrong = 0, kCorrect = 1, kNoGold = -1 };

// Whether the answer string `predicted` (already extracted) equals `gold` (already extracted).
bool answers_equal(std::string_view gold, std::string_view predicted, const AccuracyOptions& options) noexcept;

// The accuracy reward of one completion: kNoGold when the gold answer is empty, longer than kMaxAnswerBytes, or
// has unbalanced braces (truncated or malformed).
Verdict accuracy(std::string_view completion, std::string_view gold, const AccuracyOptions& options) noexcept;

}  // namespace r1fast::rewards
