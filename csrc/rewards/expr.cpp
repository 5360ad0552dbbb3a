#include "rewards/expr.hpp"

#include <cmath>
#include <cstdlib>

namespace r1fast::rewards {

namespace {

constexpr int kMaxDepth = 64;
constexpr int kMaxSteps = 4096;
constexpr std::size_t kMaxNodes = 512;
constexpr std::size_t kMaxVariables = 16;
constexpr int kMaxDecimalExponent = 300;
constexpr long double kPiL = 3.141592653589793238462643383279502884L;
constexpr long double kEL = 2.718281828459045235360287471352662498L;

bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
bool is_letter(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

struct NamedFn {
  std::string_view name;
  Fn fn;
};
constexpr NamedFn kFunctions[] = {
    {"sin", Fn::kSin},     {"cos", Fn::kCos},       {"tan", Fn::kTan},       {"cot", Fn::kCot},
    {"sec", Fn::kSec},     {"csc", Fn::kCsc},       {"arcsin", Fn::kAsin},   {"arccos", Fn::kAcos},
    {"arctan", Fn::kAtan}, {"sinh", Fn::kSinh},     {"cosh", Fn::kCosh},     {"tanh", Fn::kTanh},
    {"ln", Fn::kLn},       {"log", Fn::kLog10},     {"exp", Fn::kExp},
};

Fn function_named(std::string_view name) noexcept {
  for (const NamedFn& f : kFunctions) {
    if (f.name == name) return f.fn;
  }
  return Fn::kNone;
}

Fn inverse_of(Fn fn) noexcept {
  switch (fn) {
    case Fn::kSin: return Fn::kAsin;
    case Fn::kCos: return Fn::kAcos;
    case Fn::kTan: return Fn::kAtan;
    default: return Fn::kNone;
  }
}

bool is_greek(std::string_view name) noexcept {
  static constexpr std::string_view kGreek[] = {
      "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota",
      "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi",
      "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega"};
  for (std::string_view g : kGreek) {
    if (g == name) return true;
  }
  return false;
}

class Parser {
 public:
  Parser(std::string_view s, Symbols& symbols, Expr& out, Budget& budget) noexcept
      : s_(s), symbols_(symbols), out_(out), budget_(budget) {}

  bool parse() {
    int root = -1;
    if (!expr(root)) return false;
    skip();
    if (pos_ != s_.size()) return false;
    out_.root = root;
    return true;
  }

 private:
  std::string_view s_;
  Symbols& symbols_;
  Expr& out_;
  Budget& budget_;
  std::size_t pos_ = 0;
  int depth_ = 0;
  int steps_ = 0;
  int abs_depth_ = 0;  // inside |...|: a '|' closes instead of opening

  struct DepthGuard {
    Parser& p;
    explicit DepthGuard(Parser& parser) noexcept : p(parser) { ++p.depth_; }
    ~DepthGuard() { --p.depth_; }
  };

  bool tick() noexcept { return ++steps_ <= kMaxSteps && depth_ <= kMaxDepth && budget_.remaining >= 0; }

  int add_node(ExprNode n) {
    if (out_.nodes.size() >= kMaxNodes) return -1;
    out_.nodes.push_back(std::move(n));
    return static_cast<int>(out_.nodes.size()) - 1;
  }
  int node(Op op, int a = -1, int b = -1, Fn fn = Fn::kNone) {
    ExprNode n;
    n.op = op;
    n.a = a;
    n.b = b;
    n.fn = fn;
    return add_node(std::move(n));
  }
  int integer(std::int64_t v) {
    ExprNode n;
    n.value = Value::from_rational(Rational::from_int(v));
    n.approx = static_cast<long double>(v);
    return add_node(std::move(n));
  }

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

  bool expr(int& out) {
    DepthGuard guard(*this);
    if (!tick() || !term(out)) return false;
    while (true) {
      const char c = peek();
      if (c != '+' && c != '-') return true;
      ++pos_;
      int rhs = -1;
      if (!term(rhs)) return false;
      out = node(c == '+' ? Op::kAdd : Op::kSub, out, rhs);
      if (out < 0) return false;
    }
  }

  // Whether the next token starts an implicitly multiplied factor (2\pi, 3(4), 2x, x\sqrt2, 2|x|).
  bool starts_implicit_factor() noexcept {
    const char c = peek();
    if (c == '(' || c == '{' || is_letter(c)) return true;
    if (c == '|') return abs_depth_ == 0;
    if (c != '\\') return false;
    const std::string_view name = command();
    return name == "frac" || name == "sqrt" || name == "pi" || name == "binom" || name == "dbinom" ||
           name == "tbinom" || name == "infty" || name == "lfloor" || name == "lceil" || name == "log" ||
           function_named(name) != Fn::kNone || is_greek(name);
  }

  bool term(int& out) {
    if (!unary(out)) return false;
    while (true) {
      if (!tick()) return false;
      int rhs = -1;
      const char c = peek();
      if (c == '*' || eat_command("cdot") || eat_command("times")) {
        if (c == '*') ++pos_;
        if (!unary(rhs)) return false;
        out = node(Op::kMul, out, rhs);
      } else if (c == '/' || eat_command("div")) {
        if (c == '/') ++pos_;
        if (!unary(rhs)) return false;
        out = node(Op::kDiv, out, rhs);
      } else if (starts_implicit_factor()) {
        if (!power(rhs)) return false;
        out = node(Op::kMul, out, rhs);
      } else {
        return true;
      }
      if (out < 0) return false;
    }
  }

  bool unary(int& out) {
    DepthGuard guard(*this);
    if (!tick()) return false;
    if (eat('-')) {
      if (!unary(out)) return false;
      out = node(Op::kNeg, out);
      return out >= 0;
    }
    if (eat('+')) return unary(out);
    return power(out);
  }

  bool power(int& out) {
    DepthGuard guard(*this);
    if (!tick() || !postfix(out)) return false;
    if (!eat('^')) return true;
    int exponent = -1;
    if (!exponent_atom(exponent)) return false;
    out = node(Op::kPow, out, exponent);
    if (out < 0) return false;
    return postfix_after_power(out);
  }

  // x^2! is rare; a factorial after a power applies to the power: (x^2)!.
  bool postfix_after_power(int& out) {
    while (true) {
      if (eat('!')) {
        out = node(Op::kFactorial, out);
      } else {
        return out >= 0;
      }
    }
  }

  // A superscript: a braced group, one digit (2^10 is read as 2^{10}: a run of digits), a signed atom, or one
  // primary; it may carry its own superscript (right-associative towers).
  bool exponent_atom(int& out) {
    DepthGuard guard(*this);
    if (!tick()) return false;
    const char c = peek();
    if (c == '-' || c == '+') {
      ++pos_;
      if (!exponent_atom(out)) return false;
      if (c == '-') out = node(Op::kNeg, out);
      return out >= 0;
    }
    if (c == '{') {
      ++pos_;
      if (!expr(out) || !eat('}')) return false;
    } else if (is_digit(c)) {
      if (!number(out)) return false;
    } else if (is_letter(c)) {
      if (!letter(out)) return false;
    } else if (!primary(out)) {
      return false;
    }
    if (eat('^')) {
      int e = -1;
      if (!exponent_atom(e)) return false;
      out = node(Op::kPow, out, e);
    }
    return out >= 0;
  }

  bool postfix(int& out) {
    if (!primary(out)) return false;
    while (true) {
      if (eat('!')) {
        out = node(Op::kFactorial, out);
      } else if (eat('%')) {
        out = node(Op::kPercent, out);
      } else if (eat_command("degree")) {
        out = node(Op::kMul, out, node(Op::kDiv, node(Op::kPi), integer(180)));  // degrees inside an expression
      } else {
        return out >= 0;
      }
    }
  }

  bool number(int& out) {
    const std::size_t start = pos_;
    BigInt digits;
    int frac_digits = 0;
    int significant = 0;
    bool dot = false;
    bool any = false;
    while (pos_ < s_.size()) {
      const char c = s_[pos_];
      if (is_digit(c)) {
        if (!mul_add_small(digits, 10, static_cast<std::uint32_t>(c - '0'))) return false;
        if (dot) ++frac_digits;
        if (significant > 0 || c != '0') ++significant;
        any = true;
      } else if (c == '.' && !dot && pos_ + 1 < s_.size() && is_digit(s_[pos_ + 1])) {
        dot = true;
      } else {
        break;
      }
      ++pos_;
      if (pos_ - start > 400) return false;
    }
    if (!any) return false;
    if (dot && s_.compare(pos_, 10, "\\overline{") == 0) return repeating(digits, frac_digits, out);
    if (!dot && pos_ + 10 < s_.size() && s_[pos_] == '.' && s_.compare(pos_ + 1, 10, "\\overline{") == 0) {
      ++pos_;
      return repeating(digits, 0, out);
    }
    const std::size_t mantissa_end = pos_;
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
    if (exponent > kMaxDecimalExponent || exponent < -kMaxDecimalExponent) return false;
    Rational r;
    r.num = digits;
    if (exponent != 0) {
      Rational scale;
      if (!pow(Rational::from_int(10), exponent, scale) || !mul(r, scale, r)) return false;
    }
    ExprNode n;
    n.value = Value::from_rational(r);
    n.decimal = dot;
    n.ulp_exponent = static_cast<int>(exponent);
    n.significant_digits = significant;
    // The long double value from the digits themselves (strtold rounds once, correctly).
    std::string literal;
    literal.reserve(mantissa_end - start + 8);
    for (std::size_t k = start; k < mantissa_end; ++k) literal.push_back(s_[k]);
    literal += "e" + std::to_string(exponent + frac_digits);
    n.approx = std::strtold(literal.c_str(), nullptr);
    out = add_node(std::move(n));
    if (out < 0) return false;
    if (!dot) mixed_number(out);
    return out >= 0;
  }

  // 0.1\overline{6} = 1/6: the digits so far (scaled by 10^-frac_digits) plus the repeating block.
  bool repeating(const BigInt& digits, int frac_digits, int& out) {
    pos_ += 10;
    const std::size_t begin = pos_;
    BigInt block;
    BigInt nines;
    while (pos_ < s_.size() && is_digit(s_[pos_]) && pos_ - begin < 30) {
      if (!mul_add_small(block, 10, static_cast<std::uint32_t>(s_[pos_] - '0')) || !mul_add_small(nines, 10, 9)) {
        return false;
      }
      ++pos_;
    }
    if (pos_ == begin || !eat('}')) return false;
    // value = (digits + block / nines) / 10^frac_digits
    Rational head;
    head.num = digits;
    Rational tail;
    tail.num = block;
    tail.den = nines;
    Rational scale;
    Rational sum;
    if (!add(head, tail, sum) || !pow(Rational::from_int(10), -frac_digits, scale) || !mul(sum, scale, sum)) {
      return false;
    }
    ExprNode n;
    n.value = Value::from_rational(sum);
    n.approx = static_cast<long double>(sum.to_double());
    out = add_node(std::move(n));
    return out >= 0;
  }

  // 2\frac{1}{2} (also 2\frac12) is the mixed number 5/2 when both fraction arguments are plain integers.
  void mixed_number(int& whole) {
    const std::size_t save = pos_;
    if (!eat_command("frac")) return;
    std::int64_t parts[2] = {0, 0};
    for (std::int64_t& part : parts) {
      skip();
      if (pos_ < s_.size() && is_digit(s_[pos_])) {  // a one-digit argument: \frac12
        part = s_[pos_++] - '0';
        continue;
      }
      if (!eat('{')) {
        pos_ = save;
        return;
      }
      const std::size_t begin = pos_;
      while (pos_ < s_.size() && is_digit(s_[pos_]) && pos_ - begin < 15) part = part * 10 + (s_[pos_++] - '0');
      if (pos_ == begin || !eat('}')) {
        pos_ = save;
        return;
      }
    }
    if (parts[1] == 0) {
      pos_ = save;
      return;
    }
    const int num = integer(parts[0]);
    const int den = integer(parts[1]);
    if (num < 0 || den < 0) return;
    whole = node(Op::kAdd, whole, node(Op::kDiv, num, den));
  }

  // A \frac or \sqrt argument: a braced group or one token (a digit, a letter, a command like \pi).
  bool argument(int& out) {
    const char c = peek();
    if (c == '{') {
      ++pos_;
      return expr(out) && eat('}');
    }
    if (is_digit(c)) {
      ++pos_;
      out = integer(c - '0');
      return out >= 0;
    }
    if (is_letter(c)) return letter(out);
    return primary(out);
  }

  // The argument of \sin, \log, ...: a bracketed group, or an implicit product of powers (\sin 2x = \sin(2x))
  // that stops before another function (\sin x \cos x).
  bool function_argument(int& out) {
    const char c = peek();
    if (c == '(' || c == '{' || c == '[') return postfix(out);
    if (!power(out)) return false;
    while (true) {
      const char n = peek();
      if (!(is_letter(n) || is_digit(n) || (n == '\\' && (command() == "pi" || is_greek(command()))))) return true;
      int rhs = -1;
      if (!power(rhs)) return false;
      out = node(Op::kMul, out, rhs);
      if (out < 0) return false;
    }
  }

  // A single letter (with an optional subscript) is a variable; e is Euler's number and i the imaginary unit.
  bool letter(int& out) {
    const char c = s_[pos_];
    ++pos_;
    if ((c == 'e' || c == 'i') && !(pos_ < s_.size() && s_[pos_] == '_')) {
      out = node(c == 'e' ? Op::kE : Op::kI);
      return out >= 0;
    }
    return variable(s_.substr(pos_ - 1, 1), out);
  }

  // A variable name plus an optional subscript: x, x_1, a_{n+1}, \theta_0.
  bool variable(std::string_view name, int& out) {
    std::string full(name);
    if (pos_ < s_.size() && s_[pos_] == '_') {
      std::size_t k = pos_ + 1;
      if (k < s_.size() && s_[k] == '{') {
        const std::size_t close = s_.find('}', k);
        if (close == std::string_view::npos || close - k > 32) return false;
        full.append(s_.substr(pos_, close + 1 - pos_));
        pos_ = close + 1;
      } else if (k < s_.size() && (is_letter(s_[k]) || is_digit(s_[k]))) {
        full.append(s_.substr(pos_, 2));
        pos_ = k + 1;
      } else {
        return false;
      }
    }
    const int index = symbols_.intern(full);
    if (index < 0) return false;
    ExprNode n;
    n.op = Op::kVariable;
    n.variable = index;
    out_.variables |= std::uint64_t{1} << index;
    out = add_node(std::move(n));
    return out >= 0;
  }

  // \sin x, \sin^2 x, \sin^{-1} x, \log_2 8, \log_{b}(x).
  bool function(Fn fn, int& out) {
    int base = -1;
    if (fn == Fn::kLog10 && eat('_')) {
      if (!argument(base)) return false;
      fn = Fn::kLogBase;
    }
    int exponent = -1;
    if (peek() == '^') {
      ++pos_;
      const std::size_t save = pos_;
      if (peek() == '{' && s_.compare(pos_, 4, "{-1}") == 0 && inverse_of(fn) != Fn::kNone) {
        pos_ += 4;
        fn = inverse_of(fn);
      } else {
        pos_ = save;
        if (!exponent_atom(exponent)) return false;
      }
    }
    int arg = -1;
    if (!function_argument(arg)) return false;
    out = node(Op::kFunction, arg, base, fn);
    if (exponent >= 0 && out >= 0) out = node(Op::kPow, out, exponent);
    return out >= 0;
  }

  bool primary(int& out) {
    DepthGuard guard(*this);
    if (!tick()) return false;
    const char c = peek();
    if (is_digit(c) || (c == '.' && pos_ + 1 < s_.size() && is_digit(s_[pos_ + 1]))) return number(out);
    if (c == '(' || c == '{' || c == '[') {
      const char close = c == '(' ? ')' : c == '{' ? '}' : ']';
      ++pos_;
      const int saved_abs = abs_depth_;
      abs_depth_ = 0;
      const bool ok = expr(out) && eat(close);
      abs_depth_ = saved_abs;
      return ok;
    }
    if (c == '|') {
      ++pos_;
      ++abs_depth_;
      const bool ok = expr(out) && eat('|');
      --abs_depth_;
      if (!ok) return false;
      out = node(Op::kAbs, out);
      return out >= 0;
    }
    if (is_letter(c)) return letter(out);
    if (c != '\\') return false;
    const std::string_view name = command();
    pos_ += 1 + name.size();
    if (name == "pi") {
      out = node(Op::kPi);
      return out >= 0;
    }
    if (name == "infty") {
      out = node(Op::kInfinity);
      return out >= 0;
    }
    if (name == "frac") {
      int num = -1;
      int den = -1;
      if (!argument(num) || !argument(den)) return false;
      out = node(Op::kDiv, num, den);
      return out >= 0;
    }
    if (name == "sqrt") {
      int index = -1;
      if (eat('[')) {
        if (!expr(index) || !eat(']')) return false;
      }
      int radicand = -1;
      if (!argument(radicand)) return false;
      out = node(Op::kRoot, radicand, index);
      return out >= 0;
    }
    if (name == "binom" || name == "dbinom" || name == "tbinom") {
      int n = -1;
      int k = -1;
      if (!argument(n) || !argument(k)) return false;
      out = node(Op::kBinom, n, k);
      return out >= 0;
    }
    if (name == "lfloor" || name == "lceil") {
      const bool floor = name == "lfloor";
      if (!expr(out) || !eat_command(floor ? "rfloor" : "rceil")) return false;
      out = node(floor ? Op::kFloor : Op::kCeil, out);
      return out >= 0;
    }
    if (is_greek(name)) return variable(s_.substr(pos_ - name.size() - 1, name.size() + 1), out);
    const Fn fn = function_named(name);
    if (fn != Fn::kNone) return function(fn, out);
    return false;
  }
};

// Sample points: per (variable, point) an irregular rational, the signs mixed so that |x| differs from x and
// sqrt(x) meets negative arguments. The same values feed the exact and the numeric evaluation.
Rational sample_value(int variable, int point) noexcept {
  static constexpr std::int64_t kNum[kSamplePoints] = {1009, 2617, 1511, 3331, 1993};
  static constexpr std::int64_t kDen[kSamplePoints] = {997, 1223, 409, 1777, 1601};
  static constexpr bool kNegative[kSamplePoints] = {false, true, false, true, false};
  Rational r;
  r.num = BigInt::from_int(kNum[point] + 37 * variable * (point + 1));
  r.den = BigInt::from_int(kDen[point] + 11 * variable);
  r.num.negative = kNegative[point];
  Rational reduced;
  mul(r, Rational::from_int(1), reduced);
  return reduced;
}

Value not_real() noexcept {
  Value v;
  v.kind = Exactness::kOverflow;
  v.approx = std::nan("");
  return v;
}

bool small_nonnegative_integer(const Value& v, std::uint64_t limit, std::uint64_t& out) noexcept {
  Rational r;
  if (!v.as_rational(r) || !r.is_integer() || r.num.negative || r.num.size > 1 || r.num.low_u64() > limit) {
    return false;
  }
  out = r.num.low_u64();
  return true;
}

class ExactEvaluator {
 public:
  ExactEvaluator(const Expr& e, int point, Budget& budget) noexcept : e_(e), point_(point), budget_(budget) {}

  Value eval(int i) noexcept {
    if (i < 0 || budget_.remaining < 0) return not_real();
    const ExprNode& n = e_.nodes[static_cast<std::size_t>(i)];
    switch (n.op) {
      case Op::kNumber: return n.value;
      case Op::kVariable: return Value::from_rational(sample_value(n.variable, point_));
      case Op::kPi: return Value::pi();
      case Op::kE: return Value::approximate(std::exp(1.0));
      case Op::kI: return not_real();
      case Op::kInfinity: {
        Value v;
        v.infinity = 1;
        v.approx = INFINITY;
        return v;
      }
      case Op::kAdd: return add(eval(n.a), eval(n.b), budget_);
      case Op::kSub: return sub(eval(n.a), eval(n.b), budget_);
      case Op::kMul: return mul(eval(n.a), eval(n.b), budget_);
      case Op::kDiv: return div(eval(n.a), eval(n.b), budget_);
      case Op::kNeg: return negate(eval(n.a));
      case Op::kPow: return pow(eval(n.a), eval(n.b), budget_);
      case Op::kPercent: return div(eval(n.a), Value::from_rational(Rational::from_int(100)), budget_);
      case Op::kRoot: {
        const Value radicand = eval(n.a);
        if (n.b < 0) return sqrt(radicand, budget_);
        return nth_root(radicand, eval(n.b), budget_);
      }
      case Op::kFactorial: return factorial(eval(n.a));
      case Op::kBinom: return binomial(eval(n.a), eval(n.b));
      case Op::kAbs: {
        const Value v = eval(n.a);
        if (v.kind == Exactness::kOverflow) return v;
        return v.approx < 0 ? negate(v) : v;
      }
      case Op::kFloor:
      case Op::kCeil: {
        const Value v = eval(n.a);
        if (v.kind != Exactness::kExact || v.infinity != 0 || !std::isfinite(v.approx) ||
            std::abs(v.approx) > 1e15) {
          return not_real();
        }
        // Exact only for rationals: floor(p/q) from the double, checked against the exact value.
        Rational r;
        if (!v.as_rational(r)) return not_real();
        const double f = n.op == Op::kFloor ? std::floor(r.to_double()) : std::ceil(r.to_double());
        return Value::from_rational(Rational::from_int(static_cast<std::int64_t>(f)));
      }
      case Op::kFunction: return Value::approximate(std::nan(""));  // never exact: the numeric path decides
    }
    return not_real();
  }

 private:
  const Expr& e_;
  int point_;
  Budget& budget_;

  Value factorial(const Value& v) noexcept {
    std::uint64_t k = 0;
    if (!small_nonnegative_integer(v, 1000, k)) return not_real();
    Rational f = Rational::from_int(1);
    for (std::uint64_t m = 2; m <= k; ++m) {
      if (!budget_.charge(f.num.size + 1) || !mul(f, Rational::from_int(static_cast<std::int64_t>(m)), f)) {
        return not_real();
      }
    }
    return Value::from_rational(f);
  }

  Value binomial(const Value& n, const Value& k) noexcept {
    std::uint64_t nn = 0;
    std::uint64_t kk = 0;
    if (!small_nonnegative_integer(n, 0xffffffffULL, nn) || !small_nonnegative_integer(k, 0xffffffffULL, kk)) {
      return not_real();
    }
    if (kk > nn) return Value::from_rational(Rational::from_int(0));
    if (nn - kk < kk) kk = nn - kk;
    if (kk > 2000) return not_real();
    Rational r = Rational::from_int(1);
    for (std::uint64_t i = 1; i <= kk; ++i) {
      // C(n-k+i, i) = C(n-k+i-1, i-1) * (n-k+i) / i, exact at every step.
      if (!budget_.charge(r.num.size + 1) || !mul_add_small(r.num, static_cast<std::uint32_t>(nn - kk + i), 0) ||
          divide_small(r.num, static_cast<std::uint32_t>(i)) != 0) {
        return not_real();
      }
    }
    return Value::from_rational(r);
  }
};

bool finite(const Complex& z) noexcept { return std::isfinite(z.real()) && std::isfinite(z.imag()); }

bool real_value(const Complex& z, long double& out) noexcept {
  if (std::abs(z.imag()) > 1e-18L * std::max(1.0L, std::abs(z.real()))) return false;
  out = z.real();
  return true;
}

class NumericEvaluator {
 public:
  NumericEvaluator(const Expr& e, int point) noexcept : e_(e), point_(point) {}

  bool eval(int i, Complex& out) noexcept {
    if (i < 0 || ++steps_ > 4 * static_cast<int>(kMaxNodes)) return false;
    const ExprNode& n = e_.nodes[static_cast<std::size_t>(i)];
    Complex x;
    Complex y;
    switch (n.op) {
      case Op::kNumber: out = n.approx; return finite(out);
      case Op::kVariable: {
        const Rational r = sample_value(n.variable, point_);
        out = static_cast<long double>(r.num.low_u64()) / static_cast<long double>(r.den.low_u64());
        if (r.num.negative) out = -out;
        return true;
      }
      case Op::kPi: out = kPiL; return true;
      case Op::kE: out = kEL; return true;
      case Op::kI: out = Complex(0.0L, 1.0L); return true;
      case Op::kInfinity: return false;
      case Op::kAdd: if (!eval(n.a, x) || !eval(n.b, y)) return false; out = x + y; break;
      case Op::kSub: if (!eval(n.a, x) || !eval(n.b, y)) return false; out = x - y; break;
      case Op::kMul: if (!eval(n.a, x) || !eval(n.b, y)) return false; out = x * y; break;
      case Op::kDiv:
        if (!eval(n.a, x) || !eval(n.b, y) || std::abs(y) == 0.0L) return false;
        out = x / y;
        break;
      case Op::kNeg: if (!eval(n.a, x)) return false; out = -x; break;
      case Op::kPercent: if (!eval(n.a, x)) return false; out = x / 100.0L; break;
      case Op::kPow: {
        if (!eval(n.a, x) || !eval(n.b, y)) return false;
        long double e = 0.0L;
        if (real_value(y, e) && e == std::round(e) && std::abs(e) <= 1e6L) {
          if (std::abs(x) == 0.0L && e < 0) return false;
          out = integer_power(x, static_cast<long>(e));
        } else {
          if (std::abs(x) == 0.0L) return false;
          long double base = 0.0L;
          int q = 0;
          // x^{2/3} of a negative real: the real root, as with \sqrt[3]{x}^2 (odd denominators only).
          if (real_value(x, base) && base < 0 && real_value(y, e) && odd_denominator(e, q)) {
            const long double p = std::round(e * q);
            out = std::pow(-base, e) * (std::fmod(std::abs(p), 2.0L) == 1.0L ? -1.0L : 1.0L);
          } else {
            out = std::pow(x, y);
          }
        }
        break;
      }
      case Op::kRoot: {
        if (!eval(n.a, x)) return false;
        long double k = 2.0L;
        if (n.b >= 0) {
          if (!eval(n.b, y) || !real_value(y, k) || k == 0.0L) return false;
        }
        long double xr = 0.0L;
        // An odd root of a negative real is the real root (\sqrt[3]{-8} = -2), as written in school algebra.
        if (real_value(x, xr) && xr < 0 && k == std::round(k) && std::fmod(std::abs(k), 2.0L) == 1.0L) {
          out = -std::pow(-xr, 1.0L / k);
        } else if (k == 2.0L) {
          out = std::sqrt(x);
        } else {
          out = std::pow(x, 1.0L / k);
        }
        break;
      }
      case Op::kFactorial: {
        long double v = 0.0L;
        if (!eval(n.a, x) || !real_value(x, v) || v < 0 || v != std::round(v) || v > 1700) return false;
        out = std::exp(std::lgamma(v + 1.0L));
        break;
      }
      case Op::kBinom: {
        long double nv = 0.0L;
        long double kv = 0.0L;
        if (!eval(n.a, x) || !eval(n.b, y) || !real_value(x, nv) || !real_value(y, kv)) return false;
        if (kv != std::round(kv) || kv < 0) return false;
        Complex r = 1.0L;
        for (long double j = 0; j < kv; j += 1.0L) {
          if (kv > 2000) return false;
          r *= (nv - j) / (j + 1.0L);
        }
        out = r;
        break;
      }
      case Op::kAbs: if (!eval(n.a, x)) return false; out = std::abs(x); break;
      case Op::kFloor:
      case Op::kCeil: {
        long double v = 0.0L;
        if (!eval(n.a, x) || !real_value(x, v)) return false;
        out = n.op == Op::kFloor ? std::floor(v) : std::ceil(v);
        break;
      }
      case Op::kFunction:
        if (!eval(n.a, x)) return false;
        if (n.fn == Fn::kLogBase && !eval(n.b, y)) return false;
        if (!apply(n.fn, x, y, out)) return false;
        break;
    }
    return finite(out);
  }

 private:
  const Expr& e_;
  int point_;
  int steps_ = 0;

  // Whether e = p / q with q odd and <= 15.
  static bool odd_denominator(long double e, int& q) noexcept {
    for (q = 3; q <= 15; q += 2) {
      const long double p = e * q;
      if (std::abs(p - std::round(p)) < 1e-12L) return true;
    }
    return false;
  }

  static Complex integer_power(Complex base, long e) noexcept {
    const bool invert = e < 0;
    unsigned long k = static_cast<unsigned long>(invert ? -e : e);
    Complex r = 1.0L;
    while (k > 0) {
      if (k & 1UL) r *= base;
      base *= base;
      k >>= 1;
    }
    return invert ? 1.0L / r : r;
  }

  static bool apply(Fn fn, const Complex& x, const Complex& base, Complex& out) noexcept {
    const bool zero = std::abs(x) == 0.0L;
    switch (fn) {
      case Fn::kSin: out = std::sin(x); return true;
      case Fn::kCos: out = std::cos(x); return true;
      case Fn::kTan: out = std::tan(x); return true;
      case Fn::kCot: out = std::cos(x) / std::sin(x); return std::abs(std::sin(x)) != 0.0L;
      case Fn::kSec: out = 1.0L / std::cos(x); return std::abs(std::cos(x)) != 0.0L;
      case Fn::kCsc: out = 1.0L / std::sin(x); return std::abs(std::sin(x)) != 0.0L;
      case Fn::kAsin: out = std::asin(x); return true;
      case Fn::kAcos: out = std::acos(x); return true;
      case Fn::kAtan: out = std::atan(x); return true;
      case Fn::kSinh: out = std::sinh(x); return true;
      case Fn::kCosh: out = std::cosh(x); return true;
      case Fn::kTanh: out = std::tanh(x); return true;
      case Fn::kLn: out = std::log(x); return !zero;
      case Fn::kLog10: out = std::log(x) / std::log(Complex(10.0L)); return !zero;
      case Fn::kLogBase: {
        const Complex lb = std::log(base);
        if (zero || std::abs(base) == 0.0L || std::abs(lb) == 0.0L) return false;
        out = std::log(x) / lb;
        return true;
      }
      case Fn::kExp: out = std::exp(x); return true;
      case Fn::kNone: return false;
    }
    return false;
  }
};

}  // namespace

int Symbols::intern(std::string_view name) {
  for (std::size_t k = 0; k < names.size(); ++k) {
    if (names[k] == name) return static_cast<int>(k);
  }
  if (names.size() >= kMaxVariables) return -1;
  names.emplace_back(name);
  return static_cast<int>(names.size()) - 1;
}

const ExprNode* Expr::bare_decimal() const noexcept {
  if (!parsed()) return nullptr;
  const ExprNode* n = &top();
  if (n->op == Op::kNeg) n = &nodes[static_cast<std::size_t>(n->a)];
  return n->op == Op::kNumber && n->decimal ? n : nullptr;
}

bool Expr::has_constant(Op op) const noexcept {
  for (const ExprNode& n : nodes) {
    if (n.op == op) return true;
  }
  return false;
}

bool parse_expr(std::string_view s, Symbols& symbols, Expr& out, Budget& budget) {
  out = Expr{};
  if (s.empty()) return false;
  const std::size_t symbols_before = symbols.names.size();
  Parser parser(s, symbols, out, budget);
  if (parser.parse()) return true;
  symbols.names.resize(symbols_before);  // a failed parse leaves no variables behind
  out = Expr{};
  return false;
}

const Value& evaluate_exact(const Expr& e, int point, Budget& budget) noexcept {
  const auto k = static_cast<std::size_t>(point);
  if (e.exact_state[k] == 0) {
    e.exact_cache[k] = e.parsed() ? ExactEvaluator(e, point, budget).eval(e.root) : not_real();
    e.exact_state[k] = 1;
  }
  return e.exact_cache[k];
}

bool evaluate_numeric(const Expr& e, int point, Complex& out) noexcept {
  const auto k = static_cast<std::size_t>(point);
  if (e.numeric_state[k] == 0) {
    Complex v;
    const bool ok = e.parsed() && NumericEvaluator(e, point).eval(e.root, v);
    e.numeric_cache[k] = v;
    e.numeric_state[k] = ok ? 1 : -1;
  }
  out = e.numeric_cache[k];
  return e.numeric_state[k] == 1;
}

}  // namespace r1fast::rewards
