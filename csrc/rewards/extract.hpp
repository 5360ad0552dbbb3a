// Final-answer extraction from a completion. O(n) in the completion length, whatever its content.
//
// Where the answer is looked for, first hit wins:
//   1. inside the last <answer>...</answer> block (an unclosed last <answer> runs to the end), if any:
//      the last \boxed{...} / \fbox{...} (nested braces; also `\boxed 5`), then the markers of 3-5 below,
//      then the whole block;
//   2. otherwise the last \boxed / \fbox in the whole text;
//   3. `#### x` (GSM8K): the rest of the line after the last ####;
//   4. `final answer is x` / `answer is x` (case-insensitive, the last one): the rest of the line;
//   5. `Answer: x` (case-insensitive, the last one): the rest of the line.
// The result is trimmed of spaces, a trailing period, surrounding $...$, \(...\), \[...\] and **bold**.
#pragma once

#include <string_view>

namespace r1fast::rewards {

// The final answer as a view into `completion`; empty when none is found.
std::string_view extract_answer(std::string_view completion) noexcept;

// Trims spaces, trailing . : ;, surrounding $...$, \\(...\\), \\[...\\] and **bold**.
std::string_view clean_answer(std::string_view s) noexcept;

// The content of the last \boxed{...} or \fbox{...} in `s` (empty view and false when there is none).
bool last_boxed(std::string_view s, std::string_view& content) noexcept;

// The content of the last <answer>...</answer> block (false when there is none).
bool last_answer_block(std::string_view s, std::string_view& content) noexcept;

}  // namespace r1fast::rewards
