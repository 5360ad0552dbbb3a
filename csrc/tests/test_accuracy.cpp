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
  CHECK(extract_answer("Answer: (C)") == "C");
  CHECK(extract_answer("\\boxed{unclosed").empty());
  CHECK(extract_answer("\\boxed{a{b}c}") == "a{b}c");
  // several boxes of one final answer are a list; boxes of the working are not part of it
  CHECK(extract_answer("$\\boxed{1}\\boxed{2}$") == "1, 2");
  CHECK(extract_answer("\\boxed{1} and \\boxed{2}") == "1, 2");
  CHECK(extract_answer("\\boxed{1} \\quad \\text{and} \\quad \\boxed{2}") == "1, 2");
  CHECK(extract_answer("first \\boxed{1}, then we redo it: \\boxed{2}") == "2");
  // the marker takes the math, or the sentence up to its end, not the rest of the line
  CHECK(extract_answer("Final Answer: The final answer is $100$. I hope it is correct.") == "100");
  CHECK(extract_answer("The answer is $12$ dollars.") == "12");
  CHECK(extract_answer("The answer is 12 dollars.") == "12");
  CHECK(extract_answer("<answer>\n42 apples\n</answer>") == "42");
  CHECK(extract_answer("The answer is 5 thousand.") == "5 thousand");  // normalised to 5000 later
  // the last math span, a bare answer, a choice on the last line
  CHECK(extract_answer("We find $x = 3$.") == "x = 3");
  CHECK(extract_answer("  -7 ") == "-7");
  CHECK(extract_answer("Checking each option.\nB) 12") == "B");
  // inside <think> nothing counts
  CHECK(extract_answer("<think>so \\boxed{5}</think>").empty());
  CHECK(extract_answer("<think>so \\boxed{5}").empty());
  CHECK(extract_answer("<think>so \\boxed{5}</think> it is \\boxed{6}") == "6");
}

TEST_CASE("the seven defects of the old reward stay fixed") {
  const AccuracyOptions o;
  const auto score = [&](const char* completion, const char* gold) { return accuracy(completion, gold, o); };
  // 1. a gold equation is never compared by its right side alone
  CHECK(score("\\boxed{25}", "x^2+y^2=25") == Verdict::kWrong);
  CHECK(score("\\boxed{6}", "2x+3y=6") == Verdict::kWrong);
  CHECK(score("\\boxed{y = 3}", "x = 3") == Verdict::kWrong);
  CHECK(score("\\boxed{3}", "x = 3") == Verdict::kCorrect);
  // 2. \text{...} between numbers never glues digits
  CHECK(score("\\boxed{1213}", "12\\text{ and }13") == Verdict::kWrong);
  CHECK(score("\\boxed{68}", "6 \\text{ and } 8") == Verdict::kWrong);
  CHECK(score("\\boxed{6,8}", "6 \\text{ and } 8") == Verdict::kCorrect);
  // 3. several boxes in the gold are a list
  CHECK(score("\\boxed{2}", "$\\boxed{1}\\boxed{2}$") == Verdict::kWrong);
  CHECK(score("\\boxed{1} and \\boxed{2}", "$\\boxed{1}\\boxed{2}$") == Verdict::kCorrect);
  // 4. no tolerance accepts a wrong integer
  CHECK(score("\\boxed{123456700.0}", "123456789") == Verdict::kWrong);
  CHECK(score("\\boxed{1000000.9}", "1000000") == Verdict::kWrong);
  // 5. the marker takes the answer, not the rest of the line
  CHECK(score("The final answer is $100$. I hope it is correct.", "100") == Verdict::kCorrect);
  CHECK(score("The answer is $12$ dollars.", "12") == Verdict::kCorrect);
  CHECK(score("<answer>\n42 apples\n</answer>", "42") == Verdict::kCorrect);
  // 6. thousands separators with a decimal part or a spaced \!
  CHECK(score("\\boxed{1,000.99}", "1000.99") == Verdict::kCorrect);
  CHECK(score("\\boxed{32,\\! 349}", "32349") == Verdict::kCorrect);
  // 7. every spelling of a relation
  CHECK(score("\\boxed{x >= 3}", "x \\geq 3") == Verdict::kCorrect);
  CHECK(score("\\boxed{x <= 3}", "x \\leq 3") == Verdict::kCorrect);
  CHECK(score("\\boxed{x \\lt 3}", "x < 3") == Verdict::kCorrect);
  CHECK(score("\\boxed{x \\gt 3}", "x > 3") == Verdict::kCorrect);
  CHECK(score("\\boxed{x != 3}", "x \\neq 3") == Verdict::kCorrect);
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
  CHECK(eq("\\frac{1}{3}", "0.\\overline{3}"));
  CHECK(eq("1", "0.\\overline{9}"));
  CHECK(!eq("\\frac{1}{3}", "0.33333"));  // a rounding needs 6 significant digits
  CHECK(!eq("100", "99.99999"));
  CHECK(eq("\\frac{7}{2}", "3\\frac12"));
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
  CHECK(eq("-2 \\le x \\le 7", "[-2,7]"));
  CHECK(eq("-2 \\le x \\le 7", "x \\in [-2, 7]"));
  CHECK(eq("x > 3", "(3, \\infty)"));
  CHECK(!eq("x > 3", "[3, \\infty)"));
  CHECK(eq("x < 1", "-x > -1"));
  CHECK(eq("x < -1 \\text{ or } x > 3", "(-\\infty,-1)\\cup(3,\\infty)"));
  CHECK(eq("1 \\pm \\sqrt{2}", "1-\\sqrt2, 1+\\sqrt2"));
  CHECK(!eq("2", "1, 2"));
  CHECK(eq("k = 45, n = 2", "n = 2, k = 45"));
  CHECK(eq("y = 2x + 3", "2x - y + 3 = 0"));
  CHECK(!eq("y = 2x + 3", "y = 2x - 3"));
  CHECK(eq("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\left[\\begin{array}{cc} 1 & 2 \\\\ 3 & 4 \\end{array}\\right]"));
  CHECK(!eq("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{pmatrix} 1 & 3 \\\\ 2 & 4 \\end{pmatrix}"));
  CHECK(!eq("8\\text{ inches}", "8\\text{ feet}"));
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
  CHECK(eq("|x|", "\\sqrt{x^2}"));
  CHECK(!eq("|x|", "x"));  // sample points of both signs
  CHECK(eq("\\log_2 8", "3"));
  CHECK(eq("e^{i\\pi}", "-1"));
  CHECK(eq("\\sin^2 x + \\cos^2 x", "1"));
  CHECK(eq("\\ln(e^2)", "2"));
  CHECK(!eq("\\ln x", "\\log x"));
  CHECK(eq("(1+i)^2", "2i"));
  CHECK(eq("\\binom{n}{2}", "\\frac{n(n-1)}{2}"));
  CHECK(!eq("\\frac{1}{x}", "\\frac{1}{y}"));
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
