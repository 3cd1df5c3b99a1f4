#include "checkpoint/pipeline.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <map>
#include <system_error>
#include <thread>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <nlohmann/json.hpp>

#include "async/offload.hpp"
#include "base/crash_point.hpp"
#include "base/file.hpp"
#include "checkpoint/contents_swap.hpp"
#include "checkpoint/remote.hpp"
#include "checkpoint/restore_journal.hpp"

namespace sm::checkpoint {

namespace {

using clock = std::chrono::steady_clock;
using namespace asio::experimental::awaitable_operators;

std::int64_t ms_since(clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - t).count();
}

bool out_of_space(int error) {
  return error == ENOSPC || error == EDQUOT;
}

// A failure as the pipelines report it: its text, and its errno when it has one.
struct failure {
  std::string text;
  int error = 0;
  bool empty() const { return text.empty(); }
  void take(const std::exception& e) {
    text = e.what();
    if (const auto* s = dynamic_cast<const std::system_error*>(&e)) error = s->code().value();
  }
};

// The manifest records a component's copy under its name; the database's is the one kind of
// stateful component today, and the manifest's "database" field is its record.
void record(manifest& m, const std::string& component, const supervisor::snapshot_info& copy) {
  if (component == "database") {
    m.database =
        manifest::database_copy{copy.file, copy.bytes, copy.pages, copy.sha256, copy.method};
  }
}
std::optional<supervisor::snapshot_info> recorded(const manifest& m, const std::string& component) {
  if (component != "database" || !m.database) return std::nullopt;
  return supervisor::snapshot_info{m.database->file, m.database->bytes, m.database->pages,
                                   m.database->sha256, m.database->method};
}

// Copies env_dir (and the configuration, and the progress total beside it) into
// <partial>/mount. On the bulk worker.
asio::awaitable<void> snapshot_tree(const paths& where, const std::filesystem::path& partial,
                                    const create_request& request, manifest& m, progress& p,
                                    failure& failed, std::int64_t& took_ms) {
  co_await offload_bulk([&] {
    const auto t0 = clock::now();
    try {
      std::error_code ec;
      const bool have_env = std::filesystem::is_directory(where.env_dir, ec);
      // The total and the configuration beside the copy, on a thread of their own: on a
      // reflink file system the walk for the total would otherwise cost as much again.
      std::exception_ptr side_failure;
      std::thread side([&] {
        try {
          if (have_env) p.total = tree_size(where.env_dir);
          write_file_atomically(partial / "config.json", request.config, 0600);
        } catch (...) {
          side_failure = std::current_exception();
        }
      });
      try {
        if (have_env) {
          copy_options copy;
          copy.progress = [&](std::uint64_t done) { p.done = done; };
          copy.move_data = request.move_data;
          copy.sync = false;  // the commit's syncfs makes the whole checkpoint durable
          const copy_stats c = copy_tree(where.env_dir, partial / "mount", copy);
          m.mount = {c.files,           c.dirs,      c.symlinks, c.bytes, c.reflinked,
                     c.copy_file_range, c.read_write};
        } else {
          std::filesystem::create_directories(partial / "mount");
        }
      } catch (...) {
        side.join();
        throw;
      }
      side.join();
      if (side_failure) std::rethrow_exception(side_failure);
    } catch (const std::exception& e) {
      failed.take(e);
    }
    took_ms = ms_since(t0);
  });
}

// Each stateful component's snapshot, one after the other, on their own threads.
asio::awaitable<void> snapshot_components(const std::vector<supervisor::component*>& stateful,
                                          const std::filesystem::path& partial, manifest& m,
                                          failure& failed, std::int64_t& took_ms) {
  const auto t0 = clock::now();
  for (supervisor::component* c : stateful) {
    try {
      record(m, c->name(), co_await c->snapshot(partial));
    } catch (const std::exception& e) {
      failed.take(e);
      break;
    }
  }
  took_ms = ms_since(t0);
}

}  // namespace

asio::awaitable<create_outcome> create(host& h, const paths& where, create_request request,
                                       progress& p) {
  create_outcome out;
  const local_store store(where.checkpoints);
  std::optional<std::string> parent;
  bool taken = false;
  co_await offload([&] {
    if (request.id.empty()) request.id = store.next_id(request.taken_elsewhere);
    taken = request.taken_elsewhere.contains(request.id) || store.exists(request.id) ||
            std::filesystem::exists(store.partial_of(request.id));
    const auto all = store.list();
    if (!all.empty()) parent = all.back().id;
  });
  out.id = request.id;
  if (taken) {
    out.outcome = create_outcome::kind::id_taken;
    co_return out;
  }
  const auto started = clock::now();
  manifest& m = out.made;
  m.id = request.id;
  m.parent = parent.value_or("");
  m.version = request.version;
  p.done = 0;
  p.total = 0;

  h.step(request.id, "quiesce");
  auto t = clock::now();
  failure failed;
  quiesced held;
  try {
    held = co_await h.quiesce(true);
  } catch (const std::exception& e) {
    failed.take(e);
  }
  crash_point("checkpoint.after_quiesce");
  m.steps_ms["quiesce"] = ms_since(t);
  m.quiesce = held.mode();
  m.quiesce_note = held.note;
  m.quiesce_reach = held.reach;

  const std::filesystem::path partial = store.partial_of(request.id);
  const std::vector<supervisor::component*> stateful = h.stateful_components();
  if (failed.empty()) {
    // Into <id>.partial/: the components' copies beside the tree's.
    h.step(request.id, "snapshot");
    t = clock::now();
    co_await offload([&] { std::filesystem::create_directories(partial); });
    failure tree_failed, components_failed;
    std::int64_t tree_ms = 0, components_ms = 0;
    co_await (snapshot_tree(where, partial, request, m, p, tree_failed, tree_ms) &&
              snapshot_components(stateful, partial, m, components_failed, components_ms));
    failed = !tree_failed.empty() ? tree_failed : components_failed;
    if (!stateful.empty()) m.steps_ms["database"] = components_ms;
    m.steps_ms["mount"] = tree_ms;
    m.steps_ms["snapshot"] = ms_since(t);
    crash_point("checkpoint.after_local_copy");

    // What was held still goes again (new PIDs when stopped), whatever became of the snapshot.
    h.step(request.id, "resume");
    t = clock::now();
    co_await h.resume(held);
    m.steps_ms["resume"] = ms_since(t);
    crash_point("checkpoint.after_resume");
  }

  if (failed.empty()) {
    h.step(request.id, "commit");
    m.created_at = std::chrono::system_clock::now();
    m.steps_ms["total"] = ms_since(started);
    co_await offload([&] {
      try {
        store.commit(m);
      } catch (const std::system_error& e) {
        failed.take(e);
      }
    });
    if (failed.empty()) crash_point("checkpoint.after_commit");
  }
  if (!failed.empty()) {
    co_await offload([&] {
      try {
        remove_tree(partial);
      } catch (const std::exception&) {
      }
    });
    out.outcome =
        out_of_space(failed.error) ? create_outcome::kind::no_space : create_outcome::kind::failed;
    out.error = failed.text;
  }
  co_return out;
}

namespace {

// env_dir's part of a restore: moved aside by a rename where it can be, its contents swapped
// inside it where it is a mount point; then the checkpoint's copy goes in. Every step is
// durable before the journal's commit; the recovery steps are idempotent.
struct env_swap {
  std::filesystem::path dir, aside, trash;
  bool moved = false, in_place = false;

  explicit env_swap(const std::filesystem::path& env_dir)
      : dir(env_dir),
        aside(with_suffix(env_dir, ".restore-aside")),
        trash(with_suffix(env_dir, ".restore-trash")) {}

  void swap_in(const std::filesystem::path& from, const copy_options& copy) {
    remove_tree(aside);
    // A missing env_dir is set aside as an empty one: a rollback then puts that back, and
    // never leaves the checkpoint's copy beside the state from before.
    std::filesystem::create_directories(dir);
    std::error_code renamed;
    std::filesystem::rename(dir, aside, renamed);
    if (!renamed) {
      moved = true;
      fsync_directory_of(dir);
      crash_point("restore.after_env_rename");
    } else if (renamed == std::errc::device_or_resource_busy ||
               renamed == std::errc::cross_device_link) {
      in_place = true;  // a mount point: its contents are swapped, inside it
    } else {
      throw std::filesystem::filesystem_error("cannot rename", dir, aside, renamed);
    }
    if (in_place) {
      swap_contents(from, dir, copy);  // durable on return
    } else {
      copy_tree(from, dir, copy);  // durable on return, but for its name
      fsync_directory_of(dir);
    }
    crash_point("restore.after_env_copy");
  }
  // After the journal's commit: what was moved aside becomes garbage by one rename; a mount
  // point's old contents go at once (COMMAND would see them).
  void keep() {
    if (moved) {
      try {
        remove_tree(trash);
        std::filesystem::rename(aside, trash);
      } catch (const std::exception&) {
        // An earlier restore's garbage that cannot be removed is in the way (remove_replaced
        // reports it): the old tree goes at once instead.
        remove_tree(aside);
      }
    }
    if (in_place) finish_contents_swap(dir);
  }
  void undo() {
    if (moved) {
      remove_tree(dir);
      std::filesystem::rename(aside, dir);
      fsync_directory_of(dir);
    }
    if (in_place) undo_contents_swap(dir);
  }

  // At start, from whatever step a crash left: what was set aside comes back ...
  void roll_back() {
    if (std::filesystem::exists(aside)) {
      remove_tree(dir);
      std::filesystem::rename(aside, dir);
      fsync_directory_of(dir);
    }
    undo_contents_swap(dir);
  }
  // ... or goes.
  void roll_forward() {
    if (std::filesystem::exists(aside)) {
      remove_tree(trash);
      std::filesystem::rename(aside, trash);
    }
    remove_tree(trash);
    finish_contents_swap(dir);
  }
  void remove_garbage() {
    remove_tree(trash);
    remove_contents_swap_garbage(dir);
  }
};

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace

asio::awaitable<restore_outcome> restore(host& h, const paths& where, restore_request request,
                                         progress& p) {
  using kind = restore_outcome::kind;
  restore_outcome out;
  out.id = request.id;
  const local_store store(where.checkpoints);
  bool here = false;
  co_await offload([&] { here = store.exists(request.id); });
  if (!here && request.store) {
    // Made on another machine: downloaded into a local checkpoint first.
    h.step(request.id, "download");
    try {
      download_options options;
      options.restore_privileged = request.restore_privileged;
      const download_result got = co_await download(*request.store, store, request.id, options);
      out.dropped_privileged = got.dropped_privileged;
    } catch (const std::exception& e) {
      out.outcome = kind::download_failed;
      out.error = e.what();
      co_return out;
    }
  }
  std::optional<manifest> m;
  co_await offload([&] { m = store.read(request.id); });
  if (!m) {
    out.outcome = kind::not_found;
    co_return out;
  }
  const std::filesystem::path source = store.path_of(request.id);
  // Every component's copy is checked before anything stops: a damaged one changes nothing.
  std::vector<std::pair<supervisor::component*, supervisor::snapshot_info>> swapped;
  for (supervisor::component* c : h.stateful_components()) {
    std::optional<supervisor::snapshot_info> copy = recorded(*m, c->name());
    if (!copy) continue;  // not in this checkpoint: the component keeps its state
    try {
      co_await c->verify(source, *copy);
    } catch (const std::exception& e) {
      out.outcome = kind::damaged;
      out.error = e.what();
      co_return out;
    }
    swapped.emplace_back(c, *copy);
  }

  const auto started = clock::now();
  p.done = 0;
  p.total = m->mount.bytes;
  h.step(request.id, "quiesce");
  failure failed;
  quiesced held;
  try {
    held = co_await h.quiesce(false);
  } catch (const std::exception& e) {
    failed.take(e);
  }
  // The components whose state is replaced stop (a final sync: the store has everything the
  // old state had) and start again on the restored state (a new replication generation).
  std::vector<supervisor::component*> stopped;
  if (failed.empty()) {
    if (!swapped.empty()) h.step(request.id, "final sync");
    for (auto& [c, copy] : swapped) {
      co_await c->stop(supervisor::stop_reason::restore);
      stopped.push_back(c);
    }
    crash_point("restore.after_final_sync");

    h.step(request.id, "swap");
    std::vector<supervisor::component*> restored;
    env_swap env(where.env_dir);
    const restore_journal journal(where.journal_dir);
    restore_intent intent{request.id, where.env_dir, {}};
    for (auto& [c, copy] : swapped) intent.components.push_back(c->name());
    bool journaled = false, committed = false;
    std::string commit_warning;
    try {
      // The intent first, durable before anything moves: from here a crash is rolled back at
      // the next start, until the commit below rolls it forward instead.
      co_await offload([&] { journal.prepare(intent); });
      journaled = true;
      crash_point("restore.after_journal");
      for (auto& [c, copy] : swapped) {
        restored.push_back(c);  // before: a restore that fails half-way is undone too
        co_await c->restore(source, copy);
      }
      crash_point("restore.after_db_rename");
      co_await offload_bulk([&] {
        copy_options copy;
        copy.progress = [&](std::uint64_t done) { p.done = done; };
        copy.move_data = request.move_data;
        env.swap_in(source / "mount", copy);
      });
      crash_point("restore.before_commit");
      // The commit point: one rename. Both states are complete and durable on disk now.
      co_await offload([&] { commit_warning = journal.commit(); });
      committed = true;
      crash_point("restore.after_commit");
    } catch (const std::exception& e) {
      failed.take(e);
    }
    if (committed) {
      // Every copy is in: the restore is done, and nothing from here undoes any of it. What was
      // set aside only becomes garbage now; a component whose keep_restored() returned can no
      // longer undo_restore(), so undoing after a later failure would leave half the
      // checkpoint's state under an outcome that says the state before is back.
      std::string unmarked;
      for (supervisor::component* c : restored) {
        try {
          co_await c->keep_restored();
        } catch (const std::exception& e) {
          unmarked += (unmarked.empty() ? "" : "; ") + c->name() + ": " + e.what();
        }
      }
      crash_point("restore.after_db_keep");
      co_await offload_bulk([&] {
        try {
          env.keep();
        } catch (const std::exception& e) {
          unmarked += (unmarked.empty() ? "" : "; ") + std::string("env_dir: ") + e.what();
        }
      });
      crash_point("restore.after_env_keep");
      // What a keep could not mark stays set aside, and the next restore removes it: the
      // journal goes either way, so that the next restore is not refused.
      co_await offload([&] {
        try {
          journal.remove();
        } catch (const std::exception& e) {
          unmarked += (unmarked.empty() ? "" : "; ") + std::string("journal: ") + e.what();
        }
      });
      crash_point("restore.after_journal_removed");
      if (!commit_warning.empty()) {
        unmarked += (unmarked.empty() ? "" : "; ") + std::string("journal: ") + commit_warning;
      }
      if (!unmarked.empty()) {
        out.error =
            "restored, but what it replaced could not all be set aside as garbage: " + unmarked;
      }
    } else if (journaled) {
      // The state from before goes back, as it was; the journal only once it is all back (if
      // not, the next start finishes putting it back).
      std::string again;
      co_await offload_bulk([&] {
        try {
          env.undo();
        } catch (const std::exception& e) {
          again = e.what();
        }
      });
      for (supervisor::component* c : restored) {
        try {
          co_await c->undo_restore();
        } catch (const std::exception& e) {
          again = e.what();
        }
      }
      if (again.empty()) {
        co_await offload([&] {
          try {
            journal.remove();
          } catch (const std::exception& e) {
            again = std::string("removing the journal: ") + e.what();
          }
        });
      }
      if (!again.empty()) failed.text += "; putting the state back also failed: " + again;
    }
  }

  h.step(request.id, "resume");
  // Their pins are taken at once, so nothing COMMAND writes meanwhile is missed; the
  // snapshot's upload need not hold COMMAND back (a stop waits for a start under way).
  const auto executor = co_await asio::this_coro::executor;
  if (h.may_start()) {
    for (supervisor::component* c : stopped) asio::co_spawn(executor, c->start(), asio::detached);
  }
  co_await h.resume(held);
  out.took_ms = ms_since(started);
  if (!failed.empty()) {
    out.outcome = out_of_space(failed.error) ? kind::no_space : kind::failed;
    out.error = failed.text;
    co_return out;
  }
  out.restored = std::move(m);
  co_return out;
}

std::vector<std::string> recover_interrupted_restore(
    const std::filesystem::path& journal_dir, const std::filesystem::path& env_dir,
    const std::vector<restore_recovery>& components) {
  std::vector<std::string> done;
  const restore_journal journal(journal_dir);
  const auto [phase, intent] = journal.read();
  env_swap env(intent.env_dir.empty() ? env_dir : intent.env_dir);
  if (phase == restore_journal::phase::none) {
    // A finished restore's garbage, if a crash cut its removal short.
    for (const restore_recovery& c : components) c.remove_garbage();
    env.remove_garbage();
    return done;
  }
  // What the journal names; a journal that cannot be read names every component we know.
  std::vector<const restore_recovery*> named;
  for (const restore_recovery& c : components) {
    if (intent.components.empty() || std::find(intent.components.begin(), intent.components.end(),
                                               c.name) != intent.components.end()) {
      named.push_back(&c);
    }
  }
  std::vector<std::string> names;
  for (const restore_recovery* c : named) names.push_back(c->name);
  names.push_back("env_dir");
  const std::string of = intent.id.empty() ? "" : " of checkpoint " + intent.id;
  if (phase == restore_journal::phase::prepared) {
    env.roll_back();
    crash_point("recovery.half_done");
    for (const restore_recovery* c : named) c->roll_back();
    done.push_back("a restore" + of + " cut short before its commit was rolled back: " +
                   joined(names) + " are as before it");
  } else {
    for (const restore_recovery* c : named) c->roll_forward();
    crash_point("recovery.half_done");
    env.roll_forward();
    done.push_back("a restore" + of + " cut short after its commit was finished: " + joined(names) +
                   " are the checkpoint's");
  }
  for (const std::string& name : intent.components) {
    if (std::none_of(components.begin(), components.end(),
                     [&](const restore_recovery& c) { return c.name == name; })) {
      done.push_back("the interrupted restore also replaced " + name +
                     ", which is no longer configured: left as it is");
    }
  }
  // Only once all of it is done: a crash before this recovers again at the next start.
  crash_point("recovery.before_journal_removed");
  journal.remove();
  return done;
}

asio::awaitable<void> remove_replaced(std::vector<supervisor::component*> stateful,
                                      std::filesystem::path env_dir) {
  for (supervisor::component* c : stateful) co_await c->remove_replaced();
  co_await offload_bulk([&] { remove_tree(with_suffix(env_dir, ".restore-trash")); });
}

}  // namespace sm::checkpoint
