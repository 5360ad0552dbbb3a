#include "rewards/format.hpp"

namespace r1fast::rewards {

namespace {

constexpr std::string_view kThinkOpen = "<think>";
constexpr std::string_view kThinkClose = "</think>";
constexpr std::string_view kAnswerOpen = "<answer>";
constexpr std::string_view kAnswerClose = "</answer>";

bool is_space(char c) noexcept {
  // Python's str.isspace on ASCII; non-ASCII bytes are never whitespace here.
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::size_t skip_space(std::string_view s, std::size_t i) noexcept {
  while (i < s.size() && is_space(s[i])) ++i;
  return i;
}

}  // namespace

std::size_t count_occurrences(std::string_view hay, std::string_view needle) noexcept {
  if (needle.empty()) return 0;
  std::size_t n = 0;
  for (std::size_t pos = hay.find(needle); pos != std::string_view::npos; pos = hay.find(needle, pos + needle.size())) {
    ++n;
  }
  return n;
}

bool format_strict(std::string_view s) noexcept {
  constexpr std::string_view head = "<think>\n";
  constexpr std::string_view middle = "\n</think>\n<answer>\n";
  constexpr std::string_view tail = "\n</answer>";
  if (s.substr(0, head.size()) != head) return false;
  // The lazy .*? backtracks over every split; the earliest `middle` leaves the most room for `tail`, so if any
  // split matches, the earliest one does.
  const std::size_t mid = s.find(middle, head.size());
  if (mid == std::string_view::npos) return false;
  for (std::size_t pos = s.find(tail, mid + middle.size()); pos != std::string_view::npos;
       pos = s.find(tail, pos + 1)) {
    const std::size_t end = pos + tail.size();
    if (end == s.size() || s[end] == '\n') return true;
  }
  return false;
}

bool format_lenient(std::string_view s) noexcept {
  for (std::string_view tag : {kThinkOpen, kThinkClose, kAnswerOpen, kAnswerClose}) {
    if (count_occurrences(s, tag) != 1) return false;
  }
  std::size_t i = skip_space(s, 0);
  if (s.substr(i, kThinkOpen.size()) != kThinkOpen) return false;
  const std::size_t think_close = s.find(kThinkClose);
  const std::size_t answer_open = s.find(kAnswerOpen);
  const std::size_t answer_close = s.find(kAnswerClose);
  if (!(i < think_close && think_close < answer_open && answer_open < answer_close)) return false;
  if (skip_space(s, think_close + kThinkClose.size()) != answer_open) return false;
  return skip_space(s, answer_close + kAnswerClose.size()) == s.size();
}

double tag_count(std::string_view s) noexcept {
  double reward = 0.0;
  for (std::string_view tag : {std::string_view("<think>\n"), std::string_view("\n</think>\n"),
                               std::string_view("\n<answer>\n"), std::string_view("\n</answer>")}) {
    if (count_occurrences(s, tag) == 1) reward += 0.25;
  }
  return reward;
}

}  // namespace r1fast::rewards
