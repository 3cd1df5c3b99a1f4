#include "async/offload.hpp"

#include <pthread.h>
#include <signal.h>

#include <exception>
#include <memory>
#include <mutex>
#include <thread>

#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>
#include <asio/this_coro.hpp>
#include <asio/thread_pool.hpp>
#include <asio/use_awaitable.hpp>

namespace sm {

namespace {
std::mutex pool_mutex;
// guarded by pool_mutex; each created on first use: [0] short calls, [1] bulk work, [2] process
// starts
std::unique_ptr<asio::thread_pool> pools[4];

// Every signal blocked on the calling thread while `start` runs: a thread started then inherits
// the mask. Signals are the executor's to receive, through signalfd and signal_set, never a
// default action taken on a worker.
template <class F>
auto with_signals_blocked(F start) {
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &previous);
  auto made = start();
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  return made;
}

// Threads a lane has: one each (its calls run in order), but the filesystem's, whose calls
// are independent of each other and many at once (a block staged while others are uploaded).
constexpr std::size_t files_lane = 3;
constexpr std::size_t files_threads = 4;

asio::thread_pool& worker(int lane) {
  std::lock_guard lock(pool_mutex);
  auto& pool = pools[lane];
  if (!pool) {
    const std::size_t threads = std::size_t(lane) == files_lane ? files_threads : 1;
    pool = with_signals_blocked([&] { return std::make_unique<asio::thread_pool>(threads); });
  }
  return *pool;
}

// Runs `work` where `dispatch` sends it (dispatch(body) must run body once, on another thread)
// and resumes the awaiting coroutine on its executor with the outcome.
template <class Dispatch>
asio::awaitable<void> run_away(std::function<void()> work, Dispatch dispatch) {
  auto executor = co_await asio::this_coro::executor;
  std::exception_ptr failure;
  co_await asio::async_initiate<decltype(asio::use_awaitable), void()>(
      [&](auto handler) {
        // The guard keeps the executor's run() from returning while the work is away.
        dispatch([&, executor, guard = asio::make_work_guard(executor),
                  handler = std::move(handler)]() mutable {
          try {
            work();
          } catch (...) {
            failure = std::current_exception();
          }
          asio::post(executor, std::move(handler));
        });
      },
      asio::use_awaitable);
  if (failure) std::rethrow_exception(failure);
}

asio::awaitable<void> run_on(int lane, std::function<void()> work) {
  return run_away(std::move(work),
                  [lane](auto body) { asio::post(worker(lane), std::move(body)); });
}
}  // namespace

asio::awaitable<void> offload(std::function<void()> work) {
  return run_on(0, std::move(work));
}

asio::awaitable<void> offload_bulk(std::function<void()> work) {
  return run_on(1, std::move(work));
}

asio::awaitable<void> offload_spawn(std::function<void()> work) {
  return run_on(2, std::move(work));
}

asio::awaitable<void> offload_files(std::function<void()> work) {
  return run_on(files_lane, std::move(work));
}

asio::awaitable<void> offload_thread(std::function<void()> work) {
  return run_away(std::move(work), [](auto body) {
    with_signals_blocked([&] { return std::thread(std::move(body)); }).detach();
  });
}

void stop_offload_worker() {
  std::lock_guard lock(pool_mutex);
  for (auto& pool : pools) {
    if (pool) {
      pool->join();
      pool.reset();
    }
  }
}

}  // namespace sm
