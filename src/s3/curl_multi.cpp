#include "s3/curl_multi.hpp"

#include "s3/dynamic.hpp"

#include <unistd.h>

#include <asio/posix/stream_descriptor.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>

namespace sm::s3 {

// One socket curl asked us to watch. The descriptor is curl's: released, never closed, by us.
struct curl_multi::watch {
  watch(asio::any_io_executor executor, curl_socket_t fd) : fd(fd), descriptor(executor, fd) {}
  curl_socket_t fd;
  asio::posix::stream_descriptor descriptor;
  int wanted = 0;                         // CURL_POLL_IN / OUT / INOUT
  bool reading = false, writing = false;  // a wait is outstanding
  bool gone = false;                      // curl is done with it: handlers must not touch curl
};

curl_multi::curl_multi(asio::any_io_executor executor, long max_host_connections)
    : executor_(executor), multi_(lib::curl().multi_init()), timer_(executor) {
  if (!multi_) throw std::runtime_error("curl_multi_init failed");
  lib::curl().multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &curl_multi::on_socket);
  lib::curl().multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
  lib::curl().multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &curl_multi::on_timer);
  lib::curl().multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
  lib::curl().multi_setopt(multi_, CURLMOPT_MAX_HOST_CONNECTIONS, max_host_connections);
  lib::curl().multi_setopt(multi_, CURLMOPT_MAXCONNECTS, max_host_connections * 2);
}

curl_multi::~curl_multi() {
  for (auto& [easy, t] : transfers_) lib::curl().multi_remove_handle(multi_, easy);
  // Cleaning up closes the cached connections: through on_close, which releases our watches.
  lib::curl().multi_cleanup(multi_);
  for (auto& [fd, w] : watches_) {
    w->gone = true;
    w->descriptor.release();
  }
}

// The three callbacks are noexcept: an exception must never unwind through curl's C frames
// (that ends the process). What they cannot do fails the transfer, through curl.
int curl_multi::on_close(void* self_ptr, curl_socket_t fd) noexcept {
  auto* self = static_cast<curl_multi*>(self_ptr);
  // Our watch on it (if any) ends before the descriptor number can be reused.
  try {
    if (const auto it = self->watches_.find(fd); it != self->watches_.end()) {
      it->second->gone = true;
      it->second->descriptor.release();
      self->watches_.erase(it);
    }
  } catch (...) {
  }
  return ::close(fd);
}

int curl_multi::on_socket(CURL*, curl_socket_t fd, int what, void* self_ptr, void*) noexcept {
  try {
    return static_cast<curl_multi*>(self_ptr)->watch_socket(fd, what);
  } catch (...) {
    return -1;  // curl fails the transfers on this socket
  }
}

int curl_multi::watch_socket(curl_socket_t fd, int what) {
  curl_multi* self = this;
  auto it = self->watches_.find(fd);
  if (what == CURL_POLL_REMOVE) {
    if (it != self->watches_.end()) {
      it->second->gone = true;
      it->second->descriptor.release();  // cancels its waits
      self->watches_.erase(it);
    }
    return 0;
  }
  if (it == self->watches_.end()) {
    it = self->watches_.emplace(fd, std::make_shared<watch>(self->executor_, fd)).first;
  }
  it->second->wanted = what;
  self->arm(it->second);
  return 0;
}

void curl_multi::arm(const std::shared_ptr<watch>& w) {
  auto wait = [this, w](asio::posix::stream_descriptor::wait_type type, bool& outstanding,
                        int event) {
    if (outstanding) return;
    outstanding = true;
    w->descriptor.async_wait(type, [this, w, &outstanding, event](std::error_code ec) {
      outstanding = false;
      if (ec || w->gone) return;  // released: curl no longer wants it
      action(w->fd, event);
      if (!w->gone) arm(w);  // still wanted (curl may have changed what it wants meanwhile)
    });
  };
  if (w->wanted & CURL_POLL_IN)
    wait(asio::posix::stream_descriptor::wait_read, w->reading, CURL_CSELECT_IN);
  if (w->wanted & CURL_POLL_OUT)
    wait(asio::posix::stream_descriptor::wait_write, w->writing, CURL_CSELECT_OUT);
}

int curl_multi::on_timer(CURLM*, long timeout_ms, void* self_ptr) noexcept try {
  auto* self = static_cast<curl_multi*>(self_ptr);
  self->timer_.cancel();
  if (timeout_ms < 0) return 0;
  // Never act from inside a callback: the timer fires on the executor, even for 0 ms.
  self->timer_.expires_after(std::chrono::milliseconds(timeout_ms));
  self->timer_.async_wait([self](std::error_code ec) {
    if (!ec) self->action(CURL_SOCKET_TIMEOUT, 0);
  });
  return 0;
} catch (...) {
  return -1;
}

void curl_multi::action(curl_socket_t fd, int events) {
  int running = 0;
  lib::curl().multi_socket_action(multi_, fd, events, &running);
  collect();
}

void curl_multi::collect() {
  int left = 0;
  while (CURLMsg* message = lib::curl().multi_info_read(multi_, &left)) {
    if (message->msg != CURLMSG_DONE) continue;
    CURL* easy = message->easy_handle;
    const CURLcode result = message->data.result;
    lib::curl().multi_remove_handle(multi_, easy);
    if (const auto it = transfers_.find(easy); it != transfers_.end()) {
      it->second->result = result;
      it->second->finished = true;
      it->second->done.cancel();
      transfers_.erase(it);
    }
  }
}

asio::awaitable<CURLcode> curl_multi::perform(CURL* easy) {
  transfer t{asio::steady_timer(executor_, std::chrono::steady_clock::time_point::max())};
  // Every connection of ours closes through on_close, so that no watch outlives its number
  // (set before the transfer: a connection takes it when it is made).
  lib::curl().easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, &curl_multi::on_close);
  lib::curl().easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, this);
  transfers_[easy] = &t;
  if (const CURLMcode added = lib::curl().multi_add_handle(multi_, easy); added != CURLM_OK) {
    transfers_.erase(easy);
    co_return CURLE_FAILED_INIT;
  }
  while (!t.finished) {
    std::error_code ec;
    co_await t.done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return t.result;
}

}  // namespace sm::s3
