// A minimal self-registering C++ test harness (no external framework needed for ctest).
#pragma once

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace r1fast::test {

struct Case {
  const char* name;
  std::function<void()> fn;
};

inline std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}

inline int& failures() {
  static int n = 0;
  return n;
}

struct Register {
  Register(const char* name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};

}  // namespace r1fast::test

#define R1_CONCAT_INNER(a, b) a##b
#define R1_CONCAT(a, b) R1_CONCAT_INNER(a, b)
#define TEST_CASE(name)                                                                   \
  static void R1_CONCAT(test_fn_, __LINE__)();                                            \
  static ::r1fast::test::Register R1_CONCAT(test_reg_, __LINE__)(name, &R1_CONCAT(test_fn_, __LINE__)); \
  static void R1_CONCAT(test_fn_, __LINE__)()

#define CHECK(cond)                                                                   \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);  \
      ++::r1fast::test::failures();                                                   \
    }                                                                                 \
  } while (0)
