#define BOOST_TEST_MODULE supervisor_component
#include <boost/test/unit_test.hpp>

#include <nlohmann/json.hpp>

#include "supervisor/component.hpp"
#include "supervisor/process_component.hpp"

using sm::supervisor::cascade;
using sm::supervisor::start_order;
using state = sm::supervisor::state;

BOOST_AUTO_TEST_CASE(cascade_from_parts_to_system) {
  using v = std::vector<state>;
  BOOST_TEST(cascade(v{}) == "running");
  BOOST_TEST(cascade(v{state::running, state::running}) == "running");
  BOOST_TEST(cascade(v{state::running, state::failed}) == "degraded");
  BOOST_TEST(cascade(v{state::failed, state::failed}) == "error");
  BOOST_TEST(cascade(v{state::stopped, state::stopped}) == "stopped");
  BOOST_TEST(cascade(v{state::running, state::stopped}) == "degraded");
  BOOST_TEST(cascade(v{state::running, state::starting}) == "starting");
  BOOST_TEST(cascade(v{state::failed, state::restarting}) == "starting");
  BOOST_TEST(cascade(v{state::pending}) == "starting");
  BOOST_TEST(cascade(v{state::running, state::stopping, state::starting}) == "stopping");
}

namespace {
sm::config::configuration parse(const char* text) {
  auto r = sm::config::parse(nlohmann::json::parse(text),
                             [](const std::string&) { return std::optional<std::string>(); });
  BOOST_REQUIRE(r.problems.empty());
  return *r.config;
}
}  // namespace

BOOST_AUTO_TEST_CASE(dependencies_first_then_stacks_order) {
  const auto c = parse(R"({"storage": {"bucket": "bkt", "endpoint": "file:///x"},
    "components": {"web": {"command": ["w"], "depends_on": ["api", "db"]},
                   "api": {"command": ["a"], "depends_on": ["db"]},
                   "db": {"command": ["d"]},
                   "cron": {"command": ["c"]},
                   "unused": {"command": ["u"]}},
    "stacks": ["cron", "web"]})");
  const std::vector<std::string> expected{"cron", "db", "api", "web"};
  BOOST_TEST(start_order(c) == expected, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(builtin_stacks_are_not_components) {
  const auto c = parse(R"({"storage": {"bucket": "bkt", "endpoint": "file:///x"},
    "components": {"a": {"command": ["a"]}}, "stacks": ["database", "a"]})");
  const std::vector<std::string> expected{"a"};
  BOOST_TEST(start_order(c) == expected, boost::test_tools::per_element());
}
