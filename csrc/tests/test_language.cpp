#include "rewards/countdown.hpp"
#include "rewards/language.hpp"
#include "rewards/text.hpp"
#include "tests/test_main.hpp"

using namespace r1fast::rewards;

TEST_CASE("language consistency counts words per script and word list") {
  CHECK(language_consistency("The answer is four.", Language::kEn, false) == 1.0);
  CHECK(language_consistency("La respuesta es cuatro.", Language::kEs, false) == 1.0);
  CHECK(language_consistency("La respuesta es cuatro.", Language::kEn, false) < 0.5);
  CHECK(language_consistency("Die Antwort ist vier.", Language::kDe, false) == 1.0);
  CHECK(language_consistency("Die Antwort ist vier.", Language::kFr, false) < 0.5);
  CHECK(language_consistency("\xe6\x88\x91\xe4\xbb\xac", Language::kZh, false) == 1.0);  // two Han characters
  // Two Han characters (2 words) + one English word: 2/3.
  CHECK(language_consistency("\xe6\x88\x91\xe4\xbb\xac the", Language::kZh, false) == 2.0 / 3.0);
  CHECK(language_consistency("\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 hello", Language::kRu, false) == 0.5);
  CHECK(language_consistency("12 + 3 = 15", Language::kEn, false) == 0.0);
  CHECK(language_consistency("<think>the</think> \xe6\x88\x91", Language::kEn, true) == 1.0);
  CHECK(language_consistency("\xff\xfe\x80 the", Language::kEn, false) == 1.0);
  CHECK(language_from_code("xx") == Language::kUnknown);
}

TEST_CASE("countdown uses every number once and reaches the target") {
  const std::vector<std::int64_t> nums = {3, 5, 2};
  CHECK(countdown("<answer>(3 + 5) * 2</answer>", nums, 16, 0.1) == 1.0);
  CHECK(countdown("<answer>(3 + 5) / 2 * 4</answer>", nums, 16, 0.1) == 0.1);  // 4 is not given
  CHECK(countdown("<answer>3 * 5 + 2</answer>", nums, 16, 0.1) == 0.1);
  CHECK(countdown("<answer>2(3+5)</answer>", nums, 16, 0.1) == 0.1);   // no implicit product
  CHECK(countdown("<answer>x = 16</answer>", nums, 16, 0.1) == 0.1);
  CHECK(countdown("<answer>3 / (5 - 5)</answer>", {3, 5, 5}, 16, 0.1) == 0.1);
  CHECK(countdown("<answer>2 ** 3 + 5 + 3</answer>", {2, 3, 5, 3}, 16, 0.1) == 1.0);
  CHECK(countdown("no answer", nums, 16, 0.1) == 0.0);
  Rational v;
  Rational expected;
  CHECK(evaluate_countdown("-2 ** 2 + 10 / 4", v));  // Python: -(2 ** 2) + 2.5
  CHECK(div(Rational::from_int(-3), Rational::from_int(2), expected) && v == expected);
  CHECK(!evaluate_countdown("1 // 2", v));
  CHECK(!evaluate_countdown("(1 + 2", v));
}

TEST_CASE("open-r1 text rewards") {
  CHECK(reasoning_step_count("Step 1: a\nStep 2: b\n- c") == 3);
  CHECK(reasoning_step_count("1. a\n2. b") == 1);  // ^ only at the start
  CHECK(reasoning_steps("First, Second, Next, Finally,") == 1.0);
  CHECK(repetition_penalty("a b c a b c", 3, -1.0) == -0.25);
  CHECK(repetition_penalty("a b", 3, -1.0) == 0.0);
  CHECK(repetition_penalty("", 3, -1.0) == 0.0);
}
