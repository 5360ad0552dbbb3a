#include "rewards/extract.hpp"

#include <algorithm>

namespace r1fast::rewards {

namespace {

bool is_space(char c) noexcept { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_letter(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

char lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// Last position of `needle` (lowercase ASCII) in `hay`, case-insensitively; npos if absent. O(n * |needle|).
std::size_t rfind_nocase(std::string_view hay, std::string_view needle) noexcept {
  if (needle.size() > hay.size()) return std::string_view::npos;
  for (std::size_t i = hay.size() - needle.size() + 1; i-- > 0;) {
    std::size_t k = 0;
    while (k < needle.size() && lower(hay[i + k]) == needle[k]) ++k;
    if (k == needle.size()) return i;
  }
  return std::string_view::npos;
}

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

std::string_view rest_of_line(std::string_view s, std::size_t from) noexcept {
  s = s.substr(from);
  const std::size_t nl = s.find('\n');
  return nl == std::string_view::npos ? s : s.substr(0, nl);
}

}  // namespace

std::string_view clean_answer(std::string_view s) noexcept {
  for (int round = 0; round < 4; ++round) {
    const std::string_view before = s;
    s = trim(s);
    while (!s.empty() && (s.back() == '.' || s.back() == ':' || s.back() == ';')) s.remove_suffix(1);
    s = trim(s);
    if (s.substr(0, 2) == "**") s.remove_prefix(2);  // markdown bold, also "**Answer:** 17"
    if (s.size() >= 2 && s.substr(s.size() - 2) == "**") s.remove_suffix(2);
    if (s.size() >= 2 && s.front() == '$' && s.back() == '$') {
      s = s.substr(1, s.size() - 2);
      if (s.size() >= 2 && s.front() == '$' && s.back() == '$') s = s.substr(1, s.size() - 2);
    }
    if (s.size() >= 4 && (s.substr(0, 2) == "\\(" || s.substr(0, 2) == "\\[") &&
        (s.substr(s.size() - 2) == "\\)" || s.substr(s.size() - 2) == "\\]")) {
      s = s.substr(2, s.size() - 4);
    }
    if (s == before) break;
  }
  return s;
}

namespace {

std::string_view clean(std::string_view s) noexcept { return clean_answer(s); }

// Markers 3-5, searched in `s`.
bool marked_answer(std::string_view s, std::string_view& out) noexcept {
  const std::size_t hashes = s.rfind("####");
  if (hashes != std::string_view::npos) {
    out = clean(rest_of_line(s, hashes + 4));
    if (!out.empty()) return true;
  }
  const std::size_t is = rfind_nocase(s, "answer is");
  if (is != std::string_view::npos) {
    std::string_view rest = rest_of_line(s, is + 9);
    rest = trim(rest);
    if (!rest.empty() && rest.front() == ':') rest.remove_prefix(1);
    out = clean(rest);
    if (!out.empty()) return true;
  }
  const std::size_t colon = rfind_nocase(s, "answer:");
  if (colon != std::string_view::npos) {
    out = clean(rest_of_line(s, colon + 7));
    if (!out.empty()) return true;
  }
  return false;
}

}  // namespace

bool last_boxed(std::string_view s, std::string_view& content) noexcept {
  // Try the last few occurrences only: each try is O(n), and an unbalanced last \boxed{ is rare.
  std::size_t end = s.size();
  for (int tries = 0; tries < 4; ++tries) {
    const std::size_t b = s.substr(0, end).rfind("\\boxed");
    const std::size_t f = s.substr(0, end).rfind("\\fbox");
    std::size_t pos = std::string_view::npos;
    std::size_t name = 0;
    if (b != std::string_view::npos && (f == std::string_view::npos || b > f)) {
      pos = b;
      name = 6;
    } else if (f != std::string_view::npos) {
      pos = f;
      name = 5;
    }
    if (pos == std::string_view::npos) return false;
    std::size_t i = pos + name;
    if (i < s.size() && is_letter(s[i])) {  // \boxedx is another command
      end = pos;
      continue;
    }
    while (i < s.size() && is_space(s[i])) ++i;
    if (i < s.size() && s[i] == '{') {
      int depth = 0;
      for (std::size_t k = i; k < s.size(); ++k) {
        if (s[k] == '\\') {
          ++k;
          continue;
        }
        if (s[k] == '{') ++depth;
        if (s[k] == '}' && --depth == 0) {
          content = trim(s.substr(i + 1, k - i - 1));
          return true;
        }
      }
    } else if (i > pos + name && i < s.size()) {
      // \boxed 5: one token up to the next space or $.
      std::size_t k = i;
      while (k < s.size() && !is_space(s[k]) && s[k] != '$') ++k;
      content = s.substr(i, k - i);
      return true;
    }
    end = pos;
  }
  return false;
}

bool last_answer_block(std::string_view s, std::string_view& content) noexcept {
  const std::size_t open = s.rfind("<answer>");
  if (open == std::string_view::npos) return false;
  const std::size_t from = open + 8;
  const std::size_t close = s.find("</answer>", from);
  content = close == std::string_view::npos ? s.substr(from) : s.substr(from, close - from);
  return true;
}

std::string_view extract_answer(std::string_view completion) noexcept {
  std::string_view found;
  std::string_view block;
  if (last_answer_block(completion, block)) {
    if (last_boxed(block, found)) return clean(found);
    if (marked_answer(block, found)) return found;
    return clean(block);
  }
  if (last_boxed(completion, found)) return clean(found);
  if (marked_answer(completion, found)) return found;
  return {};
}

}  // namespace r1fast::rewards
