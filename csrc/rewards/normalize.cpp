#include "rewards/normalize.hpp"

#include <array>
#include <cstring>

namespace r1fast::rewards {

namespace {

bool is_letter(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
bool is_space(char c) noexcept { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

bool one_of(std::string_view name, std::initializer_list<std::string_view> names) noexcept {
  for (std::string_view n : names) {
    if (n == name) return true;
  }
  return false;
}

// The last non-space character written, or 0.
char last_visible(const std::string& out) noexcept {
  for (std::size_t i = out.size(); i > 0; --i) {
    if (!is_space(out[i - 1])) return out[i - 1];
  }
  return 0;
}

// Index just past the group that starts at s[i] == '{' (s.size() if unbalanced).
std::size_t skip_group(std::string_view s, std::size_t i) noexcept {
  int depth = 0;
  for (; i < s.size(); ++i) {
    if (s[i] == '\\') {
      ++i;
      continue;
    }
    if (s[i] == '{') ++depth;
    if (s[i] == '}' && --depth == 0) return i + 1;
  }
  return s.size();
}

struct Replacement {
  std::string_view from;
  std::string_view to;
};

// Unicode spellings of operators and constants (UTF-8 bytes).
constexpr std::array<Replacement, 11> kUnicode = {{
    {"\xcf\x80", "\\pi "},      // pi
    {"\xe2\x88\x9e", "\\infty "},  // infinity
    {"\xe2\x88\x92", "-"},         // minus sign
    {"\xc3\x97", "\\times "},      // multiplication sign
    {"\xc3\xb7", "\\div "},        // division sign
    {"\xc2\xb7", "\\cdot "},       // middle dot
    {"\xe2\x8b\x85", "\\cdot "},   // dot operator
    {"\xe2\x88\x9a", "\\sqrt "},   // square root
    {"\xc2\xb0", ""},              // degree sign
    {"\xc2\xa0", " "},             // no-break space
    {"\xe2\x88\xaa", "\\cup "},    // union
}};

// Joins digit groups written with a thousands separator (',' or ' '), e.g. 7,425,000 and 1 000: a run of 1-3
// digits not preceded by a digit, '.' or a letter, then one or more separator + exactly-3-digit groups, the
// same separator throughout, the last group not followed by a digit. "1, 234" (a space after the comma) is a
// list and stays, and so is any comma inside brackets: (1,234) and [879,905) are pairs.
std::string join_thousands(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  std::size_t i = 0;
  int brackets = 0;  // depth inside ( ) [ ] \{ \}: there a comma separates items, so only spaces group digits
  while (i < s.size()) {
    const bool starts = is_digit(s[i]) && (i == 0 || (!is_digit(s[i - 1]) && s[i - 1] != '.' && !is_letter(s[i - 1])));
    if (!starts) {
      const char c = s[i];
      if (c == '(' || c == '[' || (c == '{' && i > 0 && s[i - 1] == '\\')) ++brackets;
      if ((c == ')' || c == ']' || (c == '}' && i > 0 && s[i - 1] == '\\')) && brackets > 0) --brackets;
      out.push_back(s[i++]);
      continue;
    }
    std::size_t j = i;
    while (j < s.size() && is_digit(s[j])) ++j;
    std::size_t end = j;
    int groups = 0;
    char sep = 0;
    if (j - i <= 3) {
      while (end + 3 < s.size() && ((s[end] == ',' && brackets == 0) || s[end] == ' ') && (sep == 0 || s[end] == sep) &&
             is_digit(s[end + 1]) && is_digit(s[end + 2]) && is_digit(s[end + 3]) &&
             (end + 4 >= s.size() || (!is_digit(s[end + 4]) && s[end + 4] != '.' && !(s[end] == ' ' && s[end + 4] == ','))) ) {
        sep = s[end];
        end += 4;
        ++groups;
      }
    }
    if (groups == 0) {
      out.append(s, i, j - i);
      i = j;
      continue;
    }
    for (std::size_t k = i; k < end; ++k) {
      if (is_digit(s[k])) out.push_back(s[k]);
    }
    i = end;
  }
  return out;
}

}  // namespace

std::string normalize_answer(std::string_view s) {
  if (s.empty() || s.size() > kMaxAnswerBytes) return {};
  std::string out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == '$') {
      ++i;
      continue;
    }
    if (c == '~') {
      out.push_back(' ');
      ++i;
      continue;
    }
    if (c == '^' && (s.compare(i, 6, "^\\circ") == 0 || s.compare(i, 8, "^{\\circ}") == 0 ||
                     s.compare(i, 8, "^\\degree") == 0)) {
      i += s.compare(i, 6, "^\\circ") == 0 ? 6 : 8;
      continue;
    }
    if (static_cast<unsigned char>(c) >= 0x80) {
      bool replaced = false;
      for (const Replacement& r : kUnicode) {
        if (s.compare(i, r.from.size(), r.from) == 0) {
          out.append(r.to);
          i += r.from.size();
          replaced = true;
          break;
        }
      }
      if (!replaced) out.push_back(s[i++]);
      continue;
    }
    if (c != '\\') {
      out.push_back(c);
      ++i;
      continue;
    }
    // A command: \name or \<one non-letter>.
    std::size_t j = i + 1;
    while (j < s.size() && is_letter(s[j])) ++j;
    if (j == i + 1) {
      if (j >= s.size()) break;
      const char sym = s[j];
      if (sym == '%') {
        out.push_back('%');
      } else if (sym == '{' || sym == '}' || sym == '\\') {
        out.push_back('\\');
        out.push_back(sym);
      } else if (sym == ' ') {
        out.push_back(' ');
      }  // \! \, \; \: \> \$ \( \) \[ \] and friends vanish
      i = j + 1;
      continue;
    }
    const std::string_view name = s.substr(i + 1, j - i - 1);
    if (one_of(name, {"left", "right", "big", "Big", "bigg", "Bigg", "bigl", "bigr", "Bigl", "Bigr", "biggl",
                      "biggr", "displaystyle", "textstyle", "limits", "nolimits", "mathstrut", "circ", "degree",
                      "boxed", "fbox", "mathbf", "mathit", "bf", "it", "rm"})) {
      // Sizing and style commands vanish; \boxed{x} inside an answer is just {x}.
      if (name == "left" || name == "right" || name == "bigl" || name == "bigr") {
        if (s.compare(j, 1, ".") == 0) ++j;  // \left. and \right. are invisible delimiters
      }
      i = j;
      continue;
    }
    if (one_of(name, {"quad", "qquad"})) {
      out.push_back(' ');
      i = j;
      continue;
    }
    if (one_of(name, {"dfrac", "tfrac", "cfrac"})) {
      out.append("\\frac");
      i = j;
      continue;
    }
    if (one_of(name, {"leq", "leqslant", "geq", "geqslant", "ne"})) {
      out.append(name[0] == 'l' ? "\\le " : name[0] == 'g' ? "\\ge " : "\\neq ");
      i = j;
      continue;
    }
    if (one_of(name, {"text", "textrm", "textbf", "textit", "textnormal", "mathrm", "mbox", "hbox", "operatorname"})) {
      std::size_t k = j;
      while (k < s.size() && is_space(s[k])) ++k;
      if (k < s.size() && s[k] == '{') {
        const char before = last_visible(out);
        if (name != "operatorname" && (is_digit(before) || before == '}' || before == ')' || before == '%')) {
          i = skip_group(s, k);  // a unit after a number: 5\text{ cm}, and its power: 3\text{ cm}^2
          if (i < s.size() && s[i] == '^') {
            if (i + 1 < s.size() && is_digit(s[i + 1])) {
              i += 2;
            } else if (s.compare(i + 1, 1, "{") == 0 && i + 3 < s.size() && is_digit(s[i + 2]) && s[i + 3] == '}') {
              i += 4;
            }
          }
          continue;
        }
      }
      i = j;  // otherwise unwrap: keep the {...} group, which parses as a plain group
      continue;
    }
    out.append(s, i, j - i);
    // A command swallows the spaces after it in LaTeX, but "\pi r" must not become "\pir".
    if (j < s.size() && is_space(s[j])) out.push_back(' ');
    i = j;
  }
  // Collapse whitespace, trim.
  std::string collapsed;
  collapsed.reserve(out.size());
  for (char ch : out) {
    if (is_space(ch)) {
      if (!collapsed.empty() && collapsed.back() != ' ') collapsed.push_back(' ');
    } else {
      collapsed.push_back(ch);
    }
  }
  while (!collapsed.empty() && collapsed.back() == ' ') collapsed.pop_back();
  // {,} is a comma typeset without space (7{,}425).
  std::string joined;
  joined.reserve(collapsed.size());
  for (std::size_t k = 0; k < collapsed.size(); ++k) {
    if (collapsed.compare(k, 3, "{,}") == 0) {
      joined.push_back(',');
      k += 2;
    } else {
      joined.push_back(collapsed[k]);
    }
  }
  return join_thousands(joined);
}

std::string canonical_text(std::string_view normalized) {
  std::string out;
  out.reserve(normalized.size());
  for (std::size_t i = 0; i < normalized.size(); ++i) {
    const char c = normalized[i];
    if (c == ' ') {
      // keep the space only where it separates a command name from a letter
      std::size_t k = out.size();
      while (k > 0 && is_letter(out[k - 1])) --k;
      const bool after_command = k > 0 && out[k - 1] == '\\' && k < out.size();
      if (after_command && i + 1 < normalized.size() && is_letter(normalized[i + 1])) out.push_back(' ');
      continue;
    }
    out.push_back(c);
  }
  return out;
}

}  // namespace r1fast::rewards
