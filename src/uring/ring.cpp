#include "uring/ring.hpp"

#include <liburing.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <deque>
#include <map>
#include <system_error>
#include <utility>
#include <vector>

#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include "base/fd.hpp"

namespace sm::uring {

namespace {

// The user_data of an entry: a request's id (from 1); cancel_entry | id for a request to
// cancel that request; internal_entry for an entry neutralised after a failed submission.
constexpr std::uint64_t internal_entry = 0;
constexpr std::uint64_t cancel_entry = std::uint64_t{1} << 63;

// One request asks for at most this much; the caller sees a short count and continues. Linux
// moves at most about 2 GiB per read or write anyway, and the length field is 32 bits.
constexpr std::size_t max_request_size = std::size_t{1} << 30;

// How long to wait before asking again to cancel a request that the kernel was moving between
// states when first asked (-EALREADY, -ENOENT), and, while the ring is destroyed, for any
// completion before asking again.
constexpr auto cancel_retry_delay = std::chrono::milliseconds(1);
constexpr long destroy_wait_ns = 10'000'000;

enum class direction { read, write };

}  // namespace

struct ring::impl : std::enable_shared_from_this<impl> {
  // A read or write from its start until its completion is posted.
  struct request {
    virtual ~request() = default;
    // Posts the completion to the awaiting coroutine, unless `owner` is gone by the time it
    // runs: then the coroutine is destroyed with the posted function instead.
    virtual void complete(int result, std::weak_ptr<impl> owner,
                          const asio::any_io_executor& fallback) = 0;

    direction what = direction::read;
    int fd = -1;
    void* buffer = nullptr;
    unsigned size = 0;
    std::uint64_t offset = 0;
    bool submitted = false;          // in the kernel: its buffer is in use until its completion
    bool cancel_requested = false;   // the awaiting coroutine was cancelled
    unsigned cancels_in_flight = 0;  // IORING_OP_ASYNC_CANCEL entries for it not reaped yet
    asio::cancellation_slot slot;    // the awaiting coroutine's, while we have a handler in it
  };

  template <typename Handler>
  struct request_for final : request {
    explicit request_for(Handler&& h) : handler(std::move(h)) {}
    void complete(int result, std::weak_ptr<impl> owner,
                  const asio::any_io_executor& fallback) override {
      const auto executor = asio::get_associated_executor(handler, fallback);
      asio::post(executor,
                 [handler = std::move(handler), result, owner = std::move(owner)]() mutable {
                   if (owner.expired()) return;
                   std::move(handler)(result);
                 });
    }
    Handler handler;
  };

  impl(asio::any_io_executor executor, unsigned queue_depth)
      : executor_(std::move(executor)),
        completions_(executor_),
        cancel_retry_(executor_),
        queue_depth_(std::max(queue_depth, 1u)) {
    // A completion queue twice the submission queue (liburing's default) has room for every
    // request and one cancellation of each at once, so it cannot overflow.
    if (const int r = io_uring_queue_init(queue_depth_, &uring_, 0); r < 0) {
      throw std::system_error(-r, std::generic_category(), "io_uring_queue_init");
    }
    try {
      unique_fd signal(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      if (!signal) throw std::system_error(errno, std::generic_category(), "eventfd");
      if (const int r = io_uring_register_eventfd(&uring_, signal.get()); r < 0) {
        throw std::system_error(-r, std::generic_category(), "io_uring_register_eventfd");
      }
      completions_.assign(signal.release());
    } catch (...) {
      io_uring_queue_exit(&uring_);
      throw;
    }
  }

  ~impl() {
    // Blocking, but bounded: at most queue_depth_ reads or writes, each finishing or cancelled.
    // A cancellation can miss a request that the kernel is moving from a worker thread to a
    // poll wait, so it is asked again after each quiet interval until the request is gone.
    cancel_all_in_kernel();
    while (in_flight_ > 0) {
      __kernel_timespec interval{0, destroy_wait_ns};
      io_uring_cqe* ignored = nullptr;
      const int r = io_uring_submit_and_wait_timeout(&uring_, &ignored, 1, &interval, nullptr);
      if (r == -ETIME) {
        cancel_all_in_kernel();
        continue;
      }
      // Anything else means the ring itself is unusable, and nothing more will complete.
      if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) break;
      reap();
      for (const auto& [id, result] : reaped_) {
        if ((id & cancel_entry) != 0) {
          cancel_answered(id & ~cancel_entry, result);
        } else if (id != internal_entry) {
          discard(id);  // done with its buffer
        }
      }
    }
    while (!requests_.empty()) discard(requests_.begin()->first);
    std::error_code ignored;
    completions_.close(ignored);
    cancel_retry_.cancel();
    io_uring_queue_exit(&uring_);
  }

  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;

  template <typename Handler>
  void start(Handler&& handler, direction what, int fd, void* buffer, std::size_t size,
             std::uint64_t offset) {
    const std::uint64_t id = next_id_++;
    auto slot = asio::get_associated_cancellation_slot(handler);
    auto request = std::make_unique<request_for<std::decay_t<Handler>>>(std::move(handler));
    request->what = what;
    request->fd = fd;
    request->buffer = buffer;
    request->size = static_cast<unsigned>(std::min(size, max_request_size));
    request->offset = offset;
    if (slot.is_connected()) {
      request->slot = slot;
      slot.assign([this, id](asio::cancellation_type) { cancel(id); });
    }
    requests_.emplace(id, std::move(request));
    if (requests_in_kernel_ < queue_depth_ && queued_.empty()) {
      submit(id);
    } else {
      queued_.push_back(id);
    }
  }

  // The request into the kernel, or completed with the error if the kernel would not take it.
  void submit(std::uint64_t id) {
    request& r = *requests_.at(id);
    const int error = push([&](io_uring_sqe* sqe) {
      if (r.what == direction::read) {
        io_uring_prep_read(sqe, r.fd, r.buffer, r.size, r.offset);
      } else {
        io_uring_prep_write(sqe, r.fd, r.buffer, r.size, r.offset);
      }
      // The point of this ring: never run the read or write inline in io_uring_submit.
      io_uring_sqe_set_flags(sqe, IOSQE_ASYNC);
      io_uring_sqe_set_data64(sqe, id);
    });
    if (error < 0) return finish(id, error);
    r.submitted = true;
    ++requests_in_kernel_;
    wait_for_completions();
  }

  // From the awaiting coroutine's cancellation slot.
  void cancel(std::uint64_t id) {
    const auto it = requests_.find(id);
    if (it == requests_.end() || it->second->cancel_requested) return;
    request& r = *it->second;
    r.cancel_requested = true;
    if (!r.submitted) {
      queued_.erase(std::find(queued_.begin(), queued_.end(), id));
      // Finished from a posted function, not here: finishing clears the cancellation slot,
      // whose handler is what is running now.
      asio::post(executor_, [owner = weak_from_this(), id] {
        if (const auto self = owner.lock()) self->finish(id, -ECANCELED);
      });
      return;
    }
    // A read or write that a worker thread already runs on a regular file completes anyway,
    // with its real result. Either way the request ends with its own completion.
    push_cancel(id);
    wait_for_completions();
  }

  void push_cancel(std::uint64_t id) {
    request& r = *requests_.at(id);
    ++r.cancels_in_flight;
    const int error = push([&](io_uring_sqe* sqe) {
      io_uring_prep_cancel64(sqe, id, 0);
      io_uring_sqe_set_data64(sqe, cancel_entry | id);
    });
    if (error < 0) {
      --r.cancels_in_flight;
      retry_cancel_later(id);
    }
  }

  void cancel_all_in_kernel() {
    for (auto& [id, r] : requests_) {
      if (r->submitted && r->cancels_in_flight == 0) push_cancel(id);
    }
  }

  // The kernel's answer to a cancellation: 0 when it found the request (whose completion,
  // -ECANCELED, follows), else -EALREADY or -ENOENT when it was running or changing hands.
  void cancel_answered(std::uint64_t id, int result) {
    const auto it = requests_.find(id);
    if (it == requests_.end()) return;  // completed meanwhile
    request& r = *it->second;
    --r.cancels_in_flight;
    if (result != 0 && r.cancels_in_flight == 0) retry_cancel_later(id);
  }

  void retry_cancel_later(std::uint64_t id) {
    cancel_retries_.push_back(id);
    if (cancel_retry_armed_) return;
    cancel_retry_armed_ = true;
    cancel_retry_.expires_after(cancel_retry_delay);
    cancel_retry_.async_wait([owner = weak_from_this()](const std::error_code&) {
      const auto self = owner.lock();
      if (!self) return;
      self->cancel_retry_armed_ = false;
      for (const std::uint64_t id : std::exchange(self->cancel_retries_, {})) {
        const auto it = self->requests_.find(id);
        if (it != self->requests_.end() && it->second->submitted &&
            it->second->cancels_in_flight == 0) {
          self->push_cancel(id);
        }
      }
      self->wait_for_completions();
    });
  }

  // Prepares one entry and submits it. Returns 0 when the kernel took it, or a negative errno;
  // then the entry, still in the submission queue (a later submission carries it in), has
  // been turned into a no-op, so that it can no longer touch a buffer. Either way it is counted
  // in flight until its completion is reaped.
  template <typename Prepare>
  int push(Prepare prepare) {
    io_uring_sqe* sqe = io_uring_get_sqe(&uring_);
    if (sqe == nullptr) return -EBUSY;  // only after many failed submissions
    prepare(sqe);
    ++in_flight_;
    const int submitted = io_uring_submit(&uring_);
    // Entries are consumed in order and ours is the last: anything left means ours is.
    if (io_uring_sq_ready(&uring_) == 0) return 0;
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, internal_entry);
    return submitted < 0 ? submitted : -EAGAIN;
  }

  // Hands the result to the awaiting coroutine (posted) and forgets the request.
  void finish(std::uint64_t id, int result) {
    const auto it = requests_.find(id);
    if (it == requests_.end()) return;
    std::unique_ptr<request> r = std::move(it->second);
    requests_.erase(it);
    if (r->slot.is_connected()) r->slot.clear();
    r->complete(result, weak_from_this(), executor_);
  }

  // Forgets the request without completing it: its coroutine is destroyed, never resumed.
  void discard(std::uint64_t id) {
    const auto it = requests_.find(id);
    if (it == requests_.end()) return;
    if (it->second->slot.is_connected()) it->second->slot.clear();
    requests_.erase(it);
  }

  // One wait on the eventfd at a time, and only while the kernel holds entries of ours.
  void wait_for_completions() {
    if (waiting_ || in_flight_ == 0) return;
    waiting_ = true;
    completions_.async_wait(asio::posix::stream_descriptor::wait_read,
                            [owner = weak_from_this()](const std::error_code& error) {
                              const auto self = owner.lock();
                              if (!self) return;
                              self->waiting_ = false;
                              if (error == asio::error::operation_aborted) return;
                              self->collect();
                            });
  }

  // Moves the completion queue's entries to reaped_ and frees their places.
  void reap() {
    reaped_.clear();
    unsigned head = 0, count = 0;
    io_uring_cqe* cqe = nullptr;
    io_uring_for_each_cqe(&uring_, head, cqe) {
      ++count;
      // liburing's own, on kernels without IORING_FEAT_EXT_ARG; never counted in flight.
      if (cqe->user_data == LIBURING_UDATA_TIMEOUT) continue;
      reaped_.emplace_back(cqe->user_data, cqe->res);
    }
    io_uring_cq_advance(&uring_, count);
    in_flight_ -= static_cast<unsigned>(reaped_.size());
  }

  void collect() {
    // Reset the eventfd before reaping: a completion posted after the reap signals it again.
    eventfd_t ignored = 0;
    (void)::eventfd_read(completions_.native_handle(), &ignored);
    reap();
    // Completions first, then the answers to cancellations, which may be about them.
    for (const auto& [id, result] : reaped_) {
      if ((id & cancel_entry) != 0 || id == internal_entry || requests_.count(id) == 0) continue;
      --requests_in_kernel_;
      finish(id, result);
    }
    for (const auto& [id, result] : reaped_) {
      if ((id & cancel_entry) != 0) cancel_answered(id & ~cancel_entry, result);
    }
    while (!queued_.empty() && requests_in_kernel_ < queue_depth_) {
      const std::uint64_t id = queued_.front();
      queued_.pop_front();
      submit(id);
    }
    wait_for_completions();
  }

  io_uring uring_{};
  asio::any_io_executor executor_;
  asio::posix::stream_descriptor completions_;  // the eventfd registered with uring_
  asio::steady_timer cancel_retry_;
  const unsigned queue_depth_;
  unsigned in_flight_ = 0;           // entries submitted (or left in the queue) and not reaped
  unsigned requests_in_kernel_ = 0;  // reads and writes among them; at most queue_depth_
  bool waiting_ = false;             // an async_wait on completions_ is outstanding
  bool cancel_retry_armed_ = false;  // cancel_retry_ is set for cancel_retries_
  std::uint64_t next_id_ = 1;
  // Every request not completed yet, by id (its user_data): those in the kernel and those
  // queued. An id, not a pointer, in user_data, so that a stray completion finds nothing.
  std::map<std::uint64_t, std::unique_ptr<request>> requests_;
  std::deque<std::uint64_t> queued_;  // waiting for a place, in order
  std::vector<std::uint64_t> cancel_retries_;
  std::vector<std::pair<std::uint64_t, int>> reaped_;
};

ring::ring(asio::any_io_executor executor, unsigned queue_depth)
    : impl_(std::make_shared<impl>(std::move(executor), queue_depth)) {}

ring::~ring() = default;

namespace {

template <typename Impl>
auto start_request(Impl& impl, direction what, int fd, void* buffer, std::size_t size,
                   std::uint64_t offset) {
  return asio::async_initiate<decltype(asio::use_awaitable), void(int)>(
      [&impl, what, fd, buffer, size, offset](auto handler) {
        impl.start(std::move(handler), what, fd, buffer, size, offset);
      },
      asio::use_awaitable);
}

}  // namespace

asio::awaitable<std::size_t> ring::read(int fd, void* buffer, std::size_t size,
                                        std::uint64_t offset) {
  const int result = co_await start_request(*impl_, direction::read, fd, buffer, size, offset);
  if (result < 0) throw std::system_error(-result, std::generic_category(), "io_uring read");
  co_return static_cast<std::size_t>(result);
}

asio::awaitable<std::size_t> ring::write(int fd, const void* data, std::size_t size,
                                         std::uint64_t offset) {
  // The kernel only reads from it; one request type carries both directions.
  void* buffer = const_cast<void*>(data);
  const int result = co_await start_request(*impl_, direction::write, fd, buffer, size, offset);
  if (result < 0) throw std::system_error(-result, std::generic_category(), "io_uring write");
  co_return static_cast<std::size_t>(result);
}

const asio::any_io_executor& ring::get_executor() const {
  return impl_->executor_;
}

std::size_t ring::in_flight() const {
  return impl_->in_flight_;
}

}  // namespace sm::uring
