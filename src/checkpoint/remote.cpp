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
#include "base/file.hpp"
#include "base/hex.hpp"
#include "checkpoint/checkpoint_id.hpp"
#include "checkpoint/copy_tree.hpp"
#include "checkpoint/index.hpp"
#include "checkpoint/local_store.hpp"
#include "s3/sha256.hpp"

namespace sm::checkpoint {

using json = nlohmann::json;

namespace {

constexpr unsigned in_flight = 8;

using entry = index_entry;

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

// Deeper trees stay local (a checkpoint that deep is refused by the upload, not by its making).
constexpr int max_upload_depth = 256;

// The content's SHA-256 and size of the file at `path` (not following a symlink).
std::pair<std::string, std::uint64_t> sha256_of_file(const std::filesystem::path& path) {
  return s3::sha256_of_file(path, /*follow_symlinks=*/false);
}

// The object `key`, nullopt when absent, refused (index_error) when larger than `limit` or,
// when `expected` is given, of another size: a HEAD, then a GET of that version and that size
// only (a ranged GET with If-Match), so that a huge object in the store is never read into
// memory, even one swapped in between the two requests.
asio::awaitable<std::optional<std::string>> get_bounded(s3::object_store& store, std::string key,
                                                        std::uint64_t limit,
                                                        std::optional<std::uint64_t> expected) {
  const std::optional<s3::object_info> info = co_await store.head(key);
  if (!info) co_return std::nullopt;
  if (info->size > limit) {
    throw index_error(key + " in the store has " + std::to_string(info->size) +
                      " bytes, more than the " + std::to_string(limit) + " allowed: refused");
  }
  if (expected && info->size != *expected) {
    throw index_error(key + " in the store has " + std::to_string(info->size) + " bytes, not the " +
                      std::to_string(*expected) + " its manifest names");
  }
  if (info->size == 0) co_return std::string();
  // One byte more than HEAD said: an object that grew meanwhile shows as too long.
  std::string body = co_await store.get(key, s3::byte_range(0, info->size, info->etag));
  if (body.size() != info->size) {
    throw index_error(key + " in the store changed while it was read");
  }
  co_return body;
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

namespace {

// The store's manifest of `id` as text; nullopt when absent.
asio::awaitable<std::optional<std::string>> manifest_text_of(s3::object_store& store,
                                                             const std::string& id) {
  try {
    co_return co_await get_bounded(store, remote_prefix(id) + "manifest.json", max_manifest_bytes,
                                   std::nullopt);
  } catch (const s3::error& e) {
    if (e.status() != 404) throw;  // removed between HEAD and GET: absent
  }
  co_return std::nullopt;
}

// Whether two manifests describe the same checkpoint: the one made here and its copy in the
// store (or the copy a download made here of one in the store, whose manifest.json is rewritten
// and whose index may differ: privileged bits dropped, holes not punched). Another machine's
// checkpoint of that id differs in its creation time or its content.
bool same_checkpoint(const manifest& a, const manifest& b) {
  const auto database_sum = [](const manifest& m) {
    return m.database ? m.database->sha256 : std::string();
  };
  return a.id == b.id && a.created_at == b.created_at && a.parent == b.parent &&
         database_sum(a) == database_sum(b) && a.mount.files == b.mount.files &&
         a.mount.dirs == b.mount.dirs && a.mount.symlinks == b.mount.symlinks &&
         a.mount.bytes == b.mount.bytes;
}

// Whether the store's manifest of `id` is absent (false) or that of the checkpoint we would
// write (true); anything else is another checkpoint of that id.
asio::awaitable<bool> already_uploaded(s3::object_store& store, const std::string& id,
                                       const std::string& ours) {
  std::optional<std::string> theirs;
  try {
    theirs = co_await manifest_text_of(store, id);
  } catch (const index_error&) {
    throw id_taken_remotely(id);  // present, and too large to be ours
  }
  if (!theirs) co_return false;
  if (*theirs == ours) co_return true;
  std::optional<remote_manifest> stored, mine;
  try {
    stored = parse_remote_manifest(*theirs, id);
    mine = parse_remote_manifest(ours, id);
  } catch (const index_error&) {
    throw id_taken_remotely(id);  // a format of a newer state-manager: not ours
  }
  if (!stored || !mine || !same_checkpoint(stored->local, mine->local)) {
    throw id_taken_remotely(id);
  }
  co_return true;
}

}  // namespace

asio::awaitable<std::uint64_t> upload(s3::object_store& store, const local_store& local,
                                      std::string id, std::function<void(std::uint64_t)> progress,
                                      std::function<bool()> cancelled) {
  crash_point("upload.start");
  const std::filesystem::path root = local.path_of(id);
  std::vector<entry> entries;
  std::string manifest_text, index_text;
  co_await offload_bulk([&] {
    // The first name of each inode with several: later names become 'h' entries.
    std::map<std::pair<dev_t, ino_t>, std::string> first_name;
    for (auto it = std::filesystem::recursive_directory_iterator(root);
         it != std::filesystem::recursive_directory_iterator(); ++it) {
      // The walk holds a descriptor per level and every entry's whole path: a tree thousands of
      // levels deep (copied and restored fine here) would take the bulk worker for minutes and
      // then fail. It is refused at once, saying why.
      if (it.depth() >= max_upload_depth) {
        throw std::runtime_error("checkpoint " + id + " is too deep to upload: more than " +
                                 std::to_string(max_upload_depth) + " directory levels");
      }
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
        // The checkpoint is complete and never changes: its content is what goes up.
        auto [sum, size] = sha256_of_file(it->path());
        e.sha256 = std::move(sum);
        e.size = size;
      } else {
        continue;  // FIFOs, sockets and device nodes carry no data worth a copy elsewhere
      }
      e.xattrs = read_xattrs(it->path());
      if (e.type == 'f') e.holes = holes_of(it->path(), st);
      entries.push_back(std::move(e));
    }
    std::ifstream in(root / "manifest.json");
    const std::string local_manifest((std::istreambuf_iterator<char>(in)),
                                     std::istreambuf_iterator<char>());
    if (local_manifest.empty()) throw std::runtime_error("checkpoint " + id + " has no manifest");
    // Here too: for 10,000 files, building and printing the index held the executor ~15 ms.
    index_text = index_to_text(entries);
    manifest_text = remote_manifest_text(local_manifest, s3::sha256_hex(index_text), index_text.size());
  });
  if (index_text.size() > max_index_bytes) {
    throw std::runtime_error("checkpoint " + id +
                             " has too many files for the store (its index is " +
                             std::to_string(index_text.size()) + " bytes)");
  }
  const std::string prefix = remote_prefix(id);
  // Another machine's checkpoint of this id is left alone before anything is written (its
  // objects are content-addressed, so a race past this check still replaces none of them).
  if (co_await already_uploaded(store, id, manifest_text)) co_return 0;

  // Each content goes up once, under its hash.
  std::vector<const entry*> files;
  std::set<std::string> hashes;
  for (const entry& e : entries) {
    if (e.type == 'f' && hashes.insert(e.sha256).second) files.push_back(&e);
  }
  std::uint64_t done = 0;
  co_await for_each_parallel(files.size(), [&](std::size_t i) -> asio::awaitable<void> {
    if (cancelled && cancelled()) throw upload_cancelled();
    const entry& e = *files[i];
    co_await store.put_file(prefix + file_key(e, current_format), root / e.path);
    if (i == 0) crash_point("upload.middle");
    done += e.size;
    if (progress) progress(done);
  });
  s3::put_options json_type;
  json_type.content_type = "application/json";
  if (cancelled && cancelled()) throw upload_cancelled();
  const std::optional<remote_manifest> parsed = parse_remote_manifest(manifest_text, id);
  if (!parsed) throw std::runtime_error("checkpoint " + id + " has an unreadable manifest");
  co_await store.put(prefix + index_key(current_format, parsed->index_sha256),
                     std::move(index_text), json_type);
  // Last, and create-only: its presence is what says the checkpoint is whole in the store, and
  // it never replaces another's. A 412 after a retry may be our own first attempt, whose
  // answer was lost: the same text is success.
  crash_point("upload.before_manifest");
  s3::put_options create = json_type;
  create.if_none_match = true;
  int refused = 0;  // the store's answer to the create: 412 (exists) or 501 (cannot)
  try {
    co_await store.put(prefix + "manifest.json", manifest_text, create);
  } catch (const s3::error& e) {
    if (e.status() != 412 && e.status() != 501) throw;
    refused = e.status();
  }
  if (refused == 412) {
    // Perhaps our own first attempt, whose answer was lost: the same text is success.
    if (!co_await already_uploaded(store, id, manifest_text)) {
      throw std::runtime_error("checkpoint " + id + ": the store refused to create its manifest");
    }
  } else if (refused == 501) {
    // The store cannot create conditionally (Swift's s3api): best effort, a HEAD then a plain
    // PUT. Two machines racing between them can still both write; the later manifest wins,
    // and each one's objects stay intact (content-addressed), so either checkpoint restores
    // whole.
    if (!co_await already_uploaded(store, id, manifest_text)) {
      co_await store.put(prefix + "manifest.json", manifest_text, json_type);
    }
  }
  crash_point("upload.after_manifest");
  co_return done;
}

asio::awaitable<std::optional<manifest>> read_remote(s3::object_store& store, std::string id) {
  std::optional<std::string> text;
  try {
    text = co_await manifest_text_of(store, id);
    if (!text) co_return std::nullopt;
    std::optional<remote_manifest> m = parse_remote_manifest(*text, id);
    if (!m) co_return std::nullopt;
    co_return std::move(m->local);
  } catch (const index_error&) {
    co_return std::nullopt;  // too large, or a format of a newer state-manager
  }
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

asio::awaitable<remote_copy> remote_copy_of(s3::object_store& store, manifest local) {
  std::optional<std::string> text;
  try {
    text = co_await manifest_text_of(store, local.id);
  } catch (const index_error&) {
    co_return remote_copy::other;  // too large to be anyone's manifest
  }
  if (!text) co_return remote_copy::absent;
  std::optional<remote_manifest> stored;
  try {
    stored = parse_remote_manifest(*text, local.id);
  } catch (const index_error&) {
    co_return remote_copy::other;
  }
  co_return stored&& same_checkpoint(stored->local, local) ? remote_copy::same : remote_copy::other;
}

asio::awaitable<download_result> download(s3::object_store& store, const local_store& local,
                                          std::string id, download_options options) {
  const std::string prefix = remote_prefix(id);
  crash_point("download.start");
  download_result result;
  const std::optional<std::string> manifest_text = co_await manifest_text_of(store, id);
  if (!manifest_text) co_return result;
  const std::optional<remote_manifest> m = parse_remote_manifest(*manifest_text, id);
  if (!m) throw index_error("checkpoint " + id + " in the store is not readable");
  const std::string index_name = prefix + index_key(m->format, m->index_sha256);
  const std::optional<std::string> index_found = co_await get_bounded(
      store, index_name, max_index_bytes,
      m->format >= 2 ? std::optional<std::uint64_t>(m->index_bytes) : std::nullopt);
  if (!index_found) throw index_error("checkpoint " + id + " in the store has no index");
  const std::string& index_text = *index_found;
  // Checked and read off the executor: the index of 10,000 files is a few MB of JSON.
  std::vector<entry> entries;
  co_await offload_bulk([&] {
    if (m->format >= 2 && s3::sha256_hex(index_text) != m->index_sha256) {
      throw index_error("checkpoint " + id +
                        " in the store is damaged: its index does not match the manifest's hash");
    }
    try {
      entries = parse_index(index_text, m->format);
    } catch (const index_error& e) {
      throw index_error("checkpoint " + id + " in the store: its index " + e.what());
    }
    if (!options.restore_privileged) result.dropped_privileged = drop_privileged(entries);
  });
  result.found = true;
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
      if (m->format >= 2 && e.size == 0) {
        // Nothing to read: an empty file is made here (its hash is still checked below).
        co_await offload_bulk([&] { write_file_atomically(partial / e.path, std::string(), 0600); });
      } else {
        // At most the size the index names: an object swapped for a huge one never fills the
        // disk before its hash refuses it.
        std::optional<s3::byte_range> bound;
        if (m->format >= 2) bound = s3::byte_range(0, e.size - 1);
        co_await store.get_file(prefix + file_key(e, m->format), partial / e.path, bound);
      }
      if (i == 0) crash_point("download.middle");
      if (m->format < 2) co_return;  // no checksums then
      co_await offload_bulk([&] {
        const auto [sum, size] = sha256_of_file(partial / e.path);
        if (sum != e.sha256 || size != e.size) {
          throw damaged_object("checkpoint " + id + " in the store is damaged: the object for " +
                               e.path + " does not match its sha256 or size");
        }
      });
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
      local.commit(m->local);
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
  co_return result;
}

}  // namespace sm::checkpoint
