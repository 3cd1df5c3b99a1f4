#include "lease/lease.hpp"

#include <unistd.h>

#include <random>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include "base/file.hpp"
#include "base/log.hpp"

namespace sm::lease {

using json = nlohmann::json;
using std::chrono::system_clock;

namespace {
constexpr const char* key = "lease.json";

std::int64_t to_ms(wall_time t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}
wall_time from_ms(std::int64_t ms) {
  return wall_time(std::chrono::milliseconds(ms));
}

// Another writer's conditional write won: 412, or S3's 409 ConditionalRequestConflict (two
// conditional writes of the same key at once; S3 says to try again).
bool lost_race(const s3::error& e) {
  return e.status() == 412 || e.code() == "PreconditionFailed" ||
         e.code() == "ConditionalRequestConflict";
}
}  // namespace

std::string to_json(const record& r) {
  return json{{"owner", r.owner},
              {"acquired_at", format_rfc3339(r.acquired_at, true)},
              {"expires_at", format_rfc3339(r.expires_at, true)},
              {"acquired_at_ms", to_ms(r.acquired_at)},
              {"expires_at_ms", to_ms(r.expires_at)},
              {"counter", r.counter}}
             .dump() +
         "\n";
}

std::optional<record> from_json(std::string_view text) {
  const json j = json::parse(text, nullptr, false);
  if (!j.is_object() || !j.contains("owner") || !j["owner"].is_string() ||
      !j.contains("expires_at_ms") || !j["expires_at_ms"].is_number_integer()) {
    return std::nullopt;
  }
  record r;
  r.owner = j["owner"].get<std::string>();
  r.expires_at = from_ms(j["expires_at_ms"].get<std::int64_t>());
  if (j.contains("acquired_at_ms") && j["acquired_at_ms"].is_number_integer()) {
    r.acquired_at = from_ms(j["acquired_at_ms"].get<std::int64_t>());
  }
  if (j.contains("counter") && j["counter"].is_number_unsigned()) {
    r.counter = j["counter"].get<std::uint64_t>();
  }
  return r;
}

held_elsewhere::held_elsewhere(record holder)
    : std::runtime_error("the environment's lease is held by \"" + holder.owner + "\" until " +
                         format_rfc3339(holder.expires_at)),
      holder_(std::move(holder)) {}

lease::lease(asio::any_io_executor executor, s3::object_store& store, std::string owner,
             duration ttl)
    : executor_(executor),
      store_(store),
      owner_(std::move(owner)),
      ttl_(ttl),
      timer_(executor),
      renewal_done_(executor),
      margin_timer_(executor) {}

lease::~lease() {
  *alive_ = false;
}

asio::awaitable<bool> lease::write(const record& next, const std::string& etag, bool create) {
  const auto alive = alive_;
  const std::string body = to_json(next);
  if (mode_ == mode::conditional) {
    s3::put_options options;
    options.content_type = "application/json";
    options.max_attempts = attempts_;
    options.if_none_match = create;
    if (!create) options.if_match = etag;
    bool refused = false;
    std::string not_implemented;
    try {
      const std::string written = co_await store_.put(key, body, options);
      if (!*alive) co_return false;
      etag_ = written;
      co_return true;
    } catch (const s3::error& e) {
      if (lost_race(e)) {
        refused = true;
      } else if (e.status() == 501) {
        not_implemented = e.message();
      } else {
        throw;
      }
    }
    if (refused || !*alive) co_return false;
    mode_ = mode::best_effort;
    log::warn(
        "the object store does not support conditional writes (501): the lease is best-effort "
        "(written, read back and checked), not a guarantee against a simultaneous owner",
        {{"store_said", not_implemented}});
  }
  // Best effort: write, read back, check it is ours.
  s3::put_options plain;
  plain.content_type = "application/json";
  plain.max_attempts = attempts_;
  const std::string written = co_await store_.put(key, body, plain);
  if (!*alive) co_return false;
  etag_ = written;
  const std::string read_back = co_await store_.get(key);
  if (!*alive) co_return false;
  const std::optional<record> back = from_json(read_back);
  co_return back && back->owner == owner_ && back->counter == next.counter;
}

asio::awaitable<bool> lease::landed(const record& next) {
  const auto alive = alive_;
  const std::optional<s3::object_info> info = co_await store_.head(key);
  if (!*alive || !info) co_return false;
  // The ETag first, then the body: if lease.json changed in between, the body is not ours.
  std::string text;
  bool gone = false;
  try {
    text = co_await store_.get(key);
  } catch (const s3::error& e) {
    if (e.status() != 404) throw;
    gone = true;
  }
  if (!*alive || gone) co_return false;
  const std::optional<record> there = from_json(text);
  if (!there || there->owner != owner_ || there->counter != next.counter ||
      to_ms(there->expires_at) != to_ms(next.expires_at)) {
    co_return false;
  }
  etag_ = info->etag;
  co_return true;
}

asio::awaitable<void> lease::acquire() {
  for (int attempt = 0; attempt < 8; ++attempt) {
    // The ETag first, then the body: if it changed in between, the If-Match below fails and we
    // look again.
    std::optional<s3::object_info> info = co_await store_.head(key);
    std::optional<record> existing;
    if (info) {
      try {
        const std::string text = co_await store_.get(key);
        existing = from_json(text);
      } catch (const s3::error& e) {
        if (e.status() != 404) throw;
        info.reset();  // deleted meanwhile
      }
    }
    const wall_time now = system_clock::now();
    if (existing && existing->owner != owner_ && existing->expires_at > now) {
      throw held_elsewhere(*existing);
    }
    record next;
    next.owner = owner_;
    next.acquired_at = now;
    next.expires_at = now + ttl_;
    next.counter = (existing ? existing->counter : 0) + 1;
    std::string etag;
    if (info) etag = info->etag;
    const bool create = !info;
    // (Named locals, not expressions, around co_await: g++ 12 mishandles temporaries there.)
    const bool won = co_await write(next, etag, create);
    if (won) {
      current_ = next;
      held_ = true;
      previous_owner_ = existing ? existing->owner : std::string();
      lost_why_.clear();
      last_error_.clear();
      if (existing && existing->owner != owner_) {
        log::info("took over an expired lease", {{"from", existing->owner}});
      }
      co_return;
    }
  }
  throw s3::error(409, "LeaseContended", "the lease kept changing while it was being acquired",
                  key);
}

void lease::keep(std::function<void(std::string)> lost) {
  lost_ = std::move(lost);
  if (renewing_) return;
  renewing_ = true;
  asio::co_spawn(executor_, renew_loop(generation_), asio::detached);
  asio::co_spawn(executor_, watch_margin(generation_), asio::detached);
}

duration lease::safety_margin() const {
  const duration floor = std::max<duration>(ttl_ / 6, std::chrono::seconds(2));
  return std::min<duration>(floor, ttl_ / 3);
}

void lease::on_expiry_near(std::function<void()> near) {
  expiry_near_ = std::move(near);
}

bool lease::writable() const {
  return held_ && system_clock::now() < current_.expires_at - safety_margin();
}

asio::awaitable<void> lease::watch_margin(std::uint64_t generation) {
  const auto alive = alive_;
  std::uint64_t called_for = 0;  // the counter of the record whose margin was reported
  for (;;) {
    if (!*alive || generation != generation_ || !held_) co_return;
    const auto left = current_.expires_at - safety_margin() - system_clock::now();
    if (left > duration::zero()) {
      margin_timer_.expires_after(left);
    } else {
      if (called_for != current_.counter) {
        called_for = current_.counter;
        log::warn("lease near its expiry without a renewal: writers stop",
                  {{"expires_at", format_rfc3339(current_.expires_at, true)},
                   {"last_error", last_error_}});
        if (expiry_near_) expiry_near_();  // may be the last thing done with this lease
        if (!*alive) co_return;
      }
      margin_timer_.expires_at(asio::steady_timer::time_point::max());  // until a renewal
    }
    std::error_code ec;
    co_await margin_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

asio::awaitable<void> lease::renew_loop(std::uint64_t generation) {
  const auto alive = alive_;
  const duration period = std::max<duration>(ttl_ / 3, std::chrono::milliseconds(10));
  duration wait = period;
  for (;;) {
    timer_.expires_after(wait);
    std::error_code ec;
    co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (!*alive || generation != generation_ || !held_) co_return;
    renewal_in_flight_ = true;
    std::string lost_why, failure;
    bool renewed = false;
    try {
      renewed = co_await renew_once(lost_why);
    } catch (const std::exception& e) {
      failure = e.what();
    }
    if (!*alive) co_return;
    renewal_in_flight_ = false;
    renewal_done_.cancel();  // a release() waiting for this renewal goes on
    // release() was called meanwhile: it frees the lease with what this renewal left.
    const bool releasing = generation != generation_;
    if (renewed) {
      last_error_.clear();
      if (releasing) co_return;
      margin_timer_.cancel();  // the margin moved with the expiry
      wait = period;
      continue;
    }
    if (!failure.empty()) {
      last_error_ = failure;
      if (releasing) co_return;
      if (system_clock::now() < current_.expires_at) {
        // Not expired yet: try again soon.
        wait = std::min<duration>(period, std::chrono::seconds(1));
        log::warn("lease renewal failed; retrying", {{"error", last_error_}});
        continue;
      }
      lost_why = "not renewed before it expired: " + failure;
    }
    held_ = false;
    margin_timer_.cancel();  // its watch ends
    lost_why_ = lost_why;
    log::error("lease lost", {{"why", lost_why}});
    // Being released, it is going anyway: no fencing for the owner who let it go.
    if (releasing) co_return;
    renewing_ = false;
    if (lost_) lost_(lost_why);  // may be the last thing done with this lease
    co_return;
  }
}

asio::awaitable<bool> lease::renew_once(std::string& lost_why) {
  const auto alive = alive_;
  if (mode_ == mode::best_effort) {
    // No compare-and-swap: look before writing (a takeover between the two goes unseen until
    // the next renewal, which is what "best effort" means).
    std::optional<record> there;
    bool removed = false;
    try {
      const std::string text = co_await store_.get(key);
      there = from_json(text);
    } catch (const s3::error& e) {
      if (e.status() != 404) throw;
      removed = true;
    }
    if (!*alive) co_return false;
    if (removed) {
      lost_why = "lease.json was removed";
      co_return false;
    }
    if (!there || there->owner != owner_) {
      const std::string holder = there ? there->owner : std::string("?");
      lost_why = "taken by \"" + holder + "\"";
      co_return false;
    }
  }
  record next = current_;
  next.expires_at = system_clock::now() + ttl_;
  next.counter = current_.counter + 1;
  const std::string etag = etag_;
  bool renewed = co_await write(next, etag, false);
  if (!*alive) co_return false;
  if (!renewed && mode_ == mode::conditional) {
    // Refused: by another owner's write, or by our own (an answer lost, the retry refused).
    renewed = co_await landed(next);
    if (!*alive) co_return false;
  }
  if (!renewed) {
    lost_why = "taken by another owner (the lease changed under us)";
    co_return false;
  }
  current_ = next;
  co_return true;
}

asio::awaitable<void> lease::release() {
  ++generation_;  // the renewal loop stops at its next step
  renewing_ = false;
  timer_.cancel();
  margin_timer_.cancel();  // its watch ends: a released lease has no writers to stop
  // A renewal already at the store comes back first: its write changes the ETag, and freeing
  // with the one from before would be refused, leaving the lease live for a whole TTL.
  while (renewal_in_flight_) {
    renewal_done_.expires_at(asio::steady_timer::time_point::max());
    std::error_code ec;
    co_await renewal_done_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (!held_) co_return;
  held_ = false;
  // Quick: at shut-down an unreachable store must not hold the exit up for the whole retry
  // schedule; a lease not freed expires by itself within its TTL.
  attempts_ = 2;
  try {
    if (mode_ == mode::conditional) {
      // Expired now, by compare-and-swap: never frees a lease that is no longer ours.
      const wall_time now = system_clock::now();
      record freed = current_;
      freed.expires_at = now;
      freed.counter = current_.counter + 1;
      const std::string etag = etag_;
      bool freed_ok = co_await write(freed, etag, false);
      if (!freed_ok) freed_ok = co_await landed(freed);
      if (freed_ok) {
        current_ = freed;
      } else {
        log::warn("lease release: it was no longer ours");
      }
    } else {
      // Expired now, owner kept, as above, never removed: the next owner must see that someone
      // held it before (previous_owner()), and that its own local state may be stale.
      const std::string text = co_await store_.get(key);
      const std::optional<record> there = from_json(text);
      // Already expired: it shows us as the one before, and another owner may be writing it
      // now (no compare-and-swap here to keep us from overwriting theirs). Left as it is.
      if (there && there->owner == owner_ && there->expires_at <= system_clock::now()) {
        // nothing to free
      } else if (there && there->owner == owner_) {
        record freed = *there;
        freed.expires_at = system_clock::now();
        freed.counter = there->counter + 1;
        const std::string no_etag;  // a named local around co_await (g++ 12)
        const bool freed_ok = co_await write(freed, no_etag, false);
        if (freed_ok) current_ = freed;
      } else {
        log::warn("lease release: it was no longer ours");
      }
    }
    current_.expires_at = system_clock::now();
  } catch (const std::exception& e) {
    last_error_ = e.what();
    log::warn("lease release failed; it expires by itself", {{"error", last_error_}});
  }
}

json lease::status() const {
  json s = {{"held", held_},
            {"mode", mode_ == mode::conditional ? "conditional" : "best-effort"},
            {"owner", owner_},
            {"ttl", format_duration(ttl_)},
            {"counter", current_.counter},
            {"expires_at",
             current_.counter ? json(format_rfc3339(current_.expires_at, true)) : json(nullptr)},
            {"last_error", last_error_.empty() ? json(nullptr) : json(last_error_)},
            // Held and not within the safety margin of its expiry: the store takes writes.
            {"writable", writable()}};
  if (!lost_why_.empty()) s["lost"] = lost_why_;
  return s;
}

std::unique_ptr<s3::object_store> make_store(asio::any_io_executor executor,
                                             s3::store_config config, duration ttl) {
  const auto deadline = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::max<duration>(ttl / 6, std::chrono::seconds(1)));
  config.max_parallel = 2;  // a renewal, and a release or an acquire's read beside it
  config.max_attempts = 2;
  config.request_timeout = deadline;
  config.total_timeout = deadline;
  config.own_thread = true;
  return s3::make_store(executor, std::move(config));
}

std::string owner_id(const std::string& file) {
  try {
    if (const auto saved = read_file(file, 256)) {
      std::string id = *saved;
      while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
      if (!id.empty()) return id;
    }
  } catch (const std::exception& e) {
    log::warn("unreadable lease owner id; making a new one", {{"file", file}, {"error", e.what()}});
  }
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0 || !*host) std::snprintf(host, sizeof host, "host");
  std::random_device random;
  char suffix[17];
  std::snprintf(suffix, sizeof suffix, "%08x%08x", random(), random());
  const std::string id = std::string(host) + "-" + suffix;
  try {
    write_file_atomically(file, id + "\n", 0600);
  } catch (const std::exception& e) {
    log::warn("could not save the lease owner id; a restart will be a new owner",
              {{"file", file}, {"error", e.what()}});
  }
  return id;
}

}  // namespace sm::lease
