// pybind11 bindings of r1fast._C: type conversion and GIL release only; the logic lives in csrc/rewards/.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <string_view>
#include <vector>

#include "parallel.hpp"
#include "rewards/format.hpp"

namespace py = pybind11;
namespace rw = r1fast::rewards;

namespace {

// Strings arrive as UTF-8 bytes (pybind11 encodes str; bytes pass through), so any Python string is accepted.
template <class Fn>
std::vector<double> batch(const std::vector<std::string>& texts, int threads, Fn fn) {
  std::vector<double> out(texts.size());
  {
    py::gil_scoped_release release;
    r1fast::parallel_for(texts.size(), threads, [&](std::size_t i) { out[i] = fn(std::string_view(texts[i])); });
  }
  return out;
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
}
