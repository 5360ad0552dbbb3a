#include "rewards/text.hpp"

#include <cstdint>
#include <functional>
#include <unordered_map>
#include <unordered_set>
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
    // Intern words: equal words get equal ids, so an n-gram is a run of ids.
    std::vector<std::uint32_t> ids;
    std::unordered_map<std::string_view, std::uint32_t> intern;
    intern.reserve(lowered.size() / 8 + 16);
    ids.reserve(lowered.size() / 4 + 16);
    std::size_t i = 0;
    std::size_t word_start = std::string_view::npos;
    auto end_word = [&](std::size_t end) {
      if (word_start == std::string_view::npos) return;
      const auto it = intern.emplace(lowered.substr(word_start, end - word_start),
                                     static_cast<std::uint32_t>(intern.size()));
      ids.push_back(it.first->second);
      word_start = std::string_view::npos;
    };
    while (i < lowered.size()) {
      const std::size_t start = i;
      const char32_t c = decode_utf8(lowered, i);
      if (is_unicode_space(c)) {
        end_word(start);
      } else if (word_start == std::string_view::npos) {
        word_start = start;
      }
    }
    end_word(lowered.size());
    if (ids.size() < ngram_size) return 0.0;
    const std::size_t total = ids.size() - ngram_size + 1;
    const auto hash = [&](std::size_t start) {
      std::uint64_t h = 1469598103934665603ULL;
      for (std::size_t k = 0; k < ngram_size; ++k) h = (h ^ ids[start + k]) * 1099511628211ULL;
      return static_cast<std::size_t>(h);
    };
    const auto equal = [&](std::size_t a, std::size_t b) {
      for (std::size_t k = 0; k < ngram_size; ++k) {
        if (ids[a + k] != ids[b + k]) return false;
      }
      return true;
    };
    std::unordered_set<std::size_t, decltype(hash), decltype(equal)> distinct(total, hash, equal);
    for (std::size_t s = 0; s < total; ++s) distinct.insert(s);
    const double scaling = 1.0 - static_cast<double>(distinct.size()) / static_cast<double>(total);
    return scaling * max_penalty;
  } catch (...) {
    return 0.0;
  }
}

}  // namespace r1fast::rewards
