// A coroutine's failure, caught by its completion handler, turned into the test's failure with
// the exception's message (rather than an abort through the handler).
#pragma once

#include <boost/test/unit_test.hpp>

#include <exception>
#include <string>

namespace test_support {

inline void fail_on(const std::exception_ptr& failure) {
  if (!failure) return;
  try {
    std::rethrow_exception(failure);
  } catch (const std::exception& e) {
    BOOST_FAIL(std::string("exception: ") + e.what());
  }
}

}  // namespace test_support
