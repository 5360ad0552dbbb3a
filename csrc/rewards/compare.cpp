#include "rewards/compare.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "rewards/expr.hpp"
#include "rewards/extract.hpp"
#include "rewards/normalize.hpp"
#include "rewards/value.hpp"

namespace r1fast::rewards {

namespace {

constexpr int kMaxNodeDepth = 6;
constexpr int kMaxComparisons = 20000;
constexpr int kMaxCompareDepth = 24;
constexpr std::size_t kMaxItems = 32;
constexpr int kMinSignificantDigits = 6;  // a decimal standing for a non-terminating value must carry this many
constexpr long double kNumericTolerance = 1e-12L;
constexpr long double kNumericFloor = 1e-15L;

bool is_letter(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

enum class Rel : std::uint8_t { kEq, kLt, kLe, kGt, kGe, kNeq, kIn, kApprox };

struct Node {
  enum class Kind : std::uint8_t { kText, kScalar, kTuple, kList, kMatrix, kRelation, kIntervals };
  Kind kind = Kind::kText;
  std::string text;  // canonical text: equal text is an equal answer whatever the structure
  Expr expr;         // kScalar
  bool percent = false;
  char open = 0;  // kTuple: the brackets
  char close = 0;
  std::vector<Node> items;  // kTuple / kList items; kMatrix row-major; kRelation sides; kIntervals lo, hi pairs
  std::vector<Rel> ops;     // kRelation: ops[k] relates items[k] and items[k + 1]
  std::vector<std::uint8_t> closed;  // kIntervals: bit 1 = lower end closed, bit 2 = upper end closed
  std::vector<Node> source;          // kIntervals read from an inequality: that relation
  std::string unit;                  // a trailing unit (\unit{cm}, \degree), compared only when both sides have one
  int rows = 0;
  int cols = 0;
};

struct Context {
  Symbols symbols;
  Budget budget;  // exact arithmetic; once spent, values are compared numerically
  AccuracyOptions options;
  int comparisons = 0;
  int depth = 0;  // nodes_equal nesting
};

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

bool starts_with(std::string_view s, std::string_view p) noexcept { return s.substr(0, p.size()) == p; }
bool ends_with(std::string_view s, std::string_view p) noexcept {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
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

// s without the {..} groups that enclose all of it ({ {x} } -> x), in one pass: peeling a layer at a time
// rescans the string per layer.
std::string_view strip_enclosing_groups(std::string_view s) {
  std::vector<std::size_t> opener_end;  // just past the d-th leading '{'
  std::size_t k = 0;
  while (k < s.size() && (s[k] == '{' || s[k] == ' ')) {
    if (s[k] == '{') opener_end.push_back(k + 1);
    ++k;
  }
  if (opener_end.empty()) return s;
  std::size_t tail = s.size();  // where the run of closing braces and spaces at the end starts
  while (tail > 0 && (s[tail - 1] == '}' || s[tail - 1] == ' ')) --tail;
  std::vector<std::size_t> closer(opener_end.size(), std::string_view::npos);
  long depth = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\') {
      ++i;  // \{ and \} are not groups
      continue;
    }
    if (s[i] == '{') ++depth;
    if (s[i] != '}') continue;
    if (--depth < 0) return s;
    const auto d = static_cast<std::size_t>(depth);
    if (d < closer.size() && closer[d] == std::string_view::npos) closer[d] = i;
  }
  if (depth != 0) return s;
  std::size_t layers = 0;
  while (layers < closer.size() && closer[layers] != std::string_view::npos && closer[layers] >= tail) ++layers;
  if (layers == 0) return s;
  return s.substr(opener_end[layers - 1], closer[layers - 1] - opener_end[layers - 1]);
}

// Whether s[k..] starts the separator `sep` at the top level: a command (\cup, \le) must not run on into a letter,
// a word (and, or) must stand alone.
bool separator_at(std::string_view s, std::size_t k, std::string_view sep) noexcept {
  if (s.compare(k, sep.size(), sep) != 0) return false;
  const std::size_t after = k + sep.size();
  if ((sep[0] == '\\' || is_letter(sep[0])) && after < s.size() && is_letter(s[after])) return false;
  if (is_letter(sep[0]) && k > 0 && (is_letter(s[k - 1]) || s[k - 1] == '\\')) return false;
  return true;
}

// Splits at any of `seps` outside all brackets and \begin..\end environments.
std::vector<std::string_view> split_top(std::string_view s, std::initializer_list<std::string_view> seps) {
  std::vector<std::string_view> parts;
  int depth = 0;
  std::size_t start = 0;
  for (std::size_t k = 0; k < s.size(); ++k) {
    const char c = s[k];
    if (c == '\\' && k + 1 < s.size() && (s[k + 1] == '{' || s[k + 1] == '}')) {
      depth += s[k + 1] == '{' ? 1 : -1;
      ++k;
      continue;
    }
    if (opens(c)) ++depth;
    if (closes(c)) --depth;
    if (depth != 0) continue;
    for (std::string_view sep : seps) {
      if (c != sep[0] || !separator_at(s, k, sep)) continue;
      parts.push_back(s.substr(start, k - start));
      start = k + sep.size();
      k = start - 1;
      break;
    }
  }
  parts.push_back(s.substr(start));
  return parts;
}

// Words are text, never products of one-letter variables: a run of 4+ letters, or a short word of this list.
bool has_word(std::string_view s) noexcept {
  static constexpr std::string_view kShortWords[] = {
      "no", "yes", "odd", "all", "and", "or", "not", "is", "are", "the", "of", "to", "on", "at", "it", "as", "an",
      "am", "pm", "cm", "mm", "km", "kg", "mg", "ml", "lb", "ft", "hr", "min", "sec", "day", "red", "blue", "one",
      "two", "six", "ten", "nor", "way", "top", "end", "off", "set", "sum", "max", "new", "old", "big", "yet"};
  std::size_t run = 0;
  bool in_command = false;
  for (std::size_t i = 0; i <= s.size(); ++i) {
    const char c = i < s.size() ? s[i] : ' ';
    if (c == '_' && i + 1 < s.size() && s[i + 1] == '{') {  // a subscript names, it does not spell: S_{MBCN}
      const std::size_t close = s.find('}', i);
      if (close != std::string_view::npos) {
        i = close;
        run = 0;
        in_command = false;
        continue;
      }
    }
    if (is_letter(c)) {
      ++run;
      continue;
    }
    if (run > 0 && !in_command) {
      if (run >= 4) return true;
      const std::string_view word = s.substr(i - run, run);
      for (std::string_view w : kShortWords) {
        // As written or capitalised (no, No); all capitals are names (NO, AB: points of a figure).
        bool same = word.size() == w.size();
        for (std::size_t k = 0; same && k < w.size(); ++k) same = (k == 0 ? (word[k] | 0x20) : word[k]) == w[k];
        if (same) return true;
      }
    }
    in_command = c == '\\';
    run = 0;
  }
  return false;
}

// A unit as compared: lower case, spaces and a plural s dropped (cm = cm, Apples = apple).
std::string unit_key(std::string_view u) {
  std::string out;
  for (char c : u) {
    if (c != ' ') out.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c));
  }
  if (out.size() > 2 && out.back() == 's') out.pop_back();
  return out;
}

Node parse_node(std::string_view s, int depth, Context& ctx);

Node list_node(const std::vector<std::string_view>& parts, Node::Kind kind, int depth, Context& ctx) {
  Node n;
  n.kind = kind;
  for (std::string_view part : parts) n.items.push_back(parse_node(part, depth + 1, ctx));
  return n;
}

// Two answers from one with a top-level \pm (or \mp): 1 \pm \sqrt2 is the list 1 + \sqrt2, 1 - \sqrt2.
bool expand_plus_minus(std::string_view s, std::string& plus, std::string& minus) {
  int depth = 0;
  std::size_t found = std::string_view::npos;
  std::size_t name = 0;
  for (std::size_t k = 0; k < s.size(); ++k) {
    if (opens(s[k])) ++depth;
    if (closes(s[k])) --depth;
    if (s[k] != '\\') continue;
    std::size_t len = 0;
    if (separator_at(s, k, "\\pm")) len = 3;
    if (separator_at(s, k, "\\mp")) len = 3;
    if (len == 0) continue;
    if (found != std::string_view::npos) return false;  // one \pm only: 2^n combinations are not an answer
    found = k;
    name = len;
    (void)depth;
  }
  if (found == std::string_view::npos) return false;
  const bool mp = s[found + 2] == 'm' && s[found + 1] == 'm';
  const std::string_view before = s.substr(0, found);
  const std::string_view after = s.substr(found + name);
  plus = std::string(before) + (mp ? "-" : "+") + std::string(after);
  minus = std::string(before) + (mp ? "+" : "-") + std::string(after);
  return true;
}

// \begin{pmatrix} a & b \\ c & d \end{pmatrix} (also bmatrix, matrix, array with a column spec).
bool parse_matrix(std::string_view s, int depth, Context& ctx, Node& out) {
  if (!starts_with(s, "\\begin{")) return false;
  const std::size_t name_end = s.find('}');
  if (name_end == std::string_view::npos) return false;
  const std::string_view env = s.substr(7, name_end - 7);
  const std::string end_tag = "\\end{" + std::string(env) + "}";
  if (!ends_with(s, end_tag)) return false;
  std::string_view body = s.substr(name_end + 1, s.size() - name_end - 1 - end_tag.size());
  body = trim(body);
  if (env == "array" && !body.empty() && body.front() == '{') {  // the column spec {cc}
    const std::size_t close = matching(body, 0);
    if (close == std::string_view::npos) return false;
    body = trim(body.substr(close + 1));
  }
  Node m;
  m.kind = Node::Kind::kMatrix;
  std::vector<std::string_view> rows = split_top(body, {"\\\\"});
  while (!rows.empty() && trim(rows.back()).empty()) rows.pop_back();
  if (rows.empty() || rows.size() > kMaxItems) return false;
  for (std::string_view row : rows) {
    const std::vector<std::string_view> cells = split_top(row, {"&"});
    if (m.cols == 0) m.cols = static_cast<int>(cells.size());
    if (static_cast<int>(cells.size()) != m.cols || m.items.size() + cells.size() > kMaxItems * 4) return false;
    for (std::string_view cell : cells) m.items.push_back(parse_node(cell, depth + 1, ctx));
  }
  m.rows = static_cast<int>(rows.size());
  m.text = canonical_text(s);
  out = std::move(m);
  return true;
}

bool relation_at(std::string_view s, std::size_t k, Rel& rel, std::size_t& len) noexcept {
  const char c = s[k];
  if (c == '=') {
    rel = Rel::kEq;
    len = 1;
    return true;
  }
  if (c == '<' || c == '>') {
    rel = c == '<' ? Rel::kLt : Rel::kGt;
    len = 1;
    return true;
  }
  if (c != '\\') return false;
  struct Named {
    std::string_view name;
    Rel rel;
  };
  static constexpr Named kNamed[] = {{"\\le", Rel::kLe},     {"\\ge", Rel::kGe}, {"\\neq", Rel::kNeq},
                                     {"\\in", Rel::kIn},     {"\\approx", Rel::kApprox}};
  for (const Named& n : kNamed) {
    if (separator_at(s, k, n.name)) {
      rel = n.rel;
      len = n.name.size();
      return true;
    }
  }
  return false;
}

// The relation chain of s at the top level (sides and operators); false when s has no relation.
bool split_relations(std::string_view s, std::vector<std::string_view>& sides, std::vector<Rel>& ops) {
  int depth = 0;
  std::size_t start = 0;
  for (std::size_t k = 0; k < s.size(); ++k) {
    const char c = s[k];
    if (opens(c)) ++depth;
    if (closes(c)) --depth;
    if (depth != 0) continue;
    Rel rel;
    std::size_t len = 0;
    if (!relation_at(s, k, rel, len)) continue;
    sides.push_back(trim(s.substr(start, k - start)));
    ops.push_back(rel);
    start = k + len;
    k = start - 1;
  }
  if (ops.empty()) return false;
  sides.push_back(trim(s.substr(start)));
  for (std::string_view side : sides) {
    if (side.empty()) return false;
  }
  return true;
}

// f(x), g(x, y), P(t): a function's name applied to variables, on the left of a definition.
bool is_function_head(const std::string& t) noexcept {
  if (t.size() < 4 || !is_letter(t[0]) || t[1] != '(' || t.back() != ')') return false;
  for (std::size_t k = 2; k + 1 < t.size(); ++k) {
    if (!is_letter(t[k]) && t[k] != ',') return false;
  }
  return true;
}

// Whether s has a relation (=, <, >, \le, \ge, \neq, \in) outside all brackets.
bool has_relation(std::string_view s) {
  return split_top(s, {"=", "<", ">", "\\le", "\\ge", "\\neq", "\\in"}).size() > 1;
}

bool is_scalar_variable(const Node& n) noexcept {
  return n.kind == Node::Kind::kScalar && (n.expr.is_variable() || is_function_head(n.text));
}

// A name made of symbols only: AB, |AB|, \frac{NO}{BO}, V_1:V_2 (products, quotients, ratios and absolute values
// of variables; no number and no sum: x^2 + y^2 = 25 is an equation, not a name for 25).
bool is_symbol_name(const Node& n) noexcept {
  if (n.kind != Node::Kind::kScalar || n.percent || !n.expr.parsed()) return false;
  if (is_function_head(n.text)) return true;
  for (const ExprNode& e : n.expr.nodes) {
    if (e.op != Op::kVariable && e.op != Op::kMul && e.op != Op::kDiv && e.op != Op::kAbs) return false;
  }
  return true;
}

// (p, q) = (3, 2): a tuple of variables named on the left.
bool is_tuple_assignment(const Node& n) noexcept {
  if (n.ops.size() != 1 || n.ops[0] != Rel::kEq || n.items.size() != 2) return false;
  const Node& lhs = n.items[0];
  if (lhs.kind != Node::Kind::kTuple || lhs.open != '(') return false;
  for (const Node& item : lhs.items) {
    if (!is_scalar_variable(item)) return false;
  }
  return true;
}
bool is_constant_scalar(const Node& n) noexcept {
  return n.kind == Node::Kind::kScalar && n.expr.variables == 0 && !n.percent;
}

Node infinity_node(bool negative, Context& ctx) { return parse_node(negative ? "-\\infty" : "\\infty", 1, ctx); }

// An inequality chain on one variable (3 < x, -2 \le x \le 7) as one interval.
bool inequality_interval(const Node& rel, Context& ctx, Node& out) {
  int var = -1;
  for (std::size_t k = 0; k < rel.items.size(); ++k) {
    if (is_scalar_variable(rel.items[k])) {
      if (var >= 0) return false;
      var = static_cast<int>(k);
    } else if (!is_constant_scalar(rel.items[k])) {
      return false;
    }
  }
  if (var < 0) return false;
  if (rel.ops.size() == 1 && rel.ops[0] == Rel::kNeq) {
    const Node& point = rel.items[var == 0 ? 1 : 0];
    Node n;
    n.kind = Node::Kind::kIntervals;
    n.text = rel.text;
    n.items = {infinity_node(true, ctx), point, point, infinity_node(false, ctx)};
    n.closed = {0, 0};
    out = std::move(n);
    return true;
  }
  const Node* lower = nullptr;
  const Node* upper = nullptr;
  bool lower_closed = false;
  bool upper_closed = false;
  for (std::size_t k = 0; k < rel.ops.size(); ++k) {
    const Rel op = rel.ops[k];
    if (op == Rel::kEq || op == Rel::kNeq || op == Rel::kIn) return false;
    const bool var_left = static_cast<int>(k) == var;
    const bool var_right = static_cast<int>(k + 1) == var;
    if (!var_left && !var_right) return false;  // a constraint between constants: not an interval
    const Node& bound = rel.items[var_left ? k + 1 : k];
    const bool less = op == Rel::kLt || op == Rel::kLe;
    const bool closed = op == Rel::kLe || op == Rel::kGe;
    // x < b and b > x bound from above; b < x and x > b from below.
    const bool is_upper = var_left ? less : !less;
    if (is_upper) {
      if (upper != nullptr) return false;
      upper = &bound;
      upper_closed = closed;
    } else {
      if (lower != nullptr) return false;
      lower = &bound;
      lower_closed = closed;
    }
  }
  Node n;
  n.kind = Node::Kind::kIntervals;
  n.text = rel.text;
  n.items.push_back(lower != nullptr ? *lower : infinity_node(true, ctx));
  n.items.push_back(upper != nullptr ? *upper : infinity_node(false, ctx));
  n.closed.push_back(static_cast<std::uint8_t>((lower_closed ? 1 : 0) | (upper_closed ? 2 : 0)));
  out = std::move(n);
  return true;
}

// The intervals a node stands for: an interval set, a two-item tuple with interval brackets, or a union of them.
bool as_intervals(const Node& n, Node& out) {
  if (n.kind == Node::Kind::kIntervals) {
    out = n;
    return true;
  }
  if (n.kind == Node::Kind::kTuple && n.items.size() == 2 && (n.open == '(' || n.open == '[') &&
      (n.close == ')' || n.close == ']')) {
    out = Node{};
    out.kind = Node::Kind::kIntervals;
    out.items = n.items;
    out.closed.push_back(static_cast<std::uint8_t>((n.open == '[' ? 1 : 0) | (n.close == ']' ? 2 : 0)));
    return true;
  }
  if (n.kind == Node::Kind::kList && n.open == 'u') {
    Node all;
    all.kind = Node::Kind::kIntervals;
    for (const Node& item : n.items) {
      Node part;
      if (!as_intervals(item, part)) return false;
      all.items.insert(all.items.end(), part.items.begin(), part.items.end());
      all.closed.insert(all.closed.end(), part.closed.begin(), part.closed.end());
    }
    out = std::move(all);
    return true;
  }
  return false;
}

Node relation_node(std::string_view s, int depth, Context& ctx) {
  std::vector<std::string_view> sides;
  std::vector<Rel> ops;
  Node n;
  n.text = canonical_text(s);
  if (!split_relations(s, sides, ops) || sides.size() > kMaxItems) return n;
  if (ops.size() == 1 && ops[0] == Rel::kIn) {  // x \in [a, b]: the set
    Node set = parse_node(sides[1], depth + 1, ctx);
    Node intervals;
    if (as_intervals(set, intervals)) return intervals;
    return set;
  }
  // x = 1/3 \approx 0.33: the approximation is commentary, the exact statement before it is the answer; an answer
  // that is only approximate (x \approx 11) states its value.
  const auto approx = std::find(ops.begin(), ops.end(), Rel::kApprox);
  if (approx != ops.end()) {
    if (approx != ops.begin()) {
      const std::size_t keep = static_cast<std::size_t>(approx - ops.begin());
      ops.resize(keep);
      sides.resize(keep + 1);
    } else if (std::all_of(ops.begin(), ops.end(), [](Rel r) { return r == Rel::kApprox; })) {
      // x \approx 11 states 11; \pi \approx 3 states \pi (the constant on the left is the exact value).
      Node first = parse_node(sides.front(), depth + 1, ctx);
      if (first.kind == Node::Kind::kScalar && first.expr.variables == 0) return first;
      std::fill(ops.begin(), ops.end(), Rel::kEq);
    } else {
      return n;
    }
  }
  // An equation chain x = 6 + 7 = 13 states its first side equals its last.
  if (sides.size() > 2 && std::all_of(ops.begin(), ops.end(), [](Rel r) { return r == Rel::kEq; })) {
    sides = {sides.front(), sides.back()};
    ops.resize(1);
  }
  n.kind = Node::Kind::kRelation;
  n.ops = ops;
  for (std::string_view side : sides) n.items.push_back(parse_node(side, depth + 1, ctx));
  for (const Node& side : n.items) {
    if (side.kind != Node::Kind::kScalar && !is_tuple_assignment(n)) {
      n.kind = Node::Kind::kText;  // a relation between structures is compared as text only
      return n;
    }
  }
  Node interval;
  if (inequality_interval(n, ctx, interval)) {
    interval.source.push_back(n);
    return interval;
  }
  return n;
}

Node parse_node(std::string_view s, int depth, Context& ctx) {
  Node n;
  s = trim(s);
  n.text = canonical_text(s);
  if (depth > kMaxNodeDepth || s.empty() || s.size() > kMaxAnswerBytes) return n;
  // Groups around everything: {{x}} -> x.
  const std::string_view unwrapped = trim(strip_enclosing_groups(s));
  if (unwrapped.size() != s.size()) {
    s = unwrapped;
    n.text = canonical_text(s);
  }
  if (s.empty()) return n;
  // A trailing unit: \unit{cm} from normalize_answer, or \degree.
  if (s.back() == '}' || ends_with(s, "\\degree")) {
    std::size_t at = std::string_view::npos;
    const bool trig = s.find("\\sin") != std::string_view::npos || s.find("\\cos") != std::string_view::npos ||
                      s.find("\\tan") != std::string_view::npos || s.find("\\cot") != std::string_view::npos ||
                      s.find("\\sec") != std::string_view::npos || s.find("\\csc") != std::string_view::npos;
    if (ends_with(s, "\\degree") && !trig) {
      at = s.size() - 7;
      n.unit = "degree";
    } else {
      const std::size_t open = s.rfind("\\unit{");
      if (open != std::string_view::npos && matching(s, open + 5) == s.size() - 1) {
        at = open;
        n.unit = unit_key(s.substr(open + 6, s.size() - open - 7));
      }
    }
    if (at != std::string_view::npos && !trim(s.substr(0, at)).empty()) {
      const std::string unit = n.unit;
      n = parse_node(s.substr(0, at), depth + 1, ctx);
      n.unit = unit;
      return n;
    }
    n.unit.clear();
  }
  if (parse_matrix(s, depth, ctx, n)) return n;
  // Matrices written inside brackets: \left[\begin{array}..\end{array}\right].
  if (s.size() > 2 && (s.front() == '[' || s.front() == '(') && matching(s, 0) == s.size() - 1 &&
      starts_with(trim(s.substr(1)), "\\begin{")) {
    Node m;
    if (parse_matrix(trim(s.substr(1, s.size() - 2)), depth, ctx, m)) return m;
  }
  std::string plus;
  std::string minus;
  if (expand_plus_minus(s, plus, minus)) {
    Node l;
    l.kind = Node::Kind::kList;
    l.text = n.text;
    l.items.push_back(parse_node(plus, depth + 1, ctx));
    l.items.push_back(parse_node(minus, depth + 1, ctx));
    return l;
  }
  const std::vector<std::string_view> unions = split_top(s, {"\\cup"});
  if (unions.size() > 1) {
    if (unions.size() > kMaxItems) return n;
    Node u = list_node(unions, Node::Kind::kList, depth, ctx);
    u.open = 'u';
    u.text = n.text;
    return u;
  }
  // p = 5, q = 2; p = 7, q = 2: semicolons separate the solutions, commas the parts of one.
  const std::vector<std::string_view> groups = split_top(s, {";"});
  if (groups.size() > 1 && groups.size() <= kMaxItems) {
    bool systems = false;
    for (std::string_view gpart : groups) systems = systems || split_top(gpart, {","}).size() > 1;
    if (systems) {
      Node l = list_node(groups, Node::Kind::kList, depth, ctx);
      l.text = n.text;
      return l;
    }
  }
  std::vector<std::string_view> items = split_top(s, {",", ";", "and", "or"});
  if (items.size() > 1) {
    // 2, 3, and 5: the empty item between a comma and "and" is no item.
    items.erase(std::remove_if(items.begin(), items.end(), [](std::string_view it) { return trim(it).empty(); }),
                items.end());
  }
  if (items.size() > 1) {
    if (items.size() > kMaxItems) return n;
    Node l = list_node(items, Node::Kind::kList, depth, ctx);
    l.text = n.text;
    // x < -1 or x > 3: a union of intervals.
    bool all_intervals = true;
    bool all_assignments = true;
    for (const Node& item : l.items) {
      all_intervals = all_intervals && item.kind == Node::Kind::kIntervals;
      all_assignments = all_assignments && item.kind == Node::Kind::kRelation && item.ops.size() == 1 &&
                        item.ops[0] == Rel::kEq && is_symbol_name(item.items[0]);
    }
    if (all_intervals) l.open = 'u';
    if (all_assignments && depth > 0) l.open = 's';  // one solution of a system, inside a list of solutions
    return l;
  }
  if (starts_with(s, "\\{") && ends_with(s, "\\}") && s.size() >= 4) {
    const std::vector<std::string_view> members = split_top(s.substr(2, s.size() - 4), {",", ";"});
    if (members.size() > kMaxItems) return n;
    Node set = list_node(members, Node::Kind::kList, depth, ctx);
    set.open = '{';  // a set: never equal to a tuple of the same items
    set.text = n.text;
    return set;
  }
  if (starts_with(s, "\\langle") && ends_with(s, "\\rangle") && s.size() > 14) {
    const std::vector<std::string_view> members = split_top(s.substr(7, s.size() - 14), {","});
    if (members.size() > kMaxItems) return n;
    Node t = list_node(members, Node::Kind::kTuple, depth, ctx);
    t.open = '(';
    t.close = ')';
    t.text = n.text;
    return t;
  }
  if ((s.front() == '(' || s.front() == '[') && matching(s, 0) == s.size() - 1) {
    const std::string_view inner = s.substr(1, s.size() - 2);
    std::vector<std::string_view> members = split_top(inner, {","});
    if (members.size() == 1) members = split_top(inner, {";"});  // (0;-2;6)
    if (members.size() > 1) {
      if (members.size() > kMaxItems) return n;
      Node t = list_node(members, Node::Kind::kTuple, depth, ctx);
      t.open = s.front();
      t.close = s.back();
      t.text = n.text;
      return t;
    }
    if (!has_relation(inner)) {
      return parse_node(inner, depth + 1, ctx);  // plain grouping: (C), (5)
    }
  }
  {
    Node rel = relation_node(s, depth, ctx);
    if (rel.kind != Node::Kind::kText || has_relation(s)) {
      return rel;
    }
  }
  // A ratio a:b of two numbers is a/b.
  const std::vector<std::string_view> ratio = split_top(s, {":"});
  if (ratio.size() == 2) {
    Expr num;
    Expr den;
    Symbols none;
    if (parse_expr(trim(ratio[0]), none, num, ctx.budget) && parse_expr(trim(ratio[1]), none, den, ctx.budget)) {
      const std::string frac = "\\frac{" + std::string(trim(ratio[0])) + "}{" + std::string(trim(ratio[1])) + "}";
      if (parse_expr(frac, ctx.symbols, n.expr, ctx.budget)) n.kind = Node::Kind::kScalar;
      return n;
    }
  }
  if (has_word(s)) return n;
  std::string_view body = s;
  if (body.back() == '%') {
    body = trim(body.substr(0, body.size() - 1));
    n.percent = true;
  }
  if (!body.empty() && parse_expr(body, ctx.symbols, n.expr, ctx.budget)) {
    n.kind = Node::Kind::kScalar;
    return n;
  }
  n.percent = false;
  return n;
}

// ------------------------------------------------------------------------------------------- scalars

bool is_exact(const Value& v) noexcept { return v.kind == Exactness::kExact; }

long double magnitude(const Complex& z) noexcept { return std::abs(z); }

bool numerically_close(const Complex& a, const Complex& b, long double rel) noexcept {
  const long double diff = std::abs(a - b);
  return diff <= rel * std::max(magnitude(a), magnitude(b)) || diff <= kNumericFloor;
}

// A decimal literal d (scaled by 10^shift, e.g. -2 for a percent) against a value x it does not equal exactly:
// x correctly rounded at d's written precision, with enough significant digits; or within rel_tol if set.
bool decimal_matches(const ExprNode& d, bool negative, int shift, long double x, const AccuracyOptions& options) {
  long double dv = d.approx * std::pow(10.0L, static_cast<long double>(shift));
  if (negative) dv = -dv;
  const long double diff = std::abs(x - dv);
  if (options.rel_tol > 0 && diff <= static_cast<long double>(options.rel_tol) * std::abs(x) * (1.0L + 1e-12L)) {
    return true;
  }
  if (d.significant_digits < kMinSignificantDigits) return false;
  const long double half_ulp = 0.5L * std::pow(10.0L, static_cast<long double>(d.ulp_exponent + shift));
  return diff <= half_ulp * (1.0L + 1e-9L);
}

// The decimal-literal side of a comparison, if exactly one side is a bare decimal literal.
struct DecimalSide {
  const ExprNode* literal = nullptr;
  bool negative = false;
  bool gold = false;
};

DecimalSide decimal_side(const Expr& g, const Expr& p) noexcept {
  DecimalSide side;
  const ExprNode* gd = g.bare_decimal();
  const ExprNode* pd = p.bare_decimal();
  if ((gd != nullptr) == (pd != nullptr)) return side;
  side.literal = gd != nullptr ? gd : pd;
  side.gold = gd != nullptr;
  const Expr& e = side.gold ? g : p;
  side.negative = e.top().op == Op::kNeg;
  return side;
}

// Gold and predicted scalar expressions, each possibly scaled by 1/100 (a percent read as a fraction).
bool expressions_equal(const Expr& g, int g_shift, const Expr& p, int p_shift, Context& ctx) {
  const std::uint64_t vars = g.variables | p.variables;
  const int points = vars != 0 ? kSamplePoints : 1;
  const DecimalSide dec = vars == 0 ? decimal_side(g, p) : DecimalSide{};
  const bool any_decimal = g.bare_decimal() != nullptr || p.bare_decimal() != nullptr;
  const Value hundred = Value::from_rational(Rational::from_int(100));
  bool defined = false;
  for (int k = 0; k < points; ++k) {
    Value g_scaled;
    Value p_scaled;
    const Value* gvp = &evaluate_exact(g, k, ctx.budget);
    const Value* pvp = &evaluate_exact(p, k, ctx.budget);
    if (g_shift != 0) gvp = &(g_scaled = div(*gvp, hundred, ctx.budget));
    if (p_shift != 0) pvp = &(p_scaled = div(*pvp, hundred, ctx.budget));
    const Value& gv = *gvp;
    const Value& pv = *pvp;
    if (is_exact(gv) && is_exact(pv)) {
      if (exactly_equal(gv, pv)) {
        defined = true;
        continue;
      }
      if (dec.literal == nullptr || gv.infinity != 0 || pv.infinity != 0) return false;
      // Fall through to the long double comparison of the decimal rule.
    }
    Complex a;
    Complex b;
    const bool da = evaluate_numeric(g, k, a);
    const bool db = evaluate_numeric(p, k, b);
    if (!da && !db) {
      // Both undefined here (an infinity, a pole): an exact infinity on both sides was handled above.
      if (is_exact(gv) != is_exact(pv) || gv.infinity != pv.infinity) return false;
      continue;
    }
    if (da != db) return false;
    if (g_shift != 0) a /= 100.0L;
    if (p_shift != 0) b /= 100.0L;
    if (dec.literal != nullptr) {
      const Complex& other = dec.gold ? b : a;
      if (std::abs(other.imag()) > kNumericFloor) return false;
      const int shift = dec.gold ? (g_shift != 0 ? -2 : 0) : (p_shift != 0 ? -2 : 0);
      if (!decimal_matches(*dec.literal, dec.negative, shift, other.real(), ctx.options)) return false;
    } else {
      const long double rel = any_decimal && ctx.options.rel_tol > 0
                                  ? std::max(kNumericTolerance, static_cast<long double>(ctx.options.rel_tol))
                                  : kNumericTolerance;
      if (!numerically_close(a, b, rel)) return false;
    }
    defined = true;
  }
  return defined;
}

bool scalars_equal(const Node& g, const Node& p, Context& ctx) {
  if (g.percent == p.percent) return expressions_equal(g.expr, 0, p.expr, 0, ctx);
  // p% equals p/100; and p itself, as percentages are written (12.5% for 12.5), when |p| >= 1: 0.5% is never 0.5.
  if (expressions_equal(g.expr, g.percent ? -2 : 0, p.expr, p.percent ? -2 : 0, ctx)) return true;
  Complex value;
  const Expr& pct = g.percent ? g.expr : p.expr;
  return pct.variables == 0 && evaluate_numeric(pct, 0, value) && std::abs(value) >= 1.0L &&
         expressions_equal(g.expr, 0, p.expr, 0, ctx);
}

// ----------------------------------------------------------------------------------------- structures

bool nodes_equal(const Node& g, const Node& p, Context& ctx);

bool ordered_items_equal(const Node& g, const Node& p, Context& ctx) {
  if (g.items.size() != p.items.size()) return false;
  for (std::size_t k = 0; k < g.items.size(); ++k) {
    if (!nodes_equal(g.items[k], p.items[k], ctx)) return false;
  }
  return true;
}

// Every item of x equals some item of y (x_gold_side: x holds gold items).
bool contained(const std::vector<const Node*>& x, const std::vector<const Node*>& y, bool x_is_gold, Context& ctx) {
  for (const Node* xi : x) {
    bool found = false;
    for (std::size_t k = 0; k < y.size() && !found; ++k) {
      found = x_is_gold ? nodes_equal(*xi, *y[k], ctx) : nodes_equal(*y[k], *xi, ctx);
    }
    if (!found) return false;
  }
  return true;
}

// The members of a list, nested lists flattened (\{1 \pm \sqrt5, -2\} has three); a lone answer is its own member.
void collect_members(const Node& n, std::vector<const Node*>& out, int depth) {
  // A system (one solution: x = 1, y = 2) stays one member inside a list of solutions; on its own, its equations
  // are the members.
  if (n.kind == Node::Kind::kList && n.open != 'u' && (n.open != 's' || depth == 0) && depth < 4) {
    for (const Node& item : n.items) collect_members(item, out, depth + 1);
  } else {
    out.push_back(&n);
  }
}

std::vector<const Node*> members(const Node& n) {
  std::vector<const Node*> out;
  collect_members(n, out, 0);
  return out;
}

// Sets and solution lists compare order-free, repeats free: {1, 2} = {2, 1, 2}; a lone answer is a list of one.
bool lists_equal(const Node& g, const Node& p, Context& ctx) {
  const std::vector<const Node*> gm = members(g);
  const std::vector<const Node*> pm = members(p);
  return contained(gm, pm, true, ctx) && contained(pm, gm, false, ctx);
}

bool intervals_equal(const Node& g, const Node& p, Context& ctx) {
  if (g.closed.size() != p.closed.size()) return false;
  std::vector<bool> used(p.closed.size(), false);
  for (std::size_t i = 0; i < g.closed.size(); ++i) {
    bool found = false;
    for (std::size_t j = 0; j < p.closed.size() && !found; ++j) {
      if (used[j] || g.closed[i] != p.closed[j]) continue;
      if (nodes_equal(g.items[2 * i], p.items[2 * j], ctx) && nodes_equal(g.items[2 * i + 1], p.items[2 * j + 1], ctx)) {
        used[j] = true;
        found = true;
      }
    }
    if (!found) return false;
  }
  return true;
}

// L1 op1 R1 against L2 op2 R2: the differences L - R proportional with a constant c != 0 (c > 0 for the same
// inequality, c < 0 for the flipped one), at every sample point.
bool relations_equal(const Node& g, const Node& p, Context& ctx) {
  const auto scalar = [](const Node& side) { return side.kind == Node::Kind::kScalar; };
  if (g.items.size() != 2 || p.items.size() != 2 || !std::all_of(g.items.begin(), g.items.end(), scalar) ||
      !std::all_of(p.items.begin(), p.items.end(), scalar)) {
    // Chains: equal when every side and operator agrees in order.
    if (g.ops != p.ops) return false;
    return ordered_items_equal(g, p, ctx);
  }
  const Rel go = g.ops[0];
  const Rel po = p.ops[0];
  int sign = 0;  // the required sign of c: 0 any (equations), +1, -1
  if (go == Rel::kEq || go == Rel::kNeq) {
    if (po != go) return false;
  } else {
    const bool g_less = go == Rel::kLt || go == Rel::kLe;
    const bool p_less = po == Rel::kLt || po == Rel::kLe;
    const bool g_strict = go == Rel::kLt || go == Rel::kGt;
    const bool p_strict = po == Rel::kLt || po == Rel::kGt;
    if (po == Rel::kEq || po == Rel::kNeq || po == Rel::kIn || g_strict != p_strict) return false;
    sign = g_less == p_less ? 1 : -1;
  }
  const Expr& gl = g.items[0].expr;
  const Expr& gr = g.items[1].expr;
  const Expr& pl = p.items[0].expr;
  const Expr& pr = p.items[1].expr;
  const std::uint64_t vars = gl.variables | gr.variables | pl.variables | pr.variables;
  if (vars == 0) {
    // Statements between numbers (2 + 3 = 5): compare what they state the value is, the right-hand side.
    return nodes_equal(g.items[1], p.items[1], ctx) && (sign >= 0);
  }
  bool have_ratio = false;
  Complex ratio;
  for (int k = 0; k < kSamplePoints; ++k) {
    Complex a;
    Complex b;
    Complex c;
    Complex d;
    const bool dg = evaluate_numeric(gl, k, a) && evaluate_numeric(gr, k, b);
    const bool dp = evaluate_numeric(pl, k, c) && evaluate_numeric(pr, k, d);
    if (dg != dp) return false;
    if (!dg) continue;
    const Complex fg = a - b;
    const Complex fp = c - d;
    const bool g_zero = std::abs(fg) <= kNumericTolerance * std::max(std::abs(a), std::abs(b)) + kNumericFloor;
    const bool p_zero = std::abs(fp) <= kNumericTolerance * std::max(std::abs(c), std::abs(d)) + kNumericFloor;
    if (g_zero != p_zero) return false;
    if (g_zero) continue;
    const Complex r = fp / fg;
    if (!have_ratio) {
      ratio = r;
      have_ratio = true;
      if (sign != 0 && (std::abs(r.imag()) > kNumericFloor || r.real() * sign <= 0)) return false;
    } else if (!numerically_close(r, ratio, 1e-9L)) {
      return false;
    }
  }
  return have_ratio;
}

bool is_assignment(const Node& n) noexcept {
  return n.kind == Node::Kind::kRelation && n.ops.size() == 1 && n.ops[0] == Rel::kEq &&
         (is_symbol_name(n.items.front()) || is_tuple_assignment(n));
}

bool is_equation(const Node& n) noexcept {
  return n.kind == Node::Kind::kRelation &&
         std::all_of(n.ops.begin(), n.ops.end(), [](Rel r) { return r == Rel::kEq; });
}

bool single_letters_equal_ignoring_case(const std::string& x, const std::string& y) noexcept {
  if (x.size() != 1 || y.size() != 1 || !is_letter(x[0]) || !is_letter(y[0])) return false;
  return (x[0] | 0x20) == (y[0] | 0x20);
}

bool vector_equals_tuple(const Node& m, const Node& t, bool m_is_gold, Context& ctx) {
  if (m.rows != 1 && m.cols != 1) return false;
  if (m.items.size() != t.items.size() || t.open != '(') return false;
  for (std::size_t k = 0; k < m.items.size(); ++k) {
    if (!(m_is_gold ? nodes_equal(m.items[k], t.items[k], ctx) : nodes_equal(t.items[k], m.items[k], ctx))) {
      return false;
    }
  }
  return true;
}

bool same_text_ignoring_case(const std::string& x, const std::string& y) noexcept {
  if (x.size() != y.size() || x.empty()) return false;
  for (std::size_t k = 0; k < x.size(); ++k) {
    if ((x[k] | 0x20) != (y[k] | 0x20) || (is_letter(x[k]) != is_letter(y[k]))) return false;
  }
  return true;
}

// 1,22 against 1.22: a decimal comma. Only a two-item list of digit runs written without a space (never 1, 22)
// against a decimal literal with the same digits; 1,234 is a thousands group and was joined before this.
bool decimal_comma_equal(const Node& decimal, const Node& list, Context& ctx) {
  if (decimal.kind != Node::Kind::kScalar || list.kind != Node::Kind::kList || list.items.size() != 2 ||
      decimal.expr.bare_decimal() == nullptr) {
    return false;
  }
  const std::string& t = list.text;
  const std::size_t comma = t.find(',');
  if (comma == std::string::npos || comma == 0 || comma + 1 >= t.size()) return false;
  for (std::size_t k = 0; k < t.size(); ++k) {
    if (k != comma && (t[k] < '0' || t[k] > '9')) return false;
  }
  std::string dotted = t;
  dotted[comma] = '.';
  Node as_decimal = parse_node(dotted, 1, ctx);
  return as_decimal.kind == Node::Kind::kScalar && scalars_equal(decimal, as_decimal, ctx);
}

bool nodes_equal(const Node& g, const Node& p, Context& ctx) {
  // A bound on the pairs compared (lists of lists of tuples multiply); past it the answer is "cannot tell".
  if (++ctx.comparisons > kMaxComparisons) return false;
  struct DepthGuard {
    int& depth;
    explicit DepthGuard(int& d) noexcept : depth(++d) {}
    ~DepthGuard() { --depth; }
  } guard(ctx.depth);
  if (ctx.depth > kMaxCompareDepth) return false;
  if (!g.unit.empty() && !p.unit.empty() && g.unit != p.unit) return false;  // 8 inches is not 8 feet
  if (!g.text.empty() && g.text == p.text) return true;
  // Words ignore case: Yes = yes, \text{East} = east.
  if (g.kind == Node::Kind::kText && p.kind == Node::Kind::kText && has_word(g.text) &&
      same_text_ignoring_case(g.text, p.text)) {
    return true;
  }
  if (single_letters_equal_ignoring_case(g.text, p.text)) return true;  // multiple choice: (a) is (A)
  using K = Node::Kind;
  // A predicted equation states a value through its last side when its left names it (x = 5, AB = 5) or is a true
  // statement about numbers (2 + 3 = 5); never an equation to solve (2x + 3 = 7 is not 7) nor a false one (5 = 6).
  if (is_equation(p) && g.kind != K::kRelation && g.kind != K::kList) {
    const Node& lhs = p.items.front();
    const bool names = is_symbol_name(lhs) || is_tuple_assignment(p);
    const bool true_statement = lhs.kind == K::kScalar && lhs.expr.variables == 0 && p.items.size() == 2 &&
                                nodes_equal(lhs, p.items.back(), ctx);
    return (names || true_statement) && nodes_equal(g, p.items.back(), ctx);
  }
  // A gold assignment x = 3 also accepts the bare value; never the right side of any other equation.
  if (is_assignment(g) && p.kind != K::kRelation && p.kind != K::kList) return nodes_equal(g.items.back(), p, ctx);
  if (decimal_comma_equal(g, p, ctx) || decimal_comma_equal(p, g, ctx)) return true;
  if (g.kind == K::kList || p.kind == K::kList) {
    // A tuple also matches the same items written as a bare list, in order: (1, 2) and 1, 2.
    const auto bare = [](const Node& l) { return l.open == 0 || l.open == 's'; };
    if (g.kind == K::kTuple && g.open == '(' && p.kind == K::kList && bare(p)) return ordered_items_equal(g, p, ctx);
    if (p.kind == K::kTuple && p.open == '(' && g.kind == K::kList && bare(g)) return ordered_items_equal(g, p, ctx);
    if (g.open == 'u' || p.open == 'u') {  // a union of intervals: only as intervals
      Node gi;
      Node pi;
      return as_intervals(g, gi) && as_intervals(p, pi) && intervals_equal(gi, pi, ctx);
    }
    return lists_equal(g, p, ctx);
  }
  if (g.kind == K::kIntervals || p.kind == K::kIntervals) {
    // An inequality against one that is not on a bare variable (x < 1 and -x > -1): as relations.
    if (g.kind == K::kIntervals && p.kind == K::kRelation && !g.source.empty()) return relations_equal(g.source[0], p, ctx);
    if (p.kind == K::kIntervals && g.kind == K::kRelation && !p.source.empty()) return relations_equal(g, p.source[0], ctx);
    Node gi;
    Node pi;
    return as_intervals(g, gi) && as_intervals(p, pi) && intervals_equal(gi, pi, ctx);
  }
  if (g.kind == K::kMatrix && p.kind == K::kTuple) return vector_equals_tuple(g, p, true, ctx);
  if (p.kind == K::kMatrix && g.kind == K::kTuple) return vector_equals_tuple(p, g, false, ctx);
  if (g.kind != p.kind) return false;
  switch (g.kind) {
    case K::kScalar: return scalars_equal(g, p, ctx);
    case K::kTuple:
      return g.open == p.open && g.close == p.close && ordered_items_equal(g, p, ctx);
    case K::kMatrix: return g.rows == p.rows && g.cols == p.cols && ordered_items_equal(g, p, ctx);
    case K::kRelation: return relations_equal(g, p, ctx);
    case K::kText:
    case K::kList:
    case K::kIntervals: return false;
  }
  return false;
}

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
  Context ctx;
  ctx.options = options;
  const Node gn = parse_node(g, 0, ctx);
  const Node pn = parse_node(p, 0, ctx);
  return nodes_equal(gn, pn, ctx);
}

}  // namespace

bool answers_equal(std::string_view gold, std::string_view predicted, const AccuracyOptions& options) noexcept {
  try {
    return normalized_equal(normalize_answer(gold), normalize_answer(predicted), options);
  } catch (...) {  // std::bad_alloc: a sample that cannot be scored is wrong, never a crash
    return false;
  }
}

Verdict accuracy(std::string_view completion, std::string_view gold, const AccuracyOptions& options) noexcept {
  try {
    const std::string g = normalize_answer(extract_answer(gold));
    if (g.empty() || !braces_balanced(g)) return Verdict::kNoGold;
    const std::string p = extract_answer(completion);
    if (p.empty()) return Verdict::kWrong;
    return normalized_equal(g, normalize_answer(p), options) ? Verdict::kCorrect : Verdict::kWrong;
  } catch (...) {
    return Verdict::kWrong;
  }
}

}  // namespace r1fast::rewards
