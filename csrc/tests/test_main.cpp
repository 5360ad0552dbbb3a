#include "tests/test_main.hpp"

int main() {
  int ran = 0;
  for (const auto& c : r1fast::test::registry()) {
    const int before = r1fast::test::failures();
    c.fn();
    std::printf("%s %s\n", r1fast::test::failures() == before ? "PASS" : "FAIL", c.name);
    ++ran;
  }
  const int failed = r1fast::test::failures();
  std::printf("%d checks failed in %d cases\n", failed, ran);
  return failed == 0 && ran > 0 ? 0 : 1;
}
