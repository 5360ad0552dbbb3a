#include "rewards/compare.hpp"

#include <array>
#include <string>
#include <vector>

#include "rewards/extract.hpp"
#include "rewards/latex.hpp"
#include "rewards/normalize.hpp"
#include "rewards/value.hpp"

namespace r1fast::rewards {

namespace {

constexpr int kMaxNodeDepth = 4;
constexpr std::size_t kMaxItems = 32;

bool is_letter(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

struct Node {
  enum class Kind { kNumber, kFunction, kText, kOrdered, kUnordered };
  Kind kind = Kind::kText;
  Value value;
  std::array<Value, kSamplePoints> samples;  // kFunction: the expression at the sample points
  std::uint64_t variables = 0;
  bool percent = false;
  std::string text;  // canonical text, compared when the structure does not decide
  char open = 0;
  char close = 0;
  std::vector<Node> items;
};

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

bool opens(char c) noexcept { return c == '(' || c == '[' || c == '{'; }
bool closes(char c) noexcept { return c == ')' || c == ']' || c == '}'; }

// Index of the bracket closing the one at s[i] (any bracket kind closes any: [1, 2) is an interval), or npos.
std::size_t matching(std::string_view s, std::size_t i) noexcept {
  int depth = 0;
  for (std::size_t k = i; k < s.size(); ++k) {
    if (opens(s[k])) ++depth;
    if (closes(s[k]) && --depth == 0) return k;
  }
  return std::string_view::npos;
}

// Splits at `sep` outside all brackets. A command separator (\cup, \in) must not continue with a letter.
std::vector<std::string_view> split_top(std::string_view s, std::string_view sep) {
  std::vector<std::string_view> parts;
  int depth = 0;
  std::size_t start = 0;
  for (std::size_t k = 0; k < s.size(); ++k) {
    const char c = s[k];
    if (opens(c)) ++depth;
    if (closes(c)) --depth;
    if (depth != 0 || c != sep[0] || s.compare(k, sep.size(), sep) != 0) continue;
    const std::size_t after = k + sep.size();
    if (sep[0] == '\\' && after < s.size() && is_letter(s[after])) continue;
    if (sep == "=" && k > 0 && (s[k - 1] == '<' || s[k - 1] == '>' || s[k - 1] == '!' || s[k - 1] == ':')) continue;
    parts.push_back(s.substr(start, k - start));
    start = after;
    k = after - 1;
  }
  parts.push_back(s.substr(start));
  return parts;
}

bool starts_with(std::string_view s, std::string_view p) noexcept { return s.substr(0, p.size()) == p; }
bool ends_with(std::string_view s, std::string_view p) noexcept {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

Node parse_node(std::string_view s, int depth, Budget& budget);

// Whether s has a run of 4+ letters outside a command name: a word ("Monday"), compared as text, never as the
// product M*o*n*d*a*y.
bool has_word(std::string_view s) noexcept {
  int run = 0;
  bool in_command = false;
  for (char c : s) {
    if (is_letter(c)) {
      if (!in_command && ++run >= 4) return true;
    } else {
      run = 0;
      in_command = c == '\\';
    }
  }
  return false;
}

Node list_node(const std::vector<std::string_view>& parts, Node::Kind kind, char open, char close, int depth,
               Budget& budget) {
  Node n;
  n.kind = kind;
  n.open = open;
  n.close = close;
  for (std::string_view part : parts) n.items.push_back(parse_node(part, depth + 1, budget));
  return n;
}

Node parse_node(std::string_view s, int depth, Budget& budget) {
  Node n;
  s = trim(s);
  n.text = canonical_text(s);
  if (depth > kMaxNodeDepth || s.empty() || s.size() > kMaxAnswerBytes) return n;
  // A group around everything: {x} -> x.
  while (s.size() >= 2 && s.front() == '{' && matching(s, 0) == s.size() - 1) {
    s = trim(s.substr(1, s.size() - 2));
    n.text = canonical_text(s);
  }
  if (s.empty()) return n;
  const std::vector<std::string_view> unions = split_top(s, "\\cup");
  if (unions.size() > 1) {
    if (unions.size() > kMaxItems) return n;
    Node u = list_node(unions, Node::Kind::kUnordered, 'u', 'u', depth, budget);
    u.text = n.text;
    return u;
  }
  const std::vector<std::string_view> commas = split_top(s, ",");
  if (commas.size() > 1) {
    if (commas.size() > kMaxItems) return n;
    Node l = list_node(commas, Node::Kind::kUnordered, 'l', 'l', depth, budget);
    l.text = n.text;
    return l;
  }
  if (starts_with(s, "\\{") && ends_with(s, "\\}") && s.size() >= 4) {
    const std::vector<std::string_view> items = split_top(s.substr(2, s.size() - 4), ",");
    if (items.size() > kMaxItems) return n;
    Node set = list_node(items, Node::Kind::kUnordered, 'l', 'l', depth, budget);
    set.text = n.text;
    return set;
  }
  if (starts_with(s, "\\langle") && ends_with(s, "\\rangle") && s.size() > 14) {
    const std::vector<std::string_view> items = split_top(s.substr(7, s.size() - 14), ",");
    if (items.size() > kMaxItems) return n;
    Node t = list_node(items, Node::Kind::kOrdered, '(', ')', depth, budget);
    t.text = n.text;
    return t;
  }
  if ((s.front() == '(' || s.front() == '[') && matching(s, 0) == s.size() - 1) {
    const std::string_view inner = s.substr(1, s.size() - 2);
    const std::vector<std::string_view> items = split_top(inner, ",");
    if (items.size() == 1) return parse_node(inner, depth + 1, budget);  // plain grouping: (C), (5)
    if (items.size() > kMaxItems) return n;
    Node t = list_node(items, Node::Kind::kOrdered, s.front(), s.back(), depth, budget);
    t.text = n.text;
    return t;
  }
  // Equations and memberships compare their right-hand side.
  for (std::string_view rel : {std::string_view("="), std::string_view("\\in")}) {
    const std::vector<std::string_view> sides = split_top(s, rel);
    if (sides.size() > 1 && !trim(sides.back()).empty()) return parse_node(sides.back(), depth + 1, budget);
  }
  // A ratio a:b of two numbers is a/b.
  const std::vector<std::string_view> ratio = split_top(s, ":");
  if (ratio.size() == 2) {
    Value num;
    Value den;
    if (parse_number(trim(ratio[0]), num, budget) && parse_number(trim(ratio[1]), den, budget)) {
      n.kind = Node::Kind::kNumber;
      n.value = div(num, den, budget);
      return n;
    }
  }
  std::string_view body = s;
  if (!body.empty() && body.back() == '%') {
    body = trim(body.substr(0, body.size() - 1));
    n.percent = true;
  }
  if (parse_number(body, n.value, budget)) {
    n.kind = Node::Kind::kNumber;
    return n;
  }
  n.percent = false;
  // A single letter is a multiple-choice answer or a name, compared as text; longer letter expressions as functions.
  if (s.size() > 1 && !has_word(s) && parse_function(s, n.samples, n.variables, budget)) {
    n.kind = Node::Kind::kFunction;
  }
  return n;
}

bool nodes_equal(const Node& g, const Node& a, const AccuracyOptions& options) noexcept;

bool numbers_equal(const Node& g, const Node& a, const AccuracyOptions& options) noexcept {
  if (numerically_equal(g.value, a.value, options.rel_tol)) return true;
  if (g.percent == a.percent) return false;
  // p% also equals p/100.
  Budget budget;
  const Node& pct = g.percent ? g : a;
  const Node& other = g.percent ? a : g;
  const Value scaled = div(pct.value, Value::from_rational(Rational::from_int(100)), budget);
  return numerically_equal(scaled, other.value, options.rel_tol);
}

bool ordered_items_equal(const Node& g, const Node& a, const AccuracyOptions& options) noexcept {
  if (g.items.size() != a.items.size()) return false;
  for (std::size_t k = 0; k < g.items.size(); ++k) {
    if (!nodes_equal(g.items[k], a.items[k], options)) return false;
  }
  return true;
}

// Every item of x equals some item of y.
bool contained(const Node& x, const Node& y, const AccuracyOptions& options) noexcept {
  for (const Node& xi : x.items) {
    bool found = false;
    for (std::size_t k = 0; k < y.items.size() && !found; ++k) found = nodes_equal(xi, y.items[k], options);
    if (!found) return false;
  }
  return true;
}

// Sets, bare lists and unions compare as sets: {1, 2} = {2, 1, 2}.
bool unordered_equal(const Node& g, const Node& a, const AccuracyOptions& options) noexcept {
  return contained(g, a, options) && contained(a, g, options);
}

bool single_letters_equal_ignoring_case(const std::string& x, const std::string& y) noexcept {
  if (x.size() != 1 || y.size() != 1 || !is_letter(x[0]) || !is_letter(y[0])) return false;
  return (x[0] | 0x20) == (y[0] | 0x20);
}

bool nodes_equal(const Node& g, const Node& a, const AccuracyOptions& options) noexcept {
  if (!g.text.empty() && g.text == a.text) return true;
  if (single_letters_equal_ignoring_case(g.text, a.text)) return true;  // multiple choice: (a) is (A)
  // A parenthesised tuple also matches the same items written as a bare list: (1, 2) and 1, 2.
  if (g.kind == Node::Kind::kOrdered && a.kind == Node::Kind::kUnordered && g.open == '(' && a.open == 'l') {
    return ordered_items_equal(g, a, options);
  }
  if (a.kind == Node::Kind::kOrdered && g.kind == Node::Kind::kUnordered && a.open == '(' && g.open == 'l') {
    return ordered_items_equal(g, a, options);
  }
  // A one-element set is its element: \{3\} = 3.
  if (g.kind == Node::Kind::kUnordered && a.kind != Node::Kind::kUnordered && g.items.size() == 1) {
    return nodes_equal(g.items[0], a, options);
  }
  if (a.kind == Node::Kind::kUnordered && g.kind != Node::Kind::kUnordered && a.items.size() == 1) {
    return nodes_equal(g, a.items[0], options);
  }
  if (g.kind != a.kind) return false;
  switch (g.kind) {
    case Node::Kind::kNumber:
      return numbers_equal(g, a, options);
    case Node::Kind::kFunction:
      if (g.variables != a.variables) return false;
      for (std::size_t k = 0; k < g.samples.size(); ++k) {
        if (!numerically_equal(g.samples[k], a.samples[k], options.rel_tol)) return false;
      }
      return true;
    case Node::Kind::kOrdered:
      if (g.open != a.open || g.close != a.close) return false;
      return ordered_items_equal(g, a, options);
    case Node::Kind::kUnordered:
      return unordered_equal(g, a, options);
    case Node::Kind::kText:
      return false;
  }
  return false;
}

}  // namespace

namespace {

// Unbalanced braces mean a truncated or malformed gold answer: there is nothing sound to compare against.
bool braces_balanced(std::string_view s) noexcept {
  long depth = 0;
  for (char c : s) {
    if (c == '{') ++depth;
    if (c == '}' && --depth < 0) return false;
  }
  return depth == 0;
}

bool normalized_equal(const std::string& g, const std::string& p, const AccuracyOptions& options) {
  if (g.empty() || p.empty()) return false;
  Budget budget;
  const Node gn = parse_node(g, 0, budget);
  const Node pn = parse_node(p, 0, budget);
  return nodes_equal(gn, pn, options);
}

}  // namespace

bool answers_equal(std::string_view gold, std::string_view predicted, const AccuracyOptions& options) noexcept {
  try {
    return normalized_equal(normalize_answer(gold), normalize_answer(predicted), options);
  } catch (...) {  // std::bad_alloc: a sample that cannot be scored is wrong, never a crash
    return false;
  }
}

std::string_view gold_answer(std::string_view gold) noexcept {
  const std::string_view found = extract_answer(gold);
  return found.empty() ? clean_answer(gold) : found;
}

Verdict accuracy(std::string_view completion, std::string_view gold, const AccuracyOptions& options) noexcept {
  try {
    const std::string g = normalize_answer(gold_answer(gold));
    if (g.empty() || !braces_balanced(g)) return Verdict::kNoGold;
    const std::string_view p = extract_answer(completion);
    if (p.empty()) return Verdict::kWrong;
    return normalized_equal(g, normalize_answer(p), options) ? Verdict::kCorrect : Verdict::kWrong;
  } catch (...) {
    return Verdict::kWrong;
  }
}

}  // namespace r1fast::rewards
