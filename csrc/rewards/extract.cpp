#include "rewards/extract.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "rewards/normalize.hpp"

namespace r1fast::rewards {

namespace {

constexpr int kMaxBoxes = 32;
constexpr std::size_t kMaxGlue = 64;  // bytes between two boxes of one answer list
constexpr std::size_t kMaxScanBytes = 32768;  // the tail of a region that is searched for the answer

bool is_space(char c) noexcept { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_letter(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
char lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

bool starts_nocase(std::string_view s, std::size_t i, std::string_view lower_needle) noexcept {
  if (i + lower_needle.size() > s.size()) return false;
  for (std::size_t k = 0; k < lower_needle.size(); ++k) {
    if (lower(s[i + k]) != lower_needle[k]) return false;
  }
  return true;
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

// Whether s[i..] starts with `lit`: an inline byte loop that stops at the first difference (dense near-misses such
// as a megabyte of "<a" stay cheap).
bool starts_at(std::string_view s, std::size_t i, std::string_view lit) noexcept {
  if (i + lit.size() > s.size()) return false;
  for (std::size_t k = 0; k < lit.size(); ++k) {
    if (s[i + k] != lit[k]) return false;
  }
  return true;
}

// Last position of `needle` in `hay`, npos if absent.
std::size_t rfind_fast(std::string_view hay, std::string_view needle) noexcept {
  std::size_t found = std::string_view::npos;
  scan_back(hay, needle[0], [&](std::size_t i) {
    if (!starts_at(hay, i, needle)) return false;
    found = i;
    return true;
  });
  return found;
}

struct Box {
  std::size_t start = 0;  // the backslash of \boxed
  std::size_t end = 0;    // one past the closing brace (or the token of \boxed 5)
  std::string_view content;
};

// The last complete \boxed{...} / \fbox{...} that starts before `limit`. Tries the last few occurrences only: each
// try is O(n), and an unbalanced last \boxed{ is rare.
bool last_box(std::string_view s, std::size_t limit, Box& box) noexcept {
  std::size_t end = limit;
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
          box = Box{pos, k + 1, trim(s.substr(i + 1, k - i - 1))};
          return true;
        }
      }
    } else if (i > pos + name && i < s.size()) {
      // \boxed 5: one token up to the next space or $.
      std::size_t k = i;
      while (k < s.size() && !is_space(s[k]) && s[k] != '$') ++k;
      box = Box{pos, k, s.substr(i, k - i)};
      return true;
    }
    end = pos;
  }
  return false;
}

// Whether `glue` (the text between two boxes) only separates them: spaces, punctuation, math delimiters, spacing
// commands, `and` / `or` (also as \text{ and }).
bool only_glue(std::string_view glue) noexcept {
  if (glue.size() > kMaxGlue) return false;
  std::size_t i = 0;
  bool word_before_separator_used = false;
  while (i < glue.size()) {
    const char c = glue[i];
    if (is_space(c) || c == '$' || c == ',' || c == ';' || c == '.' || c == '&' || c == '~') {
      ++i;
      continue;
    }
    if (is_letter(c) && !word_before_separator_used) {
      // One plain word before the separator: \boxed{1} papers and \boxed{2} bins.
      std::size_t k = i;
      while (k < glue.size() && is_letter(glue[k])) ++k;
      std::size_t n = k;
      while (n < glue.size() && is_space(glue[n])) ++n;
      if (k - i >= 2 && !starts_nocase(glue, i, "and") && !starts_nocase(glue, i, "or") &&
          (starts_nocase(glue, n, "and") || starts_nocase(glue, n, "or") || glue[n] == ',')) {
        word_before_separator_used = true;
        i = k;
        continue;
      }
    }
    if (starts_nocase(glue, i, "and") && (i + 3 == glue.size() || !is_letter(glue[i + 3]))) {
      i += 3;
      continue;
    }
    if (starts_nocase(glue, i, "or") && (i + 2 == glue.size() || !is_letter(glue[i + 2]))) {
      i += 2;
      continue;
    }
    if (c != '\\' || i + 1 >= glue.size()) return false;
    const char n = glue[i + 1];
    if (n == ',' || n == ';' || n == ':' || n == '!' || n == ' ' || n == '(' || n == ')' || n == '[' || n == ']' ||
        n == '\\') {
      i += 2;
      continue;
    }
    if (glue.compare(i, 5, "\\quad") == 0 || glue.compare(i, 6, "\\qquad") == 0) {
      i += glue.compare(i, 5, "\\quad") == 0 ? 5 : 6;
      continue;
    }
    if (glue.compare(i, 6, "\\text{") == 0) {
      const std::size_t close = glue.find('}', i);
      if (close == std::string_view::npos || !only_glue(glue.substr(i + 6, close - i - 6))) return false;
      i = close + 1;
      continue;
    }
    return false;
  }
  return true;
}

// The boxes of the final answer: the last one and those right before it that only glue separates from it, last
// first.
bool final_boxes(std::string_view s, std::vector<std::string_view>& contents) {
  Box box;
  if (!last_box(s, s.size(), box)) return false;
  contents.assign(1, box.content);
  std::size_t start = box.start;
  while (static_cast<int>(contents.size()) < kMaxBoxes) {
    Box before;
    if (start == 0 || !last_box(s, start, before) || before.end > start) break;
    if (!only_glue(s.substr(before.end, start - before.end))) break;
    contents.push_back(before.content);
    start = before.start;
  }
  return true;
}

// The math span starting at s[i] ($..$, $$..$$, \(..\), \[..\]): its content and the index past its end.
// Where \) and \] last occur in a text: an opener after the last closer of its kind opens nothing, and a scan over
// many unclosed openers stays linear.
struct LastClosers {
  std::size_t paren;
  std::size_t bracket;
  explicit LastClosers(std::string_view s) noexcept : paren(rfind_fast(s, "\\)")), bracket(rfind_fast(s, "\\]")) {}
};

// The math span starting at s[i] ($..$, $$..$$, \(..\), \[..\]): its content and the index past its end. On failure
// `resume` (when given) is where a scan may go on without skipping a span: past the opener, or past the last
// newline of an inline span that crossed lines.
bool math_span_at(std::string_view s, std::size_t i, std::string_view& content, std::size_t& after,
                  const LastClosers* closers = nullptr, std::size_t* resume = nullptr) noexcept {
  if (resume != nullptr) *resume = i + 1;
  std::string_view open;
  std::string_view close;
  if (s[i] == '$') {
    if (i > 0 && s[i - 1] == '\\') return false;  // \$ is a dollar sign
    const bool display = i + 1 < s.size() && s[i + 1] == '$';
    open = display ? "$$" : "$";
    close = open;
  } else if (s.compare(i, 2, "\\(") == 0) {
    open = "\\(";
    close = "\\)";
  } else if (s.compare(i, 2, "\\[") == 0) {
    open = "\\[";
    close = "\\]";
  } else {
    return false;
  }
  if (closers != nullptr && open[0] == '\\') {
    const std::size_t last = open[1] == '(' ? closers->paren : closers->bracket;
    if (last == std::string_view::npos || last < i + 2) {
      if (resume != nullptr) *resume = i + 2;
      return false;
    }
  }
  std::size_t k = i + open.size();
  while (true) {
    const std::size_t end = s.find(close, k);
    if (end == std::string_view::npos) return false;
    if (close[0] == '$' && end > 0 && s[end - 1] == '\\') {  // an escaped \$ inside the span
      k = end + 1;
      continue;
    }
    content = s.substr(i + open.size(), end - i - open.size());
    // Inline math ($..$, \(..\)) stays on one line: a $ on a later line is another span's or a dollar sign.
    const std::size_t newline = content.rfind('\n');
    if ((open == "$" || open == "\\(") && newline != std::string_view::npos) {
      if (resume != nullptr) *resume = i + open.size() + newline + 1;
      return false;
    }
    after = end + close.size();
    return true;
  }
}

struct Span {
  std::size_t start = 0;
  std::size_t end = 0;
  std::string_view content;
};

// The last complete math span in s, scanning forward so that $ pairs open and close in order, with the spans right
// before it that only glue separates from it ($1$ and $2$ and $3$), first to last.
bool last_math(std::string_view s, std::vector<std::string_view>& contents, std::size_t& end) {
  std::vector<Span> run;
  const LastClosers closers(s);
  std::size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c != '$' && c != '\\') {
      ++i;
      continue;
    }
    std::string_view span;
    std::size_t after = 0;
    std::size_t resume = 0;
    if (math_span_at(s, i, span, after, &closers, &resume)) {
      if (!trim(span).empty()) {
        if (!run.empty() && !only_glue(s.substr(run.back().end, i - run.back().end))) run.clear();
        if (run.size() == static_cast<std::size_t>(kMaxBoxes)) run.erase(run.begin());  // the last ones count
        run.push_back(Span{i, after, span});
      }
      i = after;
    } else if (c == '$' && (i == 0 || s[i - 1] != '\\')) {
      break;  // an unclosed $: nothing after it pairs
    } else {
      i = std::max(i + (c == '\\' ? 2 : 1), resume);
    }
  }
  contents.clear();
  for (const Span& sp : run) contents.push_back(sp.content);
  end = run.empty() ? 0 : run.back().end;
  return !contents.empty();
}

// The last of the markers "answer is" and "answer:" (case-insensitive); npos when neither is present. `skip` is
// set to the marker's length.
std::size_t last_answer_marker(std::string_view s, std::size_t& skip) noexcept {
  std::size_t best = std::string_view::npos;
  // "answer" is found by its 'w' (rarer in text than 'a'), in both cases.
  for (char w : {'w', 'W'}) {
    scan_back(s, w, [&](std::size_t i) {
      if (i < 3 || !starts_nocase(s, i - 3, "answer")) return false;
      const std::size_t at = i - 3;
      if (best != std::string_view::npos && at < best) return true;
      std::size_t k = at + 6;
      if (k < s.size() && (s[k] == 's' || s[k] == 'S')) ++k;  // "answers are"
      while (k < s.size() && (s[k] == '*' || s[k] == ' ')) ++k;
      if (starts_nocase(s, k, "is") || starts_nocase(s, k, "are")) {
        best = at;
        skip = k + (starts_nocase(s, k, "is") ? 2 : 3) - at;
        return true;
      }
      if (k < s.size() && s[k] == ':') {
        best = at;
        skip = k + 1 - at;
        return true;
      }
      return false;
    });
  }
  return best;
}

// The end of the sentence that starts at s[0]: a newline, or a period/!/? followed by a space or the end (a
// decimal point is not an end).
std::size_t sentence_end(std::string_view s) noexcept {
  const LastClosers closers(s);
  for (std::size_t k = 0; k < s.size(); ++k) {
    const char c = s[k];
    if (c == '\n') return k;
    if (c == '$' || (c == '\\' && k + 1 < s.size() && (s[k + 1] == '(' || s[k + 1] == '['))) {
      std::string_view span;
      std::size_t after = 0;
      std::size_t resume = 0;
      if (math_span_at(s, k, span, after, &closers, &resume)) {
        k = after - 1;
        continue;
      }
      // An inline span that crosses a line: the sentence ends at that line's end.
      if (resume > k + 2) {
        const std::size_t nl = s.find('\n', k);
        return nl == std::string_view::npos ? s.size() : nl;
      }
    }
    if ((c == '.' || c == '!' || c == '?') && (k + 1 == s.size() || is_space(s[k + 1]))) return k;
  }
  return s.size();
}

bool one_of(std::string_view word, std::initializer_list<std::string_view> words) noexcept {
  for (std::string_view w : words) {
    if (word.size() == w.size() && starts_nocase(word, 0, w)) return true;
  }
  return false;
}

// Words that carry no value before an answer: "the answer is therefore 5", "the answer is option (B)".
bool filler_word(std::string_view w) noexcept {
  return one_of(w, {"therefore", "thus", "hence", "so", "then", "simply", "just", "exactly", "clearly", "indeed",
                    "option", "choice", "the", "that", "we", "get", "have", "be", "to", "equal", "equals",
                    "finally", "actually", "answer", "final", "is"});
}

// Words that change a value: an answer ending in one is not stripped of its words (it stays text, never equal).
bool value_word(std::string_view w) noexcept {
  return one_of(w, {"thousand", "thousands", "million", "millions", "billion", "billions", "trillion", "hundred",
                    "hundreds", "squared", "cubed", "dozen", "dozens", "percent", "times", "plus", "minus", "over",
                    "half", "halves", "quarter", "quarters", "third", "thirds", "and", "or", "not", "no", "negative",
                    "than", "less", "more", "divided", "per", "to"});
}

// Units written right after a number (5cm, 1,000.99m^2): only these, never letters that could be variables (2xy).
bool glued_unit(std::string_view w) noexcept {
  return one_of(w, {"cm", "mm", "km", "m", "kg", "g", "mg", "s", "ms", "min", "h", "hr", "hrs", "ml", "l", "ft",
                    "yd", "mi", "lb", "lbs", "oz", "km/h", "m/s", "mph", "kmh"});
}

// The plain word (letters, maybe a ^digit unit power) ending at s.size(), or empty.
std::string_view trailing_word(std::string_view s) noexcept {
  std::size_t k = s.size();
  if (k >= 2 && is_digit(s[k - 1]) && s[k - 2] == '^') k -= 2;
  if (k >= 2 && s[k - 2] == '\xc2' && (s[k - 1] == '\xb2' || s[k - 1] == '\xb3')) k -= 2;  // m², cm³
  std::size_t j = k;
  while (j > 0 && is_letter(s[j - 1])) --j;
  // A rate unit: km/h, m/s (letters on both sides of one slash).
  if (j > 1 && j < k && s[j - 1] == '/' && is_letter(s[j - 2])) {
    --j;
    while (j > 0 && is_letter(s[j - 1])) --j;
  }
  if (j > 0 && j < k && is_digit(s[j - 1]) && glued_unit(s.substr(j, k - j))) return s.substr(j, s.size() - j);
  if (k - j < 2 || j == 0 || s[j - 1] != ' ') return {};
  return s.substr(j, k - j);
}

// What follows the last " is " of a sentence ("the largest $n$ is 34" -> "34"), or the sentence itself.
std::string_view after_last_is(std::string_view s) noexcept {
  std::size_t found = std::string_view::npos;
  for (std::size_t k = 0; k + 4 <= s.size(); ++k) {
    if (s[k] == '$') {  // not inside math
      std::string_view span;
      std::size_t after = 0;
      if (math_span_at(s, k, span, after)) k = after - 1;
      continue;
    }
    for (std::string_view verb : {" is ", " are ", " equals ", " it's "}) {
      if (s.compare(k, verb.size(), verb) == 0) found = k + verb.size();
    }
  }
  return found == std::string_view::npos ? s : s.substr(found);
}

std::string_view leading_word(std::string_view s) noexcept {
  std::size_t j = 0;
  while (j < s.size() && is_letter(s[j])) ++j;
  if (j < 2 || (j < s.size() && s[j] != ' ' && s[j] != ':' && s[j] != ',')) return {};
  return s.substr(0, j);
}

std::string_view strip_punctuation(std::string_view s) noexcept {
  s = trim(s);
  while (!s.empty() && (s.back() == '.' || s.back() == ':' || s.back() == ';' || s.back() == ',' ||
                        s.back() == '?')) {
    s.remove_suffix(1);
    s = trim(s);
  }
  return s;
}

// The one number of a sentence in words ("Jane started growing Sphere 3 hours ago" -> "3"); false when there is
// none, more than one, or math beside it.
bool only_number(std::string_view s, std::string_view& number) noexcept {
  // "the answer is not 5": a negated sentence states no value.
  for (std::string_view negation : {"not", "n't", "never", "no", "neither", "nor", "cannot", "isn", "wrong"}) {
    for (std::size_t at = s.find(negation); at != std::string_view::npos; at = s.find(negation, at + 1)) {
      const bool starts = at == 0 || !is_letter(s[at - 1]) || negation == "n't";
      const bool ends = at + negation.size() >= s.size() || !is_letter(s[at + negation.size()]);
      if (starts && ends) return false;
    }
  }
  int count = 0;
  for (std::size_t k = 0; k < s.size(); ++k) {
    const char c = s[k];
    if (c == '$' || c == '\\' || c == '=' || c == '+' || c == '/' || c == '^') return false;
    if (!is_digit(c)) continue;
    if (k > 0 && (is_letter(s[k - 1]) || s[k - 1] == '-')) return false;  // x2, -3: not a plain number in words
    std::size_t e = k;
    while (e < s.size() && (is_digit(s[e]) || (s[e] == '.' && e + 1 < s.size() && is_digit(s[e + 1])))) ++e;
    if (e < s.size() && (is_letter(s[e]) || s[e] == ',')) return false;
    number = s.substr(k, e - k);
    ++count;
    k = e;
  }
  return count == 1;
}

// Whether s has a word (two or more letters, not a command name): then it is prose, not a value.
bool has_space_separated_words(std::string_view s) noexcept {
  std::size_t run = 0;
  for (std::size_t k = 0; k <= s.size(); ++k) {
    if (k < s.size() && is_letter(s[k])) {
      ++run;
      continue;
    }
    if (run >= 2 && (k - run == 0 || s[k - run - 1] != '\\')) return true;
    run = 0;
  }
  return false;
}

// The last sentence that starts with Therefore / Thus / Hence / So, when it starts after `from`.
bool concluding_sentence(std::string_view s, std::size_t from, std::string_view& out) noexcept {
  std::size_t best = std::string_view::npos;
  for (std::string_view w : {"Therefore", "Thus", "Hence", "So,"}) {
    const std::size_t at = rfind_fast(s, w);
    if (at != std::string_view::npos && at >= from && (best == std::string_view::npos || at > best)) best = at;
  }
  if (best == std::string_view::npos) return false;
  std::string_view rest = s.substr(best);
  out = rest.substr(0, sentence_end(rest));
  return true;
}

// "(B) 5", "B) 5", "B: 5" -> "B": a choice letter leading the answer.
bool choice_letter(std::string_view s, std::string_view& letter) noexcept {
  // \textbf{(D)}\ 42: the letter inside a style command.
  for (std::string_view style : {"\\textbf{", "\\text{", "\\mathrm{", "\\mathbf{"}) {
    if (s.substr(0, style.size()) == style && s.size() > style.size() + 3 && s[style.size()] == '(' &&
        s[style.size() + 2] == ')' && s[style.size() + 3] == '}' && s[style.size() + 1] >= 'A' &&
        s[style.size() + 1] <= 'J') {
      letter = s.substr(style.size() + 1, 1);
      return true;
    }
  }
  std::size_t i = 0;
  const bool paren = !s.empty() && s[0] == '(';
  if (paren) ++i;
  if (i >= s.size() || s[i] < 'A' || s[i] > 'J') return false;
  const std::size_t at = i++;
  if (i >= s.size() || (s[i] != ')' && (paren || (s[i] != ':' && s[i] != '.')))) return false;
  ++i;
  if (i < s.size() && !is_space(s[i])) return false;
  letter = s.substr(at, 1);
  return true;
}

std::string_view clean(std::string_view s) noexcept {
  for (int round = 0; round < 6; ++round) {
    const std::string_view before = s;
    s = strip_punctuation(s);
    if (s.substr(0, 2) == "**") s.remove_prefix(2);  // markdown bold, also "**Answer:** 17"
    if (s.size() >= 2 && s.substr(s.size() - 2) == "**") s.remove_suffix(2);
    s = trim(s);
    std::string_view span;
    std::size_t after = 0;
    if (!s.empty() && (s[0] == '$' || s[0] == '\\') && math_span_at(s, 0, span, after) && after == s.size()) {
      s = span;
    }
    // Filler words before the answer, plain words (units, nouns) after it.
    while (true) {
      const std::string_view w = leading_word(s);
      if (w.empty() || !filler_word(w) || w.size() == s.size()) break;
      s = trim(s.substr(w.size()));
      if (!s.empty() && (s[0] == ':' || s[0] == ',')) s = trim(s.substr(1));
    }
    while (true) {
      const std::string_view w = trailing_word(s);
      if (w.empty() || value_word(w)) break;
      const std::string_view rest = strip_punctuation(s.substr(0, s.size() - w.size()));
      // Keep an answer that is all words ("odd", "no solution"), and a word after a command (\pi r).
      if (rest.empty() || !trailing_word(rest).empty() || rest.back() == '\\') break;
      s = rest;
    }
    std::string_view letter;
    if (choice_letter(s, letter)) s = letter;
    if (s == before) break;
  }
  return s;
}

// The answer of a region (the <answer> block or the whole text) by the priorities in extract.hpp.
std::string region_answer(std::string_view s) {
  std::vector<std::string_view> boxes;
  Box last;
  std::size_t skip = 0;
  const std::size_t marker = last_answer_marker(s, skip);
  // A box wins over the markers, unless a "final answer is" comes after it (a corrected final statement).
  const bool final_after_box = marker != std::string_view::npos && last_box(s, s.size(), last) &&
                               marker > last.end && marker >= 6 && starts_nocase(s, marker - 6, "final ");
  if (!final_after_box && final_boxes(s, boxes)) {
    std::string out;
    for (std::size_t k = boxes.size(); k-- > 0;) {
      if (!out.empty()) out += ", ";
      out.append(clean(boxes[k]));  // each box on its own: \boxed{5 cm}, \boxed{x = 2.}
    }
    return out;
  }
  const std::size_t hashes = rfind_fast(s, "####");
  if (hashes != std::string_view::npos) {
    std::string_view rest = s.substr(hashes + 4);
    const std::size_t nl = rest.find('\n');
    rest = clean(nl == std::string_view::npos ? rest : rest.substr(0, nl));
    if (!rest.empty()) return std::string(rest);
  }
  if (marker != std::string_view::npos) {
    std::string_view rest = trim(s.substr(marker + skip));
    while (!rest.empty() && (rest[0] == ':' || rest[0] == '*')) rest = trim(rest.substr(1));
    std::string_view sentence = rest.substr(0, sentence_end(rest));
    sentence = after_last_is(sentence);
    // The first math span of the sentence when only a few words come before it, with the spans right after it
    // that only glue separates from it ($12$ and $13$).
    for (std::size_t k = 0; k < sentence.size() && k <= 40; ++k) {
      if (sentence[k] != '$' && sentence[k] != '\\') continue;
      std::string_view span;
      std::size_t after = 0;
      if (math_span_at(sentence, k, span, after) && !trim(span).empty()) {
        std::string out(clean(span));
        for (int more = 0; more < kMaxBoxes; ++more) {
          std::size_t next = after;
          while (next < sentence.size() && sentence[next] != '$' && sentence[next] != '\\') ++next;
          std::string_view next_span;
          std::size_t next_after = 0;
          if (next >= sentence.size() || !only_glue(sentence.substr(after, next - after)) ||
              !math_span_at(sentence, next, next_span, next_after)) {
            break;
          }
          out += ", ";
          out.append(clean(next_span));
          after = next_after;
        }
        return out;
      }
      if (sentence[k] == '\\') break;
    }
    const std::string_view answer = clean(sentence);
    std::string_view number;
    if (!answer.empty() && !is_digit(answer[0]) && only_number(answer, number)) return std::string(number);
    if (!answer.empty()) return std::string(answer);
  }
  std::vector<std::string_view> spans;
  std::size_t math_end = 0;
  const bool have_math = last_math(s, spans, math_end);
  // A concluding sentence after the last math ("Therefore, the probability is 2/3."): the one value it states.
  std::string_view conclusion;
  if (concluding_sentence(s, math_end, conclusion)) {
    std::string_view value = clean(after_last_is(conclusion));
    std::string_view number;
    if (!value.empty() && !has_space_separated_words(value)) return std::string(value);
    if (only_number(conclusion, number)) return std::string(number);
  }
  if (have_math) {
    std::string out;
    for (std::string_view span : spans) {
      const std::string_view answer = clean(span);
      if (answer.empty()) continue;
      if (!out.empty()) out += ", ";
      out.append(answer);
    }
    if (!out.empty()) return out;
  }
  const std::string_view whole = trim(s);
  if (whole.size() > kMaxAnswerBytes) return {};
  // A truncated \boxed{ means the answer was cut off; a math delimiter that pairs with nothing is malformed math.
  for (std::string_view bad : {"\\boxed", "\\fbox", "\\(", "\\["}) {
    if (whole.find(bad) != std::string_view::npos) return {};
  }
  const std::size_t dollar = whole.find('$');
  if (dollar != std::string_view::npos && whole.find('$', dollar + 1) != std::string_view::npos) return {};
  // A last line that is a choice ("B) 12" after the working).
  const std::size_t last_nl = whole.rfind('\n');
  std::string_view letter;
  if (last_nl != std::string_view::npos && choice_letter(trim(whole.substr(last_nl + 1)), letter)) {
    return std::string(letter);
  }
  if (last_nl != std::string_view::npos) return std::string(clean(whole));
  return std::string(clean(after_last_is(whole)));
}

}  // namespace

// The last kMaxScanBytes of a region, from a line start when one is near: the final answer is at the end, and the
// forward scans (math spans) then cost the same on a megabyte of adversarial text as on a long completion.
std::string_view tail_of(std::string_view region) noexcept {
  if (region.size() <= kMaxScanBytes) return region;
  std::string_view tail = region.substr(region.size() - kMaxScanBytes);
  const std::size_t nl = tail.substr(0, 4096).find('\n');
  return nl == std::string_view::npos ? tail : tail.substr(nl + 1);
}

std::string extract_answer(std::string_view text) {
  // The last <answer>, </think> and <think> in one backward pass over the '<' bytes (it stops at an <answer>).
  constexpr std::size_t npos = std::string_view::npos;
  std::size_t answer_open = npos;
  std::size_t think_end = npos;
  std::size_t think_open = npos;
  scan_back(text, '<', [&](std::size_t i) {
    const char next = i + 1 < text.size() ? text[i + 1] : '\0';  // one byte tells which tag it may be
    if (next == 'a' && starts_at(text, i, "<answer>")) {
      answer_open = i;
      return true;
    }
    if (next == '/' && think_end == npos && starts_at(text, i, "</think>")) think_end = i;
    if (next == 't' && think_open == npos && starts_at(text, i, "<think>")) think_open = i;
    return false;
  });
  if (answer_open != npos) {
    const std::size_t from = answer_open + 8;
    const std::size_t close = text.find("</answer>", from);
    return region_answer(tail_of(close == npos ? text.substr(from) : text.substr(from, close - from)));
  }
  // Without an <answer> block the answer follows the reasoning: nothing inside <think> counts, and an unclosed
  // <think> (a truncated completion) has no answer at all.
  if (think_end != npos) return region_answer(tail_of(text.substr(think_end + 8)));
  if (think_open != npos) return {};
  return region_answer(tail_of(text));
}

}  // namespace r1fast::rewards
