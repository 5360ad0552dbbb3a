#include "rewards/latex.hpp"

#include <cmath>

namespace r1fast::rewards {

namespace {

constexpr int kMaxDepth = 64;
constexpr int kMaxSteps = 4096;
constexpr int kMaxDecimalExponent = 300;

bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
bool is_letter(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

Value from_int(std::int64_t v) noexcept { return Value::from_rational(Rational::from_int(v)); }

class Parser {
 public:
  Parser(std::string_view s, Budget& budget, int point = -1) noexcept : s_(s), budget_(budget), point_(point) {}

  std::uint64_t variables() const noexcept { return variables_; }

  bool parse(Value& out) noexcept {
    if (!expr(out)) return false;
    skip();
    return pos_ == s_.size();
  }

 private:
  std::string_view s_;
  Budget& budget_;
  std::size_t pos_ = 0;
  int depth_ = 0;
  int steps_ = 0;
  int point_;                  // -1: letters are not numbers; else the sample point letters are evaluated at
  std::uint64_t variables_ = 0;  // bit per letter used (a-z, A-Z)

  struct DepthGuard {
    Parser& p;
    explicit DepthGuard(Parser& parser) noexcept : p(parser) { ++p.depth_; }
    ~DepthGuard() { --p.depth_; }
  };

  void skip() noexcept {
    while (pos_ < s_.size() && s_[pos_] == ' ') ++pos_;
  }
  char peek() noexcept {
    skip();
    return pos_ < s_.size() ? s_[pos_] : '\0';
  }
  bool eat(char c) noexcept {
    if (peek() != c) return false;
    ++pos_;
    return true;
  }
  // The command name at pos_ (without the backslash), or empty.
  std::string_view command() noexcept {
    skip();
    if (pos_ >= s_.size() || s_[pos_] != '\\') return {};
    std::size_t j = pos_ + 1;
    while (j < s_.size() && is_letter(s_[j])) ++j;
    return s_.substr(pos_ + 1, j - pos_ - 1);
  }
  bool eat_command(std::string_view name) noexcept {
    if (command() != name) return false;
    pos_ += 1 + name.size();
    return true;
  }
  bool tick() noexcept { return ++steps_ <= kMaxSteps && depth_ <= kMaxDepth && budget_.remaining >= 0; }

  bool expr(Value& out) noexcept {
    DepthGuard guard(*this);
    if (!tick()) return false;
    if (!term(out)) return false;
    while (true) {
      const char c = peek();
      if (c != '+' && c != '-') return true;
      ++pos_;
      Value rhs;
      if (!term(rhs)) return false;
      out = c == '+' ? add(out, rhs, budget_) : sub(out, rhs, budget_);
    }
  }

  // Whether the next token can start an implicitly multiplied factor (2\pi, 3(4), \sqrt2\sqrt3).
  bool starts_implicit_factor() noexcept {
    const char c = peek();
    if (c == '(' || c == '{') return true;
    if (point_ >= 0 && is_letter(c)) return true;
    if (c != '\\') return false;
    const std::string_view name = command();
    return name == "frac" || name == "sqrt" || name == "pi" || name == "binom" || name == "dbinom" || name == "sin" ||
           name == "cos" || name == "tan" || name == "ln" || name == "log" || name == "exp";
  }

  bool term(Value& out) noexcept {
    if (!unary(out)) return false;
    while (true) {
      if (!tick()) return false;
      Value rhs;
      const char c = peek();
      if (c == '*' || eat_command("cdot") || eat_command("times")) {
        if (c == '*') ++pos_;
        if (!unary(rhs)) return false;
        out = mul(out, rhs, budget_);
      } else if (c == '/' || eat_command("div")) {
        if (c == '/') ++pos_;
        if (!unary(rhs)) return false;
        out = div(out, rhs, budget_);
      } else if (starts_implicit_factor()) {
        if (!power(rhs)) return false;
        out = mul(out, rhs, budget_);
      } else {
        return true;
      }
    }
  }

  bool unary(Value& out) noexcept {
    DepthGuard guard(*this);
    if (!tick()) return false;
    if (eat('-')) {
      if (!unary(out)) return false;
      out = negate(out);
      return true;
    }
    if (eat('+')) return unary(out);
    return power(out);
  }

  bool power(Value& out) noexcept {
    DepthGuard guard(*this);
    if (!tick()) return false;
    if (!postfix(out)) return false;
    if (!eat('^')) return true;
    Value exponent;
    if (!exponent_atom(exponent)) return false;
    out = pow(out, exponent, budget_);
    return true;
  }

  // A superscript: a braced group, a digit run (2^10 read as 2^{10}), a signed digit run, or one primary; it may
  // carry its own superscript (right-associative towers).
  bool exponent_atom(Value& out) noexcept {
    DepthGuard guard(*this);
    if (!tick()) return false;
    const char c = peek();
    if (c == '-' || c == '+') {
      ++pos_;
      if (!exponent_atom(out)) return false;
      if (c == '-') out = negate(out);
      return true;
    }
    if (c == '{') {
      ++pos_;
      if (!expr(out) || !eat('}')) return false;
    } else if (!primary(out)) {
      return false;
    }
    if (eat('^')) {
      Value e;
      if (!exponent_atom(e)) return false;
      out = pow(out, e, budget_);
    }
    return true;
  }

  bool postfix(Value& out) noexcept {
    if (!primary(out)) return false;
    while (true) {
      if (eat('!')) {
        if (!factorial(out)) return false;
      } else if (eat('%')) {
        out = div(out, from_int(100), budget_);
      } else {
        return true;
      }
    }
  }

  bool factorial(Value& v) noexcept {
    Rational r;
    if (!v.as_rational(r) || !r.is_integer() || r.num.negative || r.num.size > 1 || r.num.low_u64() > 1000) {
      v = Value::approximate(std::nan(""));  // overflowed or not an integer: not comparable
      v.kind = Exactness::kOverflow;
      return true;
    }
    Rational f = Rational::from_int(1);
    for (std::uint32_t k = 2; k <= r.num.low_u64(); ++k) {
      if (!budget_.charge(f.num.size + 1) ||
          !mul(f, Rational::from_int(static_cast<std::int64_t>(k)), f)) {
        v.kind = Exactness::kOverflow;
        v.terms.clear();
        return true;
      }
    }
    const bool dec = v.has_decimal;
    v = Value::from_rational(f);
    v.has_decimal = dec;
    return true;
  }

  bool number(Value& out) noexcept {
    const std::size_t start = pos_;
    BigInt digits;
    int frac_digits = 0;
    bool dot = false;
    bool any = false;
    while (pos_ < s_.size()) {
      const char c = s_[pos_];
      if (is_digit(c)) {
        if (!mul_add_small(digits, 10, static_cast<std::uint32_t>(c - '0'))) return overflowed(out);
        if (dot) ++frac_digits;
        any = true;
      } else if (c == '.' && !dot && pos_ + 1 < s_.size() && is_digit(s_[pos_ + 1])) {
        dot = true;
      } else {
        break;
      }
      ++pos_;
      if (pos_ - start > 400) return overflowed(out);
    }
    if (!any) return false;
    long exponent = -frac_digits;
    // Scientific notation: e/E followed by an optionally signed integer.
    if (pos_ + 1 < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      std::size_t k = pos_ + 1;
      bool neg = false;
      if (s_[k] == '+' || s_[k] == '-') {
        neg = s_[k] == '-';
        ++k;
      }
      if (k < s_.size() && is_digit(s_[k])) {
        long e = 0;
        while (k < s_.size() && is_digit(s_[k])) {
          if (e < 100000) e = e * 10 + (s_[k] - '0');
          ++k;
        }
        exponent += neg ? -e : e;
        pos_ = k;
        dot = true;  // written in floating-point notation
      }
    }
    if (exponent > kMaxDecimalExponent || exponent < -kMaxDecimalExponent) return overflowed(out);
    Rational r;
    r.num = digits;
    if (exponent != 0) {
      Rational scale;
      if (!pow(Rational::from_int(10), exponent, scale) || !mul(r, scale, r)) return overflowed(out);
    }
    out = Value::from_rational(r);
    out.has_decimal = dot;
    if (!dot) mixed_number(out);
    return true;
  }

  bool overflowed(Value& out) noexcept {
    // Consume the rest of the literal so parsing can go on; the value is marked uncomparable.
    while (pos_ < s_.size() && (is_digit(s_[pos_]) || s_[pos_] == '.')) ++pos_;
    out = Value{};
    out.kind = Exactness::kOverflow;
    out.approx = std::nan("");
    return true;
  }

  // 2\frac{1}{2} is the mixed number 5/2 when both fraction arguments are plain integers.
  void mixed_number(Value& whole) noexcept {
    const std::size_t save = pos_;
    if (!eat_command("frac")) return;
    BigInt parts[2];
    for (BigInt& part : parts) {
      if (!eat('{')) {
        pos_ = save;
        return;
      }
      const std::size_t begin = pos_;
      while (pos_ < s_.size() && is_digit(s_[pos_])) ++pos_;
      if (!parse_decimal(s_.substr(begin, pos_ - begin), part) || !eat('}')) {
        pos_ = save;
        return;
      }
    }
    if (parts[1].is_zero()) {
      pos_ = save;
      return;
    }
    Rational frac;
    frac.num = parts[0];
    frac.den = parts[1];
    whole = add(whole, Value::from_rational(frac), budget_);
  }

  // A \frac or \sqrt argument: a braced group or one token (a digit, a letter, a command like \pi).
  bool argument(Value& out) noexcept {
    const char c = peek();
    if (c == '{') {
      ++pos_;
      return expr(out) && eat('}');
    }
    if (is_digit(c)) {
      out = from_int(c - '0');
      ++pos_;
      return true;
    }
    return primary(out);
  }

  bool function_argument(Value& out) noexcept {
    const char c = peek();
    if (c == '(' || c == '{') return primary(out);
    return power(out);
  }

  bool primary(Value& out) noexcept {
    DepthGuard guard(*this);
    if (!tick()) return false;
    const char c = peek();
    if (is_digit(c) || (c == '.' && pos_ + 1 < s_.size() && is_digit(s_[pos_ + 1]))) return number(out);
    if (c == '(' || c == '{' || c == '[') {
      const char close = c == '(' ? ')' : c == '{' ? '}' : ']';
      ++pos_;
      return expr(out) && eat(close);
    }
    if (is_letter(c) && point_ >= 0) {
      // A variable: a fixed, irregular rational per (letter, sample point), so that two expressions that agree
      // at every point are equal as functions with overwhelming likelihood.
      const int index = c >= 'a' ? c - 'a' : 26 + (c - 'A');
      variables_ |= std::uint64_t{1} << index;
      ++pos_;
      Rational r;
      r.num = BigInt::from_int(1009 + 37 * index + 211 * point_);
      r.den = BigInt::from_int(97 + 13 * point_ + 3 * index);
      Rational reduced;
      mul(r, Rational::from_int(1), reduced);
      out = Value::from_rational(reduced);
      return true;
    }
    if (c != '\\') return false;  // a variable, or something that is not a number
    const std::string_view name = command();
    pos_ += 1 + name.size();
    if (name == "pi") {
      out = Value::pi();
      return true;
    }
    if (name == "infty") {
      out = Value{};
      out.infinity = 1;
      out.approx = INFINITY;
      return true;
    }
    if (name == "frac") {
      Value num;
      Value den;
      if (!argument(num) || !argument(den)) return false;
      out = div(num, den, budget_);
      return true;
    }
    if (name == "sqrt") {
      Value index = from_int(2);
      if (eat('[')) {
        if (!expr(index) || !eat(']')) return false;
      }
      Value radicand;
      if (!argument(radicand)) return false;
      out = nth_root(radicand, index, budget_);
      return true;
    }
    if (name == "binom" || name == "dbinom" || name == "tbinom") {
      Value n;
      Value k;
      if (!argument(n) || !argument(k)) return false;
      out = binomial(n, k);
      return true;
    }
    if (name == "sin" || name == "cos" || name == "tan" || name == "ln" || name == "log" || name == "exp") {
      Value base = from_int(10);
      bool has_base = false;
      if (name == "log" && eat('_')) {
        if (!argument(base)) return false;
        has_base = true;
      }
      Value arg;
      if (!function_argument(arg)) return false;
      if (arg.kind == Exactness::kOverflow || arg.infinity != 0) {
        out = Value{};
        out.kind = Exactness::kOverflow;
        return true;
      }
      const double x = arg.approx;
      double y = 0.0;
      if (name == "sin") y = std::sin(x);
      if (name == "cos") y = std::cos(x);
      if (name == "tan") y = std::tan(x);
      if (name == "ln") y = std::log(x);
      if (name == "log") y = has_base ? std::log(x) / std::log(base.approx) : std::log10(x);
      if (name == "exp") y = std::exp(x);
      out = Value::approximate(y);
      out.has_decimal = arg.has_decimal;
      return true;
    }
    return false;
  }

  Value binomial(const Value& n, const Value& k) noexcept {
    Rational rn;
    Rational rk;
    Value bad;
    bad.kind = Exactness::kOverflow;
    if (!n.as_rational(rn) || !k.as_rational(rk) || !rn.is_integer() || !rk.is_integer() || rn.num.negative ||
        rk.num.negative || rn.num.size > 1 || rk.num.size > 1) {
      return bad;
    }
    const auto nn = static_cast<std::uint32_t>(rn.num.low_u64());
    auto kk = static_cast<std::uint32_t>(rk.num.low_u64());
    if (kk > nn) return from_int(0);
    if (nn - kk < kk) kk = nn - kk;
    if (kk > 2000) return bad;
    Rational r = Rational::from_int(1);
    for (std::uint32_t i = 1; i <= kk; ++i) {
      // C(n-k+i, i) = C(n-k+i-1, i-1) * (n-k+i) / i, exact at every step.
      if (!budget_.charge(r.num.size + 1) || !mul_add_small(r.num, nn - kk + i, 0) ||
          divide_small(r.num, i) != 0) {
        return bad;
      }
    }
    return Value::from_rational(r);
  }
};

}  // namespace

bool parse_number(std::string_view s, Value& out, Budget& budget) noexcept {
  if (s.empty()) return false;
  Parser parser(s, budget);
  Value v;
  if (!parser.parse(v)) return false;
  out = std::move(v);
  return true;
}

bool parse_function(std::string_view s, std::array<Value, kSamplePoints>& out, std::uint64_t& variables,
                    Budget& budget) noexcept {
  if (s.empty()) return false;
  for (int point = 0; point < kSamplePoints; ++point) {
    Parser parser(s, budget, point);
    if (!parser.parse(out[static_cast<std::size_t>(point)])) return false;
    variables = parser.variables();
  }
  return variables != 0;
}

}  // namespace r1fast::rewards
