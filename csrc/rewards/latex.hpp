// A recursive-descent parser of one LaTeX number expression (after normalize_answer) into a Value.
// Grammar: sums, products (*, \cdot, \times, /, \div, implicit before a bracket, command or letter), unary signs,
// powers (^{...}, ^2, right-associative), factorial, %, \frac/\dfrac/\tfrac (braced or one-token arguments:
// \frac12), mixed numbers (2\frac{1}{2} = 5/2), \sqrt{x}, \sqrt[n]{x}, \binom, \pi, \infty, decimals and scientific
// notation (1.5e3), and \sin \cos \tan \ln \log \exp (approximate). Letters other than these are variables, and
// an expression with a variable is not a number (the caller compares it as text).
// Bounded: nesting depth <= 64, <= 4096 tokens, arithmetic within a Budget.
#pragma once

#include <string_view>

#include "rewards/value.hpp"

namespace r1fast::rewards {

// True and `out` set when all of `s` is one number expression.
bool parse_number(std::string_view s, Value& out, Budget& budget) noexcept;

}  // namespace r1fast::rewards
