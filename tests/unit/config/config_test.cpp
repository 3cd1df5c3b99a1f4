#define BOOST_TEST_MODULE config
#include <boost/test/unit_test.hpp>

#include "support/seeded_random.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.hpp"

using json = nlohmann::json;
using namespace std::chrono_literals;
namespace cfg = sm::config;

namespace {

// A fixed environment for {"$env": ...} lookups.
struct fake_env {
  std::map<std::string, std::string> vars;
  std::vector<std::string> asked;
  cfg::environment_lookup lookup() {
    return [this](const std::string& name) -> std::optional<std::string> {
      asked.push_back(name);
      auto it = vars.find(name);
      if (it == vars.end()) return std::nullopt;
      return it->second;
    };
  }
};

cfg::environment_lookup no_env() {
  return [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
}

json minimal_file_store() {
  return json::parse(R"({
    "storage": {"bucket": "env-bucket", "endpoint": "file:///var/lib/objects"},
    "stacks": []
  })");
}

json minimal_http_store() {
  return json::parse(R"({
    "storage": {"bucket": "env-bucket", "endpoint": "http://127.0.0.1:9000",
                "access_key": "AKIA", "secret_key": "SECRET"},
    "stacks": ["database"]
  })");
}

cfg::parse_result parse(const json& doc) {
  return cfg::parse(doc, no_env());
}

// The problem at `path`, if any.
const cfg::problem* at(const cfg::parse_result& r, const std::string& path) {
  for (const auto& p : r.problems) {
    if (p.path == path) return &p;
  }
  return nullptr;
}

std::string all_paths(const cfg::parse_result& r) {
  std::string out;
  for (const auto& p : r.problems) out += "[" + p.path + ": " + p.message + "] ";
  return out;
}

// Parses `doc`, requires it to fail, and requires a problem at `path`.
void expect_problem(const json& doc, const std::string& path,
                    const cfg::environment_lookup& env = no_env()) {
  cfg::parse_result r;
  BOOST_REQUIRE_NO_THROW(r = cfg::parse(doc, env));
  BOOST_TEST(!r.config.has_value());
  BOOST_TEST(at(r, path) != nullptr, "no problem at \"" << path << "\"; got " << all_paths(r));
  if (const auto* p = at(r, path)) BOOST_TEST(!p->message.empty());
}

void expect_valid(const json& doc, const cfg::environment_lookup& env = no_env()) {
  cfg::parse_result r;
  BOOST_REQUIRE_NO_THROW(r = cfg::parse(doc, env));
  BOOST_TEST(r.problems.empty(), "unexpected problems: " << all_paths(r));
  BOOST_TEST(r.config.has_value());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(valid)

BOOST_AUTO_TEST_CASE(full_document) {
  fake_env env;
  env.vars = {{"S3_ACCESS", "AKIAEXAMPLE"}, {"S3_SECRET", "wJalrXUtnFEMI"}};
  const json doc = json::parse(R"({
    "storage": {
      "bucket": "env-bucket",
      "endpoint": "http://127.0.0.1:9000",
      "access_key": {"$env": "S3_ACCESS"},
      "secret_key": {"$env": "S3_SECRET"},
      "region": "eu-west-1",
      "key_prefix": "envs/42/",
      "env_dir": "/workspace"
    },
    "components": {
      "web": {
        "command": ["python3", "-m", "http.server"],
        "ready_command": ["curl", "-f", "http://localhost:8000"],
        "restart_delay": "250ms",
        "timeout_stop": "30s",
        "env": {"PORT": "8000"},
        "depends_on": ["worker"]
      },
      "worker": {"command": ["worker"]}
    },
    "stacks": ["sqlite", "web", "worker"]
  })");
  const cfg::parse_result r = cfg::parse(doc, env.lookup());
  BOOST_REQUIRE_MESSAGE(r.problems.empty(), all_paths(r));
  BOOST_REQUIRE(r.config.has_value());
  const cfg::configuration& c = *r.config;
  BOOST_TEST(c.storage.bucket == "env-bucket");
  BOOST_TEST(c.storage.endpoint == "http://127.0.0.1:9000");
  BOOST_TEST(c.storage.access_key == "AKIAEXAMPLE");
  BOOST_TEST(c.storage.secret_key == "wJalrXUtnFEMI");
  BOOST_TEST(c.storage.region == "eu-west-1");
  BOOST_TEST(c.storage.key_prefix == "envs/42/");
  BOOST_TEST(c.storage.env_dir == "/workspace");
  BOOST_TEST(!c.storage.is_file_store());
  BOOST_TEST((c.stacks == std::vector<std::string>{"database", "web", "worker"}));
  BOOST_REQUIRE_EQUAL(c.components.size(), 2u);
  const cfg::component_config& web = c.components.at("web");
  BOOST_TEST((web.command == std::vector<std::string>{"python3", "-m", "http.server"}));
  BOOST_TEST(
      (web.ready_command == std::vector<std::string>{"curl", "-f", "http://localhost:8000"}));
  BOOST_REQUIRE(web.restart_delay.has_value());
  BOOST_TEST(web.restart_delay->count() == 250);
  BOOST_REQUIRE(web.timeout_stop.has_value());
  BOOST_TEST(web.timeout_stop->count() == 30'000);
  BOOST_TEST(web.env.at("PORT") == "8000");
  BOOST_TEST((web.depends_on == std::vector<std::string>{"worker"}));
  const cfg::component_config& worker = c.components.at("worker");
  BOOST_TEST(!worker.restart_delay.has_value());
  BOOST_TEST(!worker.timeout_stop.has_value());
  BOOST_TEST(worker.ready_command.empty());
  BOOST_TEST(worker.depends_on.empty());
}

BOOST_AUTO_TEST_CASE(defaults_filled) {
  const cfg::parse_result r = parse(minimal_file_store());
  BOOST_REQUIRE_MESSAGE(r.problems.empty(), all_paths(r));
  BOOST_REQUIRE(r.config.has_value());
  BOOST_TEST(r.config->storage.region == "us-east-1");
  BOOST_TEST(r.config->storage.env_dir == "data/env");
  BOOST_TEST(r.config->storage.key_prefix == "");
  BOOST_TEST(r.config->storage.access_key.empty());
  BOOST_TEST(r.config->stacks.empty());
  BOOST_TEST(r.config->components.empty());
  BOOST_TEST(r.config->storage.is_file_store());
}

BOOST_AUTO_TEST_CASE(key_prefix_gets_trailing_slash) {
  json doc = minimal_file_store();
  doc["storage"]["key_prefix"] = "envs/42";
  const cfg::parse_result r = parse(doc);
  BOOST_REQUIRE(r.config.has_value());
  BOOST_TEST(r.config->storage.key_prefix == "envs/42/");

  doc["storage"]["key_prefix"] = "envs/42/";
  BOOST_TEST(parse(doc).config->storage.key_prefix == "envs/42/");  // not doubled

  doc["storage"]["key_prefix"] = "";
  BOOST_TEST(parse(doc).config->storage.key_prefix == "");  // empty stays empty
}

BOOST_AUTO_TEST_CASE(file_endpoint_needs_no_keys) {
  expect_valid(minimal_file_store());
}

BOOST_AUTO_TEST_CASE(https_endpoint_ok) {
  json doc = minimal_http_store();
  doc["storage"]["endpoint"] = "https://s3.example.com";
  expect_valid(doc);
}

BOOST_AUTO_TEST_CASE(aliases_are_canonicalised) {
  json doc = minimal_file_store();
  doc["stacks"] = {"sqlite", "juicefs"};
  const cfg::parse_result r = parse(doc);
  BOOST_REQUIRE_MESSAGE(r.problems.empty(), all_paths(r));
  BOOST_TEST((r.config->stacks == std::vector<std::string>{"database", "filesystem"}));

  doc["stacks"] = {"litestream"};
  BOOST_TEST((parse(doc).config->stacks == std::vector<std::string>{"database"}));
}

BOOST_AUTO_TEST_CASE(builtin_stack_names) {
  BOOST_TEST(cfg::builtin_stack("database") == "database");
  BOOST_TEST(cfg::builtin_stack("sqlite") == "database");
  BOOST_TEST(cfg::builtin_stack("litestream") == "database");
  BOOST_TEST(cfg::builtin_stack("filesystem") == "filesystem");
  BOOST_TEST(cfg::builtin_stack("juicefs") == "filesystem");
  BOOST_TEST(cfg::builtin_stack("web").empty());
  BOOST_TEST(cfg::builtin_stack("").empty());
  BOOST_TEST(cfg::builtin_stack("Database").empty());
}

BOOST_AUTO_TEST_CASE(env_reference_resolved) {
  fake_env env;
  env.vars = {{"BUCKET", "from-env"}, {"ENDPOINT", "file:///srv/objects"}};
  const json doc = json::parse(R"({
    "storage": {"bucket": {"$env": "BUCKET"}, "endpoint": {"$env": "ENDPOINT"}},
    "stacks": []
  })");
  const cfg::parse_result r = cfg::parse(doc, env.lookup());
  BOOST_REQUIRE_MESSAGE(r.problems.empty(), all_paths(r));
  BOOST_TEST(r.config->storage.bucket == "from-env");
  BOOST_TEST(r.config->storage.endpoint == "file:///srv/objects");
  BOOST_TEST((std::find(env.asked.begin(), env.asked.end(), "BUCKET") != env.asked.end()));
}

BOOST_AUTO_TEST_CASE(the_keys_variables_are_named_as_secrets) {
  fake_env env;
  env.vars = {{"S3_ACCESS", "AKIAEXAMPLE"}, {"BUCKET", "from-env"}};
  json doc = minimal_http_store();
  doc["storage"]["access_key"] = {{"$env", "S3_ACCESS"}};
  doc["storage"]["bucket"] = {{"$env", "BUCKET"}};
  const cfg::parse_result r = cfg::parse(doc, env.lookup());
  BOOST_REQUIRE_MESSAGE(r.problems.empty(), all_paths(r));
  // The access key's variable is a secret; the literal secret key has none, and the bucket's
  // variable is no secret.
  BOOST_TEST(r.config->storage.key_variables == std::vector<std::string>{"S3_ACCESS"});
  BOOST_TEST(cfg::parse(minimal_http_store(), no_env()).config->storage.key_variables.empty());
}

BOOST_AUTO_TEST_CASE(env_reference_value_is_validated) {
  fake_env env;
  env.vars = {{"BUCKET", "Not_Valid"}};
  json doc = minimal_file_store();
  doc["storage"]["bucket"] = {{"$env", "BUCKET"}};
  expect_problem(doc, "storage.bucket", env.lookup());
}

BOOST_AUTO_TEST_CASE(component_env_values_from_env) {
  fake_env env;
  env.vars = {{"DB_PASSWORD", "hunter2"}};
  json doc = minimal_file_store();
  doc["components"] = json::parse(R"({"app": {"command": ["app"],
                                               "env": {"PASSWORD": {"$env": "DB_PASSWORD"}}}})");
  doc["stacks"] = {"app"};
  const cfg::parse_result r = cfg::parse(doc, env.lookup());
  BOOST_REQUIRE_MESSAGE(r.problems.empty(), all_paths(r));
  BOOST_TEST(r.config->components.at("app").env.at("PASSWORD") == "hunter2");
}

BOOST_AUTO_TEST_CASE(zero_durations_ok) {
  json doc = minimal_file_store();
  doc["components"] = json::parse(R"({"app": {"command": ["app"], "restart_delay": "0",
                                               "timeout_stop": "1m30s"}})");
  doc["stacks"] = {"app"};
  const cfg::parse_result r = parse(doc);
  BOOST_REQUIRE_MESSAGE(r.problems.empty(), all_paths(r));
  BOOST_TEST(r.config->components.at("app").restart_delay->count() == 0);
  BOOST_TEST(r.config->components.at("app").timeout_stop->count() == 90'000);
}

BOOST_AUTO_TEST_CASE(declared_but_unlisted_component_ok) {
  json doc = minimal_file_store();
  doc["components"] = json::parse(R"({"spare": {"command": ["spare"]}})");
  const cfg::parse_result r = parse(doc);
  BOOST_REQUIRE_MESSAGE(r.problems.empty(), all_paths(r));
  BOOST_TEST(r.config->stacks.empty());
  BOOST_TEST(r.config->components.count("spare") == 1u);
}

BOOST_AUTO_TEST_CASE(dependency_chain_without_cycle_ok) {
  json doc = minimal_file_store();
  doc["components"] = json::parse(R"({
    "a": {"command": ["a"], "depends_on": ["b", "c"]},
    "b": {"command": ["b"], "depends_on": ["c"]},
    "c": {"command": ["c"]}
  })");
  doc["stacks"] = {"a", "b", "c"};
  expect_valid(doc);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(problems)

BOOST_AUTO_TEST_CASE(invalid_true_reports_several) {
  const cfg::parse_result r = parse(json::parse(R"({"invalid": true})"));
  BOOST_TEST(!r.config.has_value());
  BOOST_TEST(r.problems.size() >= 3u, all_paths(r));
  BOOST_TEST(at(r, "storage") != nullptr, all_paths(r));
  BOOST_TEST(at(r, "stacks") != nullptr, all_paths(r));
  BOOST_TEST(at(r, "invalid") != nullptr, all_paths(r));
}

BOOST_AUTO_TEST_CASE(every_problem_found_at_once) {
  // Several independent mistakes: all are reported, not just the first.
  const json doc = json::parse(R"({
    "storage": {"bucket": "AB", "endpoint": "ftp://x", "buckt": "typo"},
    "stacks": ["database", "nosuch"]
  })");
  const cfg::parse_result r = parse(doc);
  BOOST_TEST(!r.config.has_value());
  BOOST_TEST(at(r, "storage.bucket") != nullptr, all_paths(r));
  BOOST_TEST(at(r, "storage.endpoint") != nullptr, all_paths(r));
  BOOST_TEST(at(r, "storage.buckt") != nullptr, all_paths(r));
  BOOST_TEST(at(r, "stacks[1]") != nullptr, all_paths(r));
  BOOST_TEST(at(r, "stacks[0]") == nullptr, all_paths(r));
}

BOOST_AUTO_TEST_CASE(missing_bucket_and_endpoint) {
  const cfg::parse_result r = parse(json::parse(R"({"storage": {}, "stacks": []})"));
  BOOST_TEST(!r.config.has_value());
  BOOST_REQUIRE(at(r, "storage.bucket") != nullptr);
  BOOST_TEST(at(r, "storage.bucket")->message == "required");
  BOOST_TEST(at(r, "storage.endpoint") != nullptr);
}

BOOST_AUTO_TEST_CASE(http_endpoint_needs_keys) {
  json doc = minimal_http_store();
  doc["storage"].erase("access_key");
  doc["storage"].erase("secret_key");
  const cfg::parse_result r = parse(doc);
  BOOST_TEST(!r.config.has_value());
  BOOST_TEST(at(r, "storage.access_key") != nullptr, all_paths(r));
  BOOST_TEST(at(r, "storage.secret_key") != nullptr, all_paths(r));

  json one = minimal_http_store();
  one["storage"].erase("secret_key");
  const cfg::parse_result r1 = parse(one);
  BOOST_TEST(at(r1, "storage.secret_key") != nullptr, all_paths(r1));
  BOOST_TEST(at(r1, "storage.access_key") == nullptr, all_paths(r1));
}

BOOST_AUTO_TEST_CASE(http_endpoint_empty_keys) {
  json doc = minimal_http_store();
  doc["storage"]["access_key"] = "";
  expect_problem(doc, "storage.access_key");
}

BOOST_AUTO_TEST_CASE(bad_endpoints) {
  for (const char* endpoint : {"ftp://x", "s3://bucket", "127.0.0.1:9000", "", "http://",
                               "file://relative/path", "file://", "HTTP//x", "http:/x"}) {
    json doc = minimal_http_store();
    doc["storage"]["endpoint"] = endpoint;
    BOOST_TEST_CONTEXT("endpoint \"" << endpoint << "\"") {
      expect_problem(doc, "storage.endpoint");
    }
  }
}

BOOST_AUTO_TEST_CASE(bucket_name_rules) {
  for (const char* bucket : {"ab", "", "Env-Bucket", "ENVBUCKET", "env_bucket", "env bucket",
                             "-bucket", "bucket-", "a..b", "192.168.1.1",
                             "a123456789012345678901234567890123456789012345678901234567890123"}) {
    json doc = minimal_file_store();
    doc["storage"]["bucket"] = bucket;
    BOOST_TEST_CONTEXT("bucket \"" << bucket << "\"") {
      expect_problem(doc, "storage.bucket");
    }
  }
  for (const char* bucket : {"abc", "env-bucket", "my.bucket.1", "0bucket",
                             "a12345678901234567890123456789012345678901234567890123456789012"}) {
    json doc = minimal_file_store();
    doc["storage"]["bucket"] = bucket;
    BOOST_TEST_CONTEXT("bucket \"" << bucket << "\"") {
      expect_valid(doc);
    }
  }
}

BOOST_AUTO_TEST_CASE(bad_key_prefixes) {
  for (const char* prefix : {"/abs", "a//b", "../up", "a/../b", "./x"}) {
    json doc = minimal_file_store();
    doc["storage"]["key_prefix"] = prefix;
    BOOST_TEST_CONTEXT("key_prefix \"" << prefix << "\"") {
      expect_problem(doc, "storage.key_prefix");
    }
  }
}

BOOST_AUTO_TEST_CASE(empty_region_and_env_dir) {
  json doc = minimal_file_store();
  doc["storage"]["region"] = "";
  doc["storage"]["env_dir"] = "";
  const cfg::parse_result r = parse(doc);
  BOOST_TEST(at(r, "storage.region") != nullptr, all_paths(r));
  BOOST_TEST(at(r, "storage.env_dir") != nullptr, all_paths(r));
}

BOOST_AUTO_TEST_CASE(unknown_stack_name) {
  json doc = minimal_file_store();
  doc["stacks"] = {"database", "mysql"};
  expect_problem(doc, "stacks[1]");
  const cfg::parse_result r = parse(doc);
  BOOST_TEST(at(r, "stacks[0]") == nullptr);
  BOOST_TEST(at(r, "stacks[1]")->message.find("mysql") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(duplicate_stacks) {
  json doc = minimal_file_store();
  doc["stacks"] = {"database", "database"};
  expect_problem(doc, "stacks[1]");
  // An alias and its canonical name are the same component.
  doc["stacks"] = {"database", "sqlite"};
  expect_problem(doc, "stacks[1]");
  doc["stacks"] = {"juicefs", "database", "filesystem"};
  expect_problem(doc, "stacks[2]");
  const cfg::parse_result r = parse(doc);
  BOOST_TEST(at(r, "stacks[0]") == nullptr);
  BOOST_TEST(at(r, "stacks[1]") == nullptr);
}

BOOST_AUTO_TEST_CASE(duplicate_declared_component) {
  json doc = minimal_file_store();
  doc["components"] = json::parse(R"({"app": {"command": ["app"]}})");
  doc["stacks"] = {"app", "app"};
  expect_problem(doc, "stacks[1]");
}

BOOST_AUTO_TEST_CASE(missing_env_variable_named) {
  json doc = minimal_http_store();
  doc["storage"]["secret_key"] = {{"$env", "NO_SUCH_SECRET_VARIABLE"}};
  const cfg::parse_result r = parse(doc);
  BOOST_TEST(!r.config.has_value());
  const cfg::problem* p = at(r, "storage.secret_key");
  BOOST_REQUIRE_MESSAGE(p != nullptr, all_paths(r));
  BOOST_TEST(p->message.find("NO_SUCH_SECRET_VARIABLE") != std::string::npos, p->message);
}

BOOST_AUTO_TEST_CASE(malformed_env_references) {
  for (const char* ref : {R"({"$env": 5})", R"({"$env": ""})", R"({"$env": "A", "x": 1})",
                          R"({"$env": null})", R"({"env": "A"})", R"({})"}) {
    json doc = minimal_file_store();
    doc["storage"]["bucket"] = json::parse(ref);
    BOOST_TEST_CONTEXT("reference " << ref) {
      expect_problem(doc, "storage.bucket");
    }
  }
}

BOOST_AUTO_TEST_CASE(component_problems) {
  auto with_component = [](const char* spec) {
    json doc = minimal_file_store();
    doc["components"] = {{"web", json::parse(spec)}};
    doc["stacks"] = {"web"};
    return doc;
  };
  expect_problem(with_component(R"({"command": []})"), "components.web.command");
  expect_problem(with_component(R"({"command": [""]})"), "components.web.command");
  expect_problem(with_component(R"({})"), "components.web.command");
  expect_problem(with_component(R"({"command": "echo hi"})"), "components.web.command");
  expect_problem(with_component(R"({"command": ["echo", 5]})"), "components.web.command[1]");
  expect_problem(with_component(R"({"command": ["x"], "restart_delay": "5"})"),
                 "components.web.restart_delay");
  expect_problem(with_component(R"({"command": ["x"], "restart_delay": "-1s"})"),
                 "components.web.restart_delay");
  expect_problem(with_component(R"({"command": ["x"], "timeout_stop": 30})"),
                 "components.web.timeout_stop");
  expect_problem(with_component(R"({"command": ["x"], "timeout_stop": "1.5s"})"),
                 "components.web.timeout_stop");
  expect_problem(with_component(R"({"command": ["x"], "env": ["A=1"]})"), "components.web.env");
  expect_problem(with_component(R"({"command": ["x"], "env": {"A": 1}})"), "components.web.env.A");
  expect_problem(with_component(R"({"command": ["x"], "colour": "blue"})"),
                 "components.web.colour");
  expect_problem(with_component(R"({"command": ["x"], "ready_command": []})"),
                 "components.web.ready_command");
  expect_problem(with_component(R"({"command": ["x"], "depends_on": "db"})"),
                 "components.web.depends_on");
  expect_problem(with_component(R"("not an object")"), "components.web");
}

BOOST_AUTO_TEST_CASE(unknown_depends_on) {
  json doc = minimal_file_store();
  doc["components"] = json::parse(R"({"web": {"command": ["x"], "depends_on": ["db", "nosuch"]},
                                      "db": {"command": ["db"]}})");
  doc["stacks"] = {"web", "db"};
  expect_problem(doc, "components.web.depends_on[1]");
  const cfg::parse_result r = parse(doc);
  BOOST_TEST(at(r, "components.web.depends_on[0]") == nullptr);
}

BOOST_AUTO_TEST_CASE(self_dependency) {
  json doc = minimal_file_store();
  doc["components"] = json::parse(R"({"web": {"command": ["x"], "depends_on": ["web"]}})");
  doc["stacks"] = {"web"};
  expect_problem(doc, "components.web.depends_on[0]");
}

BOOST_AUTO_TEST_CASE(dependency_cycle) {
  json doc = minimal_file_store();
  doc["components"] = json::parse(R"({
    "a": {"command": ["a"], "depends_on": ["b"]},
    "b": {"command": ["b"], "depends_on": ["c"]},
    "c": {"command": ["c"], "depends_on": ["a"]}
  })");
  doc["stacks"] = {"a"};
  const cfg::parse_result r = parse(doc);
  BOOST_TEST(!r.config.has_value());
  bool cycle_reported = false;
  for (const auto& p : r.problems) {
    if (p.path.rfind("components.", 0) == 0 && p.path.find(".depends_on[0]") != std::string::npos) {
      cycle_reported = true;
    }
  }
  BOOST_TEST(cycle_reported, all_paths(r));
}

BOOST_AUTO_TEST_CASE(two_node_cycle) {
  json doc = minimal_file_store();
  doc["components"] = json::parse(R"({"a": {"command": ["a"], "depends_on": ["b"]},
                                      "b": {"command": ["b"], "depends_on": ["a"]}})");
  doc["stacks"] = json::array();
  const cfg::parse_result r = parse(doc);
  BOOST_TEST(!r.config.has_value());
  BOOST_TEST((at(r, "components.a.depends_on[0]") || at(r, "components.b.depends_on[0]")),
             all_paths(r));
}

BOOST_AUTO_TEST_CASE(component_named_like_builtin) {
  json doc = minimal_file_store();
  doc["components"] = json::parse(R"({"sqlite": {"command": ["x"]}})");
  doc["stacks"] = json::array();
  expect_problem(doc, "components.sqlite");
}

BOOST_AUTO_TEST_CASE(unknown_top_level_and_storage_fields) {
  json doc = minimal_file_store();
  doc["stackz"] = json::array();
  doc["storage"]["colour"] = "blue";
  const cfg::parse_result r = parse(doc);
  BOOST_TEST(!r.config.has_value());
  BOOST_TEST(at(r, "stackz") != nullptr, all_paths(r));
  BOOST_TEST(at(r, "storage.colour") != nullptr, all_paths(r));
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(wrong_types)

BOOST_AUTO_TEST_CASE(non_object_documents) {
  for (const char* text : {"null", "[]", "[1,2]", "\"string\"", "42", "true", "1.5"}) {
    cfg::parse_result r;
    BOOST_TEST_CONTEXT("document " << text) {
      BOOST_REQUIRE_NO_THROW(r = parse(json::parse(text)));
      BOOST_TEST(!r.config.has_value());
      BOOST_TEST(!r.problems.empty());
    }
  }
}

BOOST_AUTO_TEST_CASE(discarded_and_default_json) {
  cfg::parse_result r;
  BOOST_REQUIRE_NO_THROW(r = parse(json()));
  BOOST_TEST(!r.problems.empty());
  BOOST_REQUIRE_NO_THROW(r = parse(json::parse("{invalid", nullptr, false)));
  BOOST_TEST(!r.problems.empty());
}

BOOST_AUTO_TEST_CASE(wrong_types_everywhere) {
  const char* documents[] = {
      R"({"storage": [], "stacks": {}})",
      R"({"storage": "bucket", "stacks": "database"})",
      R"({"storage": null, "stacks": null, "components": null})",
      R"({"storage": {"bucket": 5, "endpoint": true, "access_key": [], "secret_key": {},
                      "region": 1.5, "key_prefix": null, "env_dir": ["x"]}, "stacks": [1, null, {}]})",
      R"({"storage": {"bucket": {"$env": ["A"]}, "endpoint": {"$env": {}}}, "stacks": [[]]})",
      R"({"storage": {}, "stacks": [], "components": []})",
      R"({"storage": {}, "stacks": [], "components": "web"})",
      R"({"storage": {}, "stacks": [], "components": {"web": null}})",
      R"({"storage": {}, "stacks": [], "components": {"web": []}})",
      R"({"storage": {}, "stacks": [], "components": {"web": {"command": null, "ready_command": 5,
          "restart_delay": [], "timeout_stop": {}, "env": "A=1", "depends_on": [1, [], {}]}}})",
      R"({"storage": {}, "stacks": [], "components": {"web": {"command": [null, {}, []],
          "env": {"A": null, "B": [], "C": {"$env": 1}}, "depends_on": null}}})",
      R"({"storage": {}, "stacks": ["web"], "components": {"": {"command": ["x"]},
          "bad name!": {"command": ["x"]}}})",
      R"({"storage": {"bucket": "b", "endpoint": "http://x"}, "stacks": [],
          "components": {"a": {"command": ["a"], "depends_on": ["a", "a", "b"]},
                         "b": {"command": ["b"], "depends_on": ["a"]}}})",
  };
  for (const char* text : documents) {
    cfg::parse_result r;
    BOOST_TEST_CONTEXT("document " << text) {
      BOOST_REQUIRE_NO_THROW(r = parse(json::parse(text)));
      BOOST_TEST(!r.config.has_value());
      BOOST_TEST(!r.problems.empty());
      for (const auto& p : r.problems) BOOST_TEST(!p.message.empty());
      // The problems themselves can always be shown.
      BOOST_REQUIRE_NO_THROW(cfg::problems_to_json(r.problems).dump());
    }
  }
}

BOOST_AUTO_TEST_CASE(wrong_type_paths) {
  const cfg::parse_result r = parse(json::parse(
      R"({"storage": {"bucket": 5, "endpoint": "file:///x"}, "stacks": ["database", 7]})"));
  BOOST_TEST(at(r, "storage.bucket") != nullptr, all_paths(r));
  BOOST_TEST(at(r, "stacks[1]") != nullptr, all_paths(r));
  const cfg::parse_result r2 = parse(json::parse(R"({"storage": [], "stacks": {}})"));
  BOOST_TEST(at(r2, "storage") != nullptr, all_paths(r2));
  BOOST_TEST(at(r2, "stacks") != nullptr, all_paths(r2));
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(json_forms)

BOOST_AUTO_TEST_CASE(redacted_hides_secrets) {
  json doc = minimal_http_store();
  doc["components"] = json::parse(R"({"app": {"command": ["app", "--flag"],
                                               "env": {"PASSWORD": "hunter2"},
                                               "restart_delay": "1500ms"}})");
  doc["stacks"] = {"database", "app"};
  const cfg::parse_result r = parse(doc);
  BOOST_REQUIRE_MESSAGE(r.config.has_value(), all_paths(r));
  const json j = cfg::to_redacted_json(*r.config);
  BOOST_TEST(j.at("storage").at("access_key") == "***");
  BOOST_TEST(j.at("storage").at("secret_key") == "***");
  BOOST_TEST(j.at("storage").at("bucket") == "env-bucket");
  BOOST_TEST(j.at("storage").at("endpoint") == "http://127.0.0.1:9000");
  BOOST_TEST(j.at("storage").at("region") == "us-east-1");
  BOOST_TEST(j.at("storage").at("env_dir") == "data/env");
  BOOST_TEST(j.at("stacks") == json({"database", "app"}));
  BOOST_TEST(j.at("components").at("app").at("env").at("PASSWORD") == "***");
  BOOST_TEST(j.at("components").at("app").at("command") == json({"app", "--flag"}));
  const std::string text = j.dump();
  BOOST_TEST(text.find("SECRET") == std::string::npos);
  BOOST_TEST(text.find("AKIA") == std::string::npos);
  BOOST_TEST(text.find("hunter2") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(redacted_round_trips_through_parse) {
  // The effective configuration, re-submitted (with the secrets put back), means the same.
  json doc = minimal_http_store();
  doc["storage"]["key_prefix"] = "envs/7";
  doc["components"] = json::parse(R"({"app": {"command": ["app"], "restart_delay": "1500ms",
                                               "timeout_stop": "2m", "depends_on": ["db"]},
                                      "db": {"command": ["db"]}})");
  doc["stacks"] = {"sqlite", "app", "db"};
  const cfg::parse_result r = parse(doc);
  BOOST_REQUIRE_MESSAGE(r.config.has_value(), all_paths(r));
  json again = cfg::to_redacted_json(*r.config);
  again["storage"]["access_key"] = "AKIA";
  again["storage"]["secret_key"] = "SECRET";
  const cfg::parse_result r2 = parse(again);
  BOOST_REQUIRE_MESSAGE(r2.config.has_value(), all_paths(r2));
  BOOST_TEST(r2.config->storage.key_prefix == "envs/7/");
  BOOST_TEST(r2.config->stacks == r.config->stacks);
  BOOST_TEST(r2.config->components.at("app").restart_delay->count() == 1500);
  BOOST_TEST(r2.config->components.at("app").timeout_stop->count() == 120'000);
  BOOST_TEST(r2.config->components.at("app").depends_on ==
             r.config->components.at("app").depends_on);
}

BOOST_AUTO_TEST_CASE(redacted_file_store_without_keys) {
  const cfg::parse_result r = parse(minimal_file_store());
  BOOST_REQUIRE(r.config.has_value());
  const json j = cfg::to_redacted_json(*r.config);
  BOOST_TEST(j.at("storage").at("endpoint") == "file:///var/lib/objects");
  // No key was given: nothing to hide, and "***" would suggest there was one.
  BOOST_TEST(j.at("storage").at("access_key") != "***");
}

BOOST_AUTO_TEST_CASE(redacted_json_always_serialisable) {
  // Values read from the environment are arbitrary bytes, not necessarily UTF-8; GET /config
  // must still be able to show the configuration (dump() throws on invalid UTF-8).
  fake_env env;
  env.vars = {{"REGION", "r\xe9gion"}, {"DIR", "/work/\xff"}, {"PREFIX", "p\xc3("}};
  json doc = minimal_file_store();
  doc["storage"]["region"] = {{"$env", "REGION"}};
  doc["storage"]["env_dir"] = {{"$env", "DIR"}};
  doc["storage"]["key_prefix"] = {{"$env", "PREFIX"}};
  cfg::parse_result r;
  BOOST_REQUIRE_NO_THROW(r = cfg::parse(doc, env.lookup()));
  if (r.config) {
    BOOST_CHECK_NO_THROW(cfg::to_redacted_json(*r.config).dump());
  } else {
    BOOST_TEST(!r.problems.empty());
  }
}

BOOST_AUTO_TEST_CASE(problems_json_shape) {
  const std::vector<cfg::problem> problems = {{"storage.bucket", "required"},
                                              {"stacks[1]", "unknown component \"x\""}};
  const json j = cfg::problems_to_json(problems);
  BOOST_TEST(j.at("error") == "invalid configuration");
  BOOST_REQUIRE(j.at("details").is_array());
  BOOST_REQUIRE_EQUAL(j.at("details").size(), 2u);
  BOOST_TEST(j.at("details")[0].at("path") == "storage.bucket");
  BOOST_TEST(j.at("details")[0].at("message") == "required");
  BOOST_TEST(j.at("details")[1].at("path") == "stacks[1]");
  BOOST_TEST(j.at("details")[1].at("message") == "unknown component \"x\"");
  BOOST_TEST(j.size() == 2u);
}

BOOST_AUTO_TEST_CASE(problems_json_empty) {
  const json j = cfg::problems_to_json({});
  BOOST_TEST(j.at("details").is_array());
  BOOST_TEST(j.at("details").empty());
}

BOOST_AUTO_TEST_CASE(problems_json_from_parse) {
  const cfg::parse_result r = parse(json::parse(R"({"invalid": true})"));
  const json j = cfg::problems_to_json(r.problems);
  BOOST_TEST(j.at("details").size() == r.problems.size());
  for (const auto& d : j.at("details")) {
    BOOST_TEST(d.at("path").is_string());
    BOOST_TEST(d.at("message").is_string());
  }
}

BOOST_AUTO_TEST_CASE(process_environment_reads_getenv) {
  ::setenv("SM_CONFIG_TEST_VARIABLE", "value-1", 1);
  BOOST_TEST(cfg::process_environment("SM_CONFIG_TEST_VARIABLE").value() == "value-1");
  ::unsetenv("SM_CONFIG_TEST_VARIABLE");
  BOOST_TEST(!cfg::process_environment("SM_CONFIG_TEST_VARIABLE").has_value());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(endpoint_credentials)

BOOST_AUTO_TEST_CASE(user_and_password_in_the_url_are_refused) {
  // They would bypass redaction: GET /config and the logs show the endpoint as is.
  for (const char* endpoint : {"http://user:pw@127.0.0.1:9000", "https://key@s3.example.com"}) {
    json doc = minimal_http_store();
    doc["storage"]["endpoint"] = endpoint;
    expect_problem(doc, "storage.endpoint");
  }
  json fine = minimal_http_store();
  fine["storage"]["endpoint"] = "http://127.0.0.1:9000/path@ok";  // '@' in the path is data
  expect_valid(fine);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(fuzz)

namespace {
using lcg = sm::test::seeded_random;

const char* const vocabulary[] = {
    "storage",
    "stacks",
    "components",
    "bucket",
    "endpoint",
    "access_key",
    "secret_key",
    "region",
    "key_prefix",
    "env_dir",
    "command",
    "ready_command",
    "restart_delay",
    "timeout_stop",
    "env",
    "depends_on",
    "$env",
    "database",
    "sqlite",
    "juicefs",
    "web",
    "a",
    "file:///x",
    "http://h",
    "1s",
    "0",
    "-1s",
    "env-bucket",
    "VAR",
    "",
    "x/y",
    "..",
    "filesystem",
    "cache_dir",
    "cache_size",
    "block_size",
    "staging_size",
    "mount_options",
    "4MiB",
    "ro",
};

json random_value(lcg& rng, int depth) {
  const std::size_t pick = rng.below(depth > 3 ? 6 : 9);
  switch (pick) {
    case 0:
      return nullptr;
    case 1:
      return rng.below(2) == 0;
    case 2:
      return static_cast<int>(rng.below(100)) - 50;
    case 3:
      return 1.5;
    case 4:
    case 5:
      return vocabulary[rng.below(std::size(vocabulary))];
    case 6: {
      json a = json::array();
      for (std::size_t i = rng.below(4); i > 0; --i) a.push_back(random_value(rng, depth + 1));
      return a;
    }
    default: {
      json o = json::object();
      for (std::size_t i = rng.below(5); i > 0; --i) {
        o[vocabulary[rng.below(std::size(vocabulary))]] = random_value(rng, depth + 1);
      }
      return o;
    }
  }
}
}  // namespace

BOOST_AUTO_TEST_CASE(random_documents_never_throw) {
  fake_env env;
  env.vars = {{"VAR", "value"}, {"a", "file:///srv"}};
  const auto lookup = env.lookup();
  lcg rng{42};
  int valid = 0;
  for (int i = 0; i < 3000; ++i) {
    json doc = random_value(rng, 0);
    // Start most documents from a valid one, so that deep paths are reached.
    if (i % 2 == 0) {
      doc = minimal_http_store();
      doc["components"] = json::parse(R"({"web": {"command": ["w"], "depends_on": []}})");
      for (int m = 1 + static_cast<int>(rng.below(3)); m > 0; --m) {
        json* target = &doc;
        for (int d = static_cast<int>(rng.below(3));
             d > 0 && target->is_object() && !target->empty(); --d) {
          auto it = target->begin();
          std::advance(it, static_cast<std::ptrdiff_t>(rng.below(target->size())));
          target = &it.value();
        }
        if (target->is_object()) {
          (*target)[vocabulary[rng.below(std::size(vocabulary))]] = random_value(rng, 2);
        } else {
          *target = random_value(rng, 2);
        }
      }
    }
    cfg::parse_result r;
    BOOST_REQUIRE_NO_THROW(r = cfg::parse(doc, lookup));
    if (r.config.has_value() == !r.problems.empty()) {
      BOOST_ERROR("config set iff no problems, broken for " << doc.dump());
    }
    if (r.config) {
      ++valid;
      BOOST_REQUIRE_NO_THROW(cfg::to_redacted_json(*r.config).dump());
    } else {
      BOOST_REQUIRE_NO_THROW(cfg::problems_to_json(r.problems).dump());
    }
  }
  BOOST_TEST(valid > 0);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_CASE(checkpoint_mode_defaults_to_stop_and_round_trips) {
  const cfg::parse_result plain = parse(minimal_file_store());
  BOOST_REQUIRE(plain.config.has_value());
  BOOST_TEST((plain.config->checkpoint == cfg::checkpoint_mode::stop));
  BOOST_TEST(cfg::to_redacted_json(*plain.config).at("checkpoint_mode") == "stop");

  json doc = minimal_file_store();
  doc["checkpoint_mode"] = "freeze";
  const cfg::parse_result frozen = parse(doc);
  BOOST_REQUIRE_MESSAGE(frozen.config.has_value(), all_paths(frozen));
  BOOST_TEST((frozen.config->checkpoint == cfg::checkpoint_mode::freeze));
  const cfg::parse_result again = parse(cfg::to_redacted_json(*frozen.config));
  BOOST_REQUIRE_MESSAGE(again.config.has_value(), all_paths(again));
  BOOST_TEST((again.config->checkpoint == cfg::checkpoint_mode::freeze));
}

BOOST_AUTO_TEST_CASE(checkpoint_mode_rejects_other_values) {
  for (const json& bad :
       {json("Freeze"), json("pause"), json(""), json(1), json(nullptr), json::array({"freeze"})}) {
    json doc = minimal_file_store();
    doc["checkpoint_mode"] = bad;
    expect_problem(doc, "checkpoint_mode");
  }
}

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(bounded)

// `count` components, each depending on the next; the last on the first when `cycle`.
json chain(std::size_t count, bool cycle) {
  json doc = minimal_file_store();
  json components = json::object();
  auto name = [](std::size_t i) { return "c" + std::to_string(i); };
  for (std::size_t i = 0; i < count; ++i) {
    json spec = {{"command", {"true"}}};
    if (i + 1 < count || cycle) spec["depends_on"] = {name((i + 1) % count)};
    components[name(i)] = std::move(spec);
  }
  doc["components"] = std::move(components);
  doc["stacks"] = {name(0)};
  return doc;
}

// 28,000 components in a chain overflowed the stack of the recursive cycle check (PID 1 died
// of a 958 KB POST /config): too many is one problem now, and no walk recurses.
BOOST_AUTO_TEST_CASE(a_chain_of_28000_components_is_refused_by_its_count) {
  const cfg::parse_result r = parse(chain(28'000, false));
  BOOST_TEST(!r.config.has_value());
  BOOST_REQUIRE_EQUAL(r.problems.size(), 1u);
  BOOST_TEST(r.problems[0].path == "components");
  BOOST_TEST(r.problems[0].message.find("at most 1000 components") != std::string::npos,
             r.problems[0].message);
  BOOST_TEST(r.problems[0].message.find("28000") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(the_longest_chain_allowed_is_checked_without_recursion) {
  expect_valid(chain(cfg::max_components, false));
  const cfg::parse_result r = parse(chain(cfg::max_components, true));
  BOOST_TEST(!r.config.has_value());
  BOOST_REQUIRE_EQUAL(r.problems.size(), 1u);  // one cycle, reported once
  BOOST_TEST(r.problems[0].message.find("dependency cycle") != std::string::npos);
  const cfg::parse_result over = parse(chain(cfg::max_components + 1, false));
  BOOST_TEST(at(over, "components") != nullptr, all_paths(over));
}

BOOST_AUTO_TEST_CASE(too_many_dependencies) {
  json doc = minimal_file_store();
  json deps = json::array();
  for (std::size_t i = 0; i <= cfg::max_dependencies; ++i) deps.push_back("db");
  doc["components"] = {{"db", {{"command", {"db"}}}},
                       {"web", {{"command", {"web"}}, {"depends_on", deps}}}};
  doc["stacks"] = {"web"};
  const cfg::parse_result r = parse(doc);
  BOOST_REQUIRE(at(r, "components.web.depends_on") != nullptr);
  BOOST_TEST(at(r, "components.web.depends_on")->message.find("at most 1000 dependencies") !=
             std::string::npos);
}

// A long invalid name repeated in each of a component's problems made the answer quadratic
// (a 500 KB name and 90,000 unknown fields: 45 GB); names are cut and problems counted.
BOOST_AUTO_TEST_CASE(problems_are_bounded_in_number_and_size) {
  json doc = minimal_file_store();
  json spec = {{"command", {"x"}}};
  for (int i = 0; i < 5000; ++i) spec["field" + std::to_string(i)] = 1;
  const std::string long_name(300'000, 'n');
  doc["components"] = {{"!" + long_name, spec}};
  const cfg::parse_result r = parse(doc);
  BOOST_TEST(!r.config.has_value());
  BOOST_REQUIRE_EQUAL(r.problems.size(), cfg::max_problems + 1);
  BOOST_TEST(r.problems.back().message.find("more problems not listed") != std::string::npos,
             r.problems.back().message);
  std::size_t size = 0;
  for (const cfg::problem& p : r.problems) size += p.path.size() + p.message.size();
  BOOST_TEST(size < 100'000u);
  BOOST_TEST(r.problems[0].path.find("...") != std::string::npos);
  // A cut name stays UTF-8: never cut inside a character.
  json accented = minimal_file_store();
  accented[std::string(cfg::max_shown_name - 1, 'y') + "\xe2\x82\xac"] = 1;
  const cfg::parse_result cut = parse(accented);
  BOOST_REQUIRE(!cut.problems.empty());
  BOOST_TEST(cut.problems[0].path == std::string(cfg::max_shown_name - 1, 'y') + "...");
}

// Found by config_fuzz: a 512-character key_prefix without its '/' was accepted, and GET
// /config then showed 513 characters, which did not validate again.
BOOST_AUTO_TEST_CASE(the_key_prefix_limit_counts_the_slash_appended) {
  json doc = minimal_file_store();
  doc["storage"]["key_prefix"] = std::string(512, 'a');
  expect_problem(doc, "storage.key_prefix");
  doc["storage"]["key_prefix"] = std::string(511, 'a');
  const cfg::parse_result r = parse(doc);
  BOOST_REQUIRE_MESSAGE(r.config.has_value(), all_paths(r));
  expect_valid(cfg::to_redacted_json(*r.config));
  doc["storage"]["key_prefix"] = std::string(511, 'a') + "/";
  expect_valid(doc);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(env_dir)

cfg::parse_result with_env_dir(const std::string& env_dir,
                               const std::optional<cfg::own_paths>& own) {
  json doc = minimal_file_store();
  doc["storage"]["env_dir"] = env_dir;
  return cfg::parse(doc, no_env(), own);
}

const cfg::own_paths serving{"/srv/app", "data", "tmp"};

// env_dir "/" or tmp/ was accepted: a checkpoint of "/" copies the machine (and tmp/ into
// itself), a restore replaces it.
BOOST_AUTO_TEST_CASE(never_the_root_nor_state_managers_own_directories) {
  for (const std::string bad : {"/",
                                "//",
                                "/.",
                                "/./",
                                "data",
                                "tmp",
                                "tmp/",
                                "./tmp",
                                "tmp/x",
                                "tmp/checkpoints",
                                ".",
                                "",
                                "/srv/app",
                                "/srv",
                                "/srv/app/tmp/x",
                                "/srv/app/data",
                                "data/database.sqlite",
                                "data/database.sqlite-litestream/x",
                                "data/.restore-trash",
                                "data/filesystem/cache",
                                "data/../tmp",
                                "../app/tmp",
                                "/srv/app/../app/tmp"}) {
    const cfg::parse_result r = with_env_dir(bad, serving);
    BOOST_TEST_INFO("env_dir \"" << bad << "\"");
    BOOST_TEST(at(r, "storage.env_dir") != nullptr, all_paths(r));
  }
  BOOST_TEST(at(with_env_dir("/", serving), "storage.env_dir")->message.find("\"/\"") !=
             std::string::npos);
  BOOST_TEST(at(with_env_dir("tmp/x", serving), "storage.env_dir")->message.find("tmp") !=
             std::string::npos);
  BOOST_TEST(at(with_env_dir("/srv", serving), "storage.env_dir")->message.find("hold") !=
             std::string::npos);
}

BOOST_AUTO_TEST_CASE(anywhere_else) {
  for (const std::string good :
       {"data/env", "data/env/", "./data/env", "/srv/app/data/env", "/workspace", "/srv/app/work",
        "/srv/other/tmp", "env", "data/databases", "data/tmp"}) {
    const cfg::parse_result r = with_env_dir(good, serving);
    BOOST_TEST_INFO("env_dir \"" << good << "\"");
    BOOST_TEST(r.problems.empty(), all_paths(r));
  }
}

BOOST_AUTO_TEST_CASE(absolute_own_directories_and_an_unknown_working_directory) {
  const cfg::own_paths absolute{"", "/var/sm/data", "/var/sm/tmp"};
  BOOST_TEST(at(with_env_dir("/var/sm", absolute), "storage.env_dir") != nullptr);
  BOOST_TEST(at(with_env_dir("/var/sm/tmp/x", absolute), "storage.env_dir") != nullptr);
  BOOST_TEST(with_env_dir("/var/sm/env", absolute).problems.empty());
  // Relative, against a working directory nobody knows: not comparable, so not refused.
  BOOST_TEST(with_env_dir("tmp", absolute).problems.empty());
  // The default data/env is checked too: with --data-dir data/env it is the data directory.
  json doc = minimal_file_store();
  const cfg::parse_result r = cfg::parse(doc, no_env(), cfg::own_paths{"/srv", "data/env", "tmp"});
  BOOST_TEST(at(r, "storage.env_dir") != nullptr, all_paths(r));
}

BOOST_AUTO_TEST_CASE(without_own_paths_only_the_root_and_dot_dot_are_refused) {
  BOOST_TEST(at(with_env_dir("/", std::nullopt), "storage.env_dir") != nullptr);
  BOOST_TEST(at(with_env_dir("a/../..", std::nullopt), "storage.env_dir") != nullptr);
  BOOST_TEST(at(with_env_dir(std::string(5000, 'a'), std::nullopt), "storage.env_dir") != nullptr);
  BOOST_TEST(with_env_dir("tmp", std::nullopt).problems.empty());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_CASE(restore_privileged_defaults_to_false_and_round_trips) {
  const cfg::parse_result plain = parse(minimal_file_store());
  BOOST_REQUIRE(plain.config.has_value());
  BOOST_TEST(!plain.config->restore_privileged);
  BOOST_TEST(cfg::to_redacted_json(*plain.config).at("restore_privileged") == false);
  json doc = minimal_file_store();
  doc["restore_privileged"] = true;
  const cfg::parse_result on = parse(doc);
  BOOST_REQUIRE_MESSAGE(on.config.has_value(), all_paths(on));
  BOOST_TEST(on.config->restore_privileged);
  const cfg::parse_result again = parse(cfg::to_redacted_json(*on.config));
  BOOST_REQUIRE_MESSAGE(again.config.has_value(), all_paths(again));
  BOOST_TEST(again.config->restore_privileged);
  for (const json& bad : {json("true"), json(1), json(nullptr)}) {
    json d = minimal_file_store();
    d["restore_privileged"] = bad;
    expect_problem(d, "restore_privileged");
  }
}

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(filesystem)

json with_filesystem(const json& settings) {
  json doc = minimal_file_store();
  doc["stacks"] = {"filesystem"};
  doc["filesystem"] = settings;
  return doc;
}

// Parses with `settings` as the "filesystem" object, requiring it to be valid.
cfg::filesystem_config valid_fs(const json& settings,
                                const std::optional<cfg::own_paths>& own = std::nullopt) {
  const cfg::parse_result r = cfg::parse(with_filesystem(settings), no_env(), own);
  BOOST_TEST(r.problems.empty(), "settings " << settings.dump() << ": " << all_paths(r));
  return r.config ? r.config->filesystem : cfg::filesystem_config{};
}

// The messages of the problems at `path` for `settings`, requiring one ("" when there is none).
std::string fs_problem(const json& settings, const std::string& path,
                       const std::optional<cfg::own_paths>& own = std::nullopt) {
  const cfg::parse_result r = cfg::parse(with_filesystem(settings), no_env(), own);
  BOOST_TEST(!r.config.has_value());
  BOOST_TEST(at(r, path) != nullptr,
             "settings " << settings.dump() << ": no problem at " << path << "; " << all_paths(r));
  std::string messages;
  for (const cfg::problem& p : r.problems) {
    if (p.path == path) messages += (messages.empty() ? "" : " | ") + p.message;
  }
  return messages;
}

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

const cfg::own_paths serving{"/srv/app", "data", "tmp"};

BOOST_AUTO_TEST_CASE(defaults_without_the_object_and_with_an_empty_one) {
  for (const json& doc : {minimal_file_store(), with_filesystem(json::object())}) {
    const cfg::parse_result r = parse(doc);
    BOOST_REQUIRE_MESSAGE(r.config.has_value(), all_paths(r));
    const cfg::filesystem_config& f = r.config->filesystem;
    BOOST_TEST((f == cfg::filesystem_config{}));
    BOOST_TEST(f.cache_dir.empty());
    BOOST_TEST(f.staging_dir.empty());
    BOOST_TEST(f.metadata.empty());
    BOOST_TEST(f.cache_size == 1024ull * 1024 * 1024);
    BOOST_TEST(f.capacity == 1024ull * 1024 * 1024 * 1024);
    BOOST_TEST(f.block_size == 4ull * 1024 * 1024);
    BOOST_TEST(f.staging_size == 8ull * 1024 * 1024 * 1024);
    BOOST_TEST(f.upload_concurrency == 16u);
    BOOST_TEST(f.mount_options.empty());
    // Empty paths are the defaults under --data-dir.
    BOOST_TEST(f.cache_dir_in("data") == std::filesystem::path("data/filesystem/cache"));
    BOOST_TEST(f.staging_dir_in("/var/sm") == std::filesystem::path("/var/sm/filesystem/staging"));
    BOOST_TEST(f.metadata_in("data") == std::filesystem::path("data/filesystem/meta.sqlite"));
  }
  cfg::filesystem_config given;
  given.cache_dir = "/cache";
  BOOST_TEST(given.cache_dir_in("data") == std::filesystem::path("/cache"));
}

BOOST_AUTO_TEST_CASE(accepted_when_the_filesystem_is_not_in_stacks) {
  json doc = minimal_file_store();
  doc["stacks"] = {"database"};
  doc["filesystem"] = {{"cache_size", "2GiB"}};
  const cfg::parse_result r = parse(doc);
  BOOST_REQUIRE_MESSAGE(r.config.has_value(), all_paths(r));
  BOOST_TEST(r.config->filesystem.cache_size == 2ull << 30);
  // The alias names the same component.
  doc["stacks"] = {"juicefs"};
  BOOST_TEST(parse(doc).problems.empty());
}

BOOST_AUTO_TEST_CASE(every_field_given) {
  const cfg::filesystem_config f = valid_fs(json::parse(R"({
    "cache_dir": "/var/cache/fs", "staging_dir": "/var/lib/fs/staging",
    "metadata": "/var/lib/fs/meta.sqlite", "cache_size": "10GiB", "capacity": "2TB",
    "block_size": "1MiB", "staging_size": 1073741824, "upload_concurrency": 64,
    "mount_options": ["allow_other", "default_permissions", "noatime"]})"),
                                            serving);
  BOOST_TEST(f.cache_dir == std::filesystem::path("/var/cache/fs"));
  BOOST_TEST(f.staging_dir == std::filesystem::path("/var/lib/fs/staging"));
  BOOST_TEST(f.metadata == std::filesystem::path("/var/lib/fs/meta.sqlite"));
  BOOST_TEST(f.cache_size == 10ull << 30);
  BOOST_TEST(f.capacity == 2'000'000'000'000ull);
  BOOST_TEST(f.block_size == 1ull << 20);
  BOOST_TEST(f.staging_size == 1ull << 30);
  BOOST_TEST(f.upload_concurrency == 64u);
  BOOST_TEST((f.mount_options ==
              std::vector<std::string>{"allow_other", "default_permissions", "noatime"}));
}

BOOST_AUTO_TEST_CASE(unknown_fields_and_wrong_shapes) {
  BOOST_TEST(!fs_problem({{"cache_sise", "1GiB"}}, "filesystem.cache_sise").empty());
  BOOST_TEST(!fs_problem({{"entry_timeout", "1s"}}, "filesystem.entry_timeout").empty());
  for (const json& bad : {json("big"), json(1), json::array(), json(nullptr)}) {
    BOOST_TEST(!fs_problem(bad, "filesystem").empty());
  }
}

BOOST_AUTO_TEST_CASE(the_size_parser) {
  const std::pair<std::string, std::uint64_t> good[] = {{"0", 0},
                                                        {"4096", 4096},
                                                        {"4096B", 4096},
                                                        {"512KiB", 512ull << 10},
                                                        {"4MiB", 4ull << 20},
                                                        {"1GiB", 1ull << 30},
                                                        {"1TiB", 1ull << 40},
                                                        {"3KB", 3000},
                                                        {"5MB", 5'000'000},
                                                        {"7GB", 7'000'000'000},
                                                        {"2TB", 2'000'000'000'000},
                                                        {"007MiB", 7ull << 20},
                                                        {"18446744073709551615", UINT64_MAX},
                                                        {"16777215TiB", 16777215ull << 40}};
  for (const auto& [text, bytes] : good) {
    const cfg::size_parse_result r = cfg::parse_size(text);
    BOOST_TEST_INFO("size \"" << text << "\"");
    BOOST_TEST((r.bytes == std::optional<std::uint64_t>(bytes)));
    BOOST_TEST(r.problem.empty());
  }
  const std::pair<std::string, std::string_view> bad[] = {{"", "empty"},
                                                          {"-1", "negative"},
                                                          {"-4MiB", "negative"},
                                                          {"1.5GiB", "whole"},
                                                          {"1,5GiB", "whole"},
                                                          {"GiB", "digits"},
                                                          {"+4MiB", "digits"},
                                                          {" 4MiB", "digits"},
                                                          {"4 MiB", "unit"},
                                                          {"4MiB ", "unit"},
                                                          {"4mib", "unit"},
                                                          {"4K", "unit"},
                                                          {"4M", "unit"},
                                                          {"4KiBB", "unit"},
                                                          {"4e6", "unit"},
                                                          {"0x10", "unit"},
                                                          {"4PiB", "unit"},
                                                          {"18446744073709551616", "too large"},
                                                          {"99999999999999999999999", "too large"},
                                                          {"16777216TiB", "too large"},
                                                          {"18446744073709552KB", "too large"}};
  for (const auto& [text, why] : bad) {
    const cfg::size_parse_result r = cfg::parse_size(text);
    BOOST_TEST_INFO("size \"" << text << "\"");
    BOOST_TEST(!r.bytes.has_value());
    BOOST_TEST(contains(r.problem, why), r.problem);
  }
}

BOOST_AUTO_TEST_CASE(sizes_as_json_values) {
  BOOST_TEST(valid_fs({{"capacity", 1048576}}).capacity == 1ull << 20);
  BOOST_TEST(valid_fs({{"capacity", "1048576"}}).capacity == 1ull << 20);
  BOOST_TEST(contains(fs_problem({{"capacity", -1}}, "filesystem.capacity"), "negative"));
  BOOST_TEST(contains(fs_problem({{"capacity", 1.5e9}}, "filesystem.capacity"), "whole"));
  BOOST_TEST(contains(fs_problem({{"capacity", 1e30}}, "filesystem.capacity"), "too large"));
  // Integers past 64 bits, as the JSON parser reads them.
  BOOST_TEST(contains(
      fs_problem({{"capacity", json::parse("18446744073709551616")}}, "filesystem.capacity"),
      "too large"));
  // Within 64 bits but past 1 EiB: refused with the bound.
  const std::string past = fs_problem({{"capacity", "1048577TiB"}}, "filesystem.capacity");
  BOOST_TEST(contains(past, "1048576TiB"), past);
  BOOST_TEST(valid_fs({{"capacity", "1048576TiB"}}).capacity == cfg::max_size);
  const std::string garbage = fs_problem({{"cache_size", "lots"}}, "filesystem.cache_size");
  BOOST_TEST(contains(garbage, "\"lots\""), garbage);
  BOOST_TEST(contains(garbage, "4MiB"), garbage);  // says how to write one
  for (const json& bad : {json(true), json::array({1}), json::object(), json(nullptr)}) {
    BOOST_TEST(!fs_problem({{"staging_size", bad}}, "filesystem.staging_size").empty());
  }
  // No {"$env"} for sizes: they are no secret.
  BOOST_TEST(!fs_problem({{"cache_size", {{"$env", "SIZE"}}}}, "filesystem.cache_size").empty());
}

BOOST_AUTO_TEST_CASE(block_size_is_a_power_of_two_from_64KiB_to_16MiB) {
  for (const json& good :
       {json("64KiB"), json("128KiB"), json("1MiB"), json(4194304), json("8MiB"), json("16MiB")}) {
    BOOST_TEST(
        valid_fs({{"block_size", good}}).block_size ==
        cfg::parse_size(good.is_string() ? good.get<std::string>() : good.dump()).bytes.value());
  }
  for (const json& bad : {json("32KiB"), json("32MiB"), json("3MiB"), json("4MB"), json(0),
                          json(65537), json("1GiB")}) {
    const std::string why = fs_problem({{"block_size", bad}}, "filesystem.block_size");
    BOOST_TEST(contains(why, "power of two from 64KiB to 16MiB"), why);
  }
}

BOOST_AUTO_TEST_CASE(cache_and_staging_hold_two_blocks_at_least) {
  // Against the default block size (4MiB) ...
  for (const char* key : {"cache_size", "staging_size"}) {
    BOOST_TEST(valid_fs({{key, "8MiB"}}).block_size == 4ull << 20);
    const std::string why = fs_problem({{key, "8388607"}}, std::string("filesystem.") + key);
    BOOST_TEST(contains(why, "2 × block_size"), why);
    BOOST_TEST(contains(why, "8MiB"), why);
    // ... and against the one given.
    const cfg::filesystem_config small = valid_fs({{"block_size", "64KiB"}, {key, "128KiB"}});
    BOOST_TEST(small.block_size == 64ull << 10);
    const std::string big =
        fs_problem({{"block_size", "16MiB"}, {key, "16MiB"}}, std::string("filesystem.") + key);
    BOOST_TEST(contains(big, "32MiB"), big);
  }
  // An invalid block size is reported once, not again through the sizes that depend on it.
  const cfg::parse_result r =
      parse(with_filesystem({{"block_size", "3MiB"}, {"cache_size", "1MiB"}}));
  BOOST_TEST(at(r, "filesystem.block_size") != nullptr);
  BOOST_TEST(at(r, "filesystem.cache_size") == nullptr, all_paths(r));
}

BOOST_AUTO_TEST_CASE(capacity_is_1MiB_at_least) {
  BOOST_TEST(valid_fs({{"capacity", "1MiB"}}).capacity == 1ull << 20);
  BOOST_TEST(contains(fs_problem({{"capacity", "1048575"}}, "filesystem.capacity"), "1MiB"));
  BOOST_TEST(!fs_problem({{"capacity", 0}}, "filesystem.capacity").empty());
}

BOOST_AUTO_TEST_CASE(upload_concurrency_from_1_to_256) {
  BOOST_TEST(valid_fs({{"upload_concurrency", 1}}).upload_concurrency == 1u);
  BOOST_TEST(valid_fs({{"upload_concurrency", 256}}).upload_concurrency == 256u);
  for (const json& bad : {json(0), json(257), json(-1), json(1.5), json("16"), json(nullptr),
                          json::parse("18446744073709551615")}) {
    BOOST_TEST_INFO("upload_concurrency " << bad.dump());
    BOOST_TEST(contains(fs_problem({{"upload_concurrency", bad}}, "filesystem.upload_concurrency"),
                        "1 to 256"));
  }
}

BOOST_AUTO_TEST_CASE(mount_options_from_the_allowed_set) {
  std::vector<std::string> every(std::begin(cfg::filesystem_mount_options),
                                 std::end(cfg::filesystem_mount_options));
  BOOST_TEST(every.size() == 12u);
  const std::vector<std::string> some = {
      "allow_other", "default_permissions", "ro", "nosuid", "nodev", "noexec", "noatime"};
  BOOST_TEST(valid_fs({{"mount_options", some}}).mount_options == some);
  BOOST_TEST(
      valid_fs({{"mount_options", {"rw", "suid", "dev", "exec", "atime"}}}).mount_options.size() ==
      5u);
  BOOST_TEST(valid_fs({{"mount_options", json::array()}}).mount_options.empty());

  const std::string unknown =
      fs_problem({{"mount_options", {"ro", "max_read=4096"}}}, "filesystem.mount_options[1]");
  BOOST_TEST(contains(unknown, "max_read=4096"), unknown);
  for (const auto& option : every) BOOST_TEST(contains(unknown, option), unknown);
  BOOST_TEST(
      !fs_problem({{"mount_options", {"Allow_Other"}}}, "filesystem.mount_options[0]").empty());
  BOOST_TEST(contains(
      fs_problem({{"mount_options", {"ro", "nodev", "ro"}}}, "filesystem.mount_options[2]"),
      "twice"));
  BOOST_TEST(contains(fs_problem({{"mount_options", {"ro", "rw"}}}, "filesystem.mount_options[1]"),
                      "contradicts"));
  BOOST_TEST(contains(
      fs_problem({{"mount_options", {"exec", "nodev", "noexec"}}}, "filesystem.mount_options[2]"),
      "\"exec\""));
  BOOST_TEST(!fs_problem({{"mount_options", "ro"}}, "filesystem.mount_options").empty());
  BOOST_TEST(!fs_problem({{"mount_options", {"ro", 1}}}, "filesystem.mount_options[1]").empty());
}

// A body under the HTTP limit holds some 150000 options: checking them for repeats must not
// compare each with all before it (seconds, not milliseconds, before the set).
BOOST_AUTO_TEST_CASE(a_long_list_of_mount_options_is_checked_in_linear_time) {
  std::vector<std::string> options(75000, "x");
  options.resize(150000, "ro");
  const cfg::parse_result r = parse(with_filesystem({{"mount_options", options}}));
  BOOST_TEST(!r.config.has_value());
  BOOST_TEST(r.problems.size() == cfg::max_problems + 1);
  BOOST_TEST(r.problems.front().path == "filesystem.mount_options[0]");
}

BOOST_AUTO_TEST_CASE(paths_are_proper_paths) {
  for (const char* key : {"cache_dir", "staging_dir", "metadata"}) {
    const std::string path = std::string("filesystem.") + key;
    BOOST_TEST_INFO(key);
    BOOST_TEST(contains(fs_problem({{key, ""}}, path), "empty"));
    BOOST_TEST(contains(fs_problem({{key, "/"}}, path), "\"/\""));
    BOOST_TEST(contains(fs_problem({{key, "//."}}, path), "\"/\""));
    BOOST_TEST(contains(fs_problem({{key, std::string("a\0b", 3)}}, path), "NUL"));
    BOOST_TEST(contains(fs_problem({{key, "a/../b"}}, path), ".."));
    BOOST_TEST(!fs_problem({{key, std::string(5000, 'a')}}, path).empty());
    BOOST_TEST(!fs_problem({{key, 7}}, path).empty());
    // null is the default, as GET /config shows it.
    BOOST_TEST((valid_fs({{key, nullptr}}, serving) == cfg::filesystem_config{}));
  }
  // Relative to the working directory, as given; and from the environment like env_dir.
  BOOST_TEST(valid_fs({{"cache_dir", "cache"}}, serving).cache_dir ==
             std::filesystem::path("cache"));
  fake_env env;
  env.vars = {{"CACHE", "/mnt/nvme/cache"}};
  const cfg::parse_result r =
      cfg::parse(with_filesystem({{"cache_dir", {{"$env", "CACHE"}}}}), env.lookup(), serving);
  BOOST_REQUIRE_MESSAGE(r.config.has_value(), all_paths(r));
  BOOST_TEST(r.config->filesystem.cache_dir == std::filesystem::path("/mnt/nvme/cache"));
}

// The mount is env_dir: a cache, staging or metadata on it would be served by the filesystem
// that needs them, a folder holding it would see the mount inside.
BOOST_AUTO_TEST_CASE(paths_apart_from_env_dir) {
  json doc = with_filesystem(json::object());
  doc["storage"]["env_dir"] = "/workspace";
  for (const char* key : {"cache_dir", "staging_dir", "metadata"}) {
    for (const std::optional<cfg::own_paths>& own :
         {std::optional<cfg::own_paths>(), std::optional<cfg::own_paths>(serving)}) {
      for (const auto& [given, word] :
           {std::pair<std::string, std::string_view>{"/workspace", "must not be storage"},
            {"/workspace/", "must not be storage"},
            {"/./workspace/.cache", "inside"},
            {"/workspace/a/b", "inside"},
            {"/", "\"/\""}}) {
        doc["filesystem"] = {{key, given}};
        const cfg::parse_result r = cfg::parse(doc, no_env(), own);
        BOOST_TEST_INFO(key << " \"" << given << "\"");
        const cfg::problem* p = at(r, std::string("filesystem.") + key);
        BOOST_REQUIRE_MESSAGE(p != nullptr, all_paths(r));
        BOOST_TEST(contains(p->message, word), p->message);
        if (given != "/") BOOST_TEST(contains(p->message, "/workspace"), p->message);
      }
      doc["filesystem"] = {{key, "/workspace2"}};
      BOOST_TEST(cfg::parse(doc, no_env(), own).problems.empty());
    }
  }
  // A relative env_dir, compared through the working directory.
  json relative = with_filesystem({{"cache_dir", "/srv/app/env/cache"}});
  relative["storage"]["env_dir"] = "env";
  BOOST_TEST(at(cfg::parse(relative, no_env(), serving), "filesystem.cache_dir") != nullptr);
  // Holding it: the default env_dir is data/env.
  const std::string holds = fs_problem({{"staging_dir", "/srv/app"}}, "filesystem.staging_dir",
                                       cfg::own_paths{"/srv/app", "/var/sm", "/tmp/sm"});
  BOOST_TEST(contains(holds, "must not hold storage.env_dir"), holds);
}

BOOST_AUTO_TEST_CASE(paths_apart_from_state_managers_own_files) {
  const std::pair<std::string, std::string_view> bad[] = {
      {"data", "must not be state-manager's data"},
      {"/srv/app/data", "must not be state-manager's data"},
      {"/srv/app", "hold"},
      {"tmp", "must not be state-manager's tmp"},
      {"tmp/cache", "inside state-manager's tmp"},
      {"data/database.sqlite", "own files"},
      {"data/database.sqlite-litestream/x", "own files"},
      {"data/.restore-aside", "own files"}};
  for (const auto& [given, word] : bad) {
    BOOST_TEST_INFO("cache_dir \"" << given << "\"");
    const std::string why = fs_problem({{"cache_dir", given}}, "filesystem.cache_dir", serving);
    BOOST_TEST(contains(why, word), why);
  }
  // Elsewhere in the data directory is where the defaults are, and fine.
  BOOST_TEST(valid_fs({{"cache_dir", "data/cache"}, {"metadata", "data/fs-meta.sqlite"}}, serving)
                 .cache_dir == std::filesystem::path("data/cache"));
  BOOST_TEST(valid_fs({{"cache_dir", "data/filesystem/cache"},
                       {"staging_dir", "data/filesystem/staging"},
                       {"metadata", "data/filesystem/meta.sqlite"}},
                      serving)
                 .metadata == std::filesystem::path("data/filesystem/meta.sqlite"));
  // Without own paths, the directories are unknown: nothing to compare with.
  BOOST_TEST(valid_fs({{"cache_dir", "tmp"}}).cache_dir == std::filesystem::path("tmp"));
}

// The cache is rebuilt from, and evicts, whatever its folder holds: staging blocks or the
// metadata in it would be lost.
BOOST_AUTO_TEST_CASE(paths_apart_from_each_other) {
  const std::string same =
      fs_problem({{"cache_dir", "/fs"}, {"staging_dir", "/fs"}}, "filesystem.staging_dir", serving);
  BOOST_TEST(contains(same, "must not be filesystem.cache_dir"), same);
  const std::string inside = fs_problem(
      {{"cache_dir", "/fs/cache"}, {"metadata", "/fs/cache/meta.sqlite"}}, "filesystem.metadata");
  BOOST_TEST(contains(inside, "inside filesystem.cache_dir"), inside);
  // Against a default: reported at the path given, naming the default.
  const std::string holds =
      fs_problem({{"cache_dir", "data/filesystem"}}, "filesystem.cache_dir", serving);
  BOOST_TEST(contains(holds, "must not hold the default"), holds);
  BOOST_TEST(contains(holds, "data/filesystem/"), holds);
  const std::string in_default = fs_problem({{"staging_dir", "data/filesystem/cache/staging"}},
                                            "filesystem.staging_dir", serving);
  BOOST_TEST(contains(in_default, "inside the default cache_dir"), in_default);
  // Each pair once.
  const cfg::parse_result r = cfg::parse(
      with_filesystem({{"cache_dir", "/fs"}, {"staging_dir", "/fs"}}), no_env(), serving);
  BOOST_TEST(r.problems.size() == 1u, all_paths(r));
  // Siblings are apart.
  BOOST_TEST(
      valid_fs(
          {{"cache_dir", "/fs/cache"}, {"staging_dir", "/fs/cache2"}, {"metadata", "/fs/meta"}},
          serving)
          .staging_dir == std::filesystem::path("/fs/cache2"));
}

BOOST_AUTO_TEST_CASE(every_problem_at_once) {
  const cfg::parse_result r = parse(with_filesystem(json::parse(R"({
    "cache_size": "x", "capacity": -1, "block_size": 3, "staging_size": 1.5,
    "upload_concurrency": 0, "mount_options": ["suid", "bogus"], "cache_dir": "",
    "staging_dir": "/", "metadata": 1, "colour": "blue"})")));
  BOOST_TEST(!r.config.has_value());
  for (const char* path :
       {"filesystem.colour", "filesystem.cache_size", "filesystem.capacity",
        "filesystem.block_size", "filesystem.staging_size", "filesystem.upload_concurrency",
        "filesystem.mount_options[1]", "filesystem.cache_dir", "filesystem.staging_dir",
        "filesystem.metadata"}) {
    BOOST_TEST(at(r, path) != nullptr, path << ": " << all_paths(r));
  }
  BOOST_TEST(r.problems.front().path == "filesystem.colour");  // unknown fields first
}

BOOST_AUTO_TEST_CASE(shown_by_get_config) {
  const cfg::parse_result plain = parse(minimal_file_store());
  BOOST_REQUIRE(plain.config.has_value());
  const json defaults = cfg::to_redacted_json(*plain.config).at("filesystem");
  BOOST_TEST(defaults == json::parse(R"({
    "cache_dir": null, "staging_dir": null, "metadata": null,
    "cache_size": 1073741824, "capacity": 1099511627776, "block_size": 4194304,
    "staging_size": 8589934592, "upload_concurrency": 16, "mount_options": []})"),
             defaults.dump());

  const cfg::filesystem_config f =
      valid_fs({{"cache_dir", "cache"}, {"cache_size", "2GB"}, {"mount_options", {"ro"}}});
  cfg::configuration c;
  c.filesystem = f;
  const json shown = cfg::to_redacted_json(c).at("filesystem");
  BOOST_TEST(shown.at("cache_dir") == "cache");
  BOOST_TEST(shown.at("staging_dir").is_null());
  BOOST_TEST(shown.at("cache_size") == 2'000'000'000u);
  BOOST_TEST(shown.at("mount_options") == json({"ro"}));
}

BOOST_AUTO_TEST_CASE(round_trips_through_parse) {
  for (const json& settings :
       {json::object(), json::parse(R"({"cache_dir": "/c", "staging_dir": "s",
            "metadata": "data/m.sqlite", "cache_size": "3GiB", "capacity": "5TB",
            "block_size": "64KiB", "staging_size": 131072, "upload_concurrency": 256,
            "mount_options": ["allow_other", "rw", "nodev"]})")}) {
    const cfg::parse_result r = cfg::parse(with_filesystem(settings), no_env(), serving);
    BOOST_REQUIRE_MESSAGE(r.config.has_value(), all_paths(r));
    const cfg::parse_result again = cfg::parse(cfg::to_redacted_json(*r.config), no_env(), serving);
    BOOST_REQUIRE_MESSAGE(again.config.has_value(), all_paths(again));
    BOOST_TEST((again.config->filesystem == r.config->filesystem), settings.dump());
  }
}

BOOST_AUTO_TEST_SUITE_END()
