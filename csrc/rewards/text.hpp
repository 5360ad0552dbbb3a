// open-r1's text-shape rewards: reasoning-step markers and the n-gram repetition penalty.
#pragma once

#include <cstddef>
#include <string_view>

namespace r1fast::rewards {

// open-r1's reasoning_steps_reward: the number of non-overlapping matches of
//   (Step \d+:|^\d+\.|\n-|\n\*|First,|Second,|Next,|Finally,)
// (Python re.findall, no MULTILINE: ^ is the start of the text only; \d is ASCII here), scored min(1, count / 3).
std::size_t reasoning_step_count(std::string_view text) noexcept;
double reasoning_steps(std::string_view text) noexcept;

// open-r1's repetition_penalty_reward on an already-lowercased text: words are str.split() (Unicode whitespace),
// score = (1 - distinct n-grams / n-grams) * max_penalty; 0.0 for an empty text or fewer than n words.
// Requires 1 <= ngram_size <= 64 (checked by the caller).
double repetition_penalty(std::string_view lowered, std::size_t ngram_size, double max_penalty) noexcept;

}  // namespace r1fast::rewards
