// A number as the verifier sees it: an exact sum of terms  coef * sqrt(radicand) * pi^k  (rational coef,
// square-free radicand, integer k), carried together with a double approximation. Operations the exact form
// cannot express (sqrt of a sum, sin, log, ...) keep only the approximation; operations past the size bounds mark
// the value as overflowed. Only exact values compare here (exactly_equal); the rest is the expression evaluator's
// business (expr.hpp), in complex long double.
#pragma once

#include <cstdint>
#include <vector>

#include "rewards/rational.hpp"

namespace r1fast::rewards {

// A bound on the arithmetic one parse may do, in units of limb products.
struct Budget {
  long remaining = 200000;
  bool charge(long units) noexcept {
    remaining -= units;
    return remaining >= 0;
  }
};

struct Term {
  Rational coef;
  std::uint64_t radicand = 1;  // square-free, <= kMaxRadicand
  int pi_power = 0;
};

enum class Exactness : std::uint8_t { kExact, kApproximate, kOverflow };

constexpr std::uint64_t kMaxRadicand = 1000000000000ULL;  // 1e12
constexpr int kMaxTerms = 8;
constexpr int kMaxPiPower = 16;

struct Value {
  std::vector<Term> terms;  // canonical: sorted by (radicand, pi_power), no zero coefficient
  double approx = 0.0;
  Exactness kind = Exactness::kExact;
  int infinity = 0;          // +1 / -1 for a bare +-infinity (then terms is empty)

  static Value from_rational(const Rational& r) noexcept;
  static Value pi() noexcept;
  static Value approximate(double x) noexcept;
  bool is_exact() const noexcept { return kind == Exactness::kExact; }
  // The exact value as a rational when it is one (a single radicand-1, pi^0 term or zero).
  bool as_rational(Rational& out) const noexcept;
};

Value add(const Value& a, const Value& b, Budget& budget) noexcept;
Value sub(const Value& a, const Value& b, Budget& budget) noexcept;
Value mul(const Value& a, const Value& b, Budget& budget) noexcept;
Value div(const Value& a, const Value& b, Budget& budget) noexcept;  // kOverflow on division by zero
Value negate(const Value& a) noexcept;
Value pow(const Value& base, const Value& exponent, Budget& budget) noexcept;
Value sqrt(const Value& a, Budget& budget) noexcept;
Value nth_root(const Value& a, const Value& n, Budget& budget) noexcept;

// Exact equality of two exact values (the same terms, or the same infinity); false when either is approximate or
// overflowed.
bool exactly_equal(const Value& a, const Value& b) noexcept;

}  // namespace r1fast::rewards
