#include "checkpoint/local_store.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <limits>
#include <system_error>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "base/clock.hpp"
#include "base/crash_point.hpp"
#include "base/file.hpp"
#include "checkpoint/checkpoint_id.hpp"
#include "checkpoint/copy_tree.hpp"

namespace sm::checkpoint {

using json = nlohmann::json;

namespace {

// remove_tree, not std::filesystem::remove_all: libstdc++'s holds a descriptor per level and
// fails on a tree deeper than the descriptor limit (a checkpoint of a deep env_dir). Best
// effort: what is left is a partial, which the next start removes again.
void remove_quietly(const std::filesystem::path& path) {
  try {
    remove_tree(path);
  } catch (const std::system_error&) {
  }
}

constexpr std::string_view partial_suffix = ".partial";

void fsync_dir(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + dir.string());
  const int rc = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  if (rc != 0) throw std::system_error(saved, std::generic_category(), "fsync " + dir.string());
}

std::int64_t unix_ms(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

}  // namespace

json to_json(const manifest& m) {
  json database = nullptr;
  if (m.database) {
    database = {{"file", m.database->file},
                {"bytes", m.database->bytes},
                {"pages", m.database->pages},
                {"sha256", m.database->sha256}};
    if (!m.database->method.empty()) database["method"] = m.database->method;
  }
  json steps = json::object();
  for (const auto& [step, ms] : m.steps_ms) steps[step] = ms;
  json quiesce = {{"mode", m.quiesce}};
  if (!m.quiesce_note.empty()) quiesce["note"] = m.quiesce_note;
  if (!m.quiesce_reach.empty()) quiesce["reach"] = m.quiesce_reach;
  return {{"id", m.id},
          {"created_at", format_rfc3339(m.created_at, true)},
          {"created_at_unix_ms", unix_ms(m.created_at)},
          {"parent", m.parent.empty() ? json(nullptr) : json(m.parent)},
          {"version", m.version},
          {"database", std::move(database)},
          {"mount",
           {{"files", m.mount.files},
            {"dirs", m.mount.dirs},
            {"symlinks", m.mount.symlinks},
            {"bytes", m.mount.bytes},
            {"copied_by",
             {{"reflink", m.mount.reflink},
              {"copy_file_range", m.mount.copy_file_range},
              {"read_write", m.mount.read_write}}}}},
          {"config", "config.json"},
          {"quiesce", std::move(quiesce)},
          {"steps_ms", std::move(steps)}};
}

namespace {

// A manifest from the store is not trusted: numbers are read only from JSON integers that fit
// (nlohmann converts a float or an out-of-range integer with a cast, undefined behaviour).
struct bad_number {};

template <class T>
T integer(const json& j) {
  if (j.is_number_unsigned()) {
    const auto v = j.get<std::uint64_t>();
    if (v > std::uint64_t(std::numeric_limits<T>::max())) throw bad_number{};
    return T(v);
  }
  if (!j.is_number_integer()) throw bad_number{};
  const auto v = j.get<std::int64_t>();
  if (v < 0 && !std::is_signed_v<T>) throw bad_number{};
  if (v < std::int64_t(std::numeric_limits<T>::min())) throw bad_number{};
  if (v > 0 && std::uint64_t(v) > std::uint64_t(std::numeric_limits<T>::max())) throw bad_number{};
  return T(v);
}

template <class T>
T integer_or(const json& object, const char* key, T fallback) {
  const auto it = object.find(key);
  return it == object.end() ? fallback : integer<T>(*it);
}

// Milliseconds since 1970 that a system_clock time point can hold (±292 years in ns).
constexpr std::int64_t max_unix_ms = 9'000'000'000'000;

}  // namespace

std::optional<manifest> manifest_from_json(const json& d) {
  try {
    manifest m;
    m.id = d.at("id").get<std::string>();
    if (!valid_checkpoint_id(m.id)) return std::nullopt;
    const auto created = integer<std::int64_t>(d.at("created_at_unix_ms"));
    if (created > max_unix_ms || created < -max_unix_ms) return std::nullopt;
    m.created_at = std::chrono::system_clock::time_point(std::chrono::milliseconds(created));
    if (d.contains("parent") && d["parent"].is_string()) m.parent = d["parent"].get<std::string>();
    if (d.contains("version")) m.version = d["version"].get<std::string>();
    if (d.contains("database") && d["database"].is_object()) {
      const json& db = d["database"];
      manifest::database_copy copy;
      copy.file = db.at("file").get<std::string>();
      copy.bytes = integer<std::uint64_t>(db.at("bytes"));
      copy.pages = integer<std::uint32_t>(db.at("pages"));
      copy.sha256 = db.at("sha256").get<std::string>();
      copy.method = db.value("method", "");
      // Never a path out of the checkpoint.
      if (copy.file.empty() || copy.file.find('/') != std::string::npos || copy.file[0] == '.') {
        return std::nullopt;
      }
      m.database = copy;
    }
    const json& mount = d.at("mount");
    m.mount.files = integer<std::uint64_t>(mount.at("files"));
    m.mount.dirs = integer<std::uint64_t>(mount.at("dirs"));
    m.mount.symlinks = integer<std::uint64_t>(mount.at("symlinks"));
    m.mount.bytes = integer<std::uint64_t>(mount.at("bytes"));
    if (mount.contains("copied_by") && mount["copied_by"].is_object()) {
      const json& by = mount["copied_by"];
      m.mount.reflink = integer_or<std::uint64_t>(by, "reflink", 0);
      m.mount.copy_file_range = integer_or<std::uint64_t>(by, "copy_file_range", 0);
      m.mount.read_write = integer_or<std::uint64_t>(by, "read_write", 0);
    }
    if (d.contains("quiesce") && d["quiesce"].is_object()) {
      m.quiesce = d["quiesce"].value("mode", "none");
      m.quiesce_note = d["quiesce"].value("note", "");
      m.quiesce_reach = d["quiesce"].value("reach", "");
    }
    if (d.contains("steps_ms")) {
      for (const auto& [step, ms] : d["steps_ms"].items()) {
        m.steps_ms[step] = integer<std::int64_t>(ms);
      }
    }
    return m;
  } catch (const json::exception&) {
    return std::nullopt;
  } catch (const bad_number&) {
    return std::nullopt;
  }
}

local_store::local_store(std::filesystem::path dir) : dir_(std::move(dir)) {}

std::filesystem::path local_store::partial_of(const std::string& id) const {
  return dir_ / (id + std::string(partial_suffix));
}

std::vector<std::string> local_store::remove_partials() const {
  std::vector<std::string> removed;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.ends_with(partial_suffix)) continue;
    remove_quietly(entry.path());
    removed.push_back(name.substr(0, name.size() - partial_suffix.size()));
  }
  return removed;
}

bool local_store::exists(const std::string& id) const {
  std::error_code ec;
  return std::filesystem::is_directory(path_of(id), ec);
}

std::optional<manifest> local_store::read(const std::string& id) const {
  if (!valid_checkpoint_id(id)) return std::nullopt;
  std::ifstream in(path_of(id) / "manifest.json");
  if (!in) return std::nullopt;
  const json document = json::parse(in, nullptr, false);
  if (document.is_discarded()) return std::nullopt;
  std::optional<manifest> m = manifest_from_json(document);
  if (m && m->id != id) return std::nullopt;  // a directory renamed by hand: not ours
  return m;
}

std::vector<manifest> local_store::list() const {
  std::vector<manifest> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (!valid_checkpoint_id(name)) continue;
    if (auto m = read(name)) out.push_back(std::move(*m));
  }
  std::sort(out.begin(), out.end(), [](const manifest& a, const manifest& b) {
    return a.created_at != b.created_at ? a.created_at < b.created_at : a.id < b.id;
  });
  return out;
}

namespace {

// N of "vN", or nothing for any other name.
std::optional<unsigned long long> automatic_number(std::string_view name) {
  if (name.size() < 2 || name[0] != 'v' || name.size() > 19) return std::nullopt;
  if (!std::all_of(name.begin() + 1, name.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  return std::stoull(std::string(name.substr(1)));
}

}  // namespace

std::string local_store::next_id(const std::set<std::string>& elsewhere) const {
  unsigned long long largest = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    std::string name = entry.path().filename().string();
    if (name.ends_with(partial_suffix)) name.resize(name.size() - partial_suffix.size());
    largest = std::max(largest, automatic_number(name).value_or(0));
  }
  for (const std::string& name : elsewhere) {
    largest = std::max(largest, automatic_number(name).value_or(0));
  }
  // Appended, not "v" + ...: GCC 12 warns falsely (-Wrestrict) on that concatenation.
  std::string id = "v";
  id += std::to_string(largest + 1);
  return id;
}

void local_store::commit(const manifest& m) const {
  const std::filesystem::path partial = partial_of(m.id);
  write_file_atomically(partial / "manifest.json", to_json(m).dump(2) + "\n", 0644);
  // Everything in the partial tree durable at once (one syncfs, not an fsync per directory),
  // then the rename and its parent.
  const int fd = ::open(partial.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + partial.string());
  const int rc = ::syncfs(fd);
  const int saved = errno;
  ::close(fd);
  if (rc != 0)
    throw std::system_error(saved, std::generic_category(), "syncfs " + partial.string());
  crash_point("checkpoint.after_manifest");
  std::filesystem::rename(partial, path_of(m.id));
  fsync_dir(dir_);
}

bool local_store::remove(const std::string& id) const {
  if (!valid_checkpoint_id(id) || !exists(id)) return false;
  // Aside first, as a partial: a crash during the removal leaves something start-up removes.
  const std::filesystem::path aside = partial_of(id);
  remove_quietly(aside);
  std::filesystem::rename(path_of(id), aside);
  fsync_dir(dir_);
  remove_quietly(aside);
  return true;
}

}  // namespace sm::checkpoint
