#include "rewards/value.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace r1fast::rewards {

namespace {

constexpr double kPi = 3.14159265358979323846;

long cost(const Rational& a, const Rational& b) noexcept {
  const long n = 1 + std::max(a.num.size, a.den.size);
  const long m = 1 + std::max(b.num.size, b.den.size);
  return 4 * n * m;
}

bool key_less(const Term& a, const Term& b) noexcept {
  return a.radicand != b.radicand ? a.radicand < b.radicand : a.pi_power < b.pi_power;
}

double term_approx(const Term& t) noexcept {
  return t.coef.to_double() * std::sqrt(static_cast<double>(t.radicand)) * std::pow(kPi, t.pi_power);
}

Value overflow() noexcept {
  Value v;
  v.kind = Exactness::kOverflow;
  v.approx = std::nan("");
  return v;
}

// Sorts and merges terms with equal keys, drops zeros, refreshes the approximation.
Value finish(std::vector<Term> terms, Budget& budget) noexcept {
  std::sort(terms.begin(), terms.end(), key_less);
  Value v;
  for (const Term& t : terms) {
    if (!v.terms.empty() && !key_less(v.terms.back(), t)) {
      if (!budget.charge(cost(v.terms.back().coef, t.coef))) return overflow();
      if (!add(v.terms.back().coef, t.coef, v.terms.back().coef)) return overflow();
    } else {
      v.terms.push_back(t);
    }
  }
  v.terms.erase(std::remove_if(v.terms.begin(), v.terms.end(), [](const Term& t) { return t.coef.is_zero(); }),
                v.terms.end());
  if (static_cast<int>(v.terms.size()) > kMaxTerms) return overflow();
  v.approx = 0.0;
  for (const Term& t : v.terms) v.approx += term_approx(t);
  return v;
}

// n = outside^2 * inside with inside square-free. Trial division up to cbrt(n) leaves a cofactor with at most two
// prime factors, which is either a perfect square or square-free. At most 1e4 divisions for n <= 1e12.
void split_square(std::uint64_t n, std::uint64_t& outside, std::uint64_t& inside) noexcept {
  outside = 1;
  inside = 1;
  for (std::uint64_t p = 2; p * p * p <= n; ++p) {
    int count = 0;
    while (n % p == 0) {
      n /= p;
      ++count;
    }
    for (int i = 0; i < count / 2; ++i) outside *= p;
    if (count % 2 == 1) inside *= p;
  }
  auto s = static_cast<std::uint64_t>(std::sqrt(static_cast<double>(n)));
  while (s * s > n) --s;
  while ((s + 1) * (s + 1) <= n) ++s;
  if (s * s == n) {
    outside *= s;
  } else {
    inside *= n;
  }
}

// a * b of two terms; false when the radicand or pi power leaves its bound or the coefficient overflows.
bool mul_terms(const Term& a, const Term& b, Term& out, Budget& budget) noexcept {
  if (!budget.charge(cost(a.coef, b.coef))) return false;
  Term r;
  if (!mul(a.coef, b.coef, r.coef)) return false;
  const std::uint64_t g = std::gcd(a.radicand, b.radicand);
  const std::uint64_t x = a.radicand / g;
  const std::uint64_t y = b.radicand / g;
  if (y != 0 && x > kMaxRadicand / y) return false;
  r.radicand = x * y;
  if (g > 1 && !mul(r.coef, Rational::from_int(static_cast<std::int64_t>(g)), r.coef)) return false;
  r.pi_power = a.pi_power + b.pi_power;
  if (r.pi_power > kMaxPiPower || r.pi_power < -kMaxPiPower) return false;
  out = r;
  return true;
}

// 1 / t as a term: (1 / (c * r)) * sqrt(r) * pi^-k.
bool invert_term(const Term& t, Term& out) noexcept {
  Term r;
  Rational denom;
  if (!mul(t.coef, Rational::from_int(static_cast<std::int64_t>(t.radicand)), denom)) return false;
  if (!div(Rational::from_int(1), denom, r.coef)) return false;
  r.radicand = t.radicand;
  r.pi_power = -t.pi_power;
  out = r;
  return true;
}

bool is_small_integer(const Value& v, std::int64_t& out) noexcept {
  Rational r;
  if (!v.is_exact() || !v.as_rational(r) || !r.is_integer() || r.num.size > 1) return false;
  const auto mag = static_cast<std::int64_t>(r.num.low_u64());
  out = r.num.negative ? -mag : mag;
  return true;
}

Value sqrt_rational(const Rational& r, Budget& budget) noexcept {
  if (r.num.negative) return overflow();  // no complex numbers
  if (!r.num.fits_u64() || !r.den.fits_u64() || r.num.low_u64() > kMaxRadicand || r.den.low_u64() > kMaxRadicand) {
    return Value::approximate(std::sqrt(r.to_double()));
  }
  std::uint64_t out_n = 0;
  std::uint64_t in_n = 0;
  std::uint64_t out_d = 0;
  std::uint64_t in_d = 0;
  // Trial division runs to the cube root: charge for it.
  if (!budget.charge(2 + static_cast<long>(std::cbrt(static_cast<double>(r.num.low_u64())) + std::cbrt(static_cast<double>(r.den.low_u64()))))) {
    return overflow();
  }
  split_square(r.num.low_u64(), out_n, in_n);
  split_square(r.den.low_u64(), out_d, in_d);
  Term tn{Rational::from_int(static_cast<std::int64_t>(out_n)), in_n, 0};
  Term td{Rational::from_int(static_cast<std::int64_t>(out_d)), in_d, 0};
  Term inv;
  Term result;
  if (!invert_term(td, inv) || !mul_terms(tn, inv, result, budget)) {
    return Value::approximate(std::sqrt(r.to_double()));
  }
  return finish({result}, budget);
}

// The exact k-th root of n when n is a perfect k-th power (k >= 2).
bool integer_root(std::uint64_t n, std::int64_t k, std::uint64_t& out) noexcept {
  if (n > (std::uint64_t{1} << 62)) return false;
  const double guess = std::round(std::pow(static_cast<double>(n), 1.0 / static_cast<double>(k)));
  for (double c = std::max(0.0, guess - 1.0); c <= guess + 1.0; c += 1.0) {
    std::uint64_t p = 1;
    const auto base = static_cast<std::uint64_t>(c);
    bool fits = true;
    for (std::int64_t i = 0; i < k && fits; ++i) {
      if (base != 0 && p > n / base) fits = false;
      p *= base;
    }
    if (fits && p == n) {
      out = base;
      return true;
    }
  }
  return false;
}

}  // namespace

Value Value::from_rational(const Rational& r) noexcept {
  Value v;
  if (!r.is_zero()) v.terms.push_back(Term{r, 1, 0});
  v.approx = r.to_double();
  return v;
}

Value Value::pi() noexcept {
  Value v;
  v.terms.push_back(Term{Rational::from_int(1), 1, 1});
  v.approx = kPi;
  return v;
}

Value Value::approximate(double x) noexcept {
  if (!std::isfinite(x)) return overflow();
  Value v;
  v.kind = Exactness::kApproximate;
  v.approx = x;
  return v;
}

bool Value::as_rational(Rational& out) const noexcept {
  if (kind != Exactness::kExact || infinity != 0) return false;
  if (terms.empty()) {
    out = Rational::from_int(0);
    return true;
  }
  if (terms.size() == 1 && terms[0].radicand == 1 && terms[0].pi_power == 0) {
    out = terms[0].coef;
    return true;
  }
  return false;
}

Value negate(const Value& a) noexcept {
  Value v = a;
  for (Term& t : v.terms) t.coef.num.negative = !t.coef.num.is_zero() && !t.coef.num.negative;
  v.approx = -a.approx;
  v.infinity = -a.infinity;
  return v;
}

Value add(const Value& a, const Value& b, Budget& budget) noexcept {
  if (a.kind == Exactness::kOverflow || b.kind == Exactness::kOverflow || a.infinity != 0 || b.infinity != 0) {
    return overflow();
  }
  if (!a.is_exact() || !b.is_exact()) return Value::approximate(a.approx + b.approx);
  std::vector<Term> terms = a.terms;
  terms.insert(terms.end(), b.terms.begin(), b.terms.end());
  return finish(std::move(terms), budget);
}

Value sub(const Value& a, const Value& b, Budget& budget) noexcept { return add(a, negate(b), budget); }

Value mul(const Value& a, const Value& b, Budget& budget) noexcept {
  if (a.kind == Exactness::kOverflow || b.kind == Exactness::kOverflow || a.infinity != 0 || b.infinity != 0) {
    return overflow();
  }
  if (!a.is_exact() || !b.is_exact()) return Value::approximate(a.approx * b.approx);
  if (a.terms.size() * b.terms.size() > static_cast<std::size_t>(kMaxTerms * kMaxTerms)) return overflow();
  std::vector<Term> terms;
  terms.reserve(a.terms.size() * b.terms.size());
  for (const Term& x : a.terms) {
    for (const Term& y : b.terms) {
      Term t;
      if (!mul_terms(x, y, t, budget)) return budget.remaining < 0 ? overflow() : Value::approximate(a.approx * b.approx);
      terms.push_back(t);
    }
  }
  return finish(std::move(terms), budget);
}

Value div(const Value& a, const Value& b, Budget& budget) noexcept {
  if (a.kind == Exactness::kOverflow || b.kind == Exactness::kOverflow || a.infinity != 0 || b.infinity != 0) {
    return overflow();
  }
  if (b.is_exact() && b.terms.empty()) return overflow();  // division by zero
  if (!a.is_exact() || !b.is_exact()) {
    if (b.approx == 0.0) return overflow();
    return Value::approximate(a.approx / b.approx);
  }
  Value inverse;
  if (b.terms.size() == 1) {
    Term t;
    if (!invert_term(b.terms[0], t)) return overflow();
    inverse = finish({t}, budget);
  } else if (b.terms.size() == 2 && b.terms[0].pi_power == b.terms[1].pi_power) {
    // Rationalise with the conjugate: 1/(x + y) = (x - y) / (x^2 - y^2), where x^2 and y^2 are rational.
    Term x = b.terms[0];
    Term y = b.terms[1];
    x.pi_power = 0;
    y.pi_power = 0;
    Term xx;
    Term yy;
    if (!mul_terms(x, x, xx, budget) || !mul_terms(y, y, yy, budget)) return overflow();
    Rational denom;
    if (!sub(xx.coef, yy.coef, denom) || denom.is_zero()) return overflow();
    Term ny = y;
    ny.coef.num.negative = !ny.coef.num.negative;
    for (Term* t : {&x, &ny}) {
      if (!div(t->coef, denom, t->coef)) return overflow();
      t->pi_power = -b.terms[0].pi_power;
    }
    inverse = finish({x, ny}, budget);
  } else {
    if (b.approx == 0.0) return overflow();
    return Value::approximate(a.approx / b.approx);
  }
  return mul(a, inverse, budget);
}

Value pow(const Value& base, const Value& exponent, Budget& budget) noexcept {
  if (base.kind == Exactness::kOverflow || exponent.kind == Exactness::kOverflow || base.infinity != 0 ||
      exponent.infinity != 0) {
    return overflow();
  }
  const double approx = std::pow(base.approx, exponent.approx);
  std::int64_t e = 0;
  if (base.is_exact() && is_small_integer(exponent, e)) {
    if (e == 0) return Value::from_rational(Rational::from_int(1));
    if (base.terms.empty()) return e > 0 ? base : overflow();
    if (e < 0) {
      Value positive = pow(base, negate(exponent), budget);
      return div(Value::from_rational(Rational::from_int(1)), positive, budget);
    }
    if (base.terms.size() == 1) {
      const Term& t = base.terms[0];
      Term r;
      Rational radical_part;
      if (e > 4 * 32 * kValueLimbs) return overflow();
      if (!budget.charge(e)) return overflow();
      if (!pow(t.coef, e, r.coef)) return overflow();
      if (!pow(Rational::from_int(static_cast<std::int64_t>(t.radicand)), e / 2, radical_part)) return overflow();
      if (!mul(r.coef, radical_part, r.coef)) return overflow();
      r.radicand = e % 2 == 1 ? t.radicand : 1;
      if (std::abs(static_cast<double>(t.pi_power) * static_cast<double>(e)) > kMaxPiPower) return overflow();
      r.pi_power = t.pi_power * static_cast<int>(e);
      Value v = finish({r}, budget);
      return v;
    }
    if (e <= 16) {
      Value result = base;
      for (std::int64_t i = 1; i < e; ++i) result = mul(result, base, budget);
      return result;
    }
    return std::isfinite(approx) ? Value::approximate(approx) : overflow();
  }
  Rational q;
  Rational b;
  if (exponent.is_exact() && exponent.as_rational(q) && base.as_rational(b) && q.den.size == 1 &&
      q.den.low_u64() == 2 && q.num.size == 1) {
    // b^(p/2) = sqrt(b)^p
    Value root = sqrt_rational(b, budget);
    const auto p = static_cast<std::int64_t>(q.num.low_u64()) * (q.num.negative ? -1 : 1);
    return pow(root, Value::from_rational(Rational::from_int(p)), budget);
  }
  if (!std::isfinite(approx)) return overflow();
  return Value::approximate(approx);
}

Value sqrt(const Value& a, Budget& budget) noexcept {
  if (a.kind == Exactness::kOverflow || a.infinity != 0) return overflow();
  Rational r;
  if (a.as_rational(r)) return sqrt_rational(r, budget);
  if (a.is_exact() && a.terms.size() == 1 && a.terms[0].radicand == 1 && a.terms[0].pi_power % 2 == 0) {
    Value root = sqrt_rational(a.terms[0].coef, budget);
    Value pi_part = Value::from_rational(Rational::from_int(1));
    pi_part.terms[0].pi_power = a.terms[0].pi_power / 2;
    return mul(root, finish(pi_part.terms, budget), budget);
  }
  if (a.approx < 0.0) return overflow();
  return Value::approximate(std::sqrt(a.approx));
}

Value nth_root(const Value& a, const Value& n, Budget& budget) noexcept {
  std::int64_t k = 0;
  if (!is_small_integer(n, k) || k < 1) return overflow();
  if (k == 1) return a;
  if (k == 2) return sqrt(a, budget);
  if (k > 64) return a.kind == Exactness::kOverflow ? overflow() : Value::approximate(std::pow(a.approx, 1.0 / static_cast<double>(k)));
  if (a.kind == Exactness::kOverflow || a.infinity != 0) return overflow();
  const double x = a.approx;
  if (x < 0.0 && k % 2 == 0) return overflow();
  const double root = x < 0.0 ? -std::pow(-x, 1.0 / static_cast<double>(k)) : std::pow(x, 1.0 / static_cast<double>(k));
  Rational r;
  std::uint64_t num_root = 0;
  std::uint64_t den_root = 0;
  if (a.as_rational(r) && r.num.fits_u64() && r.den.fits_u64() && integer_root(r.num.low_u64(), k, num_root) &&
      integer_root(r.den.low_u64(), k, den_root)) {
    Rational exact;
    exact.num = BigInt::from_int(static_cast<std::int64_t>(num_root));
    exact.num.negative = r.num.negative && num_root != 0;
    exact.den = BigInt::from_int(static_cast<std::int64_t>(den_root));
    Value v = Value::from_rational(exact);
    return v;
  }
  return Value::approximate(root);
}

bool exactly_equal(const Value& a, const Value& b) noexcept {
  if (a.kind != Exactness::kExact || b.kind != Exactness::kExact) return false;
  if (a.infinity != 0 || b.infinity != 0) return a.infinity == b.infinity;
  if (a.terms.size() != b.terms.size()) return false;
  for (std::size_t i = 0; i < a.terms.size(); ++i) {
    const Term& x = a.terms[i];
    const Term& y = b.terms[i];
    if (x.radicand != y.radicand || x.pi_power != y.pi_power || !(x.coef == y.coef)) return false;
  }
  return true;
}

}  // namespace r1fast::rewards
