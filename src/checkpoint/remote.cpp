#include "checkpoint/remote.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <exception>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <system_error>
#include <utility>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include "async/offload.hpp"
#include "base/crash_point.hpp"
#include "base/hex.hpp"
#include "checkpoint/checkpoint_id.hpp"
#include "checkpoint/copy_tree.hpp"
#include "checkpoint/local_store.hpp"

namespace sm::checkpoint {

using json = nlohmann::json;

namespace {

constexpr unsigned in_flight = 8;

struct entry {
  std::string path;  // relative to the checkpoint's directory
  // f(ile), d(irectory), l(ink: a symlink), h(ard link: another name of an earlier 'f' entry,
  // which alone is uploaded)
  char type = 'f';
  std::uint32_t mode = 0;
  std::int64_t mtime_ns = 0;
  std::uint64_t size = 0;
  std::string target;                     // l: what the symlink points to; h: the earlier name
  std::optional<std::uint32_t> uid, gid;  // absent in an index written before they were kept
  xattr_list xattrs;
  // f: the holes of a sparse file, [offset, length) each; the object holds zeros there, and a
  // download punches them again.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> holes;
};

// At most this many holes are kept per file (a pathological file could have millions); a file
// with more comes back with its zeros written.
constexpr std::size_t max_holes = 4096;

// The holes of the regular file at `path` whose blocks cover less than its size; none for a
// file that is not sparse or whose file system cannot say.
std::vector<std::pair<std::uint64_t, std::uint64_t>> holes_of(const std::filesystem::path& path,
                                                              const struct stat& st) {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> holes;
  if (std::uint64_t(st.st_blocks) * 512 >= std::uint64_t(st.st_size)) return holes;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return holes;
  const off_t size = st.st_size;
  for (off_t at = 0; at < size && holes.size() <= max_holes;) {
    const off_t hole = ::lseek(fd, at, SEEK_HOLE);
    if (hole < 0 || hole >= size) break;
    off_t data = ::lseek(fd, hole, SEEK_DATA);
    if (data < 0) data = size;  // ENXIO: a hole up to the end
    holes.emplace_back(std::uint64_t(hole), std::uint64_t(data - hole));
    at = data;
  }
  ::close(fd);
  if (holes.size() > max_holes) holes.clear();
  return holes;
}

// Paths, link targets and xattr names are bytes; JSON strings must be UTF-8. What is not goes in
// "<key>_hex" instead, so that no name makes an upload fail or comes back altered.
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
  if (const auto it = j.find(key + "_hex"); it != j.end() && it->is_string()) {
    if (auto bytes = unhex(it->get<std::string>())) return *bytes;
    throw std::runtime_error("a checkpoint's index has a malformed " + key + "_hex");
  }
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

json to_json(const entry& e) {
  json j = {{"type", std::string(1, e.type)},
            {"mode", e.mode},
            {"mtime_ns", e.mtime_ns},
            {"size", e.size}};
  put_bytes(j, "path", e.path);
  if (e.type == 'l' || e.type == 'h') put_bytes(j, "target", e.target);
  if (!e.holes.empty()) j["holes"] = e.holes;
  if (e.uid) j["uid"] = *e.uid;
  if (e.gid) j["gid"] = *e.gid;
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

// A path from the store must stay inside the checkpoint.
bool safe_relative(const std::string& path) {
  if (path.empty() || path.front() == '/') return false;
  for (const auto& part : std::filesystem::path(path)) {
    if (part == ".." || part == ".") return false;
  }
  return path.find('\0') == std::string::npos;
}

// Runs `work(i)` for i in [0, n), `in_flight` at a time; rethrows the first failure once all
// that started have ended.
template <class Work>
asio::awaitable<void> for_each_parallel(std::size_t n, Work work) {
  const auto executor = co_await asio::this_coro::executor;
  struct shared {
    std::size_t next = 0;
    unsigned running = 0;
    std::exception_ptr failure;
    asio::steady_timer done;
    explicit shared(asio::any_io_executor e)
        : done(e, std::chrono::steady_clock::time_point::max()) {}
  };
  auto state = std::make_shared<shared>(executor);
  const unsigned workers = unsigned(std::min<std::size_t>(in_flight, n));
  for (unsigned w = 0; w < workers; ++w) {
    ++state->running;
    asio::co_spawn(
        executor,
        [state, n, &work]() -> asio::awaitable<void> {
          while (!state->failure && state->next < n) {
            const std::size_t i = state->next++;
            try {
              co_await work(i);
            } catch (...) {
              if (!state->failure) state->failure = std::current_exception();
            }
          }
          if (--state->running == 0) state->done.cancel();
        },
        asio::detached);
  }
  while (state->running > 0) {
    std::error_code ec;
    co_await state->done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (state->failure) std::rethrow_exception(state->failure);
}

}  // namespace

std::string remote_prefix(const std::string& id) {
  return "checkpoints/" + id + "/";
}

asio::awaitable<std::uint64_t> upload(s3::object_store& store, const local_store& local,
                                      std::string id, std::function<void(std::uint64_t)> progress,
                                      std::function<bool()> cancelled) {
  const std::filesystem::path root = local.path_of(id);
  crash_point("upload.start");
  std::vector<entry> entries;
  std::string manifest_text, index_text;
  co_await offload_bulk([&] {
    // The first name of each inode with several: later names become 'h' entries.
    std::map<std::pair<dev_t, ino_t>, std::string> first_name;
    for (auto it = std::filesystem::recursive_directory_iterator(root);
         it != std::filesystem::recursive_directory_iterator(); ++it) {
      struct stat st {};
      if (::lstat(it->path().c_str(), &st) != 0) continue;
      entry e;
      e.path = it->path().lexically_relative(root).string();  // never through a symlink
      if (e.path == "manifest.json") continue;
      e.mode = st.st_mode & 07777;
      e.mtime_ns = std::int64_t(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
      e.uid = st.st_uid;
      e.gid = st.st_gid;
      if (S_ISDIR(st.st_mode)) {
        e.type = 'd';
      } else if (S_ISLNK(st.st_mode)) {
        e.type = 'l';
        e.target = std::filesystem::read_symlink(it->path()).string();
      } else if (S_ISREG(st.st_mode)) {
        e.size = std::uint64_t(st.st_size);
        if (st.st_nlink > 1) {
          const auto [at, first] = first_name.try_emplace({st.st_dev, st.st_ino}, e.path);
          if (!first) {
            e.type = 'h';
            e.target = at->second;
            entries.push_back(std::move(e));
            continue;  // the inode's owner, xattrs and times come with its first name
          }
        }
      } else {
        continue;  // FIFOs and the like carry no data worth a copy elsewhere
      }
      e.xattrs = read_xattrs(it->path());
      if (e.type == 'f') e.holes = holes_of(it->path(), st);
      entries.push_back(std::move(e));
    }
    std::ifstream in(root / "manifest.json");
    manifest_text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    // Here too: for 10,000 files, building and printing the index held the executor ~15 ms.
    json index = json::array();
    for (const entry& e : entries) index.push_back(to_json(e));
    index_text = index.dump() + "\n";
  });
  if (manifest_text.empty()) throw std::runtime_error("checkpoint " + id + " has no manifest");
  const std::string prefix = remote_prefix(id);
  std::vector<const entry*> files;
  for (const entry& e : entries) {
    if (e.type == 'f') files.push_back(&e);
  }
  std::uint64_t done = 0;
  co_await for_each_parallel(files.size(), [&](std::size_t i) -> asio::awaitable<void> {
    if (cancelled && cancelled()) throw upload_cancelled();
    const entry& e = *files[i];
    co_await store.put_file(prefix + "files/" + e.path, root / e.path);
    if (i == 0) crash_point("upload.middle");
    done += e.size;
    if (progress) progress(done);
  });
  s3::put_options json_type;
  json_type.content_type = "application/json";
  if (cancelled && cancelled()) throw upload_cancelled();
  co_await store.put(prefix + "index.json", std::move(index_text), json_type);
  crash_point("upload.before_manifest");
  // Last: its presence is what says the checkpoint is whole in the store.
  co_await store.put(prefix + "manifest.json", manifest_text, json_type);
  crash_point("upload.after_manifest");
  co_return done;
}

asio::awaitable<std::optional<manifest>> read_remote(s3::object_store& store, std::string id) {
  std::string text;
  try {
    text = co_await store.get(remote_prefix(id) + "manifest.json");
  } catch (const s3::error& e) {
    if (e.status() == 404) co_return std::nullopt;
    throw;
  }
  std::optional<manifest> m = manifest_from_json(json::parse(text, nullptr, false));
  if (m && m->id != id) m.reset();
  co_return m;
}

asio::awaitable<std::vector<manifest>> list_remote(s3::object_store& store,
                                                   std::set<std::string> skip) {
  std::vector<std::string> ids;
  std::string token;
  do {
    const s3::list_page page = co_await store.list("checkpoints/", "/", token, 1000);
    for (const std::string& prefix : page.common_prefixes) {
      // "checkpoints/<id>/"; anything else under checkpoints/ is not ours to show.
      std::string id = prefix.substr(std::string("checkpoints/").size());
      if (!id.empty() && id.back() == '/') id.pop_back();
      if (valid_checkpoint_id(id) && !skip.contains(id)) ids.push_back(std::move(id));
    }
    token = page.next_token;
  } while (!token.empty());
  std::vector<std::optional<manifest>> found(ids.size());
  co_await for_each_parallel(ids.size(), [&](std::size_t i) -> asio::awaitable<void> {
    found[i] = co_await read_remote(store, ids[i]);  // none: an upload under way or cut short
  });
  std::vector<manifest> out;
  for (auto& m : found) {
    if (m) out.push_back(std::move(*m));
  }
  std::sort(out.begin(), out.end(), [](const manifest& a, const manifest& b) {
    return a.created_at != b.created_at ? a.created_at < b.created_at : a.id < b.id;
  });
  co_return out;
}

asio::awaitable<bool> exists_remotely(s3::object_store& store, std::string id) {
  const auto info = co_await store.head(remote_prefix(id) + "manifest.json");
  co_return info.has_value();
}

asio::awaitable<bool> download(s3::object_store& store, const local_store& local, std::string id) {
  const std::string prefix = remote_prefix(id);
  crash_point("download.start");
  std::string manifest_text, index_text;
  try {
    manifest_text = co_await store.get(prefix + "manifest.json");
  } catch (const s3::error& e) {
    if (e.status() == 404) co_return false;
    throw;
  }
  index_text = co_await store.get(prefix + "index.json");
  const std::optional<manifest> m = manifest_from_json(json::parse(manifest_text, nullptr, false));
  if (!m || m->id != id) {
    throw std::runtime_error("checkpoint " + id + " in the store is not readable");
  }
  // Read off the executor: the index of 10,000 files is a few MB of JSON.
  std::vector<entry> entries;
  co_await offload_bulk([&] {
    const json index = json::parse(index_text, nullptr, false);
    if (!index.is_array()) {
      throw std::runtime_error("checkpoint " + id + " in the store is not readable");
    }
    // Each entry's parent must be an earlier directory entry (or the checkpoint itself), and
    // no path may come twice: nothing made from the index can then lead through a symlink it
    // made, out of the checkpoint.
    std::set<std::string> files;  // what an 'h' entry may name: an earlier regular file
    std::set<std::string> dirs, seen;
    for (const json& j : index) {
      if (!j.is_object())
        throw std::runtime_error("checkpoint " + id + " in the store is not readable");
      entry e;
      e.path = get_bytes(j, "path");
      const std::string type = j.value("type", "");
      if (!safe_relative(e.path) || type.size() != 1) {
        throw std::runtime_error("checkpoint " + id + " in the store names a path out of it");
      }
      e.type = type[0];
      if (e.type != 'f' && e.type != 'd' && e.type != 'l' && e.type != 'h') {
        throw std::runtime_error("checkpoint " + id +
                                 " in the store has an entry of unknown type " + type +
                                 " (made by a newer state-manager?)");
      }
      const std::string parent = std::filesystem::path(e.path).parent_path().string();
      if ((!parent.empty() && !dirs.contains(parent)) || !seen.insert(e.path).second) {
        throw std::runtime_error("checkpoint " + id + " in the store names " + e.path +
                                 " outside a directory it holds");
      }
      e.mode = j.value("mode", 0644u) & 07777;
      e.mtime_ns = j.value("mtime_ns", std::int64_t(0));
      e.size = j.value("size", std::uint64_t(0));
      e.target = get_bytes(j, "target");
      if (j.contains("uid") && j.contains("gid")) {
        e.uid = j.at("uid").get<std::uint32_t>();
        e.gid = j.at("gid").get<std::uint32_t>();
      }
      for (const json& x : j.value("xattrs", json::array())) {
        const auto value = unhex(x.value("value_hex", ""));
        if (!value) throw std::runtime_error("checkpoint " + id + " in the store is not readable");
        e.xattrs.emplace_back(get_bytes(x, "name"), *value);
      }
      for (const json& h : j.value("holes", json::array())) {
        const auto [offset, length] = h.get<std::pair<std::uint64_t, std::uint64_t>>();
        if (offset > e.size || length > e.size - offset) {
          throw std::runtime_error("checkpoint " + id +
                                   " in the store has a hole past the end of " + e.path);
        }
        if (e.holes.size() < max_holes) e.holes.emplace_back(offset, length);
      }
      if (e.type == 'f') files.insert(e.path);
      if (e.type == 'd') dirs.insert(e.path);
      if (e.type == 'h' && !files.contains(e.target)) {
        throw std::runtime_error("checkpoint " + id + " in the store links " + e.path +
                                 " to a file it does not hold");
      }
      entries.push_back(std::move(e));
    }
  });
  const std::filesystem::path partial = local.partial_of(id);
  co_await offload_bulk([&] {
    remove_tree(partial);
    std::filesystem::create_directories(partial);
    for (const entry& e : entries) {
      if (e.type == 'd') std::filesystem::create_directories(partial / e.path);
    }
  });
  std::exception_ptr failure;
  try {
    std::vector<const entry*> files;
    for (const entry& e : entries) {
      if (e.type == 'f') files.push_back(&e);
    }
    co_await for_each_parallel(files.size(), [&](std::size_t i) -> asio::awaitable<void> {
      const entry& e = *files[i];
      co_await store.get_file(prefix + "files/" + e.path, partial / e.path);
      if (i == 0) crash_point("download.middle");
    });
    co_await offload_bulk([&] {
      // Links; then owners, xattrs, modes and times, deepest first (a directory's time after
      // its contents). chown goes first: it clears set-id bits and file capabilities.
      for (const entry& e : entries) {
        if (e.type == 'l') std::filesystem::create_symlink(e.target, partial / e.path);
        if (e.type == 'h' &&
            ::link((partial / e.target).c_str(), (partial / e.path).c_str()) != 0) {
          throw std::system_error(errno, std::generic_category(), "link " + e.path);
        }
      }
      // Holes again where the file had them (best effort: a file system that cannot punch
      // keeps the zeros).
      for (const entry& e : entries) {
        if (e.type != 'f' || e.holes.empty()) continue;
        const int fd = ::open((partial / e.path).c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) continue;
        for (const auto& [offset, length] : e.holes) {
          if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(offset),
                          off_t(length)) != 0) {
            break;
          }
        }
        ::close(fd);
      }
      const bool root = ::geteuid() == 0;
      for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
        if (it->type == 'h') continue;  // the same inode as its first name
        const std::filesystem::path p = partial / it->path;
        // Without privilege the files are ours, as with `tar x` by a user.
        // EINVAL: an id this user namespace does not map.
        if (it->uid && it->gid && ::lchown(p.c_str(), *it->uid, *it->gid) != 0 &&
            (root || (errno != EPERM && errno != EINVAL))) {
          throw std::system_error(errno, std::generic_category(), "chown " + it->path);
        }
        write_xattrs(p, it->xattrs);
        const timespec times[2] = {{it->mtime_ns / 1'000'000'000, it->mtime_ns % 1'000'000'000},
                                   {it->mtime_ns / 1'000'000'000, it->mtime_ns % 1'000'000'000}};
        if (it->type != 'l') ::chmod(p.c_str(), it->mode);
        ::utimensat(AT_FDCWD, p.c_str(), times, AT_SYMLINK_NOFOLLOW);
      }
      crash_point("download.before_commit");
      local.commit(*m);
    });
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) {
    co_await offload_bulk([&] {
      try {
        remove_tree(partial);
      } catch (const std::exception&) {
      }
    });
    std::rethrow_exception(failure);
  }
  co_return true;
}

}  // namespace sm::checkpoint
