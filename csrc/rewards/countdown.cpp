#include "rewards/countdown.hpp"

#include <algorithm>

namespace r1fast::rewards {

namespace {

constexpr int kMaxDepth = 64;

bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

class Evaluator {
 public:
  explicit Evaluator(std::string_view s) noexcept : s_(s) {}

  bool run(Rational& out) noexcept {
    if (!expr(out)) return false;
    skip();
    return pos_ == s_.size();
  }

 private:
  std::string_view s_;
  std::size_t pos_ = 0;
  int depth_ = 0;

  void skip() noexcept {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }
  char peek() noexcept {
    skip();
    return pos_ < s_.size() ? s_[pos_] : '\0';
  }
  bool power_op() noexcept {
    skip();
    return s_.compare(pos_, 2, "**") == 0;
  }

  bool expr(Rational& out) noexcept {
    if (++depth_ > kMaxDepth) return false;
    bool ok = term(out);
    while (ok) {
      const char c = peek();
      if (c != '+' && c != '-') break;
      ++pos_;
      Rational rhs;
      ok = term(rhs) && (c == '+' ? add(out, rhs, out) : sub(out, rhs, out));
    }
    --depth_;
    return ok;
  }

  bool term(Rational& out) noexcept {
    if (!unary(out)) return false;
    while (true) {
      const char c = peek();
      if ((c != '*' && c != '/') || power_op()) return true;
      ++pos_;
      if (peek() == '/' || peek() == '*') return false;  // '//' (floor division) is not supported
      Rational rhs;
      if (!unary(rhs)) return false;
      if (!(c == '*' ? mul(out, rhs, out) : div(out, rhs, out))) return false;
    }
  }

  bool unary(Rational& out) noexcept {
    if (++depth_ > kMaxDepth) return false;
    bool ok = false;
    const char c = peek();
    if (c == '-' || c == '+') {
      ++pos_;
      ok = unary(out);
      if (ok && c == '-') ok = sub(Rational::from_int(0), out, out);
    } else {
      ok = power(out);
    }
    --depth_;
    return ok;
  }

  // atom ** unary (Python: -2**2 == -4, 2**-1 == 0.5).
  bool power(Rational& out) noexcept {
    if (!atom(out)) return false;
    if (!power_op()) return true;
    pos_ += 2;
    Rational e;
    if (!unary(e) || !e.is_integer() || e.num.size > 1) return false;
    const auto mag = static_cast<std::int64_t>(e.num.low_u64());
    return pow(out, e.num.negative ? -mag : mag, out);
  }

  bool atom(Rational& out) noexcept {
    const char c = peek();
    if (c == '(') {
      ++pos_;
      return expr(out) && peek() == ')' && (++pos_, true);
    }
    if (!is_digit(c) && c != '.') return false;
    const std::size_t start = pos_;
    BigInt digits;
    long frac = 0;
    bool dot = false;
    while (pos_ < s_.size() && (is_digit(s_[pos_]) || (s_[pos_] == '.' && !dot))) {
      if (s_[pos_] == '.') {
        dot = true;
      } else {
        if (!mul_add_small(digits, 10, static_cast<std::uint32_t>(s_[pos_] - '0'))) return false;
        if (dot) ++frac;
      }
      ++pos_;
    }
    if (pos_ - start == 1 && dot) return false;  // a lone '.'
    Rational scale;
    out = Rational{};
    out.num = digits;
    return pow(Rational::from_int(10), -frac, scale) && mul(out, scale, out);
  }
};

}  // namespace

bool evaluate_countdown(std::string_view expression, Rational& value) noexcept {
  Evaluator ev(expression);
  return ev.run(value);
}

double countdown(std::string_view completion, const std::vector<std::int64_t>& numbers, std::int64_t target,
                 double format_score) noexcept {
  const std::size_t close = completion.rfind("</answer>");
  if (close == std::string_view::npos) return 0.0;
  const std::size_t open = completion.substr(0, close).rfind("<answer>");
  if (open == std::string_view::npos) return 0.0;
  const std::string_view eq = completion.substr(open + 8, close - open - 8);
  for (char c : eq) {
    const bool allowed = is_digit(c) || c == '+' || c == '-' || c == '*' || c == '/' || c == '(' || c == ')' ||
                         c == '.' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
    if (!allowed) return format_score;
  }
  // The numbers written in the expression must be exactly the given ones (as a multiset).
  std::vector<std::int64_t> used;
  for (std::size_t i = 0; i < eq.size();) {
    if (!is_digit(eq[i])) {
      ++i;
      continue;
    }
    std::int64_t v = 0;
    for (; i < eq.size() && is_digit(eq[i]); ++i) {
      if (v > (INT64_MAX - 9) / 10) return format_score;
      v = v * 10 + (eq[i] - '0');
    }
    if (used.size() > numbers.size()) return format_score;
    used.push_back(v);
  }
  std::vector<std::int64_t> given = numbers;
  std::sort(used.begin(), used.end());
  std::sort(given.begin(), given.end());
  if (used != given) return format_score;
  Rational value;
  if (!evaluate_countdown(eq, value)) return format_score;
  return value == Rational::from_int(target) ? 1.0 : format_score;
}

}  // namespace r1fast::rewards
