// A small deterministic generator for the seeded fuzz loops: the same seed gives the same
// inputs on every machine, so a failure reproduces.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sm::test {

struct seeded_random {
  std::uint64_t state;
  std::uint32_t next() {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;  // Knuth's MMIX LCG
    return static_cast<std::uint32_t>(state >> 33);
  }
  std::size_t below(std::size_t n) { return n == 0 ? 0 : next() % n; }
};

}  // namespace sm::test
