#include "db/layout.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>

namespace sm::db::layout {

namespace {

std::string hex16(std::uint64_t v) {
  char buffer[17];
  std::snprintf(buffer, sizeof buffer, "%016llx", static_cast<unsigned long long>(v));
  return buffer;
}

bool is_hex(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::optional<std::uint64_t> parse_hex16(std::string_view text) {
  if (text.size() != 16 || !is_hex(text)) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : text) v = v * 16 + static_cast<std::uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
  return v;
}

// Splits "db/<g>/<kind>/<rest>"; false if the key is not shaped so.
bool split(std::string_view key, std::string_view kind, std::string_view& generation,
           std::string_view& rest) {
  if (!key.starts_with("db/")) return false;
  key.remove_prefix(3);
  const auto slash = key.find('/');
  if (slash == std::string_view::npos) return false;
  generation = key.substr(0, slash);
  if (!valid_generation(generation)) return false;
  key.remove_prefix(slash + 1);
  if (!key.starts_with(kind) || key.size() <= kind.size() || key[kind.size()] != '/') return false;
  rest = key.substr(kind.size() + 1);
  return true;
}

}  // namespace

std::string new_generation() {
  // The creation time first (microseconds since the epoch), so that key order is creation
  // order and the newest generation is the last one listed; then 64 random bits.
  const auto now = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::system_clock::now().time_since_epoch());
  std::random_device random;
  const std::uint64_t noise = (std::uint64_t(random()) << 32) | random();
  return hex16(static_cast<std::uint64_t>(now.count())) + hex16(noise);
}

bool valid_generation(std::string_view text) {
  return text.size() == 32 && is_hex(text);
}

std::string generation_prefix(std::string_view generation) {
  return "db/" + std::string(generation) + "/";
}

std::string meta_key(std::string_view generation) {
  return generation_prefix(generation) + "meta.json";
}

std::string snapshot_key(std::string_view generation, std::uint64_t walidx, std::string_view ext) {
  return generation_prefix(generation) + "snapshot/" + hex16(walidx) + ".db" + std::string(ext);
}

std::string segment_key(std::string_view generation, std::uint64_t walidx, std::uint64_t start,
                        std::uint64_t end, std::string_view ext) {
  return generation_prefix(generation) + "wal/" + hex16(walidx) + "/" + hex16(start) + "-" +
         hex16(end) + ".wal" + std::string(ext);
}

std::optional<snapshot_ref> parse_snapshot_key(std::string_view key) {
  std::string_view generation, rest;
  if (!split(key, "snapshot", generation, rest)) return std::nullopt;
  if (rest.size() < 19 || rest.substr(16, 3) != ".db") return std::nullopt;
  const auto walidx = parse_hex16(rest.substr(0, 16));
  if (!walidx) return std::nullopt;
  return snapshot_ref{std::string(generation), *walidx, std::string(key)};
}

std::optional<segment_ref> parse_segment_key(std::string_view key) {
  std::string_view generation, rest;
  if (!split(key, "wal", generation, rest)) return std::nullopt;
  // <walidx:16>/<start:16>-<end:16>.wal...
  if (rest.size() < 16 + 1 + 16 + 1 + 16 + 4 || rest[16] != '/' || rest[33] != '-' ||
      rest.substr(50, 4) != ".wal") {
    return std::nullopt;
  }
  const auto walidx = parse_hex16(rest.substr(0, 16));
  const auto start = parse_hex16(rest.substr(17, 16));
  const auto end = parse_hex16(rest.substr(34, 16));
  if (!walidx || !start || !end || *end <= *start) return std::nullopt;
  return segment_ref{std::string(generation), *walidx, *start, *end, std::string(key)};
}

restore_plan plan_restore(std::string_view generation, const std::vector<std::string>& keys) {
  restore_plan plan;
  std::map<std::uint64_t, std::map<std::uint64_t, segment_ref>> by_index;  // walidx -> start
  for (const std::string& key : keys) {
    if (auto s = parse_snapshot_key(key); s && s->generation == generation) {
      if (!plan.snapshot || s->walidx > plan.snapshot->walidx) plan.snapshot = std::move(*s);
    } else if (auto g = parse_segment_key(key); g && g->generation == generation) {
      // Two segments from one start (a crash between the upload and the state file): the
      // longer one contains the shorter.
      auto& slot = by_index[g->walidx];
      const auto it = slot.find(g->start);
      if (it == slot.end() || it->second.end < g->end) slot[g->start] = std::move(*g);
    }
  }
  if (!plan.snapshot) {
    plan.gap = "no snapshot";
    return plan;
  }
  std::uint64_t walidx = plan.snapshot->walidx;
  for (auto index = by_index.lower_bound(walidx); index != by_index.end(); ++index) {
    if (index->first != walidx) {
      plan.gap = "WAL index " + hex16(walidx) + " is missing";
      return plan;
    }
    std::uint64_t at = 0;
    for (const auto& [start, segment] : index->second) {
      if (start < at) continue;  // inside a longer segment already taken
      if (start != at) {
        plan.gap = "WAL index " + hex16(walidx) + ": no segment from offset " + hex16(at);
        return plan;
      }
      plan.segments.push_back(segment);
      at = segment.end;
    }
    ++walidx;
  }
  return plan;
}

std::optional<replica_point> newest_point(const std::vector<std::string>& keys) {
  std::string newest;
  for (const std::string& key : keys) {
    if (auto s = parse_snapshot_key(key); s && s->generation > newest) newest = s->generation;
  }
  if (newest.empty()) return std::nullopt;
  replica_point point{newest, 0, 0};
  const auto later = [&](std::uint64_t walidx, std::uint64_t end) {
    if (std::make_pair(walidx, end) > std::make_pair(point.walidx, point.end)) {
      point.walidx = walidx;
      point.end = end;
    }
  };
  // Segments only: a snapshot labelled with the next WAL index goes up right after our own
  // checkpoint, before the local shadow has seen that index; it holds nothing newer.
  for (const std::string& key : keys) {
    if (auto g = parse_segment_key(key); g && g->generation == newest) later(g->walidx, g->end);
  }
  return point;
}

std::string why_behind(const replica_point& local, const replica_point& newest) {
  // Generations begin with their creation time: a later one sorts after.
  if (newest.generation > local.generation) {
    return "the store has a newer generation (" + newest.generation + ") than the local " +
           "database's (" + local.generation + ")";
  }
  if (newest.generation < local.generation) return {};
  if (std::make_pair(newest.walidx, newest.end) > std::make_pair(local.walidx, local.end)) {
    return "the store's replica of generation " + newest.generation +
           " reaches further than the local database (WAL " + std::to_string(newest.walidx) + ":" +
           std::to_string(newest.end) + " against " + std::to_string(local.walidx) + ":" +
           std::to_string(local.end) + ")";
  }
  return {};
}

}  // namespace sm::db::layout
