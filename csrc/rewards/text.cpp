#include "rewards/text.hpp"

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "rewards/utf8.hpp"

namespace r1fast::rewards {

namespace {

bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

// Length of the marker that matches at s[i] (alternatives in the regex's order), 0 if none.
std::size_t marker_at(std::string_view s, std::size_t i) noexcept {
  const char c = s[i];
  // Every alternative starts with one of these bytes (or is anchored at 0): reject the rest cheaply.
  if (c != 'S' && c != '\n' && c != 'F' && c != 'N' && !(i == 0 && is_digit(c))) return 0;
  const std::string_view rest = s.substr(i);
  if (rest.substr(0, 5) == "Step ") {
    std::size_t k = 5;
    while (k < rest.size() && is_digit(rest[k])) ++k;
    if (k > 5 && k < rest.size() && rest[k] == ':') return k + 1;
  }
  if (i == 0) {
    std::size_t k = 0;
    while (k < rest.size() && is_digit(rest[k])) ++k;
    if (k > 0 && k < rest.size() && rest[k] == '.') return k + 1;
  }
  for (std::string_view m : {"\n-", "\n*", "First,", "Second,", "Next,", "Finally,"}) {
    if (rest.substr(0, m.size()) == m) return m.size();
  }
  return 0;
}

}  // namespace

std::size_t reasoning_step_count(std::string_view text) noexcept {
  std::size_t count = 0;
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t len = marker_at(text, i);
    if (len > 0) {
      ++count;
      i += len;
    } else {
      ++i;
    }
  }
  return count;
}

double reasoning_steps(std::string_view text) noexcept {
  const double score = static_cast<double>(reasoning_step_count(text)) / 3.0;
  return score < 1.0 ? score : 1.0;
}

double repetition_penalty(std::string_view lowered, std::size_t ngram_size, double max_penalty) noexcept {
  if (lowered.empty() || ngram_size == 0) return 0.0;
  try {
    // Words: spans between Unicode whitespace (str.split()).
    std::vector<std::pair<std::size_t, std::size_t>> spans;  // (start, length)
    spans.reserve(lowered.size() / 6 + 16);
    std::size_t word_start = std::string_view::npos;
    for (std::size_t i = 0; i < lowered.size();) {
      const std::size_t start = i;
      const auto byte = static_cast<unsigned char>(lowered[i]);
      const char32_t c = byte < 0x80 ? (++i, byte) : decode_utf8(lowered, i);
      if (is_unicode_space(c)) {
        if (word_start != std::string_view::npos) spans.emplace_back(word_start, start - word_start);
        word_start = std::string_view::npos;
      } else if (word_start == std::string_view::npos) {
        word_start = start;
      }
    }
    if (word_start != std::string_view::npos) spans.emplace_back(word_start, lowered.size() - word_start);
    if (spans.size() < ngram_size) return 0.0;

    // Intern words (equal words, equal ids) in an open-addressing table, so an n-gram is a run of ids.
    std::size_t slots = 16;
    while (slots < 2 * spans.size()) slots *= 2;
    std::vector<std::uint32_t> table(slots, 0);  // 1 + index of the span that first had this word; 0 = empty
    std::vector<std::uint32_t> ids(spans.size());
    std::uint32_t next_id = 0;
    for (std::size_t w = 0; w < spans.size(); ++w) {
      const std::string_view word = lowered.substr(spans[w].first, spans[w].second);
      std::uint64_t h = 1469598103934665603ULL;
      for (char ch : word) h = (h ^ static_cast<unsigned char>(ch)) * 1099511628211ULL;
      for (std::size_t k = h & (slots - 1);; k = (k + 1) & (slots - 1)) {
        if (table[k] == 0) {
          table[k] = static_cast<std::uint32_t>(w + 1);
          ids[w] = next_id++;
          break;
        }
        const std::size_t other = table[k] - 1;
        if (lowered.substr(spans[other].first, spans[other].second) == word) {
          ids[w] = ids[other];
          break;
        }
      }
    }

    // Distinct n-grams, in a second open-addressing table keyed by the n-gram's start.
    const std::size_t total = ids.size() - ngram_size + 1;
    slots = 16;
    while (slots < 2 * total) slots *= 2;
    std::fill(table.begin(), table.end(), 0);
    table.resize(slots, 0);
    std::size_t distinct = 0;
    for (std::size_t start = 0; start < total; ++start) {
      std::uint64_t h = 0x9E3779B97F4A7C15ULL;
      for (std::size_t k = 0; k < ngram_size; ++k) h = (h ^ ids[start + k]) * 0xBF58476D1CE4E5B9ULL;
      h ^= h >> 31;
      for (std::size_t k = h & (slots - 1);; k = (k + 1) & (slots - 1)) {
        if (table[k] == 0) {
          table[k] = static_cast<std::uint32_t>(start + 1);
          ++distinct;
          break;
        }
        const std::size_t other = table[k] - 1;
        if (std::equal(ids.begin() + static_cast<std::ptrdiff_t>(start),
                       ids.begin() + static_cast<std::ptrdiff_t>(start + ngram_size),
                       ids.begin() + static_cast<std::ptrdiff_t>(other))) {
          break;
        }
      }
    }
    const double scaling = 1.0 - static_cast<double>(distinct) / static_cast<double>(total);
    return scaling * max_penalty;
  } catch (...) {
    return 0.0;
  }
}

}  // namespace r1fast::rewards
