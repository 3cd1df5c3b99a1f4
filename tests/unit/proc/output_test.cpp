#define BOOST_TEST_MODULE proc_output
#include <boost/test/unit_test.hpp>

#include "proc/output.hpp"

using sm::proc::take_lines;

BOOST_AUTO_TEST_CASE(whole_lines_are_prefixed_and_the_rest_waits) {
  std::string pending = "one\ntwo\nthr", out;
  take_lines(pending, "[a] ", 1024, out);
  BOOST_TEST(out == "[a] one\n[a] two\n");
  BOOST_TEST(pending == "thr");
  out.clear();
  pending += "ee\n";
  take_lines(pending, "[a] ", 1024, out);
  BOOST_TEST(out == "[a] three\n");
  BOOST_TEST(pending.empty());
}

BOOST_AUTO_TEST_CASE(empty_lines_and_bytes_pass_unchanged) {
  std::string pending("\n\x01\xff\r\n", 5), out;
  take_lines(pending, "> ", 1024, out);
  BOOST_TEST(out == std::string("> \n> \x01\xff\r\n", 9));
}

BOOST_AUTO_TEST_CASE(an_endless_line_is_cut_at_the_limit) {
  std::string pending(10, 'x'), out;
  take_lines(pending, "p:", 4, out);
  BOOST_TEST(out == "p:xxxx\np:xxxx\n");
  BOOST_TEST(pending == "xx");
}
