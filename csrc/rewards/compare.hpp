// Answer comparison: the structure of an answer (number, tuple, interval, set, union, multiple-choice letter,
// text) and the accuracy reward built on extract + normalize + latex.
//
// Rules (gold vs predicted):
// - numbers: exact (rationals, surds, pi multiples); with a decimal literal on either side also within rel_tol;
//   a percentage p% equals p and p/100;
// - equations compare their right-hand side (x = 5 equals 5), as do `\in` memberships;
// - (a, b, ...) tuples and [a, b] intervals compare in order and with the same brackets, so (1,2) != [1,2];
// - \{...\} sets, bare comma lists (1, 2) and \cup unions compare as sets (order and repeats free); a one-element
//   set equals its element; a (parenthesised) tuple also equals the same items as a bare list, in order;
// - a ratio a:b of two numbers is a/b;
// - expressions in single-letter variables compare exactly at three fixed rational points (x^2-1 = (x-1)(x+1));
// - a single letter (C), \text{C}, {C} is a multiple-choice answer: the same letter, in either case;
// - anything else compares as canonical text (normalised, spaces removed).
#pragma once

#include <string_view>

namespace r1fast::rewards {

struct AccuracyOptions {
  double rel_tol = 1e-6;  // relative tolerance when a decimal literal meets another number
};

enum class Verdict : int { kWrong = 0, kCorrect = 1, kNoGold = -1 };

// Whether the answer string `predicted` (already extracted) equals `gold` (already extracted).
bool answers_equal(std::string_view gold, std::string_view predicted, const AccuracyOptions& options) noexcept;

// The answer extracted from `gold` (or all of it, if it has no marker), empty when it cannot be parsed.
std::string_view gold_answer(std::string_view gold) noexcept;

// The accuracy reward of one completion: kNoGold when the gold answer is empty, longer than kMaxAnswerBytes, or
// has unbalanced braces (truncated or malformed).
Verdict accuracy(std::string_view completion, std::string_view gold, const AccuracyOptions& options) noexcept;

}  // namespace r1fast::rewards
