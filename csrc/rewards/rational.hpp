// Bounded exact arithmetic: signed big integers of at most kValueBits bits and rationals over them.
// Nothing allocates; every operation that could grow a value past the bound reports failure (returns false)
// instead, so no input can make the verifier spend unbounded time or memory.
#pragma once

#include <cstdint>
#include <string_view>

namespace r1fast::rewards {

constexpr int kValueLimbs = 32;  // 1024 bits, about 308 decimal digits

struct BigInt {
  // Magnitude, little-endian. Only limb[0, size) is meaningful (the rest is left uninitialised, and copies move
  // only the used limbs: values are copied a lot and are usually one limb).
  std::uint32_t limb[kValueLimbs];
  int size = 0;           // used limbs; 0 means zero
  bool negative = false;  // never true for zero

  BigInt() noexcept {}  // NOLINT: limbs past size are deliberately not initialised
  BigInt(const BigInt& o) noexcept : size(o.size), negative(o.negative) { copy_limbs(o); }
  BigInt& operator=(const BigInt& o) noexcept {
    size = o.size;
    negative = o.negative;
    copy_limbs(o);
    return *this;
  }

  static BigInt from_int(std::int64_t v) noexcept;
  bool is_zero() const noexcept { return size == 0; }
  bool fits_u64() const noexcept { return size <= 2; }
  std::uint64_t low_u64() const noexcept;
  int bit_length() const noexcept;

 private:
  void copy_limbs(const BigInt& o) noexcept {
    for (int i = 0; i < o.size; ++i) limb[i] = o.limb[i];
  }
};

// Signed comparison: -1, 0, 1.
int compare(const BigInt& a, const BigInt& b) noexcept;
int compare_magnitude(const BigInt& a, const BigInt& b) noexcept;
// out = a op b; false when the result would exceed `limit` limbs (out is then unspecified). out may alias a or b.
bool add(const BigInt& a, const BigInt& b, BigInt& out, int limit = kValueLimbs) noexcept;
bool sub(const BigInt& a, const BigInt& b, BigInt& out, int limit = kValueLimbs) noexcept;
bool mul(const BigInt& a, const BigInt& b, BigInt& out, int limit = kValueLimbs) noexcept;
// x = x * m + c on the magnitude; false on overflow.
bool mul_add_small(BigInt& x, std::uint32_t m, std::uint32_t c, int limit = kValueLimbs) noexcept;
// x = x / d on the magnitude (d > 0); returns the remainder.
std::uint32_t divide_small(BigInt& x, std::uint32_t d) noexcept;
// Approximates |x| as mantissa * 2^exponent with mantissa in [0.5, 1) (0 for zero).
double frexp_magnitude(const BigInt& x, int* exponent) noexcept;
// Parses a run of ASCII decimal digits; false if it is empty, has a non-digit, or overflows.
bool parse_decimal(std::string_view digits, BigInt& out) noexcept;

// An exact rational num/den with den > 0. Reduced to lowest terms whenever both parts fit in 64 bits.
struct Rational {
  BigInt num;
  BigInt den = BigInt::from_int(1);

  static Rational from_int(std::int64_t v) noexcept;
  bool is_zero() const noexcept { return num.is_zero(); }
  bool is_integer() const noexcept;
  double to_double() const noexcept;
};

bool add(const Rational& a, const Rational& b, Rational& out) noexcept;
bool sub(const Rational& a, const Rational& b, Rational& out) noexcept;
bool mul(const Rational& a, const Rational& b, Rational& out) noexcept;
bool div(const Rational& a, const Rational& b, Rational& out) noexcept;  // false when b is zero
// out = base^exp for an integer exponent (negative allowed for non-zero base); false on overflow.
bool pow(const Rational& base, std::int64_t exp, Rational& out) noexcept;
// Exact comparison by cross-multiplication into a double-width buffer (never overflows).
int compare(const Rational& a, const Rational& b) noexcept;
inline bool operator==(const Rational& a, const Rational& b) noexcept { return compare(a, b) == 0; }

}  // namespace r1fast::rewards
