// libcurl's multi interface driven by the executor: curl tells us which sockets to watch and
// when its timer is due (CURLMOPT_SOCKETFUNCTION, CURLMOPT_TIMERFUNCTION); we watch them with
// asio waits and hand the readiness back through curl_multi_socket_action. No thread per
// request, no blocking: transfers are coroutines awaiting their completion.
#pragma once

#include <curl/curl.h>

#include <map>
#include <memory>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>

namespace sm::s3 {

class curl_multi {
 public:
  explicit curl_multi(asio::any_io_executor executor, long max_host_connections = 8);
  ~curl_multi();
  curl_multi(const curl_multi&) = delete;
  curl_multi& operator=(const curl_multi&) = delete;

  // Runs the prepared easy handle to its end; the handle stays the caller's.
  asio::awaitable<CURLcode> perform(CURL* easy);

 private:
  struct watch;
  struct transfer {
    asio::steady_timer done;
    CURLcode result = CURLE_OK;
    bool finished = false;
  };

  static int on_socket(CURL* easy, curl_socket_t fd, int what, void* self,
                       void* socket_data) noexcept;
  static int on_timer(CURLM* multi, long timeout_ms, void* self) noexcept;
  static int on_close(void* self, curl_socket_t fd) noexcept;
  int watch_socket(curl_socket_t fd, int what);
  void arm(const std::shared_ptr<watch>& w);
  void action(curl_socket_t fd, int events);
  void collect();

  asio::any_io_executor executor_;
  CURLM* multi_;
  asio::steady_timer timer_;
  std::map<curl_socket_t, std::shared_ptr<watch>> watches_;
  std::map<CURL*, transfer*> transfers_;
};

}  // namespace sm::s3
