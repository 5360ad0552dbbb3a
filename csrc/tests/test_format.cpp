#include <string>

#include "rewards/format.hpp"
#include "tests/test_main.hpp"

using namespace r1fast::rewards;

TEST_CASE("format_strict follows open-r1's regex") {
  CHECK(format_strict("<think>\nreason\n</think>\n<answer>\n42\n</answer>"));
  CHECK(format_strict("<think>\n\n</think>\n<answer>\n\n</answer>"));
  CHECK(format_strict("<think>\na\n</think>\n<answer>\nb\n</answer>\ntrailing line"));  // MULTILINE `$`
  CHECK(!format_strict("<think>\na\n</think>\n<answer>\nb\n</answer> trailing"));
  CHECK(!format_strict(" <think>\na\n</think>\n<answer>\nb\n</answer>"));
  CHECK(!format_strict("<think>a</think><answer>b</answer>"));
  CHECK(!format_strict(""));
  CHECK(format_strict("<think>\nx\n</think>\n<answer>\ny\n</answer>z\n</answer>"));  // a later `\n</answer>$`
  CHECK(format_strict(std::string("<think>\n\xff\xfe\n</think>\n<answer>\n\x80\n</answer>")));
}

TEST_CASE("format_lenient tolerates whitespace, not repeats or trailing text") {
  CHECK(format_lenient("<think>a</think><answer>b</answer>"));
  CHECK(format_lenient("  <think> a </think>\n\n<answer> b </answer>  \n"));
  CHECK(!format_lenient("<think>a</think>x<answer>b</answer>"));
  CHECK(!format_lenient("<think>a</think><answer>b</answer>tail"));
  CHECK(!format_lenient("<think>a</think><answer>b</answer><answer>c</answer>"));
  CHECK(!format_lenient("<answer>b</answer><think>a</think>"));
  CHECK(!format_lenient(""));
}

TEST_CASE("tag_count gives 0.25 per tag present exactly once") {
  CHECK(tag_count("<think>\nr\n</think>\n<answer>\na\n</answer>") == 1.0);
  CHECK(tag_count("<think>\nr") == 0.25);
  CHECK(tag_count("<think>\n<think>\n") == 0.0);
  CHECK(tag_count("") == 0.0);
  CHECK(count_occurrences("aaaa", "aa") == 2);  // non-overlapping, as str.count
}
