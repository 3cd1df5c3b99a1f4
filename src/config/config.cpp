#include "config/config.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/secret.hpp"

namespace sm::config {

using json = nlohmann::json;

namespace {

constexpr std::string_view secret_mask = "***";

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t extra;
    char32_t code;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      extra = 1, code = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      extra = 2, code = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      extra = 3, code = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= s.size()) return false;  // truncated sequence
    for (std::size_t k = 1; k <= extra; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xc0) != 0x80) return false;
      code = (code << 6) | (d & 0x3f);
    }
    // Overlong forms, surrogates and values past Unicode's end are not UTF-8.
    static constexpr char32_t smallest[] = {0, 0x80, 0x800, 0x10000};
    if (code < smallest[extra] || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) {
      return false;
    }
    i += extra + 1;
  }
  return true;
}

// Collects problems while walking a document; paths are built as we descend.
class checker {
 public:
  explicit checker(const environment_lookup& env) : env_(env) {}

  // At most max_problems are kept; the rest are only counted (see finish()).
  void add(std::string path, std::string message) {
    if (problems.size() < max_problems) {
      problems.push_back({std::move(path), std::move(message)});
    } else {
      ++left_out_;
    }
  }

  // The problems, with a last one saying how many were left out.
  std::vector<problem> finish() {
    if (left_out_ > 0) {
      problems.push_back({"", std::to_string(left_out_) + " more problems not listed (at most " +
                                  std::to_string(max_problems) + " are)"});
    }
    return std::move(problems);
  }

  // Rejects members not in `known`, so that a typo ("buckt") is an error, not a silent default.
  void only_known(const json& object, const std::string& path,
                  std::initializer_list<std::string_view> known) {
    for (const auto& [key, value] : object.items()) {
      if (std::find(known.begin(), known.end(), key) == known.end()) {
        add(join(path, key), "unknown field");
      }
    }
  }

  // A string, or {"$env": "NAME"} read from the environment. nullopt (with a problem) otherwise.
  std::optional<std::string> string_value(const json& value, const std::string& path) {
    if (value.is_string()) return value.get<std::string>();
    if (value.is_object() && value.contains("$env")) {
      const json& name = value["$env"];
      if (value.size() != 1 || !name.is_string() || name.get_ref<const std::string&>().empty()) {
        add(path, R"(an environment reference must be {"$env": "NAME"})");
        return std::nullopt;
      }
      const std::string& variable = name.get_ref<const std::string&>();
      std::optional<std::string> resolved = env_(variable);
      if (!resolved) {
        add(path, "environment variable " + shown(variable) + " is not set");
        return std::nullopt;
      }
      // The document's own strings are UTF-8 (the JSON parser checks); the environment's
      // are bytes, and everything downstream (JSON answers, S3 keys) needs UTF-8.
      if (!valid_utf8(*resolved)) {
        add(path, "environment variable " + shown(variable) + " is not valid UTF-8");
        return std::nullopt;
      }
      return resolved;
    }
    add(path, R"(must be a string or {"$env": "NAME"})");
    return std::nullopt;
  }

  std::optional<std::vector<std::string>> string_list(const json& value, const std::string& path) {
    if (!value.is_array()) {
      add(path, "must be an array of strings");
      return std::nullopt;
    }
    std::vector<std::string> out;
    bool ok = true;
    for (std::size_t i = 0; i < value.size(); ++i) {
      if (!value[i].is_string()) {
        add(index(path, i), "must be a string");
        ok = false;
      } else {
        out.push_back(value[i].get<std::string>());
      }
    }
    if (!ok) return std::nullopt;
    return out;
  }

  std::optional<duration> duration_value(const json& value, const std::string& path) {
    if (!value.is_string()) {
      add(path, "must be a duration string such as \"250ms\", \"1s\" or \"2m\"");
      return std::nullopt;
    }
    std::optional<duration> d = parse_duration(value.get_ref<const std::string&>());
    if (!d)
      add(path, "invalid duration \"" + shown(value.get_ref<const std::string&>()) +
                    "\": use a non-negative number with a unit (ms, s, m, h)");
    return d;
  }

  // `name` as a problem shows it: cut to max_shown_name bytes (at a UTF-8 character's start)
  // with "..." after, so that a long name repeated in many problems stays small.
  static std::string shown(std::string_view name) {
    if (name.size() <= max_shown_name) return std::string(name);
    std::size_t cut = max_shown_name;
    while (cut > 0 && (static_cast<unsigned char>(name[cut]) & 0xc0) == 0x80) --cut;
    return std::string(name.substr(0, cut)) + "...";
  }

  static std::string join(const std::string& path, std::string_view key) {
    return path.empty() ? shown(key) : path + "." + shown(key);
  }
  static std::string index(const std::string& path, std::size_t i) {
    return path + "[" + std::to_string(i) + "]";
  }

  std::vector<problem> problems;

 private:
  const environment_lookup& env_;
  std::size_t left_out_ = 0;
};

// S3's bucket naming rules (the strict, virtual-host-safe ones), so that a name the store will
// reject is reported here, with its reason, rather than as an opaque S3 error later.
std::optional<std::string> bucket_problem(std::string_view name) {
  if (name.size() < 3 || name.size() > 63) return "must be 3 to 63 characters long";
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-')) {
      return "may contain only lower-case letters, digits, '.' and '-'";
    }
  }
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(name.front()) || !alnum(name.back())) {
    return "must begin and end with a letter or digit";
  }
  if (name.find("..") != std::string_view::npos) return "must not contain \"..\"";
  int dots = 0;
  bool digits_and_dots = true;
  for (char c : name) {
    dots += c == '.';
    digits_and_dots = digits_and_dots && ((c >= '0' && c <= '9') || c == '.');
  }
  if (digits_and_dots && dots == 3) return "must not look like an IP address";
  return std::nullopt;
}

std::optional<std::string> endpoint_problem(std::string_view endpoint) {
  if (endpoint.rfind("file://", 0) == 0) {
    const std::string_view path = endpoint.substr(7);
    if (path.empty() || path.front() != '/') {
      return "a file endpoint needs an absolute path: file:///var/lib/objects";
    }
    return std::nullopt;
  }
  std::string_view rest;
  if (endpoint.rfind("http://", 0) == 0) {
    rest = endpoint.substr(7);
  } else if (endpoint.rfind("https://", 0) == 0) {
    rest = endpoint.substr(8);
  } else {
    return "must start with http://, https:// or file:///";
  }
  const std::string_view host = rest.substr(0, rest.find('/'));
  if (host.empty()) return "has no host";
  // user:password@ in the URL would bypass redaction and end up in logs and GET /config.
  if (host.find('@') != std::string_view::npos) {
    return "must not contain credentials: use access_key and secret_key";
  }
  for (char c : endpoint) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return "must not contain spaces";
  }
  if (rest.find('?') != std::string_view::npos || rest.find('#') != std::string_view::npos) {
    return "must not contain a query or fragment";
  }
  return std::nullopt;
}

std::optional<std::string> key_prefix_problem(std::string_view prefix) {
  if (prefix.empty()) return std::nullopt;
  if (prefix.front() == '/') return "must not start with '/'";
  // As used: with the '/' appended when it is missing (GET /config shows it so, and must be a
  // configuration that validates again).
  if (prefix.size() + (prefix.back() == '/' ? 0 : 1) > 512) {
    return "must be at most 512 characters, its final '/' included";
  }
  std::string_view rest = prefix;
  while (!rest.empty()) {
    const std::size_t slash = rest.find('/');
    const std::string_view segment = rest.substr(0, slash);
    if (slash != std::string_view::npos && segment.empty()) return "must not contain \"//\"";
    if (segment == "." || segment == "..") return "must not contain \".\" or \"..\" segments";
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash + 1);
  }
  for (char c : prefix) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return "must not contain control characters";
    }
  }
  return std::nullopt;
}

// A path as its components, lexically normal ("." and empty ones dropped); `anchored` says
// whether it is absolute (given so, or relative to a known working directory) or relative to a
// working directory we do not know.
struct lexical_path {
  bool anchored = false;
  std::vector<std::string> parts;
};

// Nullopt when `p` has a ".." component: lexically, it could escape anywhere.
std::optional<lexical_path> lexical(const std::filesystem::path& p, const own_paths& own) {
  lexical_path out;
  if (!p.is_absolute() && !own.working_dir.empty()) {
    if (auto base = lexical(own.working_dir, {})) out = std::move(*base);
  }
  if (p.is_absolute()) out.anchored = true;
  for (const std::filesystem::path& part : p.relative_path()) {
    const std::string& name = part.native();
    if (name.empty() || name == ".") continue;
    if (name == "..") return std::nullopt;
    out.parts.push_back(name);
  }
  return out;
}

// Whether `inner` is `outer` or under it.
bool within(const lexical_path& inner, const lexical_path& outer) {
  return inner.anchored == outer.anchored && inner.parts.size() >= outer.parts.size() &&
         std::equal(outer.parts.begin(), outer.parts.end(), inner.parts.begin());
}

// The names under data_dir that state-manager's own files have: the database and what goes with
// it (database.sqlite-wal, -litestream/, .restoring), a restore's aside and trash, the
// filesystem component's metadata and caches.
bool own_name_in_data_dir(std::string_view name) {
  return name.rfind("database.sqlite", 0) == 0 || name == ".restore-aside" ||
         name == ".restore-trash" || name == "filesystem";
}

// What every directory of the configuration must be: a non-empty path, not "/" (`why_not_root`
// says why), without NUL or ".." (which would make it incomparable lexically). Sets `out` to
// the path's lexical form when it is one.
std::optional<std::string> path_shape_problem(std::string_view text, const own_paths& own,
                                              std::string_view why_not_root,
                                              std::optional<lexical_path>& out) {
  if (text.empty()) return "must not be empty";
  if (text.find('\0') != std::string_view::npos) return "must not contain NUL";
  if (text.size() > max_env_dir_length) {
    return "must be at most " + std::to_string(max_env_dir_length) + " bytes long";
  }
  out = lexical(std::filesystem::path(text), own);
  if (!out) return "must not contain \"..\" segments";
  if (out->anchored && out->parts.empty()) {
    out.reset();
    return "must not be \"/\"" + std::string(why_not_root);
  }
  return std::nullopt;
}

// When one of `path` (the one being checked) and `other` holds the other: why `path` is refused.
std::optional<std::string> overlap_problem(const lexical_path& path, const lexical_path& other,
                                           const std::string& named) {
  const bool inside = within(path, other);
  const bool holds = within(other, path);
  if (inside && holds) return "must not be " + named;
  if (holds) return "must not hold " + named;
  if (inside) return "must not be inside " + named;
  return std::nullopt;
}

std::optional<std::string> env_dir_problem(std::string_view text,
                                           const std::optional<own_paths>& own_dirs) {
  const own_paths own = own_dirs.value_or(own_paths{});
  std::optional<lexical_path> env_dir;
  if (auto why = path_shape_problem(
          text, own, ": a checkpoint would copy the whole machine, a restore replace it",
          env_dir)) {
    return why;
  }
  if (!own_dirs) return std::nullopt;
  const struct {
    const std::filesystem::path& dir;
    const char* what;
  } owned[] = {{own.data_dir, "data"}, {own.tmp_dir, "tmp"}};
  for (const auto& [dir, what] : owned) {
    const std::optional<lexical_path> mine = lexical(dir, own);
    if (!mine) continue;  // not comparable lexically
    const std::string named =
        std::string("state-manager's ") + what + " directory (" + dir.string() + ")";
    if (within(*mine, *env_dir)) {
      return mine->parts.size() == env_dir->parts.size() ? "must not be " + named
                                                         : "must not hold " + named;
    }
    if (!within(*env_dir, *mine)) continue;
    if (std::string_view(what) == "tmp") {
      return "must not be inside " + named + ": checkpoints are kept there";
    }
    if (own_name_in_data_dir(env_dir->parts[mine->parts.size()])) {
      return "must not be inside state-manager's own files in " + named +
             " (database.sqlite*, .restore-aside, .restore-trash, filesystem)";
    }
  }
  return std::nullopt;
}

bool valid_component_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '-' && c != '_' && c != '.'))) return false;
  }
  return true;
}

void parse_storage(checker& check, const json& doc, const std::optional<own_paths>& own,
                   storage_config& out) {
  if (!doc.contains("storage")) {
    check.add("storage", "required");
    return;
  }
  const json& storage = doc["storage"];
  if (!storage.is_object()) {
    check.add("storage", "must be an object");
    return;
  }
  check.only_known(storage, "storage",
                   {"bucket", "endpoint", "access_key", "secret_key", "region", "key_prefix",
                    "env_dir", "addressing"});

  auto field = [&](const char* key, bool required) -> std::optional<std::string> {
    const std::string path = std::string("storage.") + key;
    if (!storage.contains(key)) {
      if (required) check.add(path, "required");
      return std::nullopt;
    }
    return check.string_value(storage[key], path);
  };

  if (auto bucket = field("bucket", true)) {
    if (auto why = bucket_problem(*bucket)) check.add("storage.bucket", *why);
    out.bucket = *bucket;
  }
  std::optional<std::string> endpoint = field("endpoint", true);
  if (endpoint) {
    if (auto why = endpoint_problem(*endpoint)) check.add("storage.endpoint", *why);
    out.endpoint = *endpoint;
  }
  const bool needs_keys = endpoint && !out.is_file_store();
  for (const char* key : {"access_key", "secret_key"}) {
    if (auto value = field(key, needs_keys)) {
      if (needs_keys && value->empty()) {
        check.add(std::string("storage.") + key, "must not be empty");
      }
      (key[0] == 'a' ? out.access_key : out.secret_key) = *value;
      if (const json& given = storage[key]; given.is_object()) {
        out.key_variables.push_back(given["$env"].get<std::string>());
      }
    }
  }
  if (auto region = field("region", false)) {
    if (region->empty()) check.add("storage.region", "must not be empty");
    out.region = *region;
  }
  if (auto prefix = field("key_prefix", false)) {
    if (auto why = key_prefix_problem(*prefix)) check.add("storage.key_prefix", *why);
    out.key_prefix = *prefix;
    // Keys are <key_prefix><name>: "envs/42" is taken to mean the folder "envs/42/".
    if (!out.key_prefix.empty() && out.key_prefix.back() != '/') out.key_prefix += '/';
  }
  if (auto addressing = field("addressing", false)) {
    if (*addressing != "path" && *addressing != "virtual") {
      check.add("storage.addressing",
                "expected \"path\" (host/bucket/key, the default) or \"virtual\" "
                "(bucket.host/key)");
    }
    out.virtual_host = *addressing == "virtual";
  }
  if (auto env_dir = field("env_dir", false)) {
    if (auto why = env_dir_problem(*env_dir, own)) check.add("storage.env_dir", *why);
    out.env_dir = *env_dir;
  } else if (!storage.contains("env_dir")) {
    // The default, too: data/env overlaps nothing with the default directories, but a
    // --data-dir or --tmp-dir can make it.
    if (auto why = env_dir_problem(out.env_dir, own)) {
      check.add("storage.env_dir", "the default \"" + out.env_dir + "\" " + *why);
    }
  }
}

void parse_database(checker& check, const json& doc, database_config& out) {
  if (!doc.contains("database")) return;
  const json& spec = doc["database"];
  if (!spec.is_object()) {
    check.add("database", "must be an object (the database component's replication settings)");
    return;
  }
  check.only_known(spec, "database",
                   {"sync_interval", "snapshot_interval", "retention", "checkpoint_pages"});
  auto bounded = [&](const char* key, duration& into, duration low, duration high,
                     const char* bounds) {
    if (!spec.contains(key)) return;
    const std::string path = checker::join("database", key);
    if (auto d = check.duration_value(spec[key], path)) {
      if (*d < low || *d > high) {
        check.add(path, bounds);
      } else {
        into = *d;
      }
    }
  };
  using namespace std::chrono_literals;
  bounded("sync_interval", out.sync_interval, 100ms, 1h, "must be between 100ms and 1h");
  bounded("snapshot_interval", out.snapshot_interval, 1s, 8760h, "must be between 1s and 8760h");
  bounded("retention", out.retention, 0s, 87600h,
          "must be at most 87600h (0: keep only the newest)");
  if (spec.contains("checkpoint_pages")) {
    const json& pages = spec["checkpoint_pages"];
    if (!pages.is_number_integer() || pages.get<std::int64_t>() < 10 ||
        pages.get<std::int64_t>() > 10'000'000) {
      check.add("database.checkpoint_pages", "must be an integer from 10 to 10000000");
    } else {
      out.checkpoint_pages = pages.get<std::uint64_t>();
    }
  }
}

// The shortest exact spelling of a size in binary units: 8388608 -> "8MiB", 1000 -> "1000".
std::string format_size(std::uint64_t bytes) {
  static constexpr struct {
    std::uint64_t factor;
    const char* unit;
  } units[] = {{tib, "TiB"}, {gib, "GiB"}, {mib, "MiB"}, {kib, "KiB"}};
  for (const auto& [factor, unit] : units) {
    if (bytes != 0 && bytes % factor == 0) return std::to_string(bytes / factor) + unit;
  }
  return std::to_string(bytes);
}

// A size given as an integer of bytes or a string parse_size reads; nullopt (with a problem)
// otherwise, or past max_size.
std::optional<std::uint64_t> size_value(checker& check, const json& value,
                                        const std::string& path) {
  std::optional<std::uint64_t> bytes;
  // A document parsed from text holds non-negative integers as unsigned; one built in code
  // may hold them as signed.
  if (value.is_number_unsigned() || (value.is_number_integer() && value.get<std::int64_t>() >= 0)) {
    bytes = value.get<std::uint64_t>();
  } else if (value.is_number_integer()) {
    check.add(path, "must not be negative");
    return std::nullopt;
  } else if (value.is_number_float()) {
    // nlohmann reads integers past 64 bits as doubles.
    const double d = value.get<double>();
    check.add(path, d >= 18446744073709551616.0
                        ? "too large: at most " + format_size(max_size) + " (1 EiB)"
                        : std::string("must be a whole number of bytes (or a string such as "
                                      "\"512KiB\")"));
    return std::nullopt;
  } else if (value.is_string()) {
    const std::string& text = value.get_ref<const std::string&>();
    size_parse_result parsed = parse_size(text);
    if (!parsed.bytes) {
      check.add(path, "invalid size \"" + checker::shown(text) + "\": " + parsed.problem +
                          "; write bytes, or a number with a unit: \"4096\", \"512KiB\", "
                          "\"4MiB\", \"1GiB\", \"1TB\"");
      return std::nullopt;
    }
    bytes = parsed.bytes;
  } else {
    check.add(path, "must be a size: an integer of bytes, or a string such as \"4MiB\"");
    return std::nullopt;
  }
  if (*bytes > max_size) {
    check.add(path, "too large: at most " + format_size(max_size) + " (1 EiB)");
    return std::nullopt;
  }
  return bytes;
}

void parse_filesystem_sizes(checker& check, const json& spec, filesystem_config& out) {
  auto given = [&](const char* key) -> std::optional<std::uint64_t> {
    if (!spec.contains(key)) return std::nullopt;
    return size_value(check, spec[key], checker::join("filesystem", key));
  };
  // cache_size and staging_size are checked against the block size in effect, when it is one.
  bool block_size_known = true;
  if (spec.contains("block_size")) {
    const std::optional<std::uint64_t> block = given("block_size");
    block_size_known =
        block && *block >= 64 * kib && *block <= 16 * mib && (*block & (*block - 1)) == 0;
    if (block_size_known) {
      out.block_size = *block;
    } else if (block) {
      check.add("filesystem.block_size",
                "must be a power of two from 64KiB to 16MiB (" + format_size(*block) + " is not)");
    }
  }
  const struct {
    const char* key;
    std::uint64_t& into;
    const char* what;
  } at_least_two_blocks[] = {{"cache_size", out.cache_size, "the cache must hold"},
                             {"staging_size", out.staging_size, "staging must hold"}};
  for (const auto& [key, into, what] : at_least_two_blocks) {
    const std::optional<std::uint64_t> bytes = given(key);
    if (!bytes) continue;
    if (block_size_known && *bytes < 2 * out.block_size) {
      check.add(checker::join("filesystem", key),
                "must be at least 2 × block_size (" + format_size(2 * out.block_size) +
                    " with a block_size of " + format_size(out.block_size) + "): " + what +
                    " two blocks");
    } else {
      into = *bytes;
    }
  }
  if (const std::optional<std::uint64_t> capacity = given("capacity")) {
    if (*capacity < mib) {
      check.add("filesystem.capacity", "must be at least 1MiB");
    } else {
      out.capacity = *capacity;
    }
  }
}

void parse_mount_options(checker& check, const json& spec, filesystem_config& out) {
  if (!spec.contains("mount_options")) return;
  std::optional<std::vector<std::string>> options =
      check.string_list(spec["mount_options"], "filesystem.mount_options");
  if (!options) return;
  // Pairs that undo each other: both given is a mistake, whichever was meant.
  static constexpr std::pair<std::string_view, std::string_view> opposites[] = {
      {"ro", "rw"}, {"nosuid", "suid"}, {"nodev", "dev"}, {"noexec", "exec"}, {"noatime", "atime"}};
  const auto begin = std::begin(filesystem_mount_options);
  const auto end = std::end(filesystem_mount_options);
  std::string allowed;
  for (auto it = begin; it != end; ++it)
    allowed += (allowed.empty() ? "" : ", ") + std::string(*it);
  std::set<std::string_view> seen;
  for (std::size_t i = 0; i < options->size(); ++i) {
    const std::string& option = (*options)[i];
    const std::string path = checker::index("filesystem.mount_options", i);
    if (std::find(begin, end, option) == end) {
      check.add(path,
                "unknown mount option \"" + checker::shown(option) + "\": allowed are " + allowed);
      continue;
    }
    // A set, not a search of the earlier entries: a list of a million "ro" stays linear.
    if (!seen.insert(option).second) {
      check.add(path, "\"" + option + "\" is listed twice");
      continue;
    }
    for (const auto& [a, b] : opposites) {
      const std::string_view other = option == a ? b : option == b ? a : std::string_view();
      if (!other.empty() && seen.count(other)) {
        check.add(path, "\"" + option + "\" contradicts \"" + std::string(other) + "\"");
      }
    }
  }
  out.mount_options = std::move(*options);
}

// The three paths: each a proper path, and apart from env_dir (the mount: the filesystem would
// keep its own blocks in itself), from state-manager's own directories and files, and from each
// other (the cache is rebuilt from, and evicts, whatever its folder holds). Defaults are
// <data_dir>/filesystem/..., compared only when `own_dirs` says where data_dir is.
void parse_filesystem_paths(checker& check, const json& spec,
                            const std::optional<own_paths>& own_dirs, const std::string& env_dir,
                            filesystem_config& out) {
  const own_paths own = own_dirs.value_or(own_paths{});
  const filesystem_config defaults;
  struct one_path {
    const char* key;
    std::filesystem::path& given;
    std::filesystem::path in_data_dir;      // the default, when own_dirs is known
    std::optional<lexical_path> effective;  // nullopt: unknown, or refused already
    bool defaulted = true;
  };
  one_path paths[] = {
      {"cache_dir", out.cache_dir, defaults.cache_dir_in(own.data_dir), std::nullopt},
      {"staging_dir", out.staging_dir, defaults.staging_dir_in(own.data_dir), std::nullopt},
      {"metadata", out.metadata, defaults.metadata_in(own.data_dir), std::nullopt},
  };
  // A refused env_dir ("/", "..") is reported at storage.env_dir, and compared with nothing.
  std::optional<lexical_path> mount = lexical(env_dir, own);
  if (mount && mount->anchored && mount->parts.empty()) mount.reset();
  for (one_path& p : paths) {
    const std::string path = checker::join("filesystem", p.key);
    // null is the default, as GET /config shows it.
    if (!spec.contains(p.key) || spec[p.key].is_null()) {
      if (own_dirs) p.effective = lexical(p.in_data_dir, own);
      continue;
    }
    p.defaulted = false;
    const std::optional<std::string> text = check.string_value(spec[p.key], path);
    if (!text) continue;
    std::optional<lexical_path> lexical_form;
    if (auto why = path_shape_problem(*text, own, "", lexical_form)) {
      check.add(path, *why);
      continue;
    }
    p.given = *text;
    p.effective = std::move(lexical_form);
    if (mount) {
      if (auto why = overlap_problem(*p.effective, *mount,
                                     "storage.env_dir (" + checker::shown(env_dir) +
                                         "), where the filesystem is mounted")) {
        check.add(path, *why);
      }
    }
    if (!own_dirs) continue;
    const struct {
      const std::filesystem::path& dir;
      const char* what;
    } owned[] = {{own.data_dir, "data"}, {own.tmp_dir, "tmp"}};
    for (const auto& [dir, what] : owned) {
      const std::optional<lexical_path> mine = lexical(dir, own);
      if (!mine) continue;
      const std::string named = std::string("state-manager's ") + what + " directory (" +
                                checker::shown(dir.string()) + ")";
      std::optional<std::string> why = overlap_problem(*p.effective, *mine, named);
      if (why && std::string_view(what) == "data" && within(*p.effective, *mine) &&
          p.effective->parts.size() > mine->parts.size()) {
        // Inside data_dir is where the defaults are: only the database's names are taken.
        const std::string& name = p.effective->parts[mine->parts.size()];
        why.reset();
        if (name != "filesystem" && own_name_in_data_dir(name)) {
          why = "must not be inside state-manager's own files in " + named +
                " (database.sqlite*, .restore-aside, .restore-trash)";
        }
      }
      if (why) check.add(path, *why);
    }
  }
  // Each pair once, reported at a path the user gave (the later one when both were).
  for (std::size_t i = 0; i < std::size(paths); ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      one_path& a = paths[i];
      one_path& b = paths[j];
      if (!a.effective || !b.effective || (a.defaulted && b.defaulted)) continue;
      one_path& at = a.defaulted ? b : a;
      one_path& other = a.defaulted ? a : b;
      const std::string named = other.defaulted
                                    ? "the default " + std::string(other.key) + " (" +
                                          checker::shown(other.in_data_dir.string()) + ")"
                                    : "filesystem." + std::string(other.key);
      if (auto why = overlap_problem(*at.effective, *other.effective, named)) {
        check.add(checker::join("filesystem", at.key), *why);
      }
    }
  }
}

void parse_filesystem(checker& check, const json& doc, const std::optional<own_paths>& own,
                      const std::string& env_dir, filesystem_config& out) {
  if (!doc.contains("filesystem")) return;
  const json& spec = doc["filesystem"];
  if (!spec.is_object()) {
    check.add("filesystem", "must be an object (the filesystem component's settings)");
    return;
  }
  check.only_known(spec, "filesystem",
                   {"cache_dir", "staging_dir", "metadata", "cache_size", "capacity", "block_size",
                    "staging_size", "upload_concurrency", "mount_options"});
  parse_filesystem_sizes(check, spec, out);
  if (spec.contains("upload_concurrency")) {
    const json& n = spec["upload_concurrency"];
    if (!n.is_number_integer() || n.get<std::int64_t>() < 1 || n.get<std::int64_t>() > 256) {
      check.add("filesystem.upload_concurrency", "must be an integer from 1 to 256");
    } else {
      out.upload_concurrency = n.get<unsigned>();
    }
  }
  parse_mount_options(check, spec, out);
  parse_filesystem_paths(check, spec, own, env_dir, out);
}

void parse_checkpoint_mode(checker& check, const json& doc, checkpoint_mode& out) {
  if (!doc.contains("checkpoint_mode")) return;
  const json& mode = doc["checkpoint_mode"];
  if (mode == "stop") {
    out = checkpoint_mode::stop;
  } else if (mode == "freeze") {
    out = checkpoint_mode::freeze;
  } else {
    check.add("checkpoint_mode",
              "must be \"stop\" (stop and restart the processes) or \"freeze\" (pause them "
              "with the cgroup freezer)");
  }
}

// Reports each dependency cycle once, at the component closing it: a depth-first search with
// colours, on a stack of its own (a chain of a thousand components must not take a thousand
// frames of the thread's stack). Known names only: unknown ones are reported elsewhere.
void check_cycles(checker& check, const configuration& config) {
  enum class colour { white, on_path, done };
  std::map<std::string_view, colour> colours;
  for (const auto& [name, component] : config.components) colours.emplace(name, colour::white);
  struct frame {
    const std::string* name;
    const std::vector<std::string>* deps;
    std::size_t next = 0;  // the dependency to look at next
  };
  std::vector<frame> path;
  for (const auto& [root, root_component] : config.components) {
    if (colours[root] != colour::white) continue;
    colours[root] = colour::on_path;
    path.push_back({&root, &root_component.depends_on});
    while (!path.empty()) {
      frame& top = path.back();
      if (top.next == top.deps->size()) {
        colours[*top.name] = colour::done;
        path.pop_back();
        continue;
      }
      const std::size_t i = top.next++;
      const std::string& dep = (*top.deps)[i];
      const auto known = config.components.find(dep);
      if (dep == *top.name || known == config.components.end()) continue;
      colour& c = colours[dep];
      if (c == colour::on_path) {
        check.add(checker::index(checker::join("components", *top.name) + ".depends_on", i),
                  "dependency cycle through \"" + checker::shown(dep) + "\"");
      } else if (c == colour::white) {
        c = colour::on_path;
        path.push_back({&known->first, &known->second.depends_on});  // `top` is stale now
      }
    }
  }
}

// False when "components" was rejected whole (so that names in "stacks" are not checked
// against it).
bool parse_components(checker& check, const json& doc, configuration& out) {
  if (!doc.contains("components")) return true;
  const json& components = doc["components"];
  if (!components.is_object()) {
    check.add("components", "must be an object of named components");
    return false;
  }
  if (components.size() > max_components) {
    check.add("components", "at most " + std::to_string(max_components) +
                                " components may be declared (found " +
                                std::to_string(components.size()) + ")");
    return false;
  }
  for (const auto& [name, spec] : components.items()) {
    const std::string path = checker::join("components", name);
    if (!valid_component_name(name)) {
      check.add(path,
                "a component name is 1-64 letters, digits, '-', '_' or '.', "
                "starting with a letter or digit");
    } else if (!builtin_stack(name).empty()) {
      check.add(path, "\"" + name + "\" is a built-in component's name");
    }
    if (!spec.is_object()) {
      check.add(path, "must be an object");
      continue;
    }
    check.only_known(spec, path,
                     {"command", "ready_command", "ready_timeout", "health_interval",
                      "restart_delay", "timeout_stop", "env", "depends_on"});
    component_config component;
    if (!spec.contains("command")) {
      check.add(path + ".command", "required");
    } else if (auto command = check.string_list(spec["command"], path + ".command")) {
      if (command->empty() || command->front().empty()) {
        check.add(path + ".command", "must name a program");
      }
      component.command = std::move(*command);
    }
    if (spec.contains("ready_command")) {
      if (auto ready = check.string_list(spec["ready_command"], path + ".ready_command")) {
        if (ready->empty() || ready->front().empty()) {
          check.add(path + ".ready_command", "must name a program");
        }
        component.ready_command = std::move(*ready);
      }
    }
    if (spec.contains("ready_timeout")) {
      component.ready_timeout =
          check.duration_value(spec["ready_timeout"], path + ".ready_timeout");
    }
    if (spec.contains("health_interval")) {
      const std::string at = path + ".health_interval";
      component.health_interval = check.duration_value(spec["health_interval"], at);
      if (component.health_interval && component.health_interval->count() == 0) {
        check.add(at, "must be more than 0 (leave it out for no health checks)");
      }
      if (!spec.contains("ready_command")) {
        check.add(at, "the health check is the ready_command: declare one");
      }
    }
    if (spec.contains("restart_delay")) {
      component.restart_delay =
          check.duration_value(spec["restart_delay"], path + ".restart_delay");
    }
    if (spec.contains("timeout_stop")) {
      component.timeout_stop = check.duration_value(spec["timeout_stop"], path + ".timeout_stop");
    }
    if (spec.contains("env")) {
      const json& env = spec["env"];
      if (!env.is_object()) {
        check.add(path + ".env", "must be an object of strings");
      } else {
        for (const auto& [variable, value] : env.items()) {
          const std::string env_path = checker::join(path + ".env", variable);
          if (variable.empty() || variable.find('=') != std::string::npos) {
            check.add(env_path, "invalid environment variable name");
          }
          if (auto v = check.string_value(value, env_path)) component.env[variable] = *v;
        }
      }
    }
    if (spec.contains("depends_on")) {
      const json& deps_spec = spec["depends_on"];
      if (deps_spec.is_array() && deps_spec.size() > max_dependencies) {
        check.add(path + ".depends_on", "at most " + std::to_string(max_dependencies) +
                                            " dependencies (found " +
                                            std::to_string(deps_spec.size()) + ")");
      } else if (auto deps = check.string_list(deps_spec, path + ".depends_on")) {
        component.depends_on = std::move(*deps);
      }
    }
    out.components.emplace(name, std::move(component));
  }

  // Dependencies must name declared components, and must not loop.
  for (const auto& [name, component] : out.components) {
    for (std::size_t i = 0; i < component.depends_on.size(); ++i) {
      const std::string& dep = component.depends_on[i];
      if (dep == name) {
        check.add(checker::index(checker::join("components", name) + ".depends_on", i),
                  "a component cannot depend on itself");
      } else if (!out.components.count(dep)) {
        check.add(checker::index(checker::join("components", name) + ".depends_on", i),
                  "unknown component \"" + checker::shown(dep) + "\"");
      }
    }
  }
  check_cycles(check, out);
  return true;
}

void parse_stacks(checker& check, const json& doc, bool components_known, configuration& out) {
  if (!doc.contains("stacks")) {
    check.add("stacks", "required (a list of component names, may be empty)");
    return;
  }
  const json& stacks = doc["stacks"];
  if (!stacks.is_array()) {
    check.add("stacks", "must be an array of component names");
    return;
  }
  std::set<std::string> seen;
  for (std::size_t i = 0; i < stacks.size(); ++i) {
    const std::string path = checker::index("stacks", i);
    if (!stacks[i].is_string()) {
      check.add(path, "must be a string");
      continue;
    }
    const std::string& name = stacks[i].get_ref<const std::string&>();
    std::string canonical(builtin_stack(name));
    if (canonical.empty()) {
      if (!components_known) continue;  // "components" was rejected: nothing to check against
      if (!out.components.count(name)) {
        check.add(path, "unknown component \"" + checker::shown(name) +
                            "\": built in are database (sqlite, litestream) and filesystem "
                            "(juicefs); others must be declared under \"components\"");
        continue;
      }
      canonical = name;
    }
    if (!seen.insert(canonical).second) {
      check.add(path, "\"" + checker::shown(name) + "\" is listed twice");
      continue;
    }
    out.stacks.push_back(canonical);
  }
}

}  // namespace

std::string_view builtin_stack(std::string_view name) {
  if (name == "database" || name == "sqlite" || name == "litestream") return database_stack;
  if (name == "filesystem" || name == "juicefs") return filesystem_stack;
  return {};
}

size_parse_result parse_size(std::string_view text) {
  if (text.empty()) return {std::nullopt, "is empty"};
  if (text.front() == '-') return {std::nullopt, "must not be negative"};
  std::size_t digits = 0;
  std::uint64_t number = 0;
  bool overflow = false;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') {
    const std::uint64_t digit = static_cast<std::uint64_t>(text[digits] - '0');
    if (number > (UINT64_MAX - digit) / 10) overflow = true;
    number = number * 10 + digit;
    ++digits;
  }
  if (digits == 0) return {std::nullopt, "must start with digits"};
  const std::string_view unit = text.substr(digits);
  if (!unit.empty() && (unit.front() == '.' || unit.front() == ',')) {
    return {std::nullopt, "must be a whole number"};
  }
  static constexpr struct {
    std::string_view name;
    std::uint64_t factor;
  } units[] = {
      {"", 1},      {"B", 1},     {"KiB", kib},     {"MiB", mib},         {"GiB", gib},
      {"TiB", tib}, {"KB", 1000}, {"MB", 1000'000}, {"GB", 1000'000'000}, {"TB", 1000'000'000'000}};
  for (const auto& [name, factor] : units) {
    if (unit != name) continue;
    if (overflow || number > UINT64_MAX / factor) return {std::nullopt, "is too large"};
    return {number * factor, {}};
  }
  return {std::nullopt, "has an unknown unit \"" + std::string(unit.substr(0, 16)) +
                            "\" (B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"};
}

std::optional<std::string> process_environment(const std::string& name) {
  return environment_value(name);
}

parse_result parse(const json& document, const environment_lookup& env,
                   const std::optional<own_paths>& own) {
  parse_result result;
  checker check(env);
  if (!document.is_object()) {
    check.add("", "the configuration must be a JSON object");
    result.problems = check.finish();
    return result;
  }
  configuration config;
  check.only_known(document, "",
                   {"storage", "stacks", "components", "database", "filesystem", "checkpoint_mode",
                    "restore_privileged"});
  if (const auto it = document.find("restore_privileged"); it != document.end()) {
    if (it->is_boolean()) {
      config.restore_privileged = it->get<bool>();
    } else {
      check.add("restore_privileged", "must be true or false");
    }
  }
  parse_storage(check, document, own, config.storage);
  parse_checkpoint_mode(check, document, config.checkpoint);
  parse_database(check, document, config.database);
  parse_filesystem(check, document, own, config.storage.env_dir, config.filesystem);
  const bool components_known = parse_components(check, document, config);
  parse_stacks(check, document, components_known, config);
  result.problems = check.finish();
  if (result.problems.empty()) result.config = std::move(config);
  return result;
}

json to_redacted_json(const configuration& config) {
  auto secret = [](const std::string& value) {
    return value.empty() ? json("") : json(secret_mask);
  };
  json storage = {
      {"bucket", config.storage.bucket},
      {"endpoint", config.storage.endpoint},
      {"access_key", secret(config.storage.access_key)},
      {"secret_key", secret(config.storage.secret_key)},
      {"region", config.storage.region},
      {"key_prefix", config.storage.key_prefix},
      {"env_dir", config.storage.env_dir},
      {"addressing", config.storage.virtual_host ? "virtual" : "path"},
  };
  json components = json::object();
  for (const auto& [name, c] : config.components) {
    json spec = {{"command", c.command}};
    if (!c.ready_command.empty()) spec["ready_command"] = c.ready_command;
    if (c.ready_timeout) spec["ready_timeout"] = format_duration(*c.ready_timeout);
    if (c.health_interval) spec["health_interval"] = format_duration(*c.health_interval);
    if (c.restart_delay) spec["restart_delay"] = format_duration(*c.restart_delay);
    if (c.timeout_stop) spec["timeout_stop"] = format_duration(*c.timeout_stop);
    if (!c.env.empty()) {
      json env = json::object();
      for (const auto& [variable, value] : c.env) env[variable] = secret(value);
      spec["env"] = std::move(env);
    }
    if (!c.depends_on.empty()) spec["depends_on"] = c.depends_on;
    components[name] = std::move(spec);
  }
  const database_config& d = config.database;
  json database = {{"sync_interval", format_duration(d.sync_interval)},
                   {"snapshot_interval", format_duration(d.snapshot_interval)},
                   {"retention", format_duration(d.retention)},
                   {"checkpoint_pages", d.checkpoint_pages}};
  // A path left to its default is null: the default depends on --data-dir, which the
  // configuration does not hold (and a null submitted again means the default again).
  auto path_or_null = [](const std::filesystem::path& p) {
    return p.empty() ? json(nullptr) : json(p.string());
  };
  const filesystem_config& f = config.filesystem;
  json filesystem = {{"cache_dir", path_or_null(f.cache_dir)},
                     {"staging_dir", path_or_null(f.staging_dir)},
                     {"metadata", path_or_null(f.metadata)},
                     {"cache_size", f.cache_size},
                     {"capacity", f.capacity},
                     {"block_size", f.block_size},
                     {"staging_size", f.staging_size},
                     {"upload_concurrency", f.upload_concurrency},
                     {"mount_options", f.mount_options}};
  return {{"storage", std::move(storage)},
          {"stacks", config.stacks},
          {"components", std::move(components)},
          {"database", std::move(database)},
          {"filesystem", std::move(filesystem)},
          {"checkpoint_mode", config.checkpoint == checkpoint_mode::freeze ? "freeze" : "stop"},
          {"restore_privileged", config.restore_privileged}};
}

json problems_to_json(const std::vector<problem>& problems) {
  json details = json::array();
  for (const problem& p : problems) details.push_back({{"path", p.path}, {"message", p.message}});
  return {{"error", "invalid configuration"}, {"details", std::move(details)}};
}

}  // namespace sm::config
