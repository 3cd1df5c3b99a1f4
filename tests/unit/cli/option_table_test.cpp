#define BOOST_TEST_MODULE option_table
#include <boost/test/unit_test.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cli/option_table.hpp"
#include "support/cli.hpp"

using sm::cli::arity;
using sm::cli::grammar;
using sm::cli::option;
using sm::cli::parse_options;
using sm::cli::parse_outcome;
using sm::cli::words_rule;
using sm::cli::action;
using args = std::vector<std::string>;

namespace {

// A table of three options that records what it was given, in the order applied.
struct recorder {
  std::vector<std::string> applied;  // "name=value"
  std::vector<std::string> words;
  std::vector<option> table() {
    auto record = [this](std::string name) {
      return [this, name](const std::string& v) -> std::string {
        if (v == "bad") return "bad value";
        applied.push_back(name + "=" + v);
        return {};
      };
    };
    return {{"size", arity::value, "T_SIZE", record("size")},
            {"force", arity::bare, "", record("force")},
            {"verbose", arity::toggle, "T_VERBOSE", record("verbose")}};
  }
};

struct result {
  parse_outcome outcome;
  recorder seen;
};

result parse(const args& a, words_rule words, std::map<std::string, std::string> env = {}) {
  result r;
  grammar rules;
  rules.help_hint = "t --help";
  rules.words = words;
  rules.version = words == words_rule::command;
  if (words != words_rule::none) {
    rules.take_words = [&r](const std::vector<std::string>& w) {
      r.seen.words = w;
      return w.size() > 0 && w[0] == "wrong" ? std::string("wrong word") : std::string();
    };
  }
  r.outcome = parse_options(a, r.seen.table(), rules,
                            [&env](const std::string& name) -> std::optional<std::string> {
                              const auto it = env.find(name);
                              if (it == env.end()) return std::nullopt;
                              return it->second;
                            });
  return r;
}

void expect_error(const args& a, words_rule words, const std::string& message,
                  std::map<std::string, std::string> env = {}) {
  const result r = parse(a, words, std::move(env));
  BOOST_TEST(r.outcome.what == action::error);
  BOOST_TEST(r.outcome.error == message);
}

}  // namespace

BOOST_AUTO_TEST_CASE(both_forms_and_table_order) {
  const result r = parse({"--verbose", "--size=1", "--force", "--size", "2"}, words_rule::none);
  BOOST_TEST(r.outcome.what == action::run);
  // The last of a repeated flag counts; values are applied in the table's order.
  BOOST_TEST((r.seen.applied == args{"size=2", "force=true", "verbose=true"}));
  BOOST_TEST((parse({"--verbose=false"}, words_rule::none).seen.applied == args{"verbose=false"}));
  BOOST_TEST((parse({"--size", "-x"}, words_rule::none).seen.applied == args{"size=-x"}));
  BOOST_TEST((parse({"--size=a=b"}, words_rule::none).seen.applied == args{"size=a=b"}));
}

BOOST_AUTO_TEST_CASE(variables_and_flags_winning) {
  const std::map<std::string, std::string> env = {{"T_SIZE", "5"}, {"T_VERBOSE", "no"}};
  BOOST_TEST((parse({}, words_rule::none, env).seen.applied == args{"size=5", "verbose=no"}));
  BOOST_TEST(
      (parse({"--size", "6"}, words_rule::none, env).seen.applied == args{"size=6", "verbose=no"}));
  // A flag replaces a bad variable; a bad variable is named when it is used.
  BOOST_TEST(parse({"--size", "6"}, words_rule::none, {{"T_SIZE", "bad"}}).outcome.what ==
             action::run);
  expect_error({}, words_rule::none, "T_SIZE: bad value", {{"T_SIZE", "bad"}});
  expect_error({"--size", "bad"}, words_rule::none, "--size: bad value");
}

BOOST_AUTO_TEST_CASE(usage_errors) {
  expect_error({"--nope"}, words_rule::none, "unknown option --nope (see t --help)");
  expect_error({"--nope=1"}, words_rule::none, "unknown option --nope (see t --help)");
  expect_error({"-x"}, words_rule::anywhere, "unknown option -x (see t --help)");
  expect_error({"--size"}, words_rule::none, "option --size needs a value");
  expect_error({"--force=yes"}, words_rule::none, "option --force takes no value");
  expect_error({"extra"}, words_rule::none, "unexpected argument \"extra\" (see t --help)");
  expect_error({"--", "extra"}, words_rule::none, "unexpected argument \"extra\" (see t --help)");
  expect_error({"--"}, words_rule::command, "\"--\" must be followed by a command");
  // A wrong word is reported before a wrong value.
  expect_error({"--size", "bad", "wrong"}, words_rule::anywhere, "wrong word");
}

BOOST_AUTO_TEST_CASE(help_and_version) {
  BOOST_TEST(parse({"--size", "1", "-h"}, words_rule::none).outcome.what == action::help);
  BOOST_TEST(parse({"--help", "--nope"}, words_rule::none).outcome.what == action::help);
  BOOST_TEST(parse({"-V"}, words_rule::command).outcome.what == action::version);
  expect_error({"--version"}, words_rule::none, "unknown option --version (see t --help)");
  // A value and the words after "--" are never options.
  BOOST_TEST((parse({"--size", "--help"}, words_rule::none).seen.applied == args{"size=--help"}));
  BOOST_TEST(parse({"--", "--help"}, words_rule::anywhere).outcome.what == action::run);
}

BOOST_AUTO_TEST_CASE(words_start_a_command) {
  const result r = parse({"--size", "1", "sleep", "--force", "--", "x"}, words_rule::command);
  BOOST_TEST(r.outcome.what == action::run);
  BOOST_TEST((r.seen.words == args{"sleep", "--force", "--", "x"}));
  BOOST_TEST((r.seen.applied == args{"size=1"}));
  BOOST_TEST((parse({"--", "--help"}, words_rule::command).seen.words == args{"--help"}));
  BOOST_TEST((parse({"-", "x"}, words_rule::command).seen.words == args{"-", "x"}));
}

BOOST_AUTO_TEST_CASE(words_anywhere) {
  const result r = parse({"a", "--force", "b", "--", "-c", "--size"}, words_rule::anywhere);
  BOOST_TEST(r.outcome.what == action::run);
  BOOST_TEST((r.seen.words == args{"a", "b", "-c", "--size"}));
  BOOST_TEST((r.seen.applied == args{"force=true"}));
}
