#include "rewards/extract.hpp"

#include <algorithm>
#include <cstring>

namespace r1fast::rewards {

namespace {

bool is_space(char c) noexcept { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_letter(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

char lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

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

// Last position of byte c in s[0, n), or nullptr; memrchr where the C library has it.
const char* last_byte(const char* s, char c, std::size_t n) noexcept {
#if defined(__GLIBC__)
  return static_cast<const char*>(memrchr(s, c, n));
#else
  for (std::size_t i = n; i-- > 0;) {
    if (s[i] == c) return s + i;
  }
  return nullptr;
#endif
}

// Calls visit(i) for the positions i of byte c in s, last first, until visit returns true. memrchr makes sparse
// bytes cheap; when hits come densely (adversarial text such as a megabyte of backslashes) it switches to a plain
// backward loop, so the cost stays linear with a small constant either way.
template <class Visit>
void scan_back(std::string_view s, char c, Visit visit) noexcept {
  std::size_t limit = s.size();
  int dense = 0;
  while (limit > 0 && dense < 64) {
    const char* p = last_byte(s.data(), c, limit);
    if (p == nullptr) return;
    const auto i = static_cast<std::size_t>(p - s.data());
    if (visit(i)) return;
    dense = limit - i < 16 ? dense + 1 : 0;
    limit = i;
  }
  for (std::size_t i = limit; i-- > 0;) {
    if (s[i] == c && visit(i)) return;
  }
}

// Last position of `needle` in `hay`, npos if absent.
std::size_t rfind_fast(std::string_view hay, std::string_view needle) noexcept {
  std::size_t found = std::string_view::npos;
  scan_back(hay, needle[0], [&](std::size_t i) {
    // The inline second-byte test keeps dense first-byte hits cheap.
    if (needle.size() > 1 && (i + 1 >= hay.size() || hay[i + 1] != needle[1])) return false;
    if (hay.compare(i, needle.size(), needle) != 0) return false;
    found = i;
    return true;
  });
  return found;
}

bool starts_nocase(std::string_view s, std::size_t i, std::string_view lower_needle) noexcept {
  if (i + lower_needle.size() > s.size()) return false;
  for (std::size_t k = 0; k < lower_needle.size(); ++k) {
    if (lower(s[i + k]) != lower_needle[k]) return false;
  }
  return true;
}

// The last positions of "####", "answer is" and "answer:" (the last two case-insensitive).
struct Markers {
  std::size_t hashes = std::string_view::npos;
  std::size_t answer_is = std::string_view::npos;
  std::size_t answer_colon = std::string_view::npos;
};

Markers find_markers(std::string_view s) noexcept {
  Markers m;
  m.hashes = rfind_fast(s, "####");
  if (m.hashes != std::string_view::npos) return m;  // the highest priority: the others are not needed
  // "answer" candidates are found by their 'w' (rarer in text than 'a'), in both cases.
  for (char w : {'w', 'W'}) {
    scan_back(s, w, [&](std::size_t i) {
      if (i < 3 || !starts_nocase(s, i - 3, "answer")) return false;
      const std::size_t at = i - 3;
      if (starts_nocase(s, at + 6, " is") && (m.answer_is == std::string_view::npos || at > m.answer_is)) {
        m.answer_is = at;
      }
      if (starts_nocase(s, at + 6, ":") && (m.answer_colon == std::string_view::npos || at > m.answer_colon)) {
        m.answer_colon = at;
      }
      return m.answer_is != std::string_view::npos && m.answer_colon != std::string_view::npos;
    });
  }
  return m;
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

// Markers 3-5, searched in `s`. "####" anywhere wins; "answer is" and "answer:" are tried last-first.
bool marked_answer(std::string_view s, std::string_view& out) noexcept {
  const Markers m = find_markers(s);
  if (m.hashes != std::string_view::npos) {
    out = clean(rest_of_line(s, m.hashes + 4));
    if (!out.empty()) return true;
  }
  if (m.answer_is != std::string_view::npos) {
    std::string_view rest = trim(rest_of_line(s, m.answer_is + 9));
    if (!rest.empty() && rest.front() == ':') rest.remove_prefix(1);
    out = clean(rest);
    if (!out.empty()) return true;
  }
  if (m.answer_colon != std::string_view::npos) {
    out = clean(rest_of_line(s, m.answer_colon + 7));
    if (!out.empty()) return true;
  }
  return false;
}

}  // namespace

bool last_boxed(std::string_view s, std::string_view& content) noexcept {
  // Try the last few occurrences only: each try is O(n), and an unbalanced last \boxed{ is rare.
  std::size_t end = s.size();
  for (int tries = 0; tries < 4; ++tries) {
    std::size_t pos = std::string_view::npos;
    std::size_t name = 0;
    scan_back(s.substr(0, end), '\\', [&](std::size_t i) {
      if (i + 1 >= s.size() || (s[i + 1] != 'b' && s[i + 1] != 'f')) return false;
      if (s.compare(i, 6, "\\boxed") == 0) name = 6;
      else if (s.compare(i, 5, "\\fbox") == 0) name = 5;
      else return false;
      pos = i;
      return true;
    });
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
  const std::size_t open = rfind_fast(s, "<answer>");
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
