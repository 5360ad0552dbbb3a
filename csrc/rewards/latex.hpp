// A recursive-descent parser of one LaTeX number expression (after normalize_answer) into a Value.
// Grammar: sums, products (*, \cdot, \times, /, \div, implicit before a bracket, command or letter), unary signs,
// powers (^{...}, ^2, right-associative), factorial, %, \frac/\dfrac/\tfrac (braced or one-token arguments:
// \frac12), mixed numbers (2\frac{1}{2} = 5/2), \sqrt{x}, \sqrt[n]{x}, \binom, \pi, \infty, decimals and scientific
// notation (1.5e3), and \sin \cos \tan \ln \log \exp (approximate). Letters are variables: an expression with a
// variable is not a number, and is compared by parse_function instead.
// Bounded: nesting depth <= 64, <= 4096 tokens, arithmetic within a Budget.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include "rewards/value.hpp"

namespace r1fast::rewards {

// True and `out` set when all of `s` is one number expression.
bool parse_number(std::string_view s, Value& out, Budget& budget) noexcept;

// An expression in single-letter variables (a-z, A-Z; juxtaposition multiplies: 2xy, x(x+1)), evaluated exactly
// at kSamplePoints fixed rational points. Two expressions over the same variables that agree at every point are
// taken as equal (x^2-1 and (x-1)(x+1)); a false match needs a polynomial identity to hold at three irregular
// rational points by accident. True when `s` parses and has at least one variable.
constexpr int kSamplePoints = 3;
bool parse_function(std::string_view s, std::array<Value, kSamplePoints>& out, std::uint64_t& variables,
                    Budget& budget) noexcept;

}  // namespace r1fast::rewards
