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

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// Past a unit's power right after index i: ^2, ^{2}, ^3 (else i).
std::size_t unit_power_end(std::string_view s, std::size_t i) noexcept {
  if (i < s.size() && s[i] == '^') {
    if (i + 1 < s.size() && is_digit(s[i + 1])) return i + 2;
    if (s.compare(i + 1, 1, "{") == 0 && i + 3 < s.size() && is_digit(s[i + 2]) && s[i + 3] == '}') return i + 4;
  }
  return i;
}

// Whether only the end of the answer, or the end of a list item or bracket, follows s[i]: a unit stands there.
bool trailing(std::string_view s, std::size_t i) noexcept {
  while (i < s.size() && (is_space(s[i]) || s[i] == '$' || s[i] == '.' || (s[i] == '\\' && i + 1 < s.size() &&
                                                                          (s[i + 1] == ',' || s[i + 1] == ';' ||
                                                                           s[i + 1] == '!' || s[i + 1] == ' ')))) {
    i += s[i] == '\\' ? 2 : 1;
  }
  if (i >= s.size() || s[i] == ',' || s[i] == ';' || s[i] == ')' || s[i] == ']' || s[i] == '}') return true;
  if (s[i] != '\\' || i + 1 >= s.size()) return false;
  return s[i + 1] == '\\' || s[i + 1] == '}' || s.compare(i, 6, "\\right") == 0 || s.compare(i, 4, "\\end") == 0 ||
         s.compare(i, 5, "\\quad") == 0;
}

}  // namespace

bool is_unit_text(std::string_view text) noexcept {
  // Words that change or qualify a value are never units: 5\text{ thousand}, 5\text{ squared}, 5\text{ or 6}.
  static constexpr std::string_view kNotUnits[] = {
      "thousand", "thousands", "million", "millions", "billion", "billions", "trillion", "hundred", "hundreds",
      "hundredth", "hundredths", "thousandth", "thousandths", "dozen", "dozens", "squared", "cubed", "factorial",
      "inverse", "half", "halves", "quarter", "quarters", "third", "thirds", "grand", "lakh", "crore", "bn", "mn",
      "or", "and", "but", "maybe", "is", "are", "not", "no", "yes", "wrong", "incorrect", "correct", "times", "plus",
      "minus", "negative", "positive", "below", "above", "zero", "percent", "percentage", "of", "if", "than", "more",
      "less", "at", "least", "most", "over", "under", "the", "answer", "approximately", "about", "roughly"};
  static constexpr std::string_view kOneLetterUnits = "mgshlLJNWV";  // metres, grams, seconds, hours, ...
  std::size_t words = 0;
  std::size_t k = 0;
  const auto gap = [](char ch) { return is_space(ch) || ch == '~'; };  // ~ is a LaTeX space: \mathrm{~cm}
  while (k < text.size() && gap(text[k])) ++k;
  if (k == text.size() || text.size() > 32) return false;
  while (k < text.size()) {
    std::size_t e = k;
    while (e < text.size() && !gap(text[e])) ++e;
    const std::string_view word = text.substr(k, e - k);
    ++words;
    std::size_t letters = 0;
    for (char ch : word) {
      if (is_letter(ch)) ++letters;
      else if (ch != '/' && ch != '.' && ch != '^' && !(is_digit(ch) && letters > 0)) return false;
    }
    if (letters == 0 || words > 3) return false;
    if (word.size() == 1 && kOneLetterUnits.find(word[0]) == std::string_view::npos) return false;
    std::string lowered;
    for (char ch : word) lowered.push_back(static_cast<char>(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch));
    for (std::string_view bad : kNotUnits) {
      if (lowered == bad) return false;
    }
    k = e;
    while (k < text.size() && gap(text[k])) ++k;
  }
  return true;
}

namespace {

// "million" after a number: appends the power of ten it stands for (2.5 million = 2.5 \cdot 10^{6}).
bool scale_word(std::string_view word, std::string& out) {
  struct Scale {
    std::string_view word;
    std::string_view power;
  };
  static constexpr Scale kScales[] = {
      {"hundred", "2"}, {"thousand", "3"}, {"million", "6"}, {"billion", "9"}, {"trillion", "12"}};
  const char before = last_visible(out);
  if (!is_digit(before)) return false;
  for (const Scale& sc : kScales) {
    if (word == sc.word) {
      out.append("\\cdot 10^{");
      out.append(sc.power);
      out.append("}");
      return true;
    }
  }
  return false;
}

struct Replacement {
  std::string_view from;
  std::string_view to;
};

// Unicode spellings of operators and constants (UTF-8 bytes).
constexpr std::array<Replacement, 30> kUnicode = {{
    {"\xe2\x80\x93", "-"},          // en dash, written for a minus
    {"\xe2\x80\x8b", ""},           // zero-width space
    {"\xe2\x80\x8c", ""},           // zero-width non-joiner
    {"\xe2\x80\xaf", " "},          // narrow no-break space (1 000)
    {"\xc2\xbd", "\\frac{1}{2}"},    // vulgar fraction one half
    {"\xc2\xbc", "\\frac{1}{4}"},    // one quarter
    {"\xc2\xbe", "\\frac{3}{4}"},    // three quarters
    {"\xc2\xb2", "^2 "},            // superscript two (m², x²)
    {"\xc2\xb3", "^3 "},            // superscript three
    {"\xe2\x82\xac", " "},          // euro sign: currency is not part of the value
    {"\xc2\xa3", " "},              // pound sign
    {"\xc2\xa5", " "},              // yen sign
    {"\xe2\x80\x89", " "},          // thin space
    {"\xe2\x89\xa4", "\\le "},     // less-than or equal
    {"\xe2\x89\xa5", "\\ge "},     // greater-than or equal
    {"\xe2\x89\xa0", "\\neq "},    // not equal
    {"\xc2\xb1", "\\pm "},          // plus-minus
    {"\xe2\x88\x93", "\\mp "},     // minus-plus
    {"\xe2\x88\x88", "\\in "},     // element of
    {"\xcf\x80", "\\pi "},      // pi
    {"\xe2\x88\x9e", "\\infty "},  // infinity
    {"\xe2\x88\x92", "-"},         // minus sign
    {"\xc3\x97", "\\times "},      // multiplication sign
    {"\xc3\xb7", "\\div "},        // division sign
    {"\xc2\xb7", "\\cdot "},       // middle dot
    {"\xe2\x8b\x85", "\\cdot "},   // dot operator
    {"\xe2\x88\x9a", "\\sqrt "},   // square root
    {"\xc2\xb0", "\\degree "},     // degree sign
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
    if (j - i <= 3 && !(j - i == 1 && s[i] == '0')) {  // 0,111 is no thousands group
      while (end + 3 < s.size() && ((s[end] == ',' && brackets == 0) || s[end] == ' ') && (sep == 0 || s[end] == sep) &&
             is_digit(s[end + 1]) && is_digit(s[end + 2]) && is_digit(s[end + 3]) &&
             (end + 4 >= s.size() || (!is_digit(s[end + 4]) && !(s[end + 4] == '.' && s[end] == ' ') &&
                                      !(s[end] == ' ' && s[end + 4] == ','))) ) {
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
  std::size_t text_ends_at = std::string::npos;  // where the last kept \text{..} group ended in `out`
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
      out.append("\\degree ");  // a unit at the end (30^\circ = 30), pi/180 inside an expression (\sin 30^\circ)
      continue;
    }
    if (static_cast<unsigned char>(c) >= 0x80) {
      // Full-width digits (U+FF10..FF19, EF BC 90..99) and Arabic-Indic digits (U+0660..0669, D9 A0..A9).
      if (i + 2 < s.size() && c == '\xef' && s[i + 1] == '\xbc' && static_cast<unsigned char>(s[i + 2]) >= 0x90 &&
          static_cast<unsigned char>(s[i + 2]) <= 0x99) {
        out.push_back(static_cast<char>('0' + (static_cast<unsigned char>(s[i + 2]) - 0x90)));
        i += 3;
        continue;
      }
      if (i + 1 < s.size() && c == '\xd9' && static_cast<unsigned char>(s[i + 1]) >= 0xa0 &&
          static_cast<unsigned char>(s[i + 1]) <= 0xa9) {
        out.push_back(static_cast<char>('0' + (static_cast<unsigned char>(s[i + 1]) - 0xa0)));
        i += 2;
        continue;
      }
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
      // ASCII spellings of relations: >= <= != (=< and => are not relations people write in answers).
      if ((c == '>' || c == '<' || c == '!') && i + 1 < s.size() && s[i + 1] == '=') {
        out.append(c == '>' ? "\\ge " : c == '<' ? "\\le " : "\\neq ");
        i += 2;
        continue;
      }
      // 32,\! 349: a thousands comma typeset with a negative thin space.
      if (c == ',' && s.compare(i + 1, 2, "\\!") == 0) {
        std::size_t k = i + 3;
        while (k < s.size() && is_space(s[k])) ++k;
        if (k + 2 < s.size() && is_digit(s[k]) && is_digit(s[k + 1]) && is_digit(s[k + 2])) {
          out.push_back(',');
          i = k;
          continue;
        }
      }
      // Function names written without a backslash (sqrt(2), sin x, pi): the commands they mean.
      if (is_letter(c) && (i == 0 || (!is_letter(s[i - 1]) && s[i - 1] != '\\'))) {
        std::size_t k = i;
        while (k < s.size() && is_letter(s[k])) ++k;
        const std::string_view word = s.substr(i, k - i);
        if (one_of(word, {"sqrt", "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "ln", "log",
                          "exp", "pi"})) {
          out.push_back('\\');
          out.append(word);
          out.push_back(' ');
          i = k;
          continue;
        }
        if (one_of(word, {"percent", "pct"}) && !out.empty()) {
          out.push_back('%');
        } else if (!scale_word(word, out)) {
          out.append(word);
        }
        i = k;
        continue;
      }
      out.push_back(c);
      ++i;
      continue;
    }
    // \\sqrt: a command whose backslash was doubled by an extra round of escaping (JSON, Python strings).
    if (i + 2 < s.size() && s[i + 1] == '\\' && is_letter(s[i + 2])) ++i;
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
    if (name == "mathbb" && (s.compare(j, 3, "{R}") == 0 || s.compare(j, 2, " R") == 0)) {
      out.append("(-\\infty,\\infty)");  // the real line
      i = j + (s[j] == '{' ? 3 : 2);
      continue;
    }
    if (one_of(name, {"left", "right", "big", "Big", "bigg", "Bigg", "bigl", "bigr", "Bigl", "Bigr", "biggl",
                      "biggr", "displaystyle", "textstyle", "limits", "nolimits", "mathstrut", "circ",
                      "boxed", "fbox", "mathbf", "mathit", "bf", "it", "rm", "boldsymbol", "bm", "underline",
                      "mathbb", "displaylimits", "small", "large", "Large", "tiny", "footnotesize", "normalsize", "smash"})) {
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
    // \quadx: a \quad whose following space was lost (x_{1}=1,\quadx_{2}=2).
    if (name.size() > 4 && (name.substr(0, 4) == "quad" || (name.size() > 5 && name.substr(0, 5) == "qquad"))) {
      out.push_back(' ');
      i += name.substr(0, 5) == "qquad" ? 6 : 5;
      continue;
    }
    if (one_of(name, {"dfrac", "tfrac", "cfrac"})) {
      out.append("\\frac");
      i = j;
      continue;
    }
    if (one_of(name, {"le", "leq", "leqslant", "ge", "geq", "geqslant", "ne", "neq"})) {
      out.append(name[0] == 'l' ? "\\le " : name[0] == 'g' ? "\\ge " : "\\neq ");
      i = j;
      continue;
    }
    if (one_of(name, {"lt", "gt"})) {
      out.push_back(name[0] == 'l' ? '<' : '>');
      i = j;
      continue;
    }
    if (name == "not" && j < s.size() && s[j] == '=') {
      out.append("\\neq ");
      i = j + 1;
      continue;
    }
    if (one_of(name, {"varnothing", "emptyset"})) {
      out.append("\\emptyset ");
      i = j;
      continue;
    }
    if (one_of(name, {"phantom", "hphantom", "vphantom", "hspace", "vspace", "kern", "label"})) {
      // Invisible or spacing material: \phantom{4}5 is 5.
      std::size_t k = j;
      while (k < s.size() && is_space(s[k])) ++k;
      if (k < s.size() && s[k] == '*') ++k;
      i = k < s.size() && s[k] == '{' ? skip_group(s, k) : j;
      continue;
    }
    if (one_of(name, {"color", "textcolor"})) {  // \color{red}: the colour name is not part of the answer
      std::size_t k = j;
      while (k < s.size() && is_space(s[k])) ++k;
      i = k < s.size() && s[k] == '{' ? skip_group(s, k) : j;
      continue;
    }
    if (one_of(name, {"text", "textrm", "textbf", "textit", "textnormal", "textsf", "texttt", "mathrm", "mathsf",
                      "mathtt", "mbox", "hbox", "operatorname"})) {
      std::size_t k = j;
      while (k < s.size() && is_space(s[k])) ++k;
      if (k < s.size() && s[k] == '{' && name != "operatorname") {
        const std::size_t end = skip_group(s, k);
        const std::string_view inner = trim(s.substr(k + 1, end - k - (end <= s.size() && s[end - 1] == '}' ? 2 : 1)));
        // \text{ and }, \text{or}, \text{, }: a list separator, never glue between two numbers.
        if (inner.empty() || one_of(inner, {"and", "or", ",", "and/or"})) {
          out.append(inner.empty() ? " " : ", ");
          i = end;
          continue;
        }
        if (one_of(inner, {"percent", "\\%", "%"}) && last_visible(out) != 0) {
          out.push_back('%');
          i = end;
          continue;
        }
        const char before = last_visible(out);
        const std::size_t after = unit_power_end(s, end);
        // A word right after a kept \text group is no unit (\text{C}\text{A}).
        const bool last_was_text = text_ends_at != std::string::npos &&
                                   out.find_first_not_of(' ', text_ends_at) == std::string::npos;
        const bool after_value = before != 0 && before != '=' && before != ',' && before != '(' && !last_was_text;
        if (after_value && trailing(s, after) && (is_unit_text(inner) || scale_word(inner, out))) {
          // A unit after a value, at the end: 5\text{ cm}, 3\text{ cm}^2, 2.5\text{ million}. Kept as \unit{..} so
          // that 8 inches is not 8 feet; the comparison reads it off.
          if (!is_unit_text(inner)) {  // a scale word, written out by scale_word: 2.5 million
            i = after;
            continue;
          }
          out.append("\\unit{");
          for (char ch : inner) out.push_back(is_space(ch) ? ' ' : ch);
          out.append(s.substr(end, after - end));
          out.append("} ");
          i = after;
          continue;
        }
        // Otherwise the words stay, set apart by spaces: 12\text{ apples }13 is text, never 1213.
        out.push_back(' ');
        out.push_back('{');
        out.append(inner);
        out.append("} ");
        i = end;
        text_ends_at = out.size();
        continue;
      }
      i = j;  // \operatorname{...}: keep the {...} group
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
    if (collapsed.compare(k, 4, "{, }") == 0 || collapsed.compare(k, 3, "{,}") == 0) {
      // 7{,}425 and 14 {, }916: a thousands comma typeset as a group.
      if (joined.size() >= 2 && joined.back() == ' ' && is_digit(joined[joined.size() - 2])) joined.pop_back();
      joined.push_back(',');
      k += collapsed[k + 2] == ' ' ? 3 : 2;
      if (k + 1 < collapsed.size() && collapsed[k + 1] == ' ') ++k;
    } else if (collapsed.compare(k, 3, "{-}") == 0 || collapsed.compare(k, 3, "{+}") == 0) {
      joined.push_back(collapsed[k + 1]);  // {-}1: a sign typeset as a group
      k += 2;
    } else {
      joined.push_back(collapsed[k]);
    }
  }
  return join_thousands(joined);
}

std::string canonical_text(std::string_view normalized) {
  // Spaces go, except between two letters or digits (12 13 is not 1213) and after a command name before a letter
  // (\pi r is not \pir).
  std::string out;
  out.reserve(normalized.size());
  for (std::size_t i = 0; i < normalized.size(); ++i) {
    const char c = normalized[i];
    if (c == ' ') {
      const bool alnum_before = !out.empty() && (is_letter(out.back()) || is_digit(out.back()));
      const bool alnum_after = i + 1 < normalized.size() && (is_letter(normalized[i + 1]) || is_digit(normalized[i + 1]));
      if (alnum_before && alnum_after && out.back() != ' ') out.push_back(' ');
      continue;
    }
    out.push_back(c);
  }
  return out;
}

}  // namespace r1fast::rewards
