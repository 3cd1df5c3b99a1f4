#define BOOST_TEST_MODULE checkpoint_id
#include <boost/test/unit_test.hpp>

#include <string>
#include <string_view>

#include "checkpoint/checkpoint_id.hpp"

using sm::checkpoint::valid_checkpoint_id;
using namespace std::string_view_literals;

BOOST_AUTO_TEST_CASE(valid_ids) {
  for (std::string_view id :
       {"test1"sv, "a"sv, "Z"sv, "0"sv, "v1.2.3"sv, "my_checkpoint-2"sv, "a.."sv, "_hidden-not"sv,
        "-leading-dash"sv, "x.partial.not"sv, "partial"sv, "ABCxyz019._-"sv}) {
    BOOST_TEST_INFO("id: " << id);
    BOOST_TEST(valid_checkpoint_id(id));
  }
}

BOOST_AUTO_TEST_CASE(dot_names_rejected) {
  BOOST_TEST(!valid_checkpoint_id("."));
  BOOST_TEST(!valid_checkpoint_id(".."));
  BOOST_TEST(!valid_checkpoint_id(".hidden"));
  BOOST_TEST(!valid_checkpoint_id("..."));
  BOOST_TEST(!valid_checkpoint_id(".partial"));
  // A checkpoint being built is <id>.partial: such a name is never an id of its own (start-up
  // removes it).
  BOOST_TEST(!valid_checkpoint_id("x.partial"));
  BOOST_TEST(!valid_checkpoint_id("test1.partial"));
}

BOOST_AUTO_TEST_CASE(separators_and_nul_rejected) {
  BOOST_TEST(!valid_checkpoint_id("a/b"));
  BOOST_TEST(!valid_checkpoint_id("/a"));
  BOOST_TEST(!valid_checkpoint_id("a/"));
  BOOST_TEST(!valid_checkpoint_id("../etc"));
  BOOST_TEST(!valid_checkpoint_id("a\\b"));
  BOOST_TEST(!valid_checkpoint_id("a\0b"sv));
  BOOST_TEST(!valid_checkpoint_id("ab\0"sv));
  BOOST_TEST(!valid_checkpoint_id("\0"sv));
}

BOOST_AUTO_TEST_CASE(length_limits) {
  BOOST_TEST(!valid_checkpoint_id(""));
  BOOST_TEST(valid_checkpoint_id(std::string(1, 'a')));
  BOOST_TEST(valid_checkpoint_id(std::string(127, 'a')));
  BOOST_TEST(valid_checkpoint_id(std::string(128, 'a')));
  BOOST_TEST(!valid_checkpoint_id(std::string(129, 'a')));
  BOOST_TEST(!valid_checkpoint_id(std::string(10000, 'a')));
}

BOOST_AUTO_TEST_CASE(spaces_and_controls_rejected) {
  for (std::string_view id :
       {" "sv, "a b"sv, " a"sv, "a "sv, "a\tb"sv, "a\nb"sv, "a\rb"sv, "a\x7f"sv, "a\x01"sv}) {
    BOOST_TEST_INFO("id with control/space, size " << id.size());
    BOOST_TEST(!valid_checkpoint_id(id));
  }
}

BOOST_AUTO_TEST_CASE(other_punctuation_rejected) {
  for (char c : std::string_view("!\"#$%&'()*+,:;<=>?@[]^`{|}~")) {
    std::string id = "a";
    id += c;
    id += "b";
    BOOST_TEST_INFO("id: " << id);
    BOOST_TEST(!valid_checkpoint_id(id));
  }
}

BOOST_AUTO_TEST_CASE(unicode_rejected) {
  BOOST_TEST(!valid_checkpoint_id("caf\xc3\xa9"));  // "café"
  BOOST_TEST(
      !valid_checkpoint_id("\xe2\x80\xae"
                           "abc"));  // right-to-left override
  BOOST_TEST(
      !valid_checkpoint_id("a\xef\xbc\x8f"
                           "b"));  // fullwidth solidus
  BOOST_TEST(!valid_checkpoint_id("\xff"));
}

BOOST_AUTO_TEST_CASE(rule_text_mentions_limits) {
  const std::string_view rule = sm::checkpoint::checkpoint_id_rule;
  BOOST_TEST(rule.find("128") != std::string_view::npos);
}
