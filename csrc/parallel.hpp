// A deterministic parallel-for over [0, n): contiguous static chunks on std::threads, results written by index.
#pragma once

#include <algorithm>
#include <cstddef>
#include <thread>
#include <vector>

namespace r1fast {

// Threads to use for `n` items when the caller asks for `requested` (<= 0: all hardware threads).
inline int resolve_threads(int requested, std::size_t n) {
  int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int t = requested > 0 ? requested : hw;
  return static_cast<int>(std::max<std::size_t>(1, std::min<std::size_t>(static_cast<std::size_t>(t), n)));
}

// Calls fn(i) for every i in [0, n). fn must not throw (reward functions are noexcept by construction).
template <class Fn>
void parallel_for(std::size_t n, int requested_threads, Fn&& fn) {
  const int threads = resolve_threads(requested_threads, n);
  if (threads <= 1 || n < 2) {
    for (std::size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  // Interleaved chunks balance long and short samples better than one block per thread.
  const std::size_t chunk = std::max<std::size_t>(1, n / (static_cast<std::size_t>(threads) * 8));
  std::vector<std::thread> pool;
  pool.reserve(static_cast<std::size_t>(threads));
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (std::size_t start = static_cast<std::size_t>(t) * chunk; start < n;
           start += static_cast<std::size_t>(threads) * chunk) {
        const std::size_t stop = std::min(n, start + chunk);
        for (std::size_t i = start; i < stop; ++i) fn(i);
      }
    });
  }
  for (auto& th : pool) th.join();
}

}  // namespace r1fast
