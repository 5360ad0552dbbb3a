#include <string>

#include "rewards/rational.hpp"
#include "rewards/value.hpp"
#include "tests/test_main.hpp"

using namespace r1fast::rewards;

namespace {

Rational q(std::int64_t n, std::int64_t d) {
  Rational r;
  div(Rational::from_int(n), Rational::from_int(d), r);
  return r;
}

}  // namespace

TEST_CASE("rational arithmetic is exact and reduced") {
  Rational r;
  CHECK(add(q(1, 2), q(1, 3), r) && r == q(5, 6));
  CHECK(sub(q(1, 2), q(1, 2), r) && r.is_zero());
  CHECK(mul(q(-2, 3), q(3, 4), r) && r == q(-1, 2));
  CHECK(div(q(1, 2), q(-1, 4), r) && r == Rational::from_int(-2));
  CHECK(!div(q(1, 2), Rational::from_int(0), r));
  CHECK(q(2, 4).den.low_u64() == 2);  // reduced when small
  CHECK(compare(q(1, 3), q(1, 2)) < 0 && compare(q(-1, 2), q(-1, 3)) < 0);
}

TEST_CASE("big integers stay within their bound and report overflow") {
  Rational r;
  CHECK(pow(Rational::from_int(2), 1000, r));
  CHECK(r.num.bit_length() == 1001);
  CHECK(!pow(Rational::from_int(2), 1024, r));
  CHECK(!pow(Rational::from_int(5), 3125, r));
  CHECK(pow(Rational::from_int(-1), 1000000007, r) && r == Rational::from_int(-1));
  CHECK(pow(Rational::from_int(2), -3, r) && r == q(1, 8));
  BigInt big;
  CHECK(parse_decimal(std::string(300, '9'), big));
  CHECK(!parse_decimal(std::string(400, '9'), big));
  CHECK(!parse_decimal("12a", big));
  BigInt x = BigInt::from_int(1000);
  CHECK(divide_small(x, 7) == 6 && x.low_u64() == 142);
}

TEST_CASE("values are exact sums of surd and pi terms") {
  Budget b;
  const Value half = Value::from_rational(q(1, 2));
  const Value two = Value::from_rational(Rational::from_int(2));
  const Value three = Value::from_rational(Rational::from_int(3));
  const Value twelve = Value::from_rational(Rational::from_int(12));
  // sqrt(12) == 2 sqrt(3)
  CHECK(exactly_equal(sqrt(twelve, b), mul(two, sqrt(three, b), b)));
  // 1 / sqrt(2) == sqrt(2) / 2
  CHECK(exactly_equal(div(Value::from_rational(Rational::from_int(1)), sqrt(two, b), b), mul(sqrt(two, b), half, b)));
  // pi / 2 is not the decimal 1.5708
  CHECK(!exactly_equal(mul(Value::pi(), half, b), Value::from_rational(q(15708, 10000))));
  // overflowed values never compare equal, even to themselves
  Value huge = pow(Value::from_rational(Rational::from_int(5)), Value::from_rational(Rational::from_int(3125)), b);
  CHECK(huge.kind == Exactness::kOverflow);
  CHECK(!exactly_equal(huge, huge));
}
