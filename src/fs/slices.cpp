#include "fs/slices.hpp"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

namespace sm::fs {

namespace {

constexpr std::size_t record_bytes = 24;  // pos 4, id 8, size 4, off 4, len 4

void put(std::string& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::uint64_t get(std::string_view in, std::size_t at, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) {
    v |= std::uint64_t(static_cast<unsigned char>(in[at + i])) << (8 * i);
  }
  return v;
}

}  // namespace

std::string encode(std::span<const slice_record> records) {
  std::string out;
  out.reserve(records.size() * record_bytes);
  for (const slice_record& r : records) {
    put(out, r.pos, 4);
    put(out, r.id, 8);
    put(out, r.size, 4);
    put(out, r.off, 4);
    put(out, r.len, 4);
  }
  return out;
}

std::vector<slice_record> decode(std::string_view blob) {
  if (blob.size() % record_bytes != 0) {
    throw std::invalid_argument("a chunk's slice list is not a whole number of records");
  }
  std::vector<slice_record> out;
  out.reserve(blob.size() / record_bytes);
  for (std::size_t at = 0; at < blob.size(); at += record_bytes) {
    slice_record r;
    r.pos = static_cast<std::uint32_t>(get(blob, at, 4));
    r.id = get(blob, at + 4, 8);
    r.size = static_cast<std::uint32_t>(get(blob, at + 12, 4));
    r.off = static_cast<std::uint32_t>(get(blob, at + 16, 4));
    r.len = static_cast<std::uint32_t>(get(blob, at + 20, 4));
    if (std::uint64_t(r.pos) + r.len > chunk_size ||
        (r.id != hole_slice && std::uint64_t(r.off) + r.len > r.size)) {
      throw std::invalid_argument("a chunk's slice record lies outside its chunk or slice");
    }
    out.push_back(r);
  }
  return out;
}

std::vector<segment> paint(std::span<const slice_record> records, std::uint32_t length) {
  // The painted map as ordered, non-overlapping pieces; each record cuts what it covers out of
  // the map and takes its place. Records are few (compaction keeps them so), so a vector is fine.
  std::vector<segment> map;
  if (length > 0) map.push_back(segment{0, hole_slice, length, 0, length});
  for (const slice_record& r : records) {
    if (r.len == 0 || r.pos >= length) continue;
    const std::uint32_t begin = r.pos;
    const std::uint32_t end = static_cast<std::uint32_t>(
        std::min<std::uint64_t>(std::uint64_t(r.pos) + r.len, length));
    std::vector<segment> next;
    next.reserve(map.size() + 2);
    for (const segment& s : map) {
      const std::uint32_t s_end = s.pos + s.len;
      if (s_end <= begin || s.pos >= end) {
        next.push_back(s);
        continue;
      }
      if (s.pos < begin) {  // the part before the new record
        segment left = s;
        left.len = begin - s.pos;
        next.push_back(left);
      }
      if (s_end > end) {  // the part after it
        segment right = s;
        const std::uint32_t cut = end - s.pos;
        right.pos = end;
        right.off = s.id == hole_slice ? 0 : s.off + cut;
        right.len = s_end - end;
        if (s.id == hole_slice) right.size = right.len;
        next.push_back(right);
      }
    }
    segment mine{begin, r.id, r.size, r.id == hole_slice ? 0 : r.off, end - begin};
    if (r.id == hole_slice) mine.size = mine.len;
    auto at = std::lower_bound(next.begin(), next.end(), mine,
                               [](const segment& a, const segment& b) { return a.pos < b.pos; });
    next.insert(at, mine);
    map = std::move(next);
  }
  // Adjacent holes merge.
  std::vector<segment> merged;
  merged.reserve(map.size());
  for (const segment& s : map) {
    if (!merged.empty() && s.id == hole_slice && merged.back().id == hole_slice) {
      merged.back().len += s.len;
      merged.back().size = merged.back().len;
    } else {
      merged.push_back(s);
    }
  }
  return merged;
}

std::vector<slice_record> visible(std::span<const slice_record> records, std::uint32_t length) {
  std::vector<slice_record> out;
  for (const segment& s : paint(records, length)) {
    if (s.id != hole_slice) out.push_back(s);
  }
  // A hole between records is implicit (uncovered ranges read as zeros); a trailing hole that a
  // truncate left is past `length` and no longer needed.
  return out;
}

std::vector<block_ref> blocks_of(std::uint64_t slice, std::uint32_t size,
                                 std::uint32_t block_size) {
  std::vector<block_ref> out;
  for (std::uint32_t index = 0; std::uint64_t(index) * block_size < size; ++index) {
    const std::uint64_t start = std::uint64_t(index) * block_size;
    out.push_back(block_ref{slice, index,
                            static_cast<std::uint32_t>(std::min<std::uint64_t>(block_size,
                                                                               size - start))});
  }
  return out;
}

std::string block_file_name(const block_ref& block) {
  char name[64];
  std::snprintf(name, sizeof name, "%llu_%u_%u", static_cast<unsigned long long>(block.slice),
                block.index, block.length);
  return name;
}

std::string block_key(const block_ref& block) {
  char shard[8];
  std::snprintf(shard, sizeof shard, "%02x", static_cast<unsigned>(block.slice % 256));
  std::string key = "fs/blocks/";
  key += shard;
  key += '/';
  key += block_file_name(block);
  return key;
}

bool parse_block_file_name(std::string_view name, block_ref& out) {
  std::uint64_t parts[3] = {0, 0, 0};
  int part = 0;
  bool digit = false;
  for (char c : name) {
    if (c == '_') {
      if (!digit || ++part > 2) return false;
      digit = false;
    } else if (c >= '0' && c <= '9') {
      const std::uint64_t d = std::uint64_t(c - '0');
      if (parts[part] > (~0ull - d) / 10) return false;  // exact: 2^64 - 1 still parses
      parts[part] = parts[part] * 10 + d;
      digit = true;
    } else {
      return false;
    }
  }
  if (part != 2 || !digit || parts[1] > 0xffffffffull || parts[2] > 0xffffffffull) return false;
  if (parts[2] == 0) return false;
  out = block_ref{parts[0], static_cast<std::uint32_t>(parts[1]),
                  static_cast<std::uint32_t>(parts[2])};
  return true;
}

}  // namespace sm::fs
