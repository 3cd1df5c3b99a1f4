#include "checkpoint/restore_journal.hpp"

#include <cerrno>
#include <system_error>

#include <nlohmann/json.hpp>

#include "base/file.hpp"

namespace sm::checkpoint {

namespace {

std::filesystem::path rooted(std::filesystem::path dir) {
  return dir.empty() ? std::filesystem::path(".") : dir;
}

restore_intent parse(const std::string& text) {
  restore_intent intent;
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) return intent;
  if (j.contains("id") && j["id"].is_string()) intent.id = j["id"].get<std::string>();
  if (j.contains("env_dir") && j["env_dir"].is_string()) {
    intent.env_dir = j["env_dir"].get<std::string>();
  }
  if (j.contains("components") && j["components"].is_array()) {
    for (const auto& c : j["components"]) {
      if (c.is_string()) intent.components.push_back(c.get<std::string>());
    }
  }
  return intent;
}

}  // namespace

restore_journal::restore_journal(std::filesystem::path dir) : dir_(rooted(std::move(dir))) {}

void restore_journal::prepare(const restore_intent& intent) const {
  std::error_code ec;
  if (std::filesystem::exists(prepared_path(), ec) ||
      std::filesystem::exists(committed_path(), ec)) {
    throw std::system_error(EEXIST, std::generic_category(),
                            "an interrupted restore is still recorded in " + dir_.string() +
                                " (it is recovered at the next start)");
  }
  const nlohmann::json j = {
      {"id", intent.id}, {"env_dir", intent.env_dir.string()}, {"components", intent.components}};
  // Written to a temporary and renamed, file and directory fsynced: never seen half-written.
  write_file_atomically(prepared_path(), j.dump() + "\n", 0600);
}

std::string restore_journal::commit() const {
  std::filesystem::rename(prepared_path(), committed_path());
  try {
    fsync_directory_of(committed_path());
  } catch (const std::exception& e) {
    return e.what();
  }
  return {};
}

void restore_journal::remove() const {
  std::filesystem::remove(prepared_path());
  std::filesystem::remove(committed_path());
  fsync_directory_of(prepared_path());
}

std::pair<restore_journal::phase, restore_intent> restore_journal::read() const {
  // prepare() refuses while either is there, so at most one is.
  for (const auto& [p, at] : {std::pair{phase::committed, committed_path()},
                              std::pair{phase::prepared, prepared_path()}}) {
    if (const auto text = read_file(at, 1024 * 1024)) return {p, parse(*text)};
  }
  return {phase::none, {}};
}

}  // namespace sm::checkpoint
