// libFuzzer target over every reward: any bytes must be handled without a crash, a sanitizer report, or a slow
// sample. Built with -DR1FAST_BUILD_FUZZ=ON (clang); see README "Fuzzing".
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "rewards/compare.hpp"
#include "rewards/countdown.hpp"
#include "rewards/extract.hpp"
#include "rewards/format.hpp"
#include "rewards/language.hpp"
#include "rewards/text.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace rw = r1fast::rewards;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  // The first '\x01' splits the input into a completion and a gold answer.
  const std::size_t cut = input.find('\x01');
  const std::string_view completion = input.substr(0, cut);
  const std::string_view gold = cut == std::string_view::npos ? input : input.substr(cut + 1);
  const rw::AccuracyOptions options;
  (void)rw::accuracy(completion, gold, options);
  (void)rw::answers_equal(gold, completion, options);
  (void)rw::extract_answer(input);
  (void)rw::format_strict(input);
  (void)rw::format_lenient(input);
  (void)rw::tag_count(input);
  (void)rw::language_consistency(input, rw::Language::kEn, false);
  (void)rw::language_consistency(input, rw::Language::kZh, true);
  (void)rw::countdown(input, std::vector<std::int64_t>{1, 2, 3, 4}, 24, 0.1);
  (void)rw::reasoning_steps(input);
  (void)rw::repetition_penalty(input, 3, -1.0);
  return 0;
}
