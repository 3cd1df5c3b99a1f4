// The lease on an environment's prefix (<key_prefix>lease.json): exactly one state-manager owns
// the state in the store at a time. Acquired before any component starts, renewed in the
// background every third of its time to live, released at shut-down or by POST /release-lease.
//
// With a store that does conditional writes (S3, file://), every change is a compare-and-swap:
// create with If-None-Match: *, take over an expired lease and renew with If-Match. A store that
// answers 501 to them (Swift's s3api) gets a best-effort lease instead: write, read back, check
// the owner. That mode is logged and shown ("mode": "best-effort"), never silent.
//
// Times are wall-clock (they are compared across machines): the machines' clocks must agree to
// well within the time to live.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>
#include <nlohmann/json_fwd.hpp>

#include "base/clock.hpp"
#include "base/duration.hpp"
#include "s3/object_store.hpp"

namespace sm::lease {

struct record {
  std::string owner;
  wall_time acquired_at{};
  wall_time expires_at{};
  std::uint64_t counter = 0;  // +1 on every acquisition and renewal
};
// lease.json's text, and back (nullopt: not a lease record).
std::string to_json(const record& r);
std::optional<record> from_json(std::string_view text);

// Another owner holds a live lease.
class held_elsewhere : public std::runtime_error {
 public:
  explicit held_elsewhere(record holder);
  const record& holder() const { return holder_; }

 private:
  record holder_;
};

enum class mode { conditional, best_effort };

class lease {
 public:
  // `store` must outlive the lease, and any request of it still under way: a lease destroyed
  // without release() (as by a process that dies) may leave a renewal at the store, which
  // then completes without touching the lease.
  lease(asio::any_io_executor executor, s3::object_store& store, std::string owner, duration ttl);
  ~lease();
  lease(const lease&) = delete;
  lease& operator=(const lease&) = delete;

  // Takes the lease if it is free, expired or already ours; throws held_elsewhere when another
  // owner's lease is live, s3::error when the store fails.
  asio::awaitable<void> acquire();

  // Renews in the background until release(); calls `lost` (once) when the lease is gone: taken
  // by another owner, or not renewed before it expired. A renewal whose write landed but whose
  // answer was lost (the client's retry then refused with 412) is recognised as ours, not as a
  // takeover.
  void keep(std::function<void(std::string why)> lost);

  // Stops renewing and frees the lease at once: lease.json is rewritten expired now, with our
  // owner kept (never removed, in either mode), so another owner can take it without waiting
  // and sees who held it before. A renewal already on its way to the store is waited for first
  // (freeing with the ETag from before it would be refused); `lost` is not called for it. Best
  // effort: a failure is logged and the lease expires by itself.
  asio::awaitable<void> release();

  // How long before its expiry the writers stop when no renewal has succeeded by then (DESIGN
  // 3.2): max(ttl/6, 2 s), at most ttl/3. The 2 s cover a write already on its way when the
  // margin is reached (it must land before another owner may take over) and the clocks' skew
  // between machines; ttl/6 lets the renewal try for half the time to live first (the first
  // renewal is due at ttl/3, then retries every second until the margin). The cap at ttl/3
  // keeps a short time to live (tests) usable.
  duration safety_margin() const;

  // Calls `near` once the lease is within safety_margin() of its expiry and no renewal has
  // succeeded: the writers stop now, ahead of `lost` (which comes at the expiry itself, if the
  // renewals keep failing). Once per stretch without a renewal; a renewal that succeeds later
  // makes writable() true again, and the next stretch may call it again. Watched from keep()
  // on; set it before keep().
  void on_expiry_near(std::function<void()> near);

  // Held, and not yet within the safety margin of its expiry: writing under the prefix is safe.
  bool writable() const;

  bool held() const { return held_; }
  // Who held it before our last acquire() (empty: nobody, or it was a fresh lease.json). Another
  // owner there means the local state may be older than the store's: restore it.
  const std::string& previous_owner() const { return previous_owner_; }
  const std::string& owner() const { return owner_; }
  // GET / "lease": held, mode, owner, expires_at, counter, last_error (and why it was lost).
  nlohmann::json status() const;

 private:
  // Every coroutine below may outlive the lease (renew_loop is detached): after each co_await
  // it checks `alive` before it touches a member.
  asio::awaitable<void> renew_loop(std::uint64_t generation);
  // One renewal: true once renewed; false with `lost_why` set when the lease is gone. Throws
  // what the store throws.
  asio::awaitable<bool> renew_once(std::string& lost_why);
  // False when the condition failed (another writer won); switches to best-effort on a 501.
  asio::awaitable<bool> write(const record& next, const std::string& etag, bool create);
  // After a refused If-Match: is lease.json exactly `next`, our own write whose answer was
  // lost? Then its ETag is ours.
  asio::awaitable<bool> landed(const record& next);
  // Calls expiry_near_ when the margin of the current record is reached; woken by every
  // renewal (margin_timer_ cancelled) to look at the new expiry.
  asio::awaitable<void> watch_margin(std::uint64_t generation);

  asio::any_io_executor executor_;
  s3::object_store& store_;
  std::string owner_;
  std::string previous_owner_;
  duration ttl_;
  mode mode_ = mode::conditional;
  bool held_ = false;
  record current_;
  std::string etag_;       // of lease.json as we last wrote it
  unsigned attempts_ = 0;  // tries a write gets (0: the store's); 2 while releasing
  std::string last_error_, lost_why_;
  std::function<void(std::string)> lost_;
  std::function<void()> expiry_near_;
  bool renewing_ = false;           // a renew_loop of the current generation runs
  std::uint64_t generation_ = 0;    // +1 by release(): an older renew_loop stops at its next step
  bool renewal_in_flight_ = false;  // a renewal is at the store; release() waits for it
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  asio::steady_timer timer_;         // the next renewal
  asio::steady_timer renewal_done_;  // cancelled when a renewal in flight comes back
  asio::steady_timer margin_timer_;  // the current record's expiry minus the safety margin
};

// The lease's own store over the same bucket and prefix: its own lane, so that a renewal never
// queues behind bulk traffic (DESIGN 3.2). Over S3, its own connections and request slots (a
// checkpoint's upload holds all 8 of the main store's) with a deadline of max(1 s, ttl/6) a
// request and 2 tries (renew_loop retries every second on its own until the expiry); over
// file://, its blocking calls on threads of their own, never behind the shared worker's copy
// of a large file.
std::unique_ptr<s3::object_store> make_store(asio::any_io_executor executor,
                                             s3::store_config config, duration ttl);

// This machine's owner id: "<hostname>-<16 hex digits>", generated once and kept in `file`
// (mode 0600) so that a restart in the same directory is the same owner and gets its own lease
// back at once.
std::string owner_id(const std::string& file);

}  // namespace sm::lease
