// Runs a blocking call (fsync, rename, a directory scan) off the executor's thread and resumes
// the awaiting coroutine back on the executor with its result or its exception.
//
// Why a thread at all: the executor must never block, and some file-system calls have no
// readiness to await. A single worker keeps them in order; it starts on first use, so an idle
// state-manager that never writes a file never has it. (io_uring can replace it for the calls
// it supports once the project's uring subsystem exists.)
#pragma once

#include <functional>

#include <asio/awaitable.hpp>

namespace sm {

// Capture by reference (`offload([&] {...})`): the caller's frame outlives the call. A lambda
// that captures a std::string, a path or a shared_ptr by value, written inside the co_await
// expression, has its captures destroyed twice by g++ 12 (a double free seen here).
asio::awaitable<void> offload(std::function<void()> work);

// The same on a second worker, for work that takes long: a checkpoint's or a restore's copy,
// the removal of a replaced tree, an upload's walk of 10,000 files. The calls above never queue
// behind it (an answer waited 60 ms for an upload's walk, GET /checkpoints for a whole copy).
// Calls of either kind run in order among themselves.
asio::awaitable<void> offload_bulk(std::function<void()> work);

// The same on a thread of its own, started for this call and ended with it: for a long piece
// of work that must run beside a bulk one (a checkpoint's database copy beside its tree copy)
// without holding up the short calls.
asio::awaitable<void> offload_thread(std::function<void()> work);

// The same on a worker kept for starting processes (proc::spawn). A start waits for the new
// program's exec (posix_spawn returns only then), and that exec may read a program, or search
// PATH, on state-manager's own FUSE mount, which only the executor answers: so it runs here,
// never on the executor, and never queued behind file work (a bulk copy, a long fsync) that
// would hold a restart up. One long-lived thread rather than one a call: a child that asked for
// PR_SET_PDEATHSIG gets that signal when the *thread* that started it ends.
asio::awaitable<void> offload_spawn(std::function<void()> work);

// The same on the filesystem's workers (a few threads, no order among calls): opening, renaming,
// syncing and removing its block files, so that a staged block never waits behind another
// user's call (an upload's read of a whole object, a checkpoint's walk) or behind another block.
asio::awaitable<void> offload_files(std::function<void()> work);

// Joins the workers; called once at shut-down, after the executor stopped.
void stop_offload_worker();

}  // namespace sm
