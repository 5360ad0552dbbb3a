#include "rewards/rational.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace r1fast::rewards {

namespace {

void trim(BigInt& x) noexcept {
  while (x.size > 0 && x.limb[static_cast<std::size_t>(x.size - 1)] == 0) --x.size;
  if (x.size == 0) x.negative = false;
}

// |out| = |a| + |b|
bool add_magnitude(const BigInt& a, const BigInt& b, BigInt& out, int limit) noexcept {
  const int n = a.size > b.size ? a.size : b.size;
  BigInt r;
  std::uint64_t carry = 0;
  for (int i = 0; i < n; ++i) {
    const auto k = static_cast<std::size_t>(i);
    const std::uint64_t s = std::uint64_t{i < a.size ? a.limb[k] : 0u} + (i < b.size ? b.limb[k] : 0u) + carry;
    r.limb[k] = static_cast<std::uint32_t>(s);
    carry = s >> 32;
  }
  r.size = n;
  if (carry != 0) {
    if (n >= limit) return false;
    r.limb[static_cast<std::size_t>(n)] = static_cast<std::uint32_t>(carry);
    r.size = n + 1;
  }
  out = r;
  trim(out);
  return true;
}

// |out| = |a| - |b|, requires |a| >= |b|
void sub_magnitude(const BigInt& a, const BigInt& b, BigInt& out) noexcept {
  BigInt r;
  std::int64_t borrow = 0;
  for (int i = 0; i < a.size; ++i) {
    const auto k = static_cast<std::size_t>(i);
    std::int64_t d = std::int64_t{a.limb[k]} - std::int64_t{i < b.size ? b.limb[k] : 0u} - borrow;
    borrow = d < 0 ? 1 : 0;
    if (d < 0) d += std::int64_t{1} << 32;
    r.limb[k] = static_cast<std::uint32_t>(d);
  }
  r.size = a.size;
  out = r;
  trim(out);
}

bool add_signed(const BigInt& a, const BigInt& b, bool negate_b, BigInt& out, int limit) noexcept {
  const bool bneg = b.is_zero() ? false : (b.negative != negate_b);
  if (a.negative == bneg) {
    if (!add_magnitude(a, b, out, limit)) return false;
    out.negative = a.negative && !out.is_zero();
    return true;
  }
  const int c = compare_magnitude(a, b);
  if (c >= 0) {
    sub_magnitude(a, b, out);
    out.negative = a.negative && !out.is_zero();
  } else {
    sub_magnitude(b, a, out);
    out.negative = bneg && !out.is_zero();
  }
  return true;
}

BigInt from_u64(std::uint64_t v) noexcept {
  BigInt r;
  r.limb[0] = static_cast<std::uint32_t>(v);
  r.limb[1] = static_cast<std::uint32_t>(v >> 32);
  r.size = r.limb[1] != 0 ? 2 : (r.limb[0] != 0 ? 1 : 0);
  return r;
}

// out[0, a.size + b.size) = |a| * |b|; returns the used size. out must hold a.size + b.size limbs.
int mul_raw(const BigInt& a, const BigInt& b, std::uint32_t* out) noexcept {
  const int n = a.size + b.size;
  for (int k = 0; k < n; ++k) out[k] = 0;
  for (int i = 0; i < a.size; ++i) {
    std::uint64_t carry = 0;
    const std::uint64_t ai = a.limb[i];
    for (int j = 0; j < b.size; ++j) {
      const std::uint64_t t = ai * b.limb[j] + out[i + j] + carry;
      out[i + j] = static_cast<std::uint32_t>(t);
      carry = t >> 32;
    }
    out[i + b.size] = static_cast<std::uint32_t>(carry);
  }
  int size = n;
  while (size > 0 && out[size - 1] == 0) --size;
  return size;
}

// Reduces num/den by their gcd when both fit in 64 bits (the common case); larger values stay unreduced, which
// is still exact since comparisons cross-multiply.
void normalize(Rational& r) noexcept {
  if (r.num.is_zero()) {
    r.den = BigInt::from_int(1);
    return;
  }
  if (!r.num.fits_u64() || !r.den.fits_u64()) return;
  const std::uint64_t n = r.num.low_u64();
  const std::uint64_t d = r.den.low_u64();
  const std::uint64_t g = std::gcd(n, d);
  if (g > 1) {
    const bool neg = r.num.negative;
    r.num = from_u64(n / g);
    r.num.negative = neg;
    r.den = from_u64(d / g);
  }
}

}  // namespace

BigInt BigInt::from_int(std::int64_t v) noexcept {
  const std::uint64_t mag = v < 0 ? ~static_cast<std::uint64_t>(v) + 1 : static_cast<std::uint64_t>(v);
  BigInt r = from_u64(mag);
  r.negative = v < 0;
  return r;
}

std::uint64_t BigInt::low_u64() const noexcept {
  if (size == 0) return 0;
  return size == 1 ? limb[0] : (std::uint64_t{limb[1]} << 32) | limb[0];
}

int BigInt::bit_length() const noexcept {
  if (size == 0) return 0;
  std::uint32_t top = limb[static_cast<std::size_t>(size - 1)];
  int bits = 0;
  while (top != 0) {
    ++bits;
    top >>= 1;
  }
  return (size - 1) * 32 + bits;
}

int compare_magnitude(const BigInt& a, const BigInt& b) noexcept {
  if (a.size != b.size) return a.size < b.size ? -1 : 1;
  for (int i = a.size - 1; i >= 0; --i) {
    const auto k = static_cast<std::size_t>(i);
    if (a.limb[k] != b.limb[k]) return a.limb[k] < b.limb[k] ? -1 : 1;
  }
  return 0;
}

int compare(const BigInt& a, const BigInt& b) noexcept {
  if (a.negative != b.negative) return a.negative ? -1 : 1;
  const int c = compare_magnitude(a, b);
  return a.negative ? -c : c;
}

bool add(const BigInt& a, const BigInt& b, BigInt& out, int limit) noexcept {
  return add_signed(a, b, false, out, limit);
}

bool sub(const BigInt& a, const BigInt& b, BigInt& out, int limit) noexcept {
  return add_signed(a, b, true, out, limit);
}

bool mul(const BigInt& a, const BigInt& b, BigInt& out, int limit) noexcept {
  if (a.is_zero() || b.is_zero()) {
    out = BigInt{};
    return true;
  }
  if (limit > kValueLimbs) limit = kValueLimbs;
  if (a.size + b.size - 1 > limit) return false;
  std::uint32_t wide[2 * kValueLimbs];
  const int size = mul_raw(a, b, wide);
  if (size > limit) return false;
  const bool negative = a.negative != b.negative;
  out.size = size;
  for (int k = 0; k < size; ++k) out.limb[k] = wide[k];
  out.negative = negative;
  return true;
}

bool mul_add_small(BigInt& x, std::uint32_t m, std::uint32_t c, int limit) noexcept {
  std::uint64_t carry = c;
  for (int i = 0; i < x.size; ++i) {
    const auto k = static_cast<std::size_t>(i);
    const std::uint64_t t = std::uint64_t{x.limb[k]} * m + carry;
    x.limb[k] = static_cast<std::uint32_t>(t);
    carry = t >> 32;
  }
  if (carry != 0) {
    if (x.size >= limit) return false;
    x.limb[static_cast<std::size_t>(x.size)] = static_cast<std::uint32_t>(carry);
    ++x.size;
  }
  trim(x);
  return true;
}

std::uint32_t divide_small(BigInt& x, std::uint32_t d) noexcept {
  std::uint64_t rem = 0;
  for (int i = x.size - 1; i >= 0; --i) {
    const auto k = static_cast<std::size_t>(i);
    const std::uint64_t cur = (rem << 32) | x.limb[k];
    x.limb[k] = static_cast<std::uint32_t>(cur / d);
    rem = cur % d;
  }
  trim(x);
  return static_cast<std::uint32_t>(rem);
}

double frexp_magnitude(const BigInt& x, int* exponent) noexcept {
  if (x.is_zero()) {
    *exponent = 0;
    return 0.0;
  }
  // The top three limbs carry more than the 53 bits of a double's mantissa.
  double m = 0.0;
  const int lo = x.size >= 3 ? x.size - 3 : 0;
  for (int i = x.size - 1; i >= lo; --i) m = m * 4294967296.0 + x.limb[static_cast<std::size_t>(i)];
  int e = 0;
  const double f = std::frexp(m, &e);
  *exponent = e + 32 * lo;
  return f;
}

bool parse_decimal(std::string_view digits, BigInt& out) noexcept {
  if (digits.empty()) return false;
  BigInt r;
  for (char c : digits) {
    if (c < '0' || c > '9') return false;
    if (!mul_add_small(r, 10, static_cast<std::uint32_t>(c - '0'))) return false;
  }
  out = r;
  return true;
}

Rational Rational::from_int(std::int64_t v) noexcept {
  Rational r;
  r.num = BigInt::from_int(v);
  return r;
}

bool Rational::is_integer() const noexcept { return den.size == 1 && den.limb[0] == 1; }

double Rational::to_double() const noexcept {
  int en = 0;
  int ed = 0;
  const double mn = frexp_magnitude(num, &en);
  const double md = frexp_magnitude(den, &ed);
  const double v = std::ldexp(mn / md, en - ed);
  return num.negative ? -v : v;
}

bool add(const Rational& a, const Rational& b, Rational& out) noexcept {
  Rational r;
  BigInt x;
  BigInt y;
  if (compare_magnitude(a.den, b.den) == 0) {
    if (!add(a.num, b.num, r.num)) return false;
    r.den = a.den;
  } else {
    if (!mul(a.num, b.den, x) || !mul(b.num, a.den, y) || !add(x, y, r.num) || !mul(a.den, b.den, r.den)) {
      return false;
    }
  }
  normalize(r);
  out = r;
  return true;
}

bool sub(const Rational& a, const Rational& b, Rational& out) noexcept {
  Rational nb = b;
  nb.num.negative = !nb.num.is_zero() && !nb.num.negative;
  return add(a, nb, out);
}

bool mul(const Rational& a, const Rational& b, Rational& out) noexcept {
  Rational r;
  if (!mul(a.num, b.num, r.num) || !mul(a.den, b.den, r.den)) return false;
  normalize(r);
  out = r;
  return true;
}

bool div(const Rational& a, const Rational& b, Rational& out) noexcept {
  if (b.is_zero()) return false;
  Rational r;
  if (!mul(a.num, b.den, r.num) || !mul(a.den, b.num, r.den)) return false;
  r.num.negative = !r.num.is_zero() && (r.num.negative != r.den.negative);
  r.den.negative = false;
  normalize(r);
  out = r;
  return true;
}

bool pow(const Rational& base, std::int64_t exp, Rational& out) noexcept {
  if (exp == 0) {
    out = Rational::from_int(1);
    return true;
  }
  if (base.is_zero()) {
    if (exp < 0) return false;
    out = base;
    return true;
  }
  const std::uint64_t e = exp < 0 ? ~static_cast<std::uint64_t>(exp) + 1 : static_cast<std::uint64_t>(exp);
  // Refuse early what cannot fit: |result| has about e * bits(base) bits (a magnitude-1 base stays small).
  const int bits = std::max(base.num.bit_length(), base.den.bit_length());
  if (bits > 1 && e > static_cast<std::uint64_t>(32 * kValueLimbs)) return false;
  if (bits > 1 && (bits - 1) * e > static_cast<std::uint64_t>(32 * kValueLimbs)) return false;
  Rational result = Rational::from_int(1);
  Rational sq = base;
  std::uint64_t k = e;
  while (true) {
    if ((k & 1) != 0 && !mul(result, sq, result)) return false;
    k >>= 1;
    if (k == 0) break;
    if (!mul(sq, sq, sq)) return false;
  }
  if (exp < 0) return div(Rational::from_int(1), result, out);
  out = result;
  return true;
}

int compare(const Rational& a, const Rational& b) noexcept {
  const bool an = a.num.negative;
  const bool bn = b.num.negative;
  if (an != bn) return an ? -1 : 1;
  std::uint32_t x[2 * kValueLimbs];
  std::uint32_t y[2 * kValueLimbs];
  const int xs = mul_raw(a.num, b.den, x);
  const int ys = mul_raw(b.num, a.den, y);
  int c = 0;
  if (xs != ys) {
    c = xs < ys ? -1 : 1;
  } else {
    for (int i = xs - 1; i >= 0 && c == 0; --i) {
      if (x[i] != y[i]) c = x[i] < y[i] ? -1 : 1;
    }
  }
  return an ? -c : c;
}

}  // namespace r1fast::rewards
