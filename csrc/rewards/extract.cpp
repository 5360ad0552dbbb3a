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

bool one_of(std::string_view word, std::initializer_list<std::string_view> words) noexcept {
  for (std::string_view w : words) {
    if (word.size() == w.size() && starts_nocase(word, 0, w)) return true;
  }
  return false;
}

// Whether `text` has one of `words` as a whole word (case-free), or a contraction in n't.
bool has_word_in(std::string_view text, std::initializer_list<std::string_view> words) noexcept {
  for (std::size_t k = 0; k < text.size();) {
    if (!is_letter(text[k])) {
      if (text[k] == '\'' && k > 0 && text[k - 1] == 'n' && k + 1 < text.size() && text[k + 1] == 't') return true;
      ++k;
      continue;
    }
    std::size_t e = k;
    while (e < text.size() && is_letter(text[e])) ++e;
    const bool command = k > 0 && text[k - 1] == '\\';
    const bool capitals = e - k > 1 && text[k + 1] >= 'A' && text[k + 1] <= 'Z';  // NO, AB: names of points
    if (!command && !capitals && one_of(text.substr(k, e - k), words)) return true;
    k = e;
  }
  return false;
}

// A sentence that denies or doubts the value it names: "cannot be 5", "I guessed 5, but that is wrong".
bool negated(std::string_view sentence) noexcept {
  return has_word_in(sentence, {"not", "no", "never", "cannot", "wrong", "incorrect", "except", "unless", "unlikely",
                                "impossible", "false", "naive", "mistake", "mistaken", "neither", "nor", "instead",
                                "anything"});
}

// Whether the two words before the first number of `s`, or the word after it, bound, scale or transform it:
// "at least 5", "a multiple of 5", "5 times 3", "negative 5" (but not "the measurement of it increases by 100%").
bool qualified_number(std::string_view s) noexcept {
  std::size_t k = 0;
  while (k < s.size() && !is_digit(s[k])) ++k;
  if (k == s.size()) return false;
  std::size_t e = k;
  while (e < s.size() && (is_digit(s[e]) || s[e] == '.' || s[e] == ',')) ++e;
  std::size_t a = k;
  for (int word = 0; word < 2; ++word) {
    while (a > 0 && !is_letter(s[a - 1]) && s[a - 1] != '\n') --a;
    const std::size_t b = a;
    while (a > 0 && is_letter(s[a - 1])) --a;
    if (one_of(s.substr(a, b - a), {"least", "most", "than", "multiple", "divisible", "factor", "between", "negative",
                                    "minus", "twice", "thrice", "root", "reciprocal", "not", "except", "exceeds",
                                    "exceed", "square", "power", "from", "if", "maybe", "perhaps", "either"})) {
      return true;
    }
  }
  while (e < s.size() && s[e] == ' ') ++e;
  std::size_t f = e;
  while (f < s.size() && is_letter(s[f])) ++f;
  // (thousand, million, billion stay: the normalisation reads 5 thousand as 5000)
  return one_of(s.substr(e, f - e), {"times", "squared", "cubed", "dozen", "factorial", "less", "more", "minus",
                                     "plus", "to", "or"});
}

// A sentence that bounds or transforms the value it names: "at least 5", "5 times 3", "the square root of 25".
bool qualified(std::string_view sentence) noexcept {
  return has_word_in(sentence, {"least", "most", "than", "exceed", "exceeds", "multiple", "divisible", "factor",
                                "between", "negative", "minus", "twice", "thrice", "half", "square", "root", "reciprocal",
                                "times", "squared", "cubed", "less", "more", "greater", "fewer", "if", "either",
                                "maybe", "perhaps", "possibly", "alternatively", "thousand", "hundred", "million",
                                "dozen", "factorial", "inverse", "to", "from", "of", "except"});
}

// Text after an answer that takes it back or offers another: "Wait, actually the answer is 7", "Alternatively 7".
bool hedged_after(std::string_view tail) noexcept {
  tail = tail.substr(0, 300);  // a correction comes right after the answer, not in a closing note
  if (!has_word_in(tail, {"wait", "actually", "alternatively", "instead", "maybe", "perhaps", "mistake", "wrong",
                          "incorrect", "recomputing", "correction", "rechecking"})) {
    return false;
  }
  for (char c : tail) {
    if (is_digit(c)) return true;  // another value is offered
  }
  return false;
}

// The sentence around s[from, to): back to the previous sentence end, on to the next (each at most 300 bytes).
std::string_view sentence_around(std::string_view s, std::size_t from, std::size_t to) noexcept {
  std::size_t a = from;
  while (a > 0 && from - a < 300) {
    const char c = s[a - 1];
    if (c == '\n' || ((c == '.' || c == '!' || c == '?') && a < s.size() && is_space(s[a]))) break;
    --a;
  }
  std::size_t b = to;
  while (b < s.size() && b - to < 300) {
    const char c = s[b];
    if (c == '\n' || ((c == '.' || c == '!' || c == '?') && (b + 1 == s.size() || is_space(s[b + 1])))) break;
    ++b;
  }
  return s.substr(a, b - a);
}

// Whether the word right before s[start] or right after s[end] bounds, scales or negates the value between them:
// "negative $5$", "at least \boxed{5}", "$5$ squared", "\boxed{5} thousand".
bool qualified_by_neighbours(std::string_view s, std::size_t start, std::size_t end) noexcept {
  std::size_t a = start;
  while (a > 0 && (s[a - 1] == ' ' || s[a - 1] == '$')) --a;
  std::size_t b = a;
  while (b > 0 && is_letter(s[b - 1])) --b;
  if (one_of(s.substr(b, a - b), {"negative", "minus", "twice", "thrice", "least", "most", "than", "not", "except",
                                  "exceeds", "below", "above", "over", "under"})) {
    return true;
  }
  std::size_t c = end;
  while (c < s.size() && (s[c] == ' ' || s[c] == '$')) ++c;
  std::size_t d = c;
  while (d < s.size() && is_letter(s[d])) ++d;
  return one_of(s.substr(c, d - c), {"squared", "cubed", "thousand", "thousands", "hundred", "hundreds", "million",
                                     "millions", "billion", "dozen", "dozens", "factorial", "times", "less", "more",
                                     "or", "to", "minus", "plus"});
}

// A question or an instruction, not a statement of a result: "How many ...?", "Find the number of ...".
bool asks(std::string_view sentence) noexcept {
  sentence = trim(sentence);
  if (!sentence.empty() && sentence.back() == '?') return true;
  std::size_t e = 0;
  while (e < sentence.size() && is_letter(sentence[e])) ++e;
  const std::string_view first = sentence.substr(0, e);
  if (one_of(first, {"find", "compute", "calculate", "determine", "evaluate", "solve", "show", "prove", "problem",
                     "question", "given", "suppose", "let", "how", "what", "which", "consider"})) {
    return true;
  }
  return has_word_in(sentence.substr(0, 40), {"asked", "need"});
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

// The last box, or the box that encloses it (\boxed{4 \boxed{5}} is 4 \boxed{5}, not 5).
bool outermost_last_box(std::string_view s, Box& box) noexcept {
  if (!last_box(s, s.size(), box)) return false;
  for (int depth = 0; depth < 4; ++depth) {
    Box outer;
    if (box.start == 0 || !last_box(s, box.start, outer) || outer.end < box.end) break;
    box = outer;
  }
  return true;
}

// Whether the box is an operand of a larger expression ($1\boxed{5}$, $-\boxed{5}$, \boxed{5}^2,
// \boxed{5}\text{ thousand}): then the box alone is not the answer.
bool attached(std::string_view s, const Box& box) noexcept {
  if (box.start > 0) {
    const char c = s[box.start - 1];
    const bool bold = c == '*' && box.start > 1 && s[box.start - 2] == '*';
    if (is_digit(c) || is_letter(c) || c == ')' || c == ']' || c == '!' || c == '|' || (c == '*' && !bold)) return true;
    std::size_t p = box.start;
    while (p > 0 && s[p - 1] == ' ') --p;
    if (p > 0 && (s[p - 1] == '-' || s[p - 1] == '+' || s[p - 1] == '/' || s[p - 1] == '^' || s[p - 1] == '_')) {
      return true;
    }
    if (p > 1 && s[p - 1] == '{' && (s[p - 2] == '^' || s[p - 2] == '_')) return true;
    for (std::string_view op : {"\\times", "\\cdot", "\\div", "\\pm", "\\mp", "\\frac", "\\sqrt"}) {
      if (p >= op.size() && s.substr(p - op.size(), op.size()) == op) return true;
    }
  }
  std::size_t k = box.end;
  while (k < s.size() && s[k] == ' ') ++k;
  if (k >= s.size()) return false;
  const char c = s[k];
  if ((k == box.end && (is_digit(c) || c == '(' || c == '[')) || c == '^' || c == '_' || c == '!' ||
      (c == '*' && !(k + 1 < s.size() && s[k + 1] == '*'))) {
    return true;
  }
  if (c != '\\') return false;
  std::size_t e = k + 1;
  while (e < s.size() && is_letter(s[e])) ++e;
  const std::string_view name = s.substr(k + 1, e - k - 1);
  if (one_of(name, {"times", "cdot", "div", "pm", "mp", "frac", "sqrt", "boxed"})) return true;
  if (one_of(name, {"text", "mathrm", "textbf", "mbox", "textrm", "hbox"}) && e < s.size() && s[e] == '{') {
    const std::size_t close = s.find('}', e);
    return close == std::string_view::npos || !is_unit_text(s.substr(e + 1, close - e - 1));
  }
  return false;
}

// The boxes of the final answer, last first: the last (outermost) box, the boxes right before it that only glue
// separates from it, and any other box of the same sentence ("\boxed{2}, although it could also be \boxed{3}":
// a hedge, so a list). False when there is no box; `attached_box` set when the last box is part of an expression.
bool final_boxes(std::string_view s, std::vector<std::string_view>& contents, Box& last, bool& attached_box) {
  if (!outermost_last_box(s, last)) return false;
  attached_box = attached(s, last);
  contents.assign(1, last.content);
  std::size_t start = last.start;
  bool glued = true;
  while (static_cast<int>(contents.size()) < kMaxBoxes) {
    Box before;
    if (start == 0 || !last_box(s, start, before) || before.end > start) break;
    const std::string_view between = s.substr(before.end, start - before.end);
    glued = glued && only_glue(between);
    const bool same_sentence = between.size() < 160 && between.find('\n') == std::string_view::npos &&
                               between.find(". ") == std::string_view::npos &&
                               !has_word_in(between, {"finally", "therefore", "thus", "hence", "so", "then"});
    if (!glued && !same_sentence) break;
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
bool last_math(std::string_view s, std::vector<std::string_view>& contents, std::size_t& start, std::size_t& end) {
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
  start = run.empty() ? 0 : run.front().start;
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
  if (negated(s) || qualified_number(s)) return false;  // "not 5", "at least 5", "a multiple of 5": no value
  int count = 0;
  for (std::size_t k = 0; k < s.size(); ++k) {
    const char c = s[k];
    if (c == '$' || c == '\\' || c == '=' || c == '+' || c == '/' || c == '^') return false;
    if (!is_digit(c)) continue;
    std::size_t p = k;
    while (p > 0 && s[p - 1] == ' ') --p;
    // x2, -3, −3 (a minus sign or dash, maybe spaced): not a plain number in words
    if (k > 0 && (is_letter(s[k - 1]) || s[k - 1] == '-' || static_cast<unsigned char>(s[k - 1]) >= 0x80)) return false;
    if (p > 0 && (s[p - 1] == '-' || static_cast<unsigned char>(s[p - 1]) >= 0x80)) return false;
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
bool has_prose_word(std::string_view s) noexcept {
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

// A value (a digit or math), not words alone: a later "answer is" overrides a box only when it states one.
bool states_value(std::string_view answer) noexcept {
  for (char c : answer) {
    if (is_digit(c) || c == '\\' || c == '$') return true;
  }
  return false;
}

// The answer named by the last "answer is" / "answer:" marker at `marker` (`skip` bytes long); "" with `vetoed` set
// when the sentence denies, bounds or transforms its value (then nothing else in the region counts either).
std::string marked_answer(std::string_view s, std::size_t marker, std::size_t skip, bool& vetoed) {
  vetoed = true;
  std::string_view rest = trim(s.substr(marker + skip));
  while (!rest.empty() && (rest[0] == ':' || rest[0] == '*')) rest = trim(rest.substr(1));
  std::string_view sentence = rest.substr(0, sentence_end(rest));
  const bool has_value = states_value(sentence);
  if (has_value && negated(sentence)) return {};
  sentence = after_last_is(sentence);
  vetoed = false;
  const auto veto = [&]() {
    vetoed = true;
    return std::string();
  };
  // The first math span, when only filler words come before it; with the spans right after it that only glue
  // separates from it ($12$ and $13$); and nothing after them but unit words ($12$ dollars, not $5$ times $3$).
  for (std::size_t k = 0; k < sentence.size() && k <= 40; ++k) {
    if (sentence[k] != '$' && sentence[k] != '\\') continue;
    std::string_view span;
    std::size_t after = 0;
    if (!math_span_at(sentence, k, span, after) || trim(span).empty()) break;
    std::string_view prefix = trim(sentence.substr(0, k));
    while (!prefix.empty()) {
      const std::string_view w = leading_word(prefix);
      if (w.empty() || !filler_word(w)) break;
      prefix = trim(prefix.substr(w.size()));
    }
    if (!prefix.empty()) return veto();  // "negative $5$", "the square root of $25$"
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
    const std::string_view suffix = strip_punctuation(sentence.substr(after));
    if (!suffix.empty() && (qualified(suffix) || !is_unit_text(suffix))) return veto();  // "$5$ squared"
    return out;
  }
  const std::string_view answer = clean(sentence);
  if (has_value && qualified_number(answer)) return veto();
  std::string_view number;
  if (!answer.empty() && !is_digit(answer[0]) && only_number(answer, number)) return std::string(number);
  return std::string(answer);
}

// The answer of a region (the <answer> block or the whole text) by the priorities in extract.hpp.
std::string region_answer(std::string_view s) {
  std::size_t skip = 0;
  const std::size_t marker = last_answer_marker(s, skip);
  std::vector<std::string_view> boxes;
  Box last;
  bool attached_box = false;
  if (final_boxes(s, boxes, last, attached_box)) {
    // A later "answer is 7" corrects a box: "\boxed{5}. Wait, actually the answer is 7."
    if (marker != std::string_view::npos && marker > last.end) {
      bool vetoed = false;
      std::string corrected = marked_answer(s, marker, skip, vetoed);
      if (vetoed) return {};
      if (states_value(corrected)) return hedged_after(s.substr(marker + skip + corrected.size())) ? "" : corrected;
    }
    if (attached_box || qualified_by_neighbours(s, last.start, last.end)) return {};
    // A box in a sentence that denies it ("cannot be \boxed{5}"), or followed by another value ("Alternatively
    // \boxed{7}" is a box of its own; "Wait, it is 7"): no answer.
    const std::string_view around = sentence_around(s, last.start, last.end);
    const std::size_t box_at = last.start - static_cast<std::size_t>(around.data() - s.data());
    if (negated(around.substr(0, box_at)) || negated(around.substr(box_at + (last.end - last.start)))) return {};
    if (hedged_after(s.substr(last.end))) return {};
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
    bool vetoed = false;
    std::string answer = marked_answer(s, marker, skip, vetoed);
    if (vetoed) return {};
    const std::size_t sentence_stop = marker + skip + sentence_end(s.substr(marker + skip));
    if (!answer.empty() && hedged_after(s.substr(std::min(s.size(), sentence_stop)))) return {};
    if (!answer.empty()) return answer;
  }
  std::vector<std::string_view> spans;
  std::size_t math_end = 0;
  std::size_t math_start = 0;
  const bool have_math = last_math(s, spans, math_start, math_end);
  // A concluding sentence after the last math ("Therefore, the probability is 2/3."): the one value it states.
  std::string_view conclusion;
  if (concluding_sentence(s, math_end, conclusion)) {
    if (states_value(conclusion) && (negated(conclusion) || qualified_number(after_last_is(conclusion)))) return {};
    std::string_view value = clean(after_last_is(conclusion));
    std::string_view number;
    if (!value.empty() && !has_prose_word(value)) return std::string(value);
    if (only_number(conclusion, number)) return std::string(number);
  }
  if (have_math) {
    // Not a number from the problem restated, a question, or a sentence that takes it back.
    const std::string_view sentence = sentence_around(s, math_start, math_end);
    if (asks(sentence) || negated(sentence) || hedged_after(s.substr(math_end)) ||
        qualified_by_neighbours(s, math_start, math_end)) {
      return {};
    }
    std::string out;
    for (std::string_view span : spans) {
      const std::string_view answer = clean(span);
      if (answer.empty()) continue;
      if (!out.empty()) out += ", ";
      out.append(answer);
    }
    if (!out.empty() && spans.size() == 1 && starts_nocase(trim(s.substr(math_end)), 0, "percent")) out += "\\%";
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
  // A last line that is a choice ("B) 12" after the working), unless the lines are the list of options.
  const std::size_t last_nl = whole.rfind('\n');
  std::string_view letter;
  if (last_nl != std::string_view::npos && choice_letter(trim(whole.substr(last_nl + 1)), letter)) {
    const std::size_t prev_nl = whole.rfind('\n', last_nl - 1);
    const std::string_view prev_line =
        trim(whole.substr(prev_nl == std::string_view::npos ? 0 : prev_nl + 1, last_nl - (prev_nl == std::string_view::npos ? 0 : prev_nl + 1)));
    std::string_view other;
    if (last_nl > 0 && choice_letter(prev_line, other)) return {};
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

// Calls visit(i) for the positions i of byte c in s, first first, until visit returns true: memchr while hits are
// sparse, a plain loop once they come densely (a megabyte of ':'), so the cost stays linear with a small constant.
template <class Visit>
void scan_forward(std::string_view s, char c, Visit visit) noexcept {
  std::size_t from = 0;
  int dense = 0;
  while (from < s.size() && dense < 64) {
    const void* hit = memchr(s.data() + from, c, s.size() - from);
    if (hit == nullptr) return;
    const auto i = static_cast<std::size_t>(static_cast<const char*>(hit) - s.data());
    if (visit(i)) return;
    dense = i - from < 16 ? dense + 1 : 0;
    from = i + 1;
  }
  for (std::size_t i = from; i < s.size(); ++i) {
    if (s[i] == c && visit(i)) return;
  }
}

// The text up to where a model ran on into another turn or problem (a chat template token, "\n\nProblem:"): what
// follows answers another question.
std::string_view before_run_on(std::string_view text) noexcept {
  std::size_t cut = text.size();
  scan_forward(text, '|', [&](std::size_t i) {
    if (i == 0 || text[i - 1] != '<' || i + 1 >= text.size()) return false;
    // Two bytes tell which token it may be, so a megabyte of near misses stays cheap.
    const char next = text[i + 1];
    const char third = i + 2 < text.size() ? text[i + 2] : '\0';
    bool hit = false;
    if (next == 'i' && third == 'm') {
      hit = starts_at(text, i - 1, "<|im_start|>") || starts_at(text, i - 1, "<|im_end|>");
    } else if (next == 'e' && (third == 'n' || third == 'o')) {
      hit = starts_at(text, i - 1, "<|endoftext|>") || starts_at(text, i - 1, "<|eot_id|>") ||
            starts_at(text, i - 1, "<|end|>");
    }
    if (hit) cut = i - 1;
    return hit;
  });
  // "\n\nProblem:", "\n\nQuestion:", "\nHuman:", "\nUser:": the byte before the ':' tells which it may be.
  const auto turn = [&](std::size_t at, std::string_view word, std::size_t newlines) {
    const std::size_t need = word.size() + newlines;
    if (at < need || !starts_at(text, at - word.size(), word)) return false;
    for (std::size_t k = 1; k <= newlines; ++k) {
      if (text[at - word.size() - k] != '\n') return false;
    }
    cut = at - need;
    return true;
  };
  scan_forward(text.substr(0, cut), ':', [&](std::size_t at) {
    switch (at == 0 ? '\0' : text[at - 1]) {
      case 'm': return turn(at, "Problem", 2);
      case 'n': return turn(at, "Question", 2) || turn(at, "Human", 1);
      case 'r': return turn(at, "User", 1);
      default: return false;
    }
  });
  return text.substr(0, cut);
}

std::string extract_answer(std::string_view text) {
  text = before_run_on(text);
  // The last two <answer> tags, and the last </think> and <think>, in one backward pass over the '<' bytes.
  constexpr std::size_t npos = std::string_view::npos;
  std::size_t answer_open = npos;
  std::size_t earlier_answer = npos;  // another <answer> after the reasoning: two answers
  std::size_t think_end = npos;
  std::size_t think_open = npos;
  scan_back(text, '<', [&](std::size_t i) {
    const char next = i + 1 < text.size() ? text[i + 1] : '\0';  // one byte tells which tag it may be
    if (next == 'a' && starts_at(text, i, "<answer>")) {
      if (answer_open != npos) {
        earlier_answer = i;
        return true;
      }
      answer_open = i;
      return false;
    }
    if (next == '/' && think_end == npos && starts_at(text, i, "</think>")) {
      think_end = i;
      if (answer_open != npos) return true;  // an <answer> inside the reasoning is a draft
    }
    if (next == 't' && think_open == npos && starts_at(text, i, "<think>")) think_open = i;
    return false;
  });
  const auto block = [&](std::size_t open) {
    const std::size_t from = open + 8;
    const std::size_t close = text.find("</answer>", from);
    return region_answer(tail_of(close == npos ? text.substr(from) : text.substr(from, close - from)));
  };
  if (answer_open != npos) {
    std::string answer = block(answer_open);
    if (earlier_answer == npos || answer.empty()) return answer;
    std::string earlier = block(earlier_answer);
    return earlier.empty() || earlier == answer ? answer : earlier + ", " + answer;  // two answers: a list
  }
  // Without an <answer> block the answer follows the reasoning: nothing inside <think> counts, and an unclosed
  // <think> (a truncated completion) has no answer at all.
  if (think_end != npos) return region_answer(tail_of(text.substr(think_end + 8)));
  if (think_open != npos) return {};
  return region_answer(tail_of(text));
}

}  // namespace r1fast::rewards
