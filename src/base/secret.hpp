// Comparison of secrets whose duration does not depend on where they differ.
#pragma once

#include <string_view>

namespace sm {

// True when a and b are equal. Runs over every byte of `expected` whatever `given` holds, so the
// time taken leaks neither the position of the first difference nor (beyond `expected`'s own
// length) anything about `given`.
bool constant_time_equal(std::string_view given, std::string_view expected);

}  // namespace sm
