// Coverage-guided fuzzing of the configuration validator. The first input byte chooses where
// state-manager's own directories are (none given, relative, absolute); the rest is parsed as
// JSON and, when it is JSON, validated. Invariants: never a throw, a crash or a hang (the
// validator is linear and walks nothing recursively); a configuration iff no problems; at most
// max_problems problems plus the one that counts the rest, each small whatever the document's
// names; a valid configuration's redacted form is valid again, with the same stacks,
// components, env_dir and filesystem settings.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "config/config.hpp"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

std::optional<std::string> lookup(const std::string& name) {
  static const std::map<std::string, std::string> vars = {
      {"KEY", "AKIAEXAMPLE"}, {"EMPTY", ""}, {"NOT_UTF8", "\xff\xfe"}, {"DIR", "/workspace"}};
  const auto it = vars.find(name);
  if (it == vars.end()) return std::nullopt;
  return it->second;
}

std::optional<sm::config::own_paths> own_of(std::uint8_t choice) {
  switch (choice % 4) {
    case 0:
      return std::nullopt;
    case 1:
      return sm::config::own_paths{"/srv/app", "data", "tmp"};
    case 2:
      return sm::config::own_paths{"", "data", "tmp"};
    default:
      return sm::config::own_paths{"/", "/var/lib/sm/data", "/tmp/sm"};
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::optional<sm::config::own_paths> own = own_of(data[0]);
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const nlohmann::json document = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded()) return 0;

  const sm::config::parse_result r = sm::config::parse(document, lookup, own);
  check(r.config.has_value() == r.problems.empty());
  check(r.problems.size() <= sm::config::max_problems + 1);
  for (const sm::config::problem& p : r.problems) {
    check(!p.message.empty());
    check(p.path.size() + p.message.size() < 4 * sm::config::max_shown_name + 256);
  }
  (void)sm::config::problems_to_json(r.problems)
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
  if (!r.config) return 0;

  check(r.config->components.size() <= sm::config::max_components);
  const nlohmann::json redacted = sm::config::to_redacted_json(*r.config);
  (void)redacted.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
  const sm::config::parse_result again = sm::config::parse(redacted, lookup, own);
  check(again.config.has_value());
  check(again.config->stacks == r.config->stacks);
  check(again.config->components.size() == r.config->components.size());
  check(again.config->storage.env_dir == r.config->storage.env_dir);
  check(again.config->filesystem == r.config->filesystem);
  return 0;
}
