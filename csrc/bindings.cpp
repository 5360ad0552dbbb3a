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

// A batch of texts as UTF-8 views, built with the GIL held and read without it. str items are read in place
// (PyUnicode_AsUTF8AndSize: no copy for ASCII, a cached UTF-8 copy otherwise); a str with lone surrogates is
// encoded with 'surrogatepass' into an owned copy (the C++ side decodes those bytes as U+FFFD); bytes are read
// in place. The sequence must outlive the views (it does: it is the call's argument).
struct Texts {
  std::vector<std::string_view> views;
  std::vector<std::string> owned;
};

Texts texts_from(const py::sequence& seq, const char* what) {
  Texts t;
  const std::size_t n = py::len(seq);
  t.views.resize(n);
  std::vector<std::size_t> owned_at;
  for (std::size_t i = 0; i < n; ++i) {
    const py::object item = seq[i];
    PyObject* o = item.ptr();
    if (PyBytes_Check(o)) {
      char* data = nullptr;
      Py_ssize_t len = 0;
      PyBytes_AsStringAndSize(o, &data, &len);
      t.views[i] = std::string_view(data, static_cast<std::size_t>(len));
    } else if (PyUnicode_Check(o)) {
      Py_ssize_t len = 0;
      const char* data = PyUnicode_AsUTF8AndSize(o, &len);
      if (data != nullptr) {
        t.views[i] = std::string_view(data, static_cast<std::size_t>(len));
      } else {
        PyErr_Clear();
        const py::object encoded =
            py::reinterpret_steal<py::object>(PyUnicode_AsEncodedString(o, "utf-8", "surrogatepass"));
        if (!encoded) throw py::error_already_set();
        t.owned.emplace_back(PyBytes_AS_STRING(encoded.ptr()), static_cast<std::size_t>(PyBytes_GET_SIZE(encoded.ptr())));
        owned_at.push_back(i);
      }
    } else {
      throw py::type_error(std::string(what) + ": expected str or bytes items, got " +
                           std::string(py::str(py::type::handle_of(item).attr("__name__"))));
    }
  }
  for (std::size_t k = 0; k < owned_at.size(); ++k) t.views[owned_at[k]] = t.owned[k];
  return t;
}

template <class Fn>
std::vector<double> batch(const py::sequence& seq, int threads, Fn fn) {
  const Texts texts = texts_from(seq, "texts");
  std::vector<double> out(texts.views.size());
  {
    py::gil_scoped_release release;
    r1fast::parallel_for(out.size(), threads, [&](std::size_t i) { out[i] = fn(texts.views[i]); });
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
  m.def("format_reward_batch", [](const py::sequence& texts, bool strict, int threads) {
    return batch(texts, threads, [strict](std::string_view s) {
      return (strict ? rw::format_strict(s) : rw::format_lenient(s)) ? 1.0 : 0.0;
    });
  }, py::arg("texts"), py::arg("strict") = true, py::arg("threads") = 0);

  m.def("tag_count_reward", [](std::string_view s) { return rw::tag_count(s); }, py::arg("text"));
  m.def("tag_count_reward_batch", [](const py::sequence& texts, int threads) {
    return batch(texts, threads, [](std::string_view s) { return rw::tag_count(s); });
  }, py::arg("texts"), py::arg("threads") = 0);

  m.def("accuracy_batch", [](const py::sequence& completions, const py::sequence& golds, double rel_tol,
                             int threads) {
    const Texts c = texts_from(completions, "completions");
    const Texts g = texts_from(golds, "golds");
    check_same_length(c.views.size(), g.views.size(), "accuracy");
    const rw::AccuracyOptions options{rel_tol};
    return batch_indexed(c.views.size(), threads, [&](std::size_t i) {
      return static_cast<double>(rw::accuracy(c.views[i], g.views[i], options));
    });
  }, py::arg("completions"), py::arg("golds"), py::arg("rel_tol") = 0.0, py::arg("threads") = 0,
  "1.0 correct, 0.0 wrong, -1.0 where the gold answer cannot be parsed.");
  m.def("answers_equal", [](const std::string& gold, const std::string& predicted, double rel_tol) {
    return rw::answers_equal(gold, predicted, rw::AccuracyOptions{rel_tol});
  }, py::arg("gold"), py::arg("predicted"), py::arg("rel_tol") = 0.0);
  m.def("extract_answer", [](const std::string& text) { return py::bytes(std::string(rw::extract_answer(text))); },
        py::arg("text"));

  m.def("language_consistency_batch", [](const py::sequence& seq, const std::vector<std::string>& languages,
                                         bool think_only, int threads) {
    const Texts texts = texts_from(seq, "texts");
    check_same_length(texts.views.size(), languages.size(), "language_consistency");
    std::vector<rw::Language> langs;
    langs.reserve(languages.size());
    for (const std::string& code : languages) {
      const rw::Language l = rw::language_from_code(code);
      if (l == rw::Language::kUnknown) throw py::value_error("unsupported language code: '" + code + "'");
      langs.push_back(l);
    }
    return batch_indexed(texts.views.size(), threads, [&](std::size_t i) {
      return rw::language_consistency(texts.views[i], langs[i], think_only);
    });
  }, py::arg("texts"), py::arg("languages"), py::arg("think_only") = true, py::arg("threads") = 0);

  m.def("countdown_batch", [](const py::sequence& seq, const std::vector<std::vector<std::int64_t>>& numbers,
                              const std::vector<std::int64_t>& targets, double format_score, int threads) {
    const Texts texts = texts_from(seq, "texts");
    check_same_length(texts.views.size(), numbers.size(), "countdown numbers");
    check_same_length(texts.views.size(), targets.size(), "countdown targets");
    return batch_indexed(texts.views.size(), threads, [&](std::size_t i) {
      return rw::countdown(texts.views[i], numbers[i], targets[i], format_score);
    });
  }, py::arg("texts"), py::arg("numbers"), py::arg("targets"), py::arg("format_score") = 0.1,
  py::arg("threads") = 0);

  m.def("reasoning_steps_batch", [](const py::sequence& texts, int threads) {
    return batch(texts, threads, [](std::string_view s) { return rw::reasoning_steps(s); });
  }, py::arg("texts"), py::arg("threads") = 0);
  m.def("repetition_penalty_batch", [](const py::sequence& lowered_texts, std::size_t ngram_size,
                                       double max_penalty, int threads) {
    if (ngram_size < 1 || ngram_size > 64) throw py::value_error("ngram_size must be in [1, 64]");
    return batch(lowered_texts, threads, [=](std::string_view s) {
      return rw::repetition_penalty(s, ngram_size, max_penalty);
    });
  }, py::arg("lowered_texts"), py::arg("ngram_size"), py::arg("max_penalty"), py::arg("threads") = 0);
}
