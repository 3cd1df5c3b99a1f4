#include "async/offload.hpp"

#include <pthread.h>
#include <signal.h>

#include <exception>
#include <memory>
#include <mutex>

#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>
#include <asio/this_coro.hpp>
#include <asio/thread_pool.hpp>
#include <asio/use_awaitable.hpp>

namespace sm {

namespace {
std::mutex pool_mutex;
std::unique_ptr<asio::thread_pool> pool;  // guarded by pool_mutex; created on first use

asio::thread_pool& worker() {
  std::lock_guard lock(pool_mutex);
  if (!pool) {
    // The worker blocks every signal (it inherits the mask it is created with): signals are
    // the executor's to receive, through signalfd and signal_set, never a default action
    // taken on this thread.
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &previous);
    pool = std::make_unique<asio::thread_pool>(1);
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  }
  return *pool;
}
}  // namespace

asio::awaitable<void> offload(std::function<void()> work) {
  auto executor = co_await asio::this_coro::executor;
  std::exception_ptr failure;
  co_await asio::async_initiate<decltype(asio::use_awaitable), void()>(
      [&](auto handler) {
        // The guard keeps the executor's run() from returning while the work is away.
        asio::post(worker(), [&, executor, guard = asio::make_work_guard(executor),
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

void stop_offload_worker() {
  std::lock_guard lock(pool_mutex);
  if (pool) {
    pool->join();
    pool.reset();
  }
}

}  // namespace sm
