// The TinyZero Countdown task: the answer is an arithmetic expression that uses each given number exactly once
// and evaluates to the target.
//
// The expression is the content of the last <answer>...</answer> block. It may contain only digits, + - * / ( )
// '.', '**' and whitespace (as TinyZero's allowed-character check); the numbers in it (runs of digits, as
// TinyZero's \d+) must be the given numbers as a multiset; it is evaluated exactly over rationals by our own
// parser (never eval): + - * / with the usual precedence, unary signs, ** (right-associative, integer
// exponents). The score is 1.0 when the value equals the target exactly, `format_score` when an answer block
// exists but is invalid or wrong, 0.0 when there is none.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "rewards/rational.hpp"

namespace r1fast::rewards {

double countdown(std::string_view completion, const std::vector<std::int64_t>& numbers, std::int64_t target,
                 double format_score) noexcept;

// Evaluates a Countdown expression exactly; false when it is malformed, divides by zero or overflows.
bool evaluate_countdown(std::string_view expression, Rational& value) noexcept;

}  // namespace r1fast::rewards
