#include "checkpoint/pipeline.hpp"

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
#include "base/file.hpp"
#include "checkpoint/contents_swap.hpp"
#include "checkpoint/remote.hpp"

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
          if (auto text = read_file(where.config_file)) {
            write_file_atomically(partial / "config.json", *text, 0600);
          }
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
    if (request.id.empty()) request.id = store.next_id();
    taken = store.exists(request.id) || std::filesystem::exists(store.partial_of(request.id));
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
  m.steps_ms["quiesce"] = ms_since(t);
  m.quiesce = held.mode();
  m.quiesce_note = held.note;

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

    // What was held still goes again (new PIDs when stopped), whatever became of the snapshot.
    h.step(request.id, "resume");
    t = clock::now();
    co_await h.resume(held);
    m.steps_ms["resume"] = ms_since(t);
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
// inside it where it is a mount point; then the checkpoint's copy goes in.
struct env_swap {
  std::filesystem::path dir, aside, trash;
  bool moved = false, in_place = false;

  explicit env_swap(const std::filesystem::path& env_dir)
      : dir(env_dir),
        aside(with_suffix(env_dir, ".restore-aside")),
        trash(with_suffix(env_dir, ".restore-trash")) {}

  void swap_in(const std::filesystem::path& from, const copy_options& copy) {
    remove_tree(aside);
    if (std::filesystem::exists(dir)) {
      std::error_code renamed;
      std::filesystem::rename(dir, aside, renamed);
      if (!renamed) {
        moved = true;
      } else if (renamed == std::errc::device_or_resource_busy ||
                 renamed == std::errc::cross_device_link) {
        in_place = true;  // a mount point: its contents are swapped, inside it
      } else {
        throw std::filesystem::filesystem_error("cannot rename", dir, aside, renamed);
      }
    }
    if (!dir.parent_path().empty()) std::filesystem::create_directories(dir.parent_path());
    if (in_place) {
      swap_contents(from, dir, copy);
    } else {
      copy_tree(from, dir, copy);
    }
  }
  // What was moved aside becomes garbage by one rename (so that a crash from here on is not
  // undone at start); a mount point's old contents go at once (COMMAND would see them).
  void keep() {
    if (moved) {
      try {
        remove_tree(trash);
        std::filesystem::rename(aside, trash);
      } catch (const std::exception&) {
        // An earlier restore's garbage that cannot be removed is in the way (remove_replaced
        // reports it): the old tree goes at once instead, for left as .restore-aside the next
        // start would put it back under the restored components.
        remove_tree(aside);
      }
    }
    if (in_place) finish_contents_swap(dir);
  }
  void undo() {
    if (moved) {
      remove_tree(dir);
      std::filesystem::rename(aside, dir);
    }
    if (in_place) undo_contents_swap(dir);
  }
};

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

    h.step(request.id, "swap");
    std::vector<supervisor::component*> restored;
    env_swap env(where.env_dir);
    try {
      for (auto& [c, copy] : swapped) {
        restored.push_back(c);  // before: a restore that fails half-way is undone too
        co_await c->restore(source, copy);
      }
      co_await offload_bulk([&] {
        copy_options copy;
        copy.progress = [&](std::uint64_t done) { p.done = done; };
        copy.move_data = request.move_data;
        env.swap_in(source / "mount", copy);
      });
    } catch (const std::exception& e) {
      failed.take(e);
    }
    if (failed.empty()) {
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
      co_await offload_bulk([&] {
        try {
          env.keep();
        } catch (const std::exception& e) {
          unmarked += (unmarked.empty() ? "" : "; ") + std::string("env_dir: ") + e.what();
        }
      });
      if (!unmarked.empty()) {
        out.error =
            "restored, but what it replaced could not all be set aside as garbage: " + unmarked;
      }
    } else {
      // The state from before goes back, as it was.
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
      if (!again.empty()) failed.text += "; putting the state back also failed: " + again;
    }
  }

  h.step(request.id, "resume");
  // Their pins are taken at once, so nothing COMMAND writes meanwhile is missed; the
  // snapshot's upload need not hold COMMAND back (a stop waits for a start under way).
  const auto executor = co_await asio::this_coro::executor;
  for (supervisor::component* c : stopped) asio::co_spawn(executor, c->start(), asio::detached);
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

std::vector<std::string> recover_interrupted_restore(const std::filesystem::path& env_dir) {
  std::vector<std::string> done;
  env_swap env(env_dir);
  remove_tree(env.trash);
  if (std::filesystem::exists(env.aside)) {
    remove_tree(env_dir);
    std::filesystem::rename(env.aside, env_dir);
    done.push_back("an interrupted restore was undone: the environment directory is as before it");
  }
  if (undo_contents_swap(env_dir)) {
    done.push_back(
        "an interrupted restore was undone: the environment directory's contents are as before "
        "it");
  }
  return done;
}

asio::awaitable<void> remove_replaced(std::vector<supervisor::component*> stateful,
                                      std::filesystem::path env_dir) {
  for (supervisor::component* c : stateful) co_await c->remove_replaced();
  co_await offload_bulk([&] { remove_tree(with_suffix(env_dir, ".restore-trash")); });
}

}  // namespace sm::checkpoint
