#include "checkpoint/index.hpp"

#include <sys/stat.h>

#include <filesystem>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "base/hex.hpp"

namespace sm::checkpoint {

using json = nlohmann::json;

namespace {

bool valid_utf8(const std::string& text) {
  try {
    (void)json(text).dump();
    return true;
  } catch (const json::type_error&) {
    return false;
  }
}

void put_bytes(json& j, const std::string& key, const std::string& bytes) {
  if (valid_utf8(bytes)) {
    j[key] = bytes;
  } else {
    j[key + "_hex"] = hex(bytes);
  }
}

std::string get_bytes(const json& j, const std::string& key) {
  if (const auto it = j.find(key + "_hex"); it != j.end()) {
    if (!it->is_string()) throw index_error(key + "_hex is not a string");
    if (auto bytes = unhex(it->get<std::string>())) return *bytes;
    throw index_error("a malformed " + key + "_hex");
  }
  const auto it = j.find(key);
  if (it == j.end()) return {};
  if (!it->is_string()) throw index_error(key + " is not a string");
  return it->get<std::string>();
}

// Numbers are read only from JSON integers of the right sign and range: a float or an
// out-of-range value converted by nlohmann would be undefined behaviour or a silent wrap.
std::uint64_t unsigned_field(const json& j, const char* key, std::uint64_t fallback,
                             std::uint64_t max = std::numeric_limits<std::uint64_t>::max()) {
  const auto it = j.find(key);
  if (it == j.end()) return fallback;
  if (!it->is_number_unsigned()) throw index_error(std::string(key) + " is not a count");
  const auto value = it->get<std::uint64_t>();
  if (value > max) throw index_error(std::string(key) + " is out of range");
  return value;
}

std::int64_t signed_field(const json& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end()) return 0;
  if (it->is_number_unsigned()) {
    const auto value = it->get<std::uint64_t>();
    if (value > std::uint64_t(std::numeric_limits<std::int64_t>::max())) {
      throw index_error(std::string(key) + " is out of range");
    }
    return std::int64_t(value);
  }
  if (!it->is_number_integer()) throw index_error(std::string(key) + " is not an integer");
  return it->get<std::int64_t>();
}

// Deeper than `limit` arrays and objects, found by one scan of the bytes (strings skipped),
// before any parser that might recurse sees them.
bool too_deep(std::string_view text, unsigned limit) {
  unsigned depth = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return false;
}

json parse_bounded(std::string_view text, unsigned depth) {
  if (too_deep(text, depth)) throw index_error("nested deeper than " + std::to_string(depth));
  json document = json::parse(text, nullptr, false);
  if (document.is_discarded()) throw index_error("not JSON");
  return document;
}

// A path from the store must stay inside the checkpoint.
bool safe_relative(const std::string& path) {
  if (path.empty() || path.front() == '/') return false;
  if (path.find('\0') != std::string::npos) return false;
  for (const auto& part : std::filesystem::path(path)) {
    if (part == ".." || part == "." || part.empty()) return false;
  }
  return true;
}

json to_json(const index_entry& e) {
  json j = {{"type", std::string(1, e.type)},
            {"mode", e.mode},
            {"mtime_ns", e.mtime_ns},
            {"size", e.size}};
  put_bytes(j, "path", e.path);
  if (e.type == 'l' || e.type == 'h') put_bytes(j, "target", e.target);
  if (!e.holes.empty()) j["holes"] = e.holes;
  if (e.uid) j["uid"] = *e.uid;
  if (e.gid) j["gid"] = *e.gid;
  if (!e.sha256.empty()) j["sha256"] = e.sha256;
  if (!e.xattrs.empty()) {
    json xattrs = json::array();
    for (const auto& [name, value] : e.xattrs) {
      json x = {{"value_hex", hex(value)}};
      put_bytes(x, "name", name);
      xattrs.push_back(std::move(x));
    }
    j["xattrs"] = std::move(xattrs);
  }
  return j;
}

index_entry entry_from_json(const json& j, unsigned format) {
  if (!j.is_object()) throw index_error("an entry is not an object");
  index_entry e;
  e.path = get_bytes(j, "path");
  if (!safe_relative(e.path)) throw index_error("a path out of the checkpoint");
  const auto type = j.find("type");
  if (type == j.end() || !type->is_string() || type->get_ref<const std::string&>().size() != 1) {
    throw index_error("an entry without a type: " + e.path);
  }
  e.type = type->get_ref<const std::string&>()[0];
  if (e.type != 'f' && e.type != 'd' && e.type != 'l' && e.type != 'h') {
    throw index_error("an entry of unknown type " + type->get<std::string>() + " (" + e.path +
                      "; made by a newer state-manager?)");
  }
  e.mode = std::uint32_t(unsigned_field(j, "mode", 0644, 0xffffffffu) & 07777);
  e.mtime_ns = signed_field(j, "mtime_ns");
  e.size = unsigned_field(j, "size", 0);
  if (e.type == 'l' || e.type == 'h') e.target = get_bytes(j, "target");
  if (j.contains("uid") && j.contains("gid")) {
    e.uid = std::uint32_t(unsigned_field(j, "uid", 0, 0xffffffffu));
    e.gid = std::uint32_t(unsigned_field(j, "gid", 0, 0xffffffffu));
  }
  if (const auto xattrs = j.find("xattrs"); xattrs != j.end()) {
    if (!xattrs->is_array()) throw index_error("xattrs is not a list: " + e.path);
    for (const json& x : *xattrs) {
      if (!x.is_object()) throw index_error("an xattr is not an object: " + e.path);
      const auto value = x.find("value_hex");
      if (value == x.end() || !value->is_string()) throw index_error("an xattr without value");
      auto bytes = unhex(value->get_ref<const std::string&>());
      if (!bytes) throw index_error("an xattr with a malformed value: " + e.path);
      std::string name = get_bytes(x, "name");
      if (name.empty() || name.find('\0') != std::string::npos) {
        throw index_error("an xattr without a name: " + e.path);
      }
      e.xattrs.emplace_back(std::move(name), std::move(*bytes));
    }
  }
  if (const auto holes = j.find("holes"); holes != j.end()) {
    if (!holes->is_array()) throw index_error("holes is not a list: " + e.path);
    for (const json& h : *holes) {
      if (!h.is_array() || h.size() != 2 || !h[0].is_number_unsigned() ||
          !h[1].is_number_unsigned()) {
        throw index_error("a malformed hole in " + e.path);
      }
      const auto offset = h[0].get<std::uint64_t>(), length = h[1].get<std::uint64_t>();
      if (offset > e.size || length > e.size - offset) {
        throw index_error("a hole past the end of " + e.path);
      }
      if (e.holes.size() < max_holes) e.holes.emplace_back(offset, length);
    }
  }
  if (e.type == 'f' && format >= 2) {
    const auto sum = j.find("sha256");
    if (sum == j.end() || !sum->is_string() || !is_sha256_hex(sum->get_ref<const std::string&>())) {
      throw index_error("a file without its sha256: " + e.path);
    }
    e.sha256 = sum->get<std::string>();
  }
  return e;
}

}  // namespace

bool is_sha256_hex(std::string_view text) {
  if (text.size() != 64) return false;
  for (const char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string index_to_text(const std::vector<index_entry>& entries) {
  json index = json::array();
  for (const index_entry& e : entries) index.push_back(to_json(e));
  return index.dump() + "\n";
}

std::vector<index_entry> parse_index(std::string_view text, unsigned format) {
  try {
    const json index = parse_bounded(text, max_index_depth);
    if (!index.is_array()) throw index_error("not a list of entries");
    std::vector<index_entry> entries;
    entries.reserve(index.size());
    // Each entry's parent must be an earlier directory entry (or the checkpoint itself), and
    // no path may come twice: nothing made from the index can then lead through a symlink it
    // made, out of the checkpoint.
    std::set<std::string> files;  // what an 'h' entry may name: an earlier regular file
    std::set<std::string> dirs, seen;
    for (const json& j : index) {
      index_entry e = entry_from_json(j, format);
      const std::string parent = std::filesystem::path(e.path).parent_path().string();
      if ((!parent.empty() && !dirs.contains(parent)) || !seen.insert(e.path).second) {
        throw index_error("names " + e.path + " outside a directory it holds");
      }
      if (e.type == 'f') files.insert(e.path);
      if (e.type == 'd') dirs.insert(e.path);
      if (e.type == 'h' && !files.contains(e.target)) {
        throw index_error("links " + e.path + " to a file it does not hold");
      }
      entries.push_back(std::move(e));
    }
    return entries;
  } catch (const json::exception& e) {
    throw index_error(std::string("malformed: ") + e.what());
  }
}

std::string file_key(const index_entry& e, unsigned format) {
  return format >= 2 ? "files/" + e.sha256 : "files/" + e.path;
}

std::string index_key(unsigned format, const std::string& index_sha256) {
  return format >= 2 ? "index-" + index_sha256 + ".json" : "index.json";
}

std::string remote_manifest_text(std::string_view local_text, const std::string& index_sha256,
                                 std::uint64_t index_bytes) {
  json document = json::parse(local_text);
  document["store"] = {
      {"format", current_format}, {"index_sha256", index_sha256}, {"index_bytes", index_bytes}};
  return document.dump(2) + "\n";
}

std::optional<remote_manifest> parse_remote_manifest(std::string_view text, const std::string& id) {
  json document;
  try {
    document = parse_bounded(text, max_index_depth);
  } catch (const index_error&) {
    return std::nullopt;
  }
  if (!document.is_object()) return std::nullopt;
  remote_manifest out;
  const auto store = document.find("store");
  if (store != document.end()) {
    if (!store->is_object()) return std::nullopt;
    const auto format = store->find("format");
    if (format == store->end() || !format->is_number_unsigned()) return std::nullopt;
    const auto number = format->get<std::uint64_t>();
    if (number > current_format) {
      throw index_error("checkpoint " + id + " in the store has format " + std::to_string(number) +
                        " (made by a newer state-manager)");
    }
    if (number != 2) return std::nullopt;
    out.format = 2;
    const auto sum = store->find("index_sha256");
    const auto bytes = store->find("index_bytes");
    if (sum == store->end() || !sum->is_string() ||
        !is_sha256_hex(sum->get_ref<const std::string&>()) || bytes == store->end() ||
        !bytes->is_number_unsigned() || bytes->get<std::uint64_t>() > max_index_bytes) {
      return std::nullopt;
    }
    out.index_sha256 = sum->get<std::string>();
    out.index_bytes = bytes->get<std::uint64_t>();
  }
  std::optional<manifest> m = manifest_from_json(document);
  if (!m || m->id != id) return std::nullopt;
  out.local = std::move(*m);
  return out;
}

std::uint64_t drop_privileged(std::vector<index_entry>& entries) {
  std::uint64_t dropped = 0;
  for (index_entry& e : entries) {
    bool lost = false;
    if (e.type == 'f' && (e.mode & (S_ISUID | S_ISGID)) != 0) {
      e.mode &= ~std::uint32_t(S_ISUID | S_ISGID);
      lost = true;
    }
    const auto before = e.xattrs.size();
    std::erase_if(e.xattrs, [](const auto& x) { return x.first.starts_with("security."); });
    if (e.xattrs.size() != before) lost = true;
    if (lost) ++dropped;
  }
  return dropped;
}

}  // namespace sm::checkpoint
