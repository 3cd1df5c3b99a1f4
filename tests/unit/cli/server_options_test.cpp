#define BOOST_TEST_MODULE options
#include <boost/test/unit_test.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cli/server_options.hpp"
#include "support/cli.hpp"

using namespace std::chrono_literals;
using sm::cli::parse_listen_address;
using sm::cli::parse_server_command_line;
using sm::cli::server_command_line;
using action = server_command_line::action;
using args = std::vector<std::string>;

using test_support::env_of;

namespace {

server_command_line parse(const args& a, std::map<std::string, std::string> env = {}) {
  return parse_server_command_line(a, env_of(std::move(env)));
}

server_command_line parse_ok(const args& a, std::map<std::string, std::string> env = {}) {
  server_command_line c = parse(a, std::move(env));
  BOOST_REQUIRE_MESSAGE(c.what == action::run, "error: " << c.error);
  return c;
}

// Requires an error whose message names `what` (the flag or the variable).
void expect_error(const args& a, const std::string& what,
                  std::map<std::string, std::string> env = {}) {
  const server_command_line c = parse(a, std::move(env));
  BOOST_TEST(c.what == action::error);
  BOOST_TEST(!c.error.empty());
  BOOST_TEST(c.error.find(what) != std::string::npos,
             "\"" << c.error << "\" does not name " << what);
  BOOST_TEST(c.error.find('\n') == std::string::npos, "error is not one line: " << c.error);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(command_line_parsing)

BOOST_AUTO_TEST_CASE(defaults) {
  const server_command_line c = parse_ok({});
  const sm::cli::server_options& o = c.opts;
  BOOST_TEST(c.error.empty());
  BOOST_TEST(o.listen == "0.0.0.0:8080");
  BOOST_TEST(o.address.host == "0.0.0.0");
  BOOST_TEST(o.address.port == 8080);
  BOOST_TEST(o.data_dir == "data");
  BOOST_TEST(o.tmp_dir == "tmp");
  BOOST_TEST(o.restart_delay.count() == 1000);
  BOOST_TEST(o.timeout_stop.count() == 90'000);
  BOOST_TEST(!o.wait_for_config);
  BOOST_TEST(!o.token_file.has_value());
  BOOST_TEST(!o.token.has_value());
  BOOST_TEST((o.log_level == sm::log::level::info));
  BOOST_TEST((o.log_format == sm::log::format::text));
  BOOST_TEST(o.header_timeout.count() == 10'000);
  BOOST_TEST(o.idle_timeout.count() == 60'000);
  BOOST_TEST(o.max_connections == 1024u);
  BOOST_TEST(o.command.empty());
}

BOOST_AUTO_TEST_CASE(each_flag_both_forms) {
  // Every flag, as "--flag value" and as "--flag=value", must land in its field.
  for (bool with_equals : {false, true}) {
    BOOST_TEST_CONTEXT((with_equals ? "--flag=value" : "--flag value")) {
      auto flag = [&](const std::string& name, const std::string& value) {
        return with_equals ? args{"--" + name + "=" + value} : args{"--" + name, value};
      };
      auto one = [&](const std::string& name, const std::string& value) {
        return parse_ok(flag(name, value)).opts;
      };
      const sm::cli::server_options listen = one("listen", "127.0.0.1:9090");
      BOOST_TEST(listen.listen == "127.0.0.1:9090");
      BOOST_TEST(listen.address.host == "127.0.0.1");
      BOOST_TEST(listen.address.port == 9090);
      BOOST_TEST(one("data-dir", "/var/data").data_dir == "/var/data");
      BOOST_TEST(one("tmp-dir", "/var/tmp2").tmp_dir == "/var/tmp2");
      BOOST_TEST(one("restart-delay", "250ms").restart_delay.count() == 250);
      BOOST_TEST(one("timeout-stop", "2m").timeout_stop.count() == 120'000);
      BOOST_TEST(one("token-file", "/run/token").token_file.value() == "/run/token");
      BOOST_TEST((one("log-format", "json").log_format == sm::log::format::json));
      BOOST_TEST((one("log-level", "debug").log_level == sm::log::level::debug));
      BOOST_TEST((one("log-level", "error").log_level == sm::log::level::error));
      BOOST_TEST(one("header-timeout", "5s").header_timeout.count() == 5000);
      BOOST_TEST(one("idle-timeout", "1m30s").idle_timeout.count() == 90'000);
      BOOST_TEST(one("max-connections", "16").max_connections == 16u);
    }
  }
}

BOOST_AUTO_TEST_CASE(restart_delay_zero_allowed) {
  BOOST_TEST(parse_ok({"--restart-delay", "0"}).opts.restart_delay.count() == 0);
}

BOOST_AUTO_TEST_CASE(wait_for_config_is_a_switch) {
  BOOST_TEST(parse_ok({"--wait-for-config"}).opts.wait_for_config);
  BOOST_TEST(parse_ok({"--wait-for-config=true"}).opts.wait_for_config);
  BOOST_TEST(!parse_ok({"--wait-for-config=false"}).opts.wait_for_config);
  // A switch does not eat the next word.
  const server_command_line c = parse_ok({"--wait-for-config", "--listen", ":1234"});
  BOOST_TEST(c.opts.wait_for_config);
  BOOST_TEST(c.opts.address.port == 1234);
  BOOST_TEST(c.opts.command.empty());
  expect_error({"--wait-for-config=maybe"}, "--wait-for-config");
}

BOOST_AUTO_TEST_CASE(several_flags_together) {
  const server_command_line c = parse_ok({"--listen", "[::1]:80", "--data-dir=/d", "--log-level",
                                          "warn", "--wait-for-config", "--", "sleep", "1000"});
  BOOST_TEST(c.opts.address.host == "::1");
  BOOST_TEST(c.opts.address.port == 80);
  BOOST_TEST(c.opts.data_dir == "/d");
  BOOST_TEST((c.opts.log_level == sm::log::level::warn));
  BOOST_TEST(c.opts.wait_for_config);
  BOOST_TEST((c.opts.command == args{"sleep", "1000"}));
}

BOOST_AUTO_TEST_CASE(later_flag_wins) {
  BOOST_TEST(parse_ok({"--data-dir", "a", "--data-dir", "b"}).opts.data_dir == "b");
}

BOOST_AUTO_TEST_CASE(value_may_start_with_dash_or_contain_equals) {
  BOOST_TEST(parse_ok({"--data-dir", "-weird"}).opts.data_dir == "-weird");
  BOOST_TEST(parse_ok({"--data-dir=a=b"}).opts.data_dir == "a=b");
}

BOOST_AUTO_TEST_CASE(double_dash_then_command) {
  const server_command_line c = parse_ok({"--listen", ":9000", "--", "sh", "-c", "echo --listen"});
  BOOST_TEST((c.opts.command == args{"sh", "-c", "echo --listen"}));
  BOOST_TEST(c.opts.address.port == 9000);
  // After "--", flags belong to the command.
  const server_command_line d = parse_ok({"--", "--help"});
  BOOST_TEST((d.opts.command == args{"--help"}));
}

BOOST_AUTO_TEST_CASE(double_dash_without_command) {
  const server_command_line c = parse({"--"});
  BOOST_TEST((c.what == action::error || (c.what == action::run && c.opts.command.empty())));
}

BOOST_AUTO_TEST_CASE(first_word_starts_command) {
  const server_command_line c = parse_ok({"--data-dir", "/d", "sleep", "--listen", "x", "--", "y"});
  BOOST_TEST(c.opts.data_dir == "/d");
  BOOST_TEST((c.opts.command == args{"sleep", "--listen", "x", "--", "y"}));
  BOOST_TEST(c.opts.listen == "0.0.0.0:8080");
}

BOOST_AUTO_TEST_CASE(help_and_version) {
  BOOST_TEST(parse({"--help"}).what == action::help);
  BOOST_TEST(parse({"-h"}).what == action::help);
  BOOST_TEST(parse({"--version"}).what == action::version);
  BOOST_TEST(parse({"-V"}).what == action::version);
  BOOST_TEST(parse({"--listen", ":1", "--help"}).what == action::help);
  // "--help" as the command's argument is not ours.
  BOOST_TEST(parse({"--", "prog", "--help"}).what == action::run);
  BOOST_TEST(parse({"prog", "--version"}).what == action::run);
}

BOOST_AUTO_TEST_CASE(usage_mentions_every_flag) {
  const std::string usage = sm::cli::server_usage_text();
  for (const char* flag : {"--listen", "--data-dir", "--tmp-dir", "--restart-delay",
                           "--timeout-stop", "--wait-for-config", "--token-file", "--log-format",
                           "--log-level", "--help", "--version"}) {
    BOOST_TEST_INFO(flag);
    BOOST_TEST(usage.find(flag) != std::string::npos);
  }
  BOOST_TEST(usage.find("STATE_MANAGER_LISTEN") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(unknown_flag) {
  expect_error({"--nope"}, "--nope");
  expect_error({"--nope=1"}, "--nope");
  expect_error({"-x"}, "-x");
  expect_error({"--listen", ":80", "--verbose"}, "--verbose");
  expect_error({"--LISTEN", ":80"}, "--LISTEN");
}

BOOST_AUTO_TEST_CASE(missing_value) {
  expect_error({"--listen"}, "--listen");
  expect_error({"--data-dir"}, "--data-dir");
  expect_error({"--restart-delay"}, "--restart-delay");
  expect_error({"--log-level"}, "--log-level");
}

BOOST_AUTO_TEST_CASE(bad_values) {
  expect_error({"--restart-delay", "5"}, "--restart-delay");
  expect_error({"--restart-delay=-1s"}, "--restart-delay");
  expect_error({"--timeout-stop", "1.5s"}, "--timeout-stop");
  expect_error({"--log-level", "loud"}, "--log-level");
  expect_error({"--log-format", "xml"}, "--log-format");
  expect_error({"--listen", "nowhere"}, "--listen");
  expect_error({"--listen", "host:80"}, "--listen");
  expect_error({"--listen=1.2.3.4:70000"}, "--listen");
  expect_error({"--max-connections", "0"}, "--max-connections");
  expect_error({"--max-connections", "lots"}, "--max-connections");
  expect_error({"--header-timeout", "0"}, "--header-timeout");
  expect_error({"--data-dir="}, "--data-dir");
}

BOOST_AUTO_TEST_CASE(error_stops_at_first_problem_and_keeps_command_empty) {
  const server_command_line c = parse({"--restart-delay", "5", "sleep", "1"});
  BOOST_TEST(c.what == action::error);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(environment)

BOOST_AUTO_TEST_CASE(variables_are_used) {
  const server_command_line c = parse_ok({}, {{"STATE_MANAGER_LISTEN", "127.0.0.1:7000"},
                                              {"STATE_MANAGER_DATA_DIR", "/env/data"},
                                              {"STATE_MANAGER_TMP_DIR", "/env/tmp"},
                                              {"STATE_MANAGER_RESTART_DELAY", "3s"},
                                              {"STATE_MANAGER_TIMEOUT_STOP", "10s"},
                                              {"STATE_MANAGER_WAIT_FOR_CONFIG", "true"},
                                              {"STATE_MANAGER_TOKEN_FILE", "/env/token"},
                                              {"STATE_MANAGER_LOG_FORMAT", "json"},
                                              {"STATE_MANAGER_LOG_LEVEL", "warn"},
                                              {"STATE_MANAGER_HEADER_TIMEOUT", "2s"},
                                              {"STATE_MANAGER_IDLE_TIMEOUT", "5m"},
                                              {"STATE_MANAGER_MAX_CONNECTIONS", "7"}});
  const sm::cli::server_options& o = c.opts;
  BOOST_TEST(o.listen == "127.0.0.1:7000");
  BOOST_TEST(o.address.host == "127.0.0.1");
  BOOST_TEST(o.address.port == 7000);
  BOOST_TEST(o.data_dir == "/env/data");
  BOOST_TEST(o.tmp_dir == "/env/tmp");
  BOOST_TEST(o.restart_delay.count() == 3000);
  BOOST_TEST(o.timeout_stop.count() == 10'000);
  BOOST_TEST(o.wait_for_config);
  BOOST_TEST(o.token_file.value() == "/env/token");
  BOOST_TEST((o.log_format == sm::log::format::json));
  BOOST_TEST((o.log_level == sm::log::level::warn));
  BOOST_TEST(o.header_timeout.count() == 2000);
  BOOST_TEST(o.idle_timeout.count() == 300'000);
  BOOST_TEST(o.max_connections == 7u);
}

BOOST_AUTO_TEST_CASE(flags_win_over_variables) {
  const server_command_line c = parse_ok({"--listen", "127.0.0.1:1", "--data-dir=/flag",
                                          "--restart-delay", "0", "--log-level", "error"},
                                         {{"STATE_MANAGER_LISTEN", "127.0.0.1:7000"},
                                          {"STATE_MANAGER_DATA_DIR", "/env/data"},
                                          {"STATE_MANAGER_RESTART_DELAY", "3s"},
                                          {"STATE_MANAGER_LOG_LEVEL", "debug"},
                                          {"STATE_MANAGER_TMP_DIR", "/env/tmp"}});
  BOOST_TEST(c.opts.address.port == 1);
  BOOST_TEST(c.opts.listen == "127.0.0.1:1");
  BOOST_TEST(c.opts.data_dir == "/flag");
  BOOST_TEST(c.opts.restart_delay.count() == 0);
  BOOST_TEST((c.opts.log_level == sm::log::level::error));
  // A variable without its flag still applies.
  BOOST_TEST(c.opts.tmp_dir == "/env/tmp");
}

BOOST_AUTO_TEST_CASE(wait_for_config_variable_false) {
  BOOST_TEST(!parse_ok({}, {{"STATE_MANAGER_WAIT_FOR_CONFIG", "false"}}).opts.wait_for_config);
  BOOST_TEST(parse_ok({"--wait-for-config"}, {{"STATE_MANAGER_WAIT_FOR_CONFIG", "false"}})
                 .opts.wait_for_config);
}

BOOST_AUTO_TEST_CASE(bad_variable_named_in_error) {
  expect_error({}, "STATE_MANAGER_RESTART_DELAY", {{"STATE_MANAGER_RESTART_DELAY", "5"}});
  expect_error({}, "STATE_MANAGER_LISTEN", {{"STATE_MANAGER_LISTEN", "nowhere"}});
  expect_error({}, "STATE_MANAGER_LOG_LEVEL", {{"STATE_MANAGER_LOG_LEVEL", "loud"}});
}

BOOST_AUTO_TEST_CASE(flag_replaces_a_bad_variable) {
  // The variable is never consulted once its flag is given, so its bad value is no error.
  const server_command_line c =
      parse_ok({"--listen", "127.0.0.1:80", "--restart-delay=2s"},
               {{"STATE_MANAGER_LISTEN", "garbage"}, {"STATE_MANAGER_RESTART_DELAY", "5"}});
  BOOST_TEST(c.opts.address.port == 80);
  BOOST_TEST(c.opts.restart_delay.count() == 2000);
}

BOOST_AUTO_TEST_CASE(restart_policy_and_breaker_flags) {
  const server_command_line c =
      parse_ok({"--restart", "on-failure", "--restart-backoff-max=1m", "--restart-max", "5",
                "--restart-window", "30s", "--", "true"});
  BOOST_TEST(c.opts.restart == "on-failure");
  BOOST_TEST(c.opts.restart_backoff_max.count() == 60000);
  BOOST_TEST(c.opts.restart_max == 5u);
  BOOST_TEST(c.opts.restart_window.count() == 30000);
  BOOST_TEST(parse_ok({}).opts.restart == "always");
  BOOST_TEST(parse_ok({}, {{"STATE_MANAGER_RESTART", "never"}}).opts.restart == "never");
  expect_error({"--restart", "sometimes"}, "--restart");
  expect_error({"--restart-max", "-1"}, "--restart-max");
  expect_error({"--restart-window", "0"}, "--restart-window");
}

BOOST_AUTO_TEST_CASE(token_from_environment) {
  const server_command_line c = parse_ok({}, {{"STATE_MANAGER_TOKEN", "s3cret"}});
  BOOST_TEST(c.opts.token.value() == "s3cret");
  BOOST_TEST(!c.opts.token_file.has_value());
}

BOOST_AUTO_TEST_CASE(token_file_flag_wins_over_token_variable) {
  const server_command_line c =
      parse_ok({"--token-file", "/run/t"}, {{"STATE_MANAGER_TOKEN", "s3cret"}});
  BOOST_TEST(c.opts.token_file.value() == "/run/t");
  BOOST_TEST(!c.opts.token.has_value());
}

BOOST_AUTO_TEST_CASE(unrelated_variables_ignored) {
  const server_command_line c =
      parse_ok({}, {{"STATE_MANAGER_NOPE", "x"}, {"LISTEN", "1.2.3.4:5"}});
  BOOST_TEST(c.opts.listen == "0.0.0.0:8080");
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(listen_address)

BOOST_AUTO_TEST_CASE(valid_addresses) {
  struct {
    const char* text;
    const char* host;
    unsigned short port;
  } cases[] = {
      {"0.0.0.0:8080", "0.0.0.0", 8080},
      {"[::1]:80", "::1", 80},
      {":8080", "0.0.0.0", 8080},
      {"127.0.0.1:0", "127.0.0.1", 0},
      {"localhost:8080", "127.0.0.1", 8080},
      {"[::]:8080", "::", 8080},
      {"10.1.2.3:65535", "10.1.2.3", 65535},
      {"[fe80::1]:1", "fe80::1", 1},
  };
  for (const auto& c : cases) {
    BOOST_TEST_CONTEXT("address " << c.text) {
      const auto a = parse_listen_address(c.text);
      BOOST_REQUIRE(a.has_value());
      BOOST_TEST(a->host == c.host);
      BOOST_TEST(a->port == c.port);
    }
  }
}

BOOST_AUTO_TEST_CASE(invalid_addresses) {
  for (const char* text : {"",
                           "127.0.0.1",
                           "127.0.0.1:",
                           ":",
                           "1.2.3.4:70000",
                           "1.2.3.4:65536",
                           "host:80",
                           "example.com:80",
                           "::1:80",
                           "[::1]",
                           "[::1]80",
                           "[::1]:",
                           "[1.2.3.4]:80",
                           "[]:80",
                           "1.2.3.4:-1",
                           "1.2.3.4:80x",
                           "1.2.3.4: 80",
                           "1.2.3.4:0x50",
                           "256.0.0.1:80",
                           "1.2.3:80",
                           "[::1:80",
                           "1.2.3.4:99999999999999999999"}) {
    BOOST_TEST_INFO("address \"" << text << "\"");
    BOOST_TEST(!parse_listen_address(text).has_value());
  }
}

BOOST_AUTO_TEST_SUITE_END()
