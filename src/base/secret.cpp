#include "base/secret.hpp"

namespace sm {

bool constant_time_equal(std::string_view given, std::string_view expected) {
  // volatile keeps the compiler from turning the loop into an early-exit memcmp.
  volatile unsigned char difference = given.size() == expected.size() ? 0 : 1;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    difference = difference | (g ^ static_cast<unsigned char>(expected[i]));
  }
  return difference == 0;
}

}  // namespace sm
