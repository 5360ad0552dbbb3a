#include <chrono>
#include <string>

#include "rewards/compare.hpp"
#include "rewards/extract.hpp"
#include "tests/test_main.hpp"

using namespace r1fast::rewards;

namespace {

bool eq(const char* gold, const char* predicted) { return answers_equal(gold, predicted, AccuracyOptions{}); }

}  // namespace

TEST_CASE("extract_answer finds boxed, answer blocks and markers") {
  CHECK(extract_answer("so \\boxed{1} and finally \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}");
  CHECK(extract_answer("\\fbox{7}") == "7");
  CHECK(extract_answer("thus \\boxed 5 done") == "5");
  CHECK(extract_answer("<think>\\boxed{1}</think><answer>\n42\n</answer>") == "42");
  CHECK(extract_answer("<answer>so \\boxed{3}</answer>") == "3");
  CHECK(extract_answer("blah\n#### 1,234\n") == "1,234");
  CHECK(extract_answer("The final answer is $12$.") == "12");
  CHECK(extract_answer("Answer: (C)") == "(C)");
  CHECK(extract_answer("no answer here").empty());
  CHECK(extract_answer("\\boxed{unclosed").empty());
  CHECK(extract_answer("\\boxed{a{b}c}") == "a{b}c");
}

TEST_CASE("numbers compare as exact rationals") {
  CHECK(eq("0.5", "\\frac{1}{2}"));
  CHECK(eq("\\frac52", "2\\frac{1}{2}"));
  CHECK(eq("7425000", "7,425,000"));
  CHECK(eq("1000", "1 000"));
  CHECK(eq("11111", "11,\\!111"));
  CHECK(eq("-0.5", "-\\dfrac{1}{2}"));
  CHECK(eq("1500", "1.5\\times10^3"));
  CHECK(eq("1500", "1.5e3"));
  CHECK(eq("3", "3.0"));
  CHECK(eq("50\\%", "0.5"));
  CHECK(eq("50\\%", "50"));
  CHECK(eq("5", "5^\\circ"));
  CHECK(eq("5", "\\$5"));
  CHECK(eq("5", "5\\text{ cm}"));
  CHECK(eq("5", "x = 5"));
  CHECK(eq("1024", "2^{10}"));
  CHECK(eq("120", "5!"));
  CHECK(!eq("2", "3"));
  CHECK(!eq("\\frac{1}{3}", "0.33"));
  CHECK(eq("\\frac{1}{3}", "0.333333"));
  CHECK(!eq("1/2004!", "1/2006!"));
}

TEST_CASE("surds and pi multiples compare exactly") {
  CHECK(eq("2\\sqrt{3}", "\\sqrt{12}"));
  CHECK(eq("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"));
  CHECK(eq("\\frac{3\\pi}{4}", "0.75\\pi"));
  CHECK(eq("2-\\sqrt{3}", "\\frac{1}{2+\\sqrt{3}}"));
  CHECK(!eq("\\sqrt{2}", "\\sqrt{3}"));
  CHECK(!eq("\\pi", "3"));
}

TEST_CASE("structures: tuples, intervals, sets, choices") {
  CHECK(eq("(1,2)", "(1, 2)"));
  CHECK(!eq("(1,2)", "(2,1)"));
  CHECK(!eq("(1,2)", "[1,2]"));
  CHECK(eq("[1,2)", "[1, 2)"));
  CHECK(eq("\\{1,2\\}", "\\{2,1\\}"));
  CHECK(eq("1,2", "2, 1"));
  CHECK(eq("(-\\infty,2)\\cup(3,\\infty)", "(3,\\infty)\\cup(-\\infty,2)"));
  CHECK(eq("\\{1,2\\}", "\\{2,1,2\\}"));
  CHECK(eq("\\{3\\}", "3"));
  CHECK(eq("(3,4)", "x=3, y=4"));
  CHECK(eq("0.75", "3:4"));
  CHECK(eq("C", "(C)"));
  CHECK(eq("C", "\\text{C}"));
  CHECK(!eq("C", "D"));
}

TEST_CASE("expressions in variables compare at sample points") {
  CHECK(eq("x^2-1", "(x-1)(x+1)"));
  CHECK(eq("a+b", "b+a"));
  CHECK(!eq("x^2+1", "x^2-1"));
  CHECK(!eq("x+y", "x+z"));
  CHECK(!eq("\\text{Monday}", "\\text{dayMon}"));
}

TEST_CASE("accuracy verdicts, including an unparseable gold") {
  const AccuracyOptions o;
  CHECK(accuracy("\\boxed{4}", "4", o) == Verdict::kCorrect);
  CHECK(accuracy("\\boxed{5}", "4", o) == Verdict::kWrong);
  CHECK(accuracy("no answer", "4", o) == Verdict::kWrong);
  CHECK(accuracy("\\boxed{4}", "", o) == Verdict::kNoGold);
  CHECK(accuracy("\\boxed{4}", "$$", o) == Verdict::kNoGold);
  CHECK(accuracy("\\boxed{4}", "The answer is \\boxed{4}.", o) == Verdict::kCorrect);
}

TEST_CASE("adversarial inputs finish fast") {
  const std::string towers[] = {
      "\\boxed{5^{5^{5^{5^5}}}}",
      "\\boxed{" + std::string(10000, '{') + "1" + std::string(10000, '}') + "}",
      "\\boxed{" + [] {
        std::string s;
        for (int i = 0; i < 300; ++i) s += "\\frac{1}{";
        s += "2";
        for (int i = 0; i < 300; ++i) s += "}";
        return s;
      }() + "}",
      "\\boxed{" + std::string(2000, '9') + "}",
      "\\boxed{" + [] {
        std::string s;
        for (int i = 0; i < 100; ++i) s += "\\sqrt{999999999989}+";
        return s + "1";
      }() + "}",
      std::string(1 << 20, '{'),
      "\\boxed{9!!!!!!!!!!}",
  };
  for (const std::string& t : towers) {
    const auto start = std::chrono::steady_clock::now();
    (void)accuracy(t, t, AccuracyOptions{});
    (void)accuracy(t, "5", AccuracyOptions{});
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    CHECK(ms < 50.0);
  }
}
