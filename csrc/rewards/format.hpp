// R1 template rewards: the <think>...</think><answer>...</answer> format and the tag count.
// Pure functions over bytes (any input, valid UTF-8 or not); O(n) time, no allocation.
#pragma once

#include <string_view>

namespace r1fast::rewards {

// open-r1's format reward, to the letter: Python's
//   re.match(r"^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>$", s, re.DOTALL | re.MULTILINE)
// `$` under MULTILINE matches at the end or before any '\n', so text may follow the answer on a later line.
bool format_strict(std::string_view s) noexcept;

// Whitespace-tolerant R1 format: optional whitespace, <think> ... </think>, optional whitespace,
// <answer> ... </answer>, then only whitespace; each of the four tags occurs exactly once in the whole text.
bool format_lenient(std::string_view s) noexcept;

// open-r1's tag-count reward: 0.25 for each of "<think>\n", "\n</think>\n", "\n<answer>\n", "\n</answer>"
// that occurs exactly once (non-overlapping count, as Python's str.count).
double tag_count(std::string_view s) noexcept;

// Non-overlapping occurrences of `needle` in `hay`, as Python's str.count (needle non-empty).
std::size_t count_occurrences(std::string_view hay, std::string_view needle) noexcept;

}  // namespace r1fast::rewards
