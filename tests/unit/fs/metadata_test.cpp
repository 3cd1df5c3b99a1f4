#define BOOST_TEST_MODULE fs_metadata
#include <boost/test/unit_test.hpp>
BOOST_AUTO_TEST_CASE(x) {}
