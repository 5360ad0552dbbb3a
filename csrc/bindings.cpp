// pybind11 bindings of r1fast._C: type conversion and GIL release only; the logic lives in csrc/rewards/.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <string_view>
#include <vector>

#include "parallel.hpp"
#include "rewards/compare.hpp"
#include "rewards/countdown.hpp"
#include "rewards/extract.hpp"
#include "rewards/format.hpp"
#include "rewards/language.hpp"
#include "rewards/text.hpp"

namespace py = pybind11;
namespace rw = r1fast::rewards;

namespace {

// Strings arrive as UTF-8 bytes (r1fast.rewards encodes every str with 'surrogatepass'; bytes pass through), so
// any Python string is accepted.
template <class Fn>
std::vector<double> batch(const std::vector<std::string>& texts, int threads, Fn fn) {
  std::vector<double> out(texts.size());
  {
    py::gil_scoped_release release;
    r1fast::parallel_for(texts.size(), threads, [&](std::size_t i) { out[i] = fn(std::string_view(texts[i])); });
  }
  return out;
}

// Same, with the sample index (for per-sample arguments).
template <class Fn>
std::vector<double> batch_indexed(std::size_t n, int threads, Fn fn) {
  std::vector<double> out(n);
  {
    py::gil_scoped_release release;
    r1fast::parallel_for(n, threads, [&](std::size_t i) { out[i] = fn(i); });
  }
  return out;
}

void check_same_length(std::size_t a, std::size_t b, const char* what) {
  if (a != b) throw py::value_error(std::string(what) + ": got " + std::to_string(a) + " completions and " +
                                    std::to_string(b) + " entries");
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "r1fast C++ core: rule-based rewards";

  m.def("format_reward", [](std::string_view s, bool strict) {
    return (strict ? rw::format_strict(s) : rw::format_lenient(s)) ? 1.0 : 0.0;
  }, py::arg("text"), py::arg("strict") = true);
  m.def("format_reward_batch", [](const std::vector<std::string>& texts, bool strict, int threads) {
    return batch(texts, threads, [strict](std::string_view s) {
      return (strict ? rw::format_strict(s) : rw::format_lenient(s)) ? 1.0 : 0.0;
    });
  }, py::arg("texts"), py::arg("strict") = true, py::arg("threads") = 0);

  m.def("tag_count_reward", [](std::string_view s) { return rw::tag_count(s); }, py::arg("text"));
  m.def("tag_count_reward_batch", [](const std::vector<std::string>& texts, int threads) {
    return batch(texts, threads, [](std::string_view s) { return rw::tag_count(s); });
  }, py::arg("texts"), py::arg("threads") = 0);

  m.def("accuracy_batch", [](const std::vector<std::string>& completions, const std::vector<std::string>& golds,
                             double rel_tol, int threads) {
    check_same_length(completions.size(), golds.size(), "accuracy");
    const rw::AccuracyOptions options{rel_tol};
    return batch_indexed(completions.size(), threads, [&](std::size_t i) {
      return static_cast<double>(rw::accuracy(completions[i], golds[i], options));
    });
  }, py::arg("completions"), py::arg("golds"), py::arg("rel_tol") = 1e-6, py::arg("threads") = 0,
  "1.0 correct, 0.0 wrong, -1.0 where the gold answer cannot be parsed.");
  m.def("answers_equal", [](const std::string& gold, const std::string& predicted, double rel_tol) {
    return rw::answers_equal(gold, predicted, rw::AccuracyOptions{rel_tol});
  }, py::arg("gold"), py::arg("predicted"), py::arg("rel_tol") = 1e-6);
  m.def("extract_answer", [](const std::string& text) { return py::bytes(std::string(rw::extract_answer(text))); },
        py::arg("text"));

  m.def("language_consistency_batch", [](const std::vector<std::string>& texts,
                                         const std::vector<std::string>& languages, bool think_only, int threads) {
    check_same_length(texts.size(), languages.size(), "language_consistency");
    std::vector<rw::Language> langs;
    langs.reserve(languages.size());
    for (const std::string& code : languages) {
      const rw::Language l = rw::language_from_code(code);
      if (l == rw::Language::kUnknown) throw py::value_error("unsupported language code: '" + code + "'");
      langs.push_back(l);
    }
    return batch_indexed(texts.size(), threads, [&](std::size_t i) {
      return rw::language_consistency(texts[i], langs[i], think_only);
    });
  }, py::arg("texts"), py::arg("languages"), py::arg("think_only") = true, py::arg("threads") = 0);

  m.def("countdown_batch", [](const std::vector<std::string>& texts,
                              const std::vector<std::vector<std::int64_t>>& numbers,
                              const std::vector<std::int64_t>& targets, double format_score, int threads) {
    check_same_length(texts.size(), numbers.size(), "countdown numbers");
    check_same_length(texts.size(), targets.size(), "countdown targets");
    return batch_indexed(texts.size(), threads, [&](std::size_t i) {
      return rw::countdown(texts[i], numbers[i], targets[i], format_score);
    });
  }, py::arg("texts"), py::arg("numbers"), py::arg("targets"), py::arg("format_score") = 0.1,
  py::arg("threads") = 0);

  m.def("reasoning_steps_batch", [](const std::vector<std::string>& texts, int threads) {
    return batch(texts, threads, [](std::string_view s) { return rw::reasoning_steps(s); });
  }, py::arg("texts"), py::arg("threads") = 0);
  m.def("repetition_penalty_batch", [](const std::vector<std::string>& lowered_texts, std::size_t ngram_size,
                                       double max_penalty, int threads) {
    if (ngram_size < 1 || ngram_size > 64) throw py::value_error("ngram_size must be in [1, 64]");
    return batch(lowered_texts, threads, [=](std::string_view s) {
      return rw::repetition_penalty(s, ngram_size, max_penalty);
    });
  }, py::arg("lowered_texts"), py::arg("ngram_size"), py::arg("max_penalty"), py::arg("threads") = 0);
}
