// LaTeX answer clean-up before parsing: one linear pass that drops what never changes a value (math delimiters,
// spacing and sizing commands, degrees, \$, units in \text{} after a number), unifies spellings (\dfrac -> \frac,
// Unicode symbols -> commands, \% -> %), joins thousands groups (7,425,000  1 000  11,\!111) and collapses
// whitespace.
#pragma once

#include <string>
#include <string_view>

namespace r1fast::rewards {

constexpr std::size_t kMaxAnswerBytes = 2048;  // longer answers are not parsed (compared as text only)

// The cleaned answer; empty when the input is empty or longer than kMaxAnswerBytes.
std::string normalize_answer(std::string_view s);

// Whether \text{..} content after a value reads as its unit (cm, apples, km/h, m^2; at most 3 words): never a word
// that changes or qualifies the value (thousand, squared, dozen, or 6, is wrong, k, M).
bool is_unit_text(std::string_view text) noexcept;

// The normalized answer without any whitespace (except one space between a command and a following letter):
// the text both sides are compared on when neither parses as mathematics.
std::string canonical_text(std::string_view normalized);

}  // namespace r1fast::rewards
