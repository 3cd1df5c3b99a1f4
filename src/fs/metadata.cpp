#include "fs/metadata.hpp"

#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <algorithm>
#include <cerrno>
#include <concepts>
#include <cstdio>
#include <ctime>
#include <map>
#include <system_error>
#include <unordered_map>
#include <utility>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

namespace sm::fs {

namespace {

constexpr int schema_version = 1;
// Slice ids reserved by one committed bump of the counter: one extra commit every 1024 writes.
constexpr std::uint64_t slice_batch = 1024;
constexpr std::uint32_t directory_size = 4096;

// Namespace tables, then the counters. Dentries carry an integer id: directory offsets are ids,
// so entries that come and go never shift the others. A directory's parent is kept on its inode
// (a directory has one name), which is all rename's subtree check and ".." need: no index on
// dentries(ino) to maintain on every create.
constexpr const char* schema_sql = R"sql(
CREATE TABLE format(id INTEGER PRIMARY KEY CHECK (id = 1), schema_version INTEGER NOT NULL,
  block_size INTEGER NOT NULL);
CREATE TABLE counters(id INTEGER PRIMARY KEY CHECK (id = 1), next_inode INTEGER NOT NULL,
  next_slice INTEGER NOT NULL, used_bytes INTEGER NOT NULL, inodes INTEGER NOT NULL);
CREATE TABLE inodes(ino INTEGER PRIMARY KEY, mode INTEGER NOT NULL, nlink INTEGER NOT NULL,
  uid INTEGER NOT NULL, gid INTEGER NOT NULL, rdev INTEGER NOT NULL, size INTEGER NOT NULL,
  atime INTEGER NOT NULL, atime_ns INTEGER NOT NULL, mtime INTEGER NOT NULL,
  mtime_ns INTEGER NOT NULL, ctime INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
  parent INTEGER NOT NULL);
CREATE TABLE dentries(id INTEGER PRIMARY KEY, parent INTEGER NOT NULL, name BLOB NOT NULL,
  ino INTEGER NOT NULL);
CREATE UNIQUE INDEX dentries_by_name ON dentries(parent, name);
CREATE INDEX dentries_by_parent ON dentries(parent);
CREATE TABLE chunks(ino INTEGER NOT NULL, idx INTEGER NOT NULL, slices BLOB NOT NULL,
  PRIMARY KEY(ino, idx)) WITHOUT ROWID;
CREATE TABLE slices(id INTEGER PRIMARY KEY, size INTEGER NOT NULL, refs INTEGER NOT NULL);
CREATE TABLE symlinks(ino INTEGER PRIMARY KEY, target BLOB NOT NULL);
CREATE TABLE xattrs(ino INTEGER NOT NULL, name BLOB NOT NULL, value BLOB NOT NULL,
  PRIMARY KEY(ino, name)) WITHOUT ROWID;
CREATE TABLE gc_pending(slice INTEGER PRIMARY KEY, size INTEGER NOT NULL,
  since_ns INTEGER NOT NULL);
)sql";

[[noreturn]] void fail(sqlite3* db, int rc, std::string_view what) {
  const int code = (rc & 0xff) == SQLITE_FULL ? ENOSPC : EIO;
  std::string message = "filesystem metadata: ";
  message += what;
  message += ": ";
  message += db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  throw std::system_error(code, std::generic_category(), message);
}

// One prepared statement, kept for the connection's life.
class statement {
 public:
  statement(sqlite3* db, const char* sql) : db_(db) {
    const int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr);
    if (rc != SQLITE_OK) fail(db, rc, sql);
  }
  ~statement() { sqlite3_finalize(stmt_); }
  statement(const statement&) = delete;
  statement& operator=(const statement&) = delete;

  template <class T>
    requires std::integral<T>
  void bind(int i, T v) {
    sqlite3_bind_int64(stmt_, i, static_cast<sqlite3_int64>(v));
  }
  // Bound without a copy: the caller's bytes outlive the step (cursor resets before returning).
  void bind(int i, std::string_view v) {
    sqlite3_bind_blob64(stmt_, i, v.empty() ? "" : v.data(), v.size(), SQLITE_STATIC);
  }
  bool step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    sqlite3_reset(stmt_);
    fail(db_, rc, sqlite3_sql(stmt_));
  }
  void reset() { sqlite3_reset(stmt_); }
  std::int64_t integer(int column) const { return sqlite3_column_int64(stmt_, column); }
  std::string_view blob(int column) const {
    const void* data = sqlite3_column_blob(stmt_, column);
    const int bytes = sqlite3_column_bytes(stmt_, column);
    return data ? std::string_view(static_cast<const char*>(data), std::size_t(bytes))
                : std::string_view();
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

// A statement's run: rows while it lasts, reset when it goes.
class cursor {
 public:
  explicit cursor(statement& s) : s_(s) {}
  ~cursor() { s_.reset(); }
  cursor(const cursor&) = delete;
  cursor& operator=(const cursor&) = delete;
  bool next() { return s_.step(); }
  std::int64_t integer(int column) const { return s_.integer(column); }
  std::uint64_t number(int column) const { return static_cast<std::uint64_t>(s_.integer(column)); }
  std::string_view blob(int column) const { return s_.blob(column); }

 private:
  statement& s_;
};

time_value now() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return time_value{ts.tv_sec, static_cast<std::uint32_t>(ts.tv_nsec)};
}

std::uint64_t rounded(std::uint64_t size) { return (size + 4095) & ~std::uint64_t(4095); }

// An inode's row: its attributes and, for a directory, the directory holding it (root: itself).
struct node {
  attributes a;
  inode_id parent = 0;
  bool is_dir() const { return S_ISDIR(a.mode); }
  bool is_regular() const { return S_ISREG(a.mode); }
};

#define NODE_COLUMNS \
  "ino, mode, nlink, uid, gid, rdev, size, atime, atime_ns, mtime, mtime_ns, ctime, ctime_ns, parent"
constexpr int node_column_count = 14;

node read_node(const cursor& c, int first) {
  node n;
  n.a.ino = c.number(first);
  n.a.mode = static_cast<std::uint32_t>(c.integer(first + 1));
  n.a.nlink = static_cast<std::uint32_t>(c.integer(first + 2));
  n.a.uid = static_cast<std::uint32_t>(c.integer(first + 3));
  n.a.gid = static_cast<std::uint32_t>(c.integer(first + 4));
  n.a.rdev = c.number(first + 5);
  n.a.size = c.number(first + 6);
  n.a.atime = {c.integer(first + 7), static_cast<std::uint32_t>(c.integer(first + 8))};
  n.a.mtime = {c.integer(first + 9), static_cast<std::uint32_t>(c.integer(first + 10))};
  n.a.ctime = {c.integer(first + 11), static_cast<std::uint32_t>(c.integer(first + 12))};
  n.parent = c.number(first + 13);
  return n;
}

struct entry {
  std::int64_t id = 0;
  inode_id ino = 0;
};

struct counters {
  std::uint64_t next_inode = 0;
  std::uint64_t used_bytes = 0;
  std::uint64_t inodes = 0;
};

// Net reference changes of one call, by slice id (a slice kept by a rewrite of its chunk never
// drops to 0 on the way), with the slice's size for a new row.
using reference_changes = std::map<std::uint64_t, std::pair<std::int64_t, std::uint32_t>>;

void count_references(reference_changes& changes, std::span<const slice_record> records,
                      std::int64_t sign) {
  for (const slice_record& r : records) {
    if (r.id == hole_slice) continue;
    auto& change = changes[r.id];
    change.first += sign;
    change.second = r.size;
  }
}

bool valid_record(const slice_record& r) {
  if (std::uint64_t(r.pos) + r.len > chunk_size) return false;
  return r.id == hole_slice || std::uint64_t(r.off) + r.len <= r.size;
}

std::int64_t nanoseconds(time_value t) { return t.sec * 1000000000 + t.nsec; }

}  // namespace

struct metadata::impl {
  sqlite3* db = nullptr;
  std::filesystem::path file;
  format settings;
  // Keyed by the SQL text's address: every statement is a literal at one place below.
  std::unordered_map<const char*, std::unique_ptr<statement>> statements;
  bool in_transaction = false;
  bool lost_transaction = false;  // see begin_transaction
  counters count;        // mirrors the counters row; written back at each commit
  counters before_call;  // restored when a call's savepoint rolls back
  std::uint64_t next_slice = 0, slice_limit = 0;  // [next, limit) reserved and committed

  ~impl() {
    statements.clear();
    if (db) sqlite3_close_v2(db);  // an open transaction rolls back, as a crash would
  }

  statement& prepared(const char* sql) {
    auto& slot = statements[sql];
    if (!slot) slot = std::make_unique<statement>(db, sql);
    return *slot;
  }

  template <class... A>
  cursor query(const char* sql, const A&... args) {
    statement& s = prepared(sql);
    int i = 0;
    (s.bind(++i, args), ...);
    return cursor(s);
  }

  template <class... A>
  void exec(const char* sql, const A&... args) {
    cursor c = query(sql, args...);
    while (c.next()) {
    }
  }

  void exec_script(const char* sql) {
    char* message = nullptr;
    const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &message);
    if (rc != SQLITE_OK) {
      std::string why = message ? message : "";
      sqlite3_free(message);
      fail(db, rc, why.empty() ? std::string_view(sql) : std::string_view(why));
    }
  }

  // ---- transactions --------------------------------------------------------------------------

  void load_counters() {
    cursor c = query("SELECT next_inode, used_bytes, inodes FROM counters WHERE id = 1");
    if (!c.next()) fail(db, SQLITE_CORRUPT, "the counters row is missing");
    count = counters{c.number(0), c.number(1), c.number(2)};
  }

  void begin_transaction() {
    if (in_transaction && !sqlite3_get_autocommit(db)) return;
    if (in_transaction) {
      // SQLite rolled the group's transaction back on an error of a read: the calls before it
      // are gone, so the commit that ends this group must fail rather than report them done.
      lost_transaction = true;
      load_counters();
    }
    exec("BEGIN IMMEDIATE");
    in_transaction = true;
  }

  // The indexes of `ino`'s chunks from `first` to `last`, in order.
  std::vector<std::uint32_t> chunk_indexes(inode_id ino, std::uint64_t first, std::uint64_t last) {
    std::vector<std::uint32_t> out;
    cursor c = query("SELECT idx FROM chunks WHERE ino = ?1 AND idx >= ?2 AND idx <= ?3 ORDER BY idx",
                     ino, first, last);
    while (c.next()) out.push_back(static_cast<std::uint32_t>(c.number(0)));
    return out;
  }

  // Undoes everything since the last commit (after SQLite itself gave up the transaction, or
  // when a commit failed).
  void abandon_transaction() noexcept {
    if (!sqlite3_get_autocommit(db)) sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    in_transaction = false;
    lost_transaction = false;
    try {
      load_counters();
    } catch (...) {
      // The next call fails the same way and says why.
    }
  }

  void commit() {
    if (!in_transaction) return;
    try {
      if (lost_transaction || sqlite3_get_autocommit(db)) {
        lost_transaction = false;
        fail(db, SQLITE_IOERR, "the open transaction was rolled back by an earlier error");
      }
      exec("UPDATE counters SET next_inode = ?1, used_bytes = ?2, inodes = ?3 WHERE id = 1",
           count.next_inode, count.used_bytes, count.inodes);
      exec("COMMIT");
      in_transaction = false;
    } catch (...) {
      abandon_transaction();
      throw;
    }
  }

  // The whole group is undone (SQLite gave it up on disk full or an I/O error, or its savepoint
  // could not be rolled back): its earlier calls are gone too, so its commit must fail rather
  // than let them be reported done.
  void lose_transaction() noexcept {
    abandon_transaction();
    in_transaction = true;
    lost_transaction = true;
  }

  void rollback_call() noexcept {
    if (sqlite3_get_autocommit(db)) {
      lose_transaction();
      return;
    }
    try {
      exec("ROLLBACK TO op");
      exec("RELEASE op");
      count = before_call;
    } catch (...) {
      lose_transaction();
    }
  }

  static bool succeeded(int result) { return result == 0; }
  static bool succeeded(bool result) { return result; }

  // One mutating call: a savepoint inside the group's transaction, kept when `body` returns 0
  // (or true), undone when it returns an errno (false) or throws.
  template <class F>
  auto mutate(F&& body) -> decltype(body()) {
    begin_transaction();
    exec("SAVEPOINT op");
    before_call = count;
    try {
      auto result = body();
      if (succeeded(result)) {
        exec("RELEASE op");
      } else {
        rollback_call();
      }
      return result;
    } catch (...) {
      rollback_call();
      throw;
    }
  }

  // ---- inodes and names ----------------------------------------------------------------------

  std::optional<node> load(inode_id ino) {
    cursor c = query("SELECT " NODE_COLUMNS " FROM inodes WHERE ino = ?1", ino);
    if (!c.next()) return std::nullopt;
    return read_node(c, 0);
  }

  // A node that a row names must exist: one that does not is a broken database.
  node must_load(inode_id ino) {
    std::optional<node> n = load(ino);
    if (!n) fail(db, SQLITE_CORRUPT, "a directory entry names a missing inode");
    return *n;
  }

  void store(const node& n) {
    const attributes& a = n.a;
    exec("UPDATE inodes SET mode = ?2, nlink = ?3, uid = ?4, gid = ?5, rdev = ?6, size = ?7, "
         "atime = ?8, atime_ns = ?9, mtime = ?10, mtime_ns = ?11, ctime = ?12, ctime_ns = ?13, "
         "parent = ?14 WHERE ino = ?1",
         a.ino, a.mode, a.nlink, a.uid, a.gid, a.rdev, a.size, a.atime.sec, a.atime.nsec,
         a.mtime.sec, a.mtime.nsec, a.ctime.sec, a.ctime.nsec, n.parent);
  }

  void insert(const node& n) {
    const attributes& a = n.a;
    exec("INSERT INTO inodes(" NODE_COLUMNS
         ") VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
         a.ino, a.mode, a.nlink, a.uid, a.gid, a.rdev, a.size, a.atime.sec, a.atime.nsec,
         a.mtime.sec, a.mtime.nsec, a.ctime.sec, a.ctime.nsec, n.parent);
  }

  // A directory to look in or change: ENOENT when absent (or removed while still open), ENOTDIR.
  int load_directory(inode_id ino, node& out) {
    std::optional<node> n = load(ino);
    if (!n || n->a.nlink == 0) return ENOENT;
    if (!n->is_dir()) return ENOTDIR;
    out = *n;
    return 0;
  }

  std::optional<entry> find(inode_id parent, std::string_view name) {
    cursor c = query("SELECT id, ino FROM dentries WHERE parent = ?1 AND name = ?2", parent, name);
    if (!c.next()) return std::nullopt;
    return entry{c.integer(0), c.number(1)};
  }

  bool has_entries(inode_id dir) {
    cursor c = query("SELECT 1 FROM dentries WHERE parent = ?1 LIMIT 1", dir);
    return c.next();
  }

  // EINVAL when `dir` is `ancestor` or lies below it (walking up the directories' parents).
  int check_outside(inode_id dir, inode_id ancestor) {
    for (inode_id at = dir;;) {
      if (at == ancestor) return EINVAL;
      if (at == root_inode) return 0;
      cursor c = query("SELECT parent FROM inodes WHERE ino = ?1", at);
      if (!c.next()) return 0;
      const inode_id up = c.number(0);
      if (up == at) return 0;
      at = up;
    }
  }

  void size_changed(const node& n, std::uint64_t old_size) {
    if (!n.is_regular()) return;
    count.used_bytes = count.used_bytes + rounded(n.a.size) - rounded(old_size);
  }

  // ---- chunks and references -----------------------------------------------------------------

  std::optional<std::string> raw_chunk(inode_id ino, std::uint32_t index) {
    cursor c = query("SELECT slices FROM chunks WHERE ino = ?1 AND idx = ?2", ino, index);
    if (!c.next()) return std::nullopt;
    return std::string(c.blob(0));
  }

  std::vector<slice_record> read_chunk(inode_id ino, std::uint32_t index) {
    std::optional<std::string> raw = raw_chunk(ino, index);
    return raw ? decode(*raw) : std::vector<slice_record>();
  }

  void write_chunk(inode_id ino, std::uint32_t index, std::string_view blob) {
    if (blob.empty()) {
      exec("DELETE FROM chunks WHERE ino = ?1 AND idx = ?2", ino, index);
    } else {
      exec("INSERT INTO chunks(ino, idx, slices) VALUES(?1, ?2, ?3) "
           "ON CONFLICT(ino, idx) DO UPDATE SET slices = excluded.slices",
           ino, index, blob);
    }
  }

  void append_to_chunk(inode_id ino, std::uint32_t index, std::span<const slice_record> records) {
    std::string blob = raw_chunk(ino, index).value_or(std::string());
    blob += encode(records);
    write_chunk(ino, index, blob);
  }

  // Every chunk of `ino` from `first` on goes, with its references.
  void drop_chunks(inode_id ino, std::uint32_t first, reference_changes& changes) {
    bool any = false;
    {
      cursor c = query("SELECT slices FROM chunks WHERE ino = ?1 AND idx >= ?2", ino, first);
      while (c.next()) {
        count_references(changes, decode(c.blob(0)), -1);
        any = true;
      }
    }
    if (any) exec("DELETE FROM chunks WHERE ino = ?1 AND idx >= ?2", ino, first);
  }

  void apply(const reference_changes& changes) {
    const time_value t = now();
    for (const auto& [id, change] : changes) {
      const auto [delta, size] = change;
      if (delta > 0) {
        std::int64_t refs = 0;
        {
          cursor c = query("INSERT INTO slices(id, size, refs) VALUES(?1, ?2, ?3) "
                           "ON CONFLICT(id) DO UPDATE SET refs = refs + excluded.refs "
                           "RETURNING refs",
                           id, size, delta);
          if (c.next()) refs = c.integer(0);
          while (c.next()) {
          }
        }
        // A slice referenced again (a restore may bring one back): no longer garbage.
        if (refs == delta) exec("DELETE FROM gc_pending WHERE slice = ?1", id);
      } else if (delta < 0) {
        std::optional<std::int64_t> refs;
        {
          cursor c = query("UPDATE slices SET refs = refs + ?2 WHERE id = ?1 RETURNING refs, size",
                           id, delta);
          if (c.next()) refs = c.integer(0);
          while (c.next()) {
          }
        }
        if (refs && *refs <= 0) {
          exec("DELETE FROM slices WHERE id = ?1", id);
          exec("INSERT OR REPLACE INTO gc_pending(slice, size, since_ns) VALUES(?1, ?2, ?3)", id,
               size, nanoseconds(t));
        }
      }
    }
  }

  // Cuts the file to `new_size`: chunks wholly past it go; the rest of the chunk it ends in is
  // covered by a hole so that a later extension reads zeros.
  void truncate(node& n, std::uint64_t new_size) {
    const std::uint64_t old_size = n.a.size;
    if (new_size < old_size) {
      reference_changes changes;
      drop_chunks(n.a.ino, static_cast<std::uint32_t>((new_size + chunk_size - 1) / chunk_size),
                  changes);
      const std::uint32_t pos = static_cast<std::uint32_t>(new_size % chunk_size);
      if (pos != 0) {
        const auto index = static_cast<std::uint32_t>(new_size / chunk_size);
        if (std::optional<std::string> blob = raw_chunk(n.a.ino, index)) {
          const std::uint32_t len = static_cast<std::uint32_t>(chunk_size - pos);
          const slice_record hole{pos, hole_slice, len, 0, len};
          *blob += encode(std::span(&hole, 1));
          write_chunk(n.a.ino, index, *blob);
        }
      }
      apply(changes);
    }
    n.a.size = new_size;
    size_changed(n, old_size);
  }

  int make(inode_id parent, std::string_view name, std::uint32_t mode, std::uint64_t rdev,
           const caller& who, std::string_view target, attributes& out) {
    if (name.size() > max_name_length) return ENAMETOOLONG;
    return mutate([&]() -> int {
      node dir;
      if (int e = load_directory(parent, dir)) return e;
      if (find(parent, name)) return EEXIST;
      const time_value t = now();
      node n;
      n.a.ino = count.next_inode++;
      n.a.mode = mode;
      n.a.uid = who.uid;
      n.a.gid = who.gid;
      if (dir.a.mode & S_ISGID) {
        n.a.gid = dir.a.gid;
        if (n.is_dir()) n.a.mode |= S_ISGID;
      }
      n.a.rdev = rdev;
      n.a.atime = n.a.mtime = n.a.ctime = t;
      if (n.is_dir()) {
        n.a.nlink = 2;
        n.a.size = directory_size;
        n.parent = parent;
        dir.a.nlink += 1;
      } else {
        n.a.nlink = 1;
        n.a.size = S_ISLNK(mode) ? target.size() : 0;
      }
      insert(n);
      if (S_ISLNK(mode)) {
        exec("INSERT INTO symlinks(ino, target) VALUES(?1, ?2)", n.a.ino, target);
      }
      exec("INSERT INTO dentries(parent, name, ino) VALUES(?1, ?2, ?3)", parent, name, n.a.ino);
      dir.a.mtime = dir.a.ctime = t;
      store(dir);
      count.inodes += 1;
      out = n.a;
      return 0;
    });
  }

  int remove_name(inode_id parent, std::string_view name, bool directory,
                  std::optional<inode_id>& unlinked) {
    unlinked.reset();
    if (name.size() > max_name_length) return ENAMETOOLONG;
    return mutate([&]() -> int {
      node dir;
      if (int e = load_directory(parent, dir)) return e;
      const std::optional<entry> e = find(parent, name);
      if (!e) return ENOENT;
      node n = must_load(e->ino);
      if (directory) {
        if (!n.is_dir()) return ENOTDIR;
        if (has_entries(n.a.ino)) return ENOTEMPTY;
        n.a.nlink = 0;
        dir.a.nlink -= 1;
      } else {
        if (n.is_dir()) return EISDIR;
        n.a.nlink -= 1;
      }
      exec("DELETE FROM dentries WHERE id = ?1", e->id);
      const time_value t = now();
      n.a.ctime = t;
      store(n);
      dir.a.mtime = dir.a.ctime = t;
      store(dir);
      if (n.a.nlink == 0) unlinked = n.a.ino;
      return 0;
    });
  }
};

metadata::metadata(std::unique_ptr<impl> impl) : impl_(std::move(impl)) {}
metadata::~metadata() = default;

std::unique_ptr<metadata> metadata::open(const std::filesystem::path& file,
                                         const format& wanted) {
  auto m = std::make_unique<impl>();
  m->file = file;
  const int rc = sqlite3_open_v2(file.c_str(), &m->db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
  if (rc != SQLITE_OK) fail(m->db, rc, "cannot open " + file.string());
  sqlite3_extended_result_codes(m->db, 1);
  // Only this connection writes; a reader elsewhere (a checkpoint's copy) never blocks it in WAL
  // mode, so a wait here would mean something is wrong: a short one, then EIO.
  sqlite3_busy_timeout(m->db, 1000);
  m->exec_script("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;");

  m->begin_transaction();
  try {
    bool exists = false;
    {
      cursor c = m->query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'format'");
      exists = c.next();
    }
    if (!exists) {
      if (wanted.block_size == 0) {
        throw std::system_error(EINVAL, std::generic_category(),
                                "filesystem metadata: block size 0");
      }
      m->exec_script(schema_sql);
      m->exec("INSERT INTO format(id, schema_version, block_size) VALUES(1, ?1, ?2)",
              schema_version, wanted.block_size);
      m->exec("INSERT INTO counters(id, next_inode, next_slice, used_bytes, inodes) "
              "VALUES(1, ?1, 1, 0, 1)",
              root_inode + 1);
      node root;
      root.a.ino = root_inode;
      root.a.mode = S_IFDIR | 0755;
      root.a.nlink = 2;
      root.a.size = directory_size;
      root.a.atime = root.a.mtime = root.a.ctime = now();
      root.parent = root_inode;
      m->insert(root);
    }
    {
      cursor c = m->query("SELECT schema_version, block_size FROM format WHERE id = 1");
      if (!c.next()) fail(m->db, SQLITE_CORRUPT, "the format row is missing");
      if (c.integer(0) != schema_version) {
        fail(m->db, SQLITE_CORRUPT, "unknown schema version " + std::to_string(c.integer(0)));
      }
      m->settings.block_size = static_cast<std::uint32_t>(c.integer(1));
    }
    m->load_counters();
    m->commit();
  } catch (...) {
    m->abandon_transaction();
    throw;
  }
  return std::unique_ptr<metadata>(new metadata(std::move(m)));
}

const format& metadata::settings() const { return impl_->settings; }
const std::filesystem::path& metadata::file() const { return impl_->file; }

void metadata::commit() { impl_->commit(); }

std::optional<std::uint32_t> metadata::next_chunk(inode_id ino, std::uint32_t from) {
  cursor c = impl_->query(
      "SELECT idx FROM chunks WHERE ino = ?1 AND idx >= ?2 ORDER BY idx LIMIT 1", ino,
      std::uint64_t(from));
  if (!c.next()) return std::nullopt;
  return static_cast<std::uint32_t>(c.number(0));
}
bool metadata::in_transaction() const { return impl_->in_transaction; }

int metadata::lookup(inode_id parent, std::string_view name, attributes& out) {
  if (name.size() > max_name_length) return ENAMETOOLONG;
  {
    cursor c = impl_->query("SELECT i.ino, i.mode, i.nlink, i.uid, i.gid, i.rdev, i.size, i.atime, "
                            "i.atime_ns, i.mtime, i.mtime_ns, i.ctime, i.ctime_ns, i.parent "
                            "FROM dentries d JOIN inodes i ON i.ino = d.ino "
                            "WHERE d.parent = ?1 AND d.name = ?2",
                            parent, name);
    if (c.next()) {
      out = read_node(c, 0).a;
      return 0;
    }
  }
  node dir;
  if (int e = impl_->load_directory(parent, dir)) return e;
  return ENOENT;
}

int metadata::getattr(inode_id ino, attributes& out) {
  std::optional<node> n = impl_->load(ino);
  if (!n) return ENOENT;
  out = n->a;
  return 0;
}

int metadata::setattr(inode_id ino, const attribute_change& change, attributes& out) {
  return impl_->mutate([&]() -> int {
    std::optional<node> found = impl_->load(ino);
    if (!found) return ENOENT;
    node& n = *found;
    const time_value t = now();
    bool changed = false;
    if (change.size) {
      if (n.is_dir()) return EISDIR;
      if (!n.is_regular()) return EINVAL;
      if (*change.size > max_file_size) return EFBIG;
      if (*change.size != n.a.size) {
        impl_->truncate(n, *change.size);
        if (!change.mtime && !change.mtime_now) n.a.mtime = t;
      }
      changed = true;
    }
    if (change.mode) {
      n.a.mode = (n.a.mode & S_IFMT) | (*change.mode & 07777);
      changed = true;
    }
    if (change.uid) {
      n.a.uid = *change.uid;
      changed = true;
    }
    if (change.gid) {
      n.a.gid = *change.gid;
      changed = true;
    }
    if (change.atime_now || change.atime) {
      n.a.atime = change.atime_now ? t : *change.atime;
      changed = true;
    }
    if (change.mtime_now || change.mtime) {
      n.a.mtime = change.mtime_now ? t : *change.mtime;
      changed = true;
    }
    if (changed) {
      n.a.ctime = t;
      impl_->store(n);
    }
    out = n.a;
    return 0;
  });
}

int metadata::make_node(inode_id parent, std::string_view name, std::uint32_t mode,
                        std::uint64_t rdev, const caller& who, attributes& out) {
  if ((mode & S_IFMT) == 0) mode |= S_IFREG;
  if (S_ISLNK(mode)) return EINVAL;  // symlinks have a target: make_symlink
  return impl_->make(parent, name, mode, rdev, who, {}, out);
}

int metadata::make_symlink(inode_id parent, std::string_view name, std::string_view target,
                           const caller& who, attributes& out) {
  if (target.size() > max_symlink_length) return ENAMETOOLONG;
  return impl_->make(parent, name, S_IFLNK | 0777, 0, who, target, out);
}

int metadata::read_symlink(inode_id ino, std::string& target) {
  {
    cursor c = impl_->query("SELECT target FROM symlinks WHERE ino = ?1", ino);
    if (c.next()) {
      target = std::string(c.blob(0));
      return 0;
    }
  }
  return impl_->load(ino) ? EINVAL : ENOENT;
}

int metadata::link(inode_id ino, inode_id new_parent, std::string_view new_name,
                   attributes& out) {
  if (new_name.size() > max_name_length) return ENAMETOOLONG;
  return impl_->mutate([&]() -> int {
    std::optional<node> n = impl_->load(ino);
    if (!n || n->a.nlink == 0) return ENOENT;
    if (n->is_dir()) return EPERM;
    node dir;
    if (int e = impl_->load_directory(new_parent, dir)) return e;
    if (impl_->find(new_parent, new_name)) return EEXIST;
    impl_->exec("INSERT INTO dentries(parent, name, ino) VALUES(?1, ?2, ?3)", new_parent, new_name,
                ino);
    const time_value t = now();
    n->a.nlink += 1;
    n->a.ctime = t;
    impl_->store(*n);
    dir.a.mtime = dir.a.ctime = t;
    impl_->store(dir);
    out = n->a;
    return 0;
  });
}

int metadata::unlink(inode_id parent, std::string_view name, std::optional<inode_id>& unlinked) {
  return impl_->remove_name(parent, name, false, unlinked);
}

int metadata::rmdir(inode_id parent, std::string_view name, std::optional<inode_id>& unlinked) {
  return impl_->remove_name(parent, name, true, unlinked);
}

int metadata::rename(inode_id parent, std::string_view name, inode_id new_parent,
                     std::string_view new_name, unsigned flags,
                     std::optional<inode_id>& unlinked) {
  unlinked.reset();
  if (flags & ~unsigned(RENAME_NOREPLACE | RENAME_EXCHANGE)) return EINVAL;
  const bool exchange = flags & RENAME_EXCHANGE;
  const bool no_replace = flags & RENAME_NOREPLACE;
  if (exchange && no_replace) return EINVAL;
  if (name.size() > max_name_length || new_name.size() > max_name_length) return ENAMETOOLONG;
  impl& m = *impl_;
  return m.mutate([&]() -> int {
    node from_dir, to_dir;
    if (int e = m.load_directory(parent, from_dir)) return e;
    if (int e = m.load_directory(new_parent, to_dir)) return e;
    const std::optional<entry> src = m.find(parent, name);
    if (!src) return ENOENT;
    const std::optional<entry> dst = m.find(new_parent, new_name);
    if (exchange && !dst) return ENOENT;
    if (no_replace && dst) return EEXIST;
    if (dst && dst->ino == src->ino) return 0;  // two names of one inode (or the same name)
    node s = m.must_load(src->ino);
    std::optional<node> d;
    if (dst) d = m.must_load(dst->ino);
    const bool moves = parent != new_parent;
    if (s.is_dir() && moves) {
      if (int e = m.check_outside(new_parent, s.a.ino)) return e;
    }
    if (exchange && d->is_dir() && moves) {
      if (int e = m.check_outside(parent, d->a.ino)) return e;
    }
    if (d && !exchange) {
      if (s.is_dir()) {
        if (!d->is_dir()) return ENOTDIR;
        if (m.has_entries(d->a.ino)) return ENOTEMPTY;
      } else if (d->is_dir()) {
        return EISDIR;
      }
    }
    // One directory may be both parents: change it through one reference and store it once.
    node* from = &from_dir;
    node* to = moves ? &to_dir : &from_dir;
    const time_value t = now();
    if (exchange) {
      m.exec("UPDATE dentries SET ino = ?2 WHERE id = ?1", src->id, d->a.ino);
      m.exec("UPDATE dentries SET ino = ?2 WHERE id = ?1", dst->id, s.a.ino);
      if (moves && s.is_dir()) {
        s.parent = new_parent;
        from->a.nlink -= 1;
        to->a.nlink += 1;
      }
      if (moves && d->is_dir()) {
        d->parent = parent;
        to->a.nlink -= 1;
        from->a.nlink += 1;
      }
      d->a.ctime = t;
      m.store(*d);
    } else {
      if (d) {
        m.exec("DELETE FROM dentries WHERE id = ?1", dst->id);
        if (d->is_dir()) {
          d->a.nlink = 0;
          to->a.nlink -= 1;
        } else {
          d->a.nlink -= 1;
        }
        d->a.ctime = t;
        m.store(*d);
        if (d->a.nlink == 0) unlinked = d->a.ino;
      }
      m.exec("UPDATE dentries SET parent = ?2, name = ?3 WHERE id = ?1", src->id, new_parent,
             new_name);
      if (moves && s.is_dir()) {
        s.parent = new_parent;
        from->a.nlink -= 1;
        to->a.nlink += 1;
      }
    }
    s.a.ctime = t;
    m.store(s);
    from->a.mtime = from->a.ctime = t;
    to->a.mtime = to->a.ctime = t;
    m.store(*from);
    if (moves) m.store(*to);
    return 0;
  });
}

int metadata::read_directory(inode_id dir, std::uint64_t offset, std::size_t max,
                             std::vector<dir_entry>& out) {
  out.clear();
  std::optional<node> d = impl_->load(dir);
  if (!d) return ENOENT;
  if (!d->is_dir()) return ENOTDIR;
  // Offsets: 0 the start, 1 after ".", 2 after "..", id + 2 after the entry with dentry id `id`.
  if (offset == 0 && out.size() < max) out.push_back(dir_entry{".", d->a, 1});
  if (offset <= 1 && out.size() < max) {
    std::optional<node> up = impl_->load(d->parent);
    attributes a;
    if (up) {
      a = up->a;
    } else {
      a.ino = d->parent;
      a.mode = S_IFDIR;
    }
    out.push_back(dir_entry{"..", a, 2});
  }
  if (out.size() >= max) return 0;
  const std::int64_t first_id = offset < 2 ? 0 : static_cast<std::int64_t>(offset - 1);
  cursor c = impl_->query(
      "SELECT d.id, d.name, i.ino, i.mode, i.nlink, i.uid, i.gid, i.rdev, i.size, i.atime, "
      "i.atime_ns, i.mtime, i.mtime_ns, i.ctime, i.ctime_ns, i.parent "
      "FROM dentries d JOIN inodes i ON i.ino = d.ino "
      "WHERE d.parent = ?1 AND d.id >= ?2 ORDER BY d.id LIMIT ?3",
      dir, first_id, static_cast<std::int64_t>(max - out.size()));
  while (c.next()) {
    out.push_back(dir_entry{std::string(c.blob(1)), read_node(c, 2).a,
                            static_cast<std::uint64_t>(c.integer(0)) + 2});
  }
  return 0;
}

void metadata::remove_inode(inode_id ino) {
  impl& m = *impl_;
  m.mutate([&]() -> int {
    std::optional<node> n = m.load(ino);
    if (!n || n->a.nlink != 0 || ino == root_inode) return 0;
    reference_changes changes;
    m.drop_chunks(ino, 0, changes);
    m.apply(changes);
    m.exec("DELETE FROM symlinks WHERE ino = ?1", ino);
    m.exec("DELETE FROM xattrs WHERE ino = ?1", ino);
    m.exec("DELETE FROM inodes WHERE ino = ?1", ino);
    if (n->is_regular()) m.count.used_bytes -= rounded(n->a.size);
    m.count.inodes -= 1;
    return 0;
  });
}

std::vector<inode_id> metadata::orphans() {
  std::vector<inode_id> out;
  cursor c = impl_->query("SELECT ino FROM inodes WHERE nlink = 0 ORDER BY ino");
  while (c.next()) out.push_back(c.number(0));
  return out;
}

std::vector<slice_record> metadata::chunk(inode_id ino, std::uint32_t index) {
  return impl_->read_chunk(ino, index);
}

int metadata::append_slices(inode_id ino, std::uint32_t index,
                            const std::vector<slice_record>& records, std::uint64_t min_size) {
  for (const slice_record& r : records) {
    if (!valid_record(r)) return EINVAL;
  }
  impl& m = *impl_;
  return m.mutate([&]() -> int {
    std::optional<node> n = m.load(ino);
    if (!n) return ENOENT;
    if (n->is_dir()) return EISDIR;
    if (!records.empty()) {
      m.append_to_chunk(ino, index, records);
      reference_changes changes;
      count_references(changes, records, +1);
      m.apply(changes);
    }
    const std::uint64_t old_size = n->a.size;
    n->a.size = std::max(old_size, min_size);
    m.size_changed(*n, old_size);
    const time_value t = now();
    n->a.mtime = n->a.ctime = t;
    m.store(*n);
    return 0;
  });
}

bool metadata::replace_chunk(inode_id ino, std::uint32_t index,
                             const std::vector<slice_record>& expected,
                             const std::vector<slice_record>& records) {
  for (const slice_record& r : records) {
    if (!valid_record(r)) return false;
  }
  impl& m = *impl_;
  return m.mutate([&]() -> bool {
    if (!m.load(ino)) return false;
    if (m.read_chunk(ino, index) != expected) return false;
    m.write_chunk(ino, index, encode(records));
    reference_changes changes;
    count_references(changes, expected, -1);
    count_references(changes, records, +1);
    m.apply(changes);
    return true;
  });
}

int metadata::punch_hole(inode_id ino, std::uint64_t offset, std::uint64_t length) {
  impl& m = *impl_;
  return m.mutate([&]() -> int {
    std::optional<node> n = m.load(ino);
    if (!n) return ENOENT;
    if (n->is_dir()) return EISDIR;
    if (!n->is_regular()) return EINVAL;
    // Bytes past the size already read as zeros (truncation leaves no data there).
    const std::uint64_t end =
        std::min(n->a.size, length > ~offset ? ~std::uint64_t(0) : offset + length);
    if (offset >= end) return 0;
    reference_changes changes;
    // Only chunks that exist: one that does not is a hole already (a huge sparse file has
    // millions of chunk indexes and few chunks).
    for (const std::uint32_t idx_in_range :
         m.chunk_indexes(ino, offset / chunk_size, (end - 1) / chunk_size)) {
      const std::uint64_t index = idx_in_range;
      const std::uint64_t base = index * chunk_size;
      const auto from = static_cast<std::uint32_t>(std::max(offset, base) - base);
      const auto to = static_cast<std::uint32_t>(std::min(end, base + chunk_size) - base);
      const std::uint64_t file_end = std::min(n->a.size - base, chunk_size);
      const auto idx = static_cast<std::uint32_t>(index);
      std::optional<std::string> blob = m.raw_chunk(ino, idx);
      if (!blob) continue;
      if (from == 0 && to >= file_end) {  // the whole chunk: it goes
        count_references(changes, decode(*blob), -1);
        m.write_chunk(ino, idx, {});
      } else {
        const slice_record hole{from, hole_slice, to - from, 0, to - from};
        *blob += encode(std::span(&hole, 1));
        m.write_chunk(ino, idx, *blob);
      }
    }
    m.apply(changes);
    const time_value t = now();
    n->a.mtime = n->a.ctime = t;
    m.store(*n);
    return 0;
  });
}

int metadata::copy_range(inode_id from, std::uint64_t from_offset, inode_id to,
                         std::uint64_t to_offset, std::uint64_t length) {
  impl& m = *impl_;
  return m.mutate([&]() -> int {
    std::optional<node> source = m.load(from);
    if (!source) return ENOENT;
    std::optional<node> other;
    if (to != from) {
      other = m.load(to);
      if (!other) return ENOENT;
    }
    node& target = to == from ? *source : *other;
    if (source->is_dir() || target.is_dir()) return EISDIR;
    if (!source->is_regular() || !target.is_regular()) return EINVAL;
    const std::uint64_t source_size = source->a.size;
    if (from_offset >= source_size || length == 0) return 0;
    const std::uint64_t len = std::min(length, source_size - from_offset);
    if (to_offset > max_file_size || len > max_file_size - to_offset) return EFBIG;
    if (from == to && from_offset < to_offset + len && to_offset < from_offset + len) {
      return EINVAL;
    }
    // All of the source painted before anything is written, then the destination's records cut
    // at its own chunk boundaries (a record never crosses a chunk).
    std::map<std::uint32_t, std::vector<segment>> painted;
    std::map<std::uint32_t, std::vector<slice_record>> out;
    for (std::uint64_t done = 0; done < len;) {
      const std::uint64_t s = from_offset + done, d = to_offset + done;
      const auto s_index = static_cast<std::uint32_t>(s / chunk_size);
      const auto d_index = static_cast<std::uint32_t>(d / chunk_size);
      const auto s_pos = static_cast<std::uint32_t>(s % chunk_size);
      const auto d_pos = static_cast<std::uint32_t>(d % chunk_size);
      const std::uint64_t piece = std::min({len - done, chunk_size - s_pos, chunk_size - d_pos});
      auto it = painted.find(s_index);
      if (it == painted.end()) {
        const std::uint64_t base = std::uint64_t(s_index) * chunk_size;
        const auto in_chunk = static_cast<std::uint32_t>(std::min(chunk_size, source_size - base));
        it = painted.emplace(s_index, paint(m.read_chunk(from, s_index), in_chunk)).first;
      }
      const std::uint64_t s_end = s_pos + piece;
      for (const segment& g : it->second) {
        const std::uint64_t a = std::max<std::uint64_t>(g.pos, s_pos);
        const std::uint64_t b = std::min<std::uint64_t>(std::uint64_t(g.pos) + g.len, s_end);
        if (a >= b) continue;
        slice_record r;
        r.pos = static_cast<std::uint32_t>(d_pos + (a - s_pos));
        r.len = static_cast<std::uint32_t>(b - a);
        if (g.id == hole_slice) {
          r.size = r.len;
        } else {
          r.id = g.id;
          r.size = g.size;
          r.off = static_cast<std::uint32_t>(g.off + (a - g.pos));
        }
        out[d_index].push_back(r);
      }
      done += piece;
    }
    reference_changes changes;
    for (const auto& [index, records] : out) {
      const bool only_holes = std::all_of(records.begin(), records.end(), [](const slice_record& r) {
        return r.id == hole_slice;
      });
      if (only_holes && !m.raw_chunk(to, index)) continue;  // zeros over nothing: nothing to write
      m.append_to_chunk(to, index, records);
      count_references(changes, records, +1);
    }
    m.apply(changes);
    const std::uint64_t old_size = target.a.size;
    target.a.size = std::max(old_size, to_offset + len);
    m.size_changed(target, old_size);
    const time_value t = now();
    target.a.mtime = target.a.ctime = t;
    m.store(target);
    return 0;
  });
}

std::uint64_t metadata::new_slice_id() {
  impl& m = *impl_;
  if (m.next_slice < m.slice_limit) return m.next_slice++;
  // The reservation must outlive a power loss, not only a crash of the process: blocks named by
  // these ids may reach the object store before anything else is synced. Its commit runs with
  // synchronous=FULL (the WAL synced at commit), which SQLite allows only outside a transaction,
  // so the open group commits first. If that fails, the group stays lost: its own commit then
  // fails too, and none of its calls is reported done.
  try {
    m.commit();
  } catch (...) {
    m.lose_transaction();
    throw;
  }
  m.exec_script("PRAGMA synchronous = FULL");
  std::uint64_t base = 0;
  try {
    m.begin_transaction();
    {
      cursor c = m.query("SELECT next_slice FROM counters WHERE id = 1");
      if (!c.next()) fail(m.db, SQLITE_CORRUPT, "the counters row is missing");
      base = c.number(0);
    }
    m.exec("UPDATE counters SET next_slice = ?1 WHERE id = 1", base + slice_batch);
    m.commit();
  } catch (...) {
    m.abandon_transaction();
    sqlite3_exec(m.db, "PRAGMA synchronous = NORMAL", nullptr, nullptr, nullptr);
    throw;
  }
  m.exec_script("PRAGMA synchronous = NORMAL");
  m.next_slice = base;
  m.slice_limit = base + slice_batch;
  return m.next_slice++;
}

int metadata::set_xattr(inode_id ino, std::string_view name, std::string_view value, int flags) {
  if (name.empty() || name.size() > max_name_length) return ERANGE;
  if (value.size() > max_xattr_value) return E2BIG;
  if (flags & ~(XATTR_CREATE | XATTR_REPLACE)) return EINVAL;
  impl& m = *impl_;
  return m.mutate([&]() -> int {
    std::optional<node> n = m.load(ino);
    if (!n) return ENOENT;
    bool exists = false;
    {
      cursor c = m.query("SELECT 1 FROM xattrs WHERE ino = ?1 AND name = ?2", ino, name);
      exists = c.next();
    }
    if ((flags & XATTR_CREATE) && exists) return EEXIST;
    if ((flags & XATTR_REPLACE) && !exists) return ENODATA;
    m.exec("INSERT INTO xattrs(ino, name, value) VALUES(?1, ?2, ?3) "
           "ON CONFLICT(ino, name) DO UPDATE SET value = excluded.value",
           ino, name, value);
    n->a.ctime = now();
    m.store(*n);
    return 0;
  });
}

int metadata::get_xattr(inode_id ino, std::string_view name, std::string& value) {
  if (name.empty() || name.size() > max_name_length) return ERANGE;
  {
    cursor c = impl_->query("SELECT value FROM xattrs WHERE ino = ?1 AND name = ?2", ino, name);
    if (c.next()) {
      value = std::string(c.blob(0));
      return 0;
    }
  }
  return impl_->load(ino) ? ENODATA : ENOENT;
}

int metadata::list_xattr(inode_id ino, std::vector<std::string>& names) {
  names.clear();
  if (!impl_->load(ino)) return ENOENT;
  cursor c = impl_->query("SELECT name FROM xattrs WHERE ino = ?1 ORDER BY name", ino);
  while (c.next()) names.emplace_back(c.blob(0));
  return 0;
}

int metadata::remove_xattr(inode_id ino, std::string_view name) {
  if (name.empty() || name.size() > max_name_length) return ERANGE;
  impl& m = *impl_;
  return m.mutate([&]() -> int {
    std::optional<node> n = m.load(ino);
    if (!n) return ENOENT;
    m.exec("DELETE FROM xattrs WHERE ino = ?1 AND name = ?2", ino, name);
    if (sqlite3_changes(m.db) == 0) return ENODATA;
    n->a.ctime = now();
    m.store(*n);
    return 0;
  });
}

statistics metadata::stats() {
  return statistics{impl_->count.used_bytes, impl_->count.inodes};
}

std::uint64_t metadata::unreferenced_slice_count() {
  cursor c = impl_->query("SELECT count(*) FROM gc_pending");
  return c.next() ? c.number(0) : 0;
}

bool metadata::slice_referenced(std::uint64_t id) {
  cursor c = impl_->query("SELECT refs FROM slices WHERE id = ?1", id);
  return c.next() && c.integer(0) > 0;
}

}  // namespace sm::fs
