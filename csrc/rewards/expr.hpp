// One LaTeX math expression (after normalize_answer) as a small tree, evaluated two ways:
//   - exactly (rationals, surds, pi multiples: Value) where the arithmetic allows it, and
//   - numerically in complex long double where it does not (e, i, sin, log, non-rational powers, ...).
// Variables (x, a_1, \theta, ...) are evaluated at fixed, irregular rational sample points, signs mixed, so two
// expressions are equal as functions when they agree at every point where either is defined.
//
// Grammar: sums, products (*, \cdot, \times, /, \div, implicit: 2x, 3(4), x\sqrt2), unary signs, powers (^{..}, ^2,
// right-associative), postfix ! and %, \frac (braced or one-token arguments, \frac12), mixed numbers (2\frac12),
// \sqrt{x}, \sqrt[n]{x}, \binom, |x|, \lfloor \rfloor, \lceil \rceil, \pi, e, i, \infty, decimals and scientific
// notation (1.5e3), \sin \cos \tan \cot \sec \csc (with ^{-1} and ^2), \arcsin \arccos \arctan, \sinh \cosh \tanh,
// \ln, \log, \log_b, \exp. Bounded: nesting depth <= 64, <= 4096 parse steps, <= 512 nodes, <= 16 variables,
// arithmetic within a Budget.
#pragma once

#include <array>
#include <complex>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "rewards/value.hpp"

namespace r1fast::rewards {

using Complex = std::complex<long double>;

enum class Op : std::uint8_t {
  kNumber, kVariable, kPi, kE, kI, kInfinity,
  kAdd, kSub, kMul, kDiv, kNeg, kPow, kFactorial, kPercent, kRoot, kBinom, kAbs, kFloor, kCeil, kFunction,
};

enum class Fn : std::uint8_t {
  kNone, kSin, kCos, kTan, kCot, kSec, kCsc, kAsin, kAcos, kAtan, kSinh, kCosh, kTanh, kLn, kLog10, kLogBase, kExp,
};

struct ExprNode {
  Op op = Op::kNumber;
  Fn fn = Fn::kNone;
  int a = -1;         // first operand (radicand of kRoot, argument of kFunction, base of kPow)
  int b = -1;         // second operand (index of kRoot, base of kLogBase, exponent of kPow)
  int variable = -1;  // kVariable: index into Symbols
  Value value;        // kNumber: the exact value
  long double approx = 0.0L;  // kNumber: the value in long double, read from the literal's digits
  bool decimal = false;       // kNumber: written with a decimal point or an exponent (0.5, 1e-3)
  int ulp_exponent = 0;       // kNumber, decimal: the literal is a multiple of 10^ulp_exponent as written
  int significant_digits = 0;  // kNumber, decimal: digits from the first non-zero one, trailing zeros included
};

// The variable names of one comparison; both sides are parsed against the same table so that x means one thing.
struct Symbols {
  std::vector<std::string> names;
  int intern(std::string_view name);  // -1 when the table is full
};

constexpr int kSamplePoints = 5;

struct Expr {
  std::vector<ExprNode> nodes;
  int root = -1;
  std::uint64_t variables = 0;  // bit per Symbols index used
  // The values at the sample points, computed once: a list item is compared with every item of the other list.
  mutable std::array<Value, kSamplePoints> exact_cache;
  mutable std::array<Complex, kSamplePoints> numeric_cache;
  mutable std::array<std::int8_t, kSamplePoints> exact_state{};    // 0 not yet, 1 computed
  mutable std::array<std::int8_t, kSamplePoints> numeric_state{};  // 0 not yet, 1 defined, -1 undefined

  bool parsed() const noexcept { return root >= 0; }
  const ExprNode& top() const noexcept { return nodes[static_cast<std::size_t>(root)]; }
  bool is_variable() const noexcept { return parsed() && top().op == Op::kVariable; }
  // A decimal literal as written (0.333333, -2.5): the node of the literal, or nullptr.
  const ExprNode* bare_decimal() const noexcept;
  bool has_constant(Op op) const noexcept;
};

// Parses all of `s` into `out`; false when `s` is not one expression (text, an unbalanced group, too large).
bool parse_expr(std::string_view s, Symbols& symbols, Expr& out, Budget& budget);

// The exact value of `e` with every variable at sample point `point` (0 <= point < kSamplePoints); the result's
// kind says whether it is exact (kExact), only approximate (kApproximate) or not a real number / overflowed
// (kOverflow). e, i and transcendental functions make the result approximate or non-real.
const Value& evaluate_exact(const Expr& e, int point, Budget& budget) noexcept;

// The value of `e` in complex long double at sample point `point`; false where it is undefined (division by zero,
// log 0, overflow, a non-integer factorial, NaN).
bool evaluate_numeric(const Expr& e, int point, Complex& out) noexcept;

}  // namespace r1fast::rewards
