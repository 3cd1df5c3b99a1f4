#include "db/wal.hpp"

#include <algorithm>

namespace sm::db::wal {

namespace {

std::uint32_t get_be(const std::byte* p) {
  return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) |
         std::uint32_t(p[3]);
}
std::uint32_t get_le(const std::byte* p) {
  return std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8) | (std::uint32_t(p[2]) << 16) |
         (std::uint32_t(p[3]) << 24);
}
void put_be(std::vector<std::byte>& out, std::size_t at, std::uint32_t v) {
  out[at] = std::byte(v >> 24);
  out[at + 1] = std::byte(v >> 16);
  out[at + 2] = std::byte(v >> 8);
  out[at + 3] = std::byte(v);
}
bool valid_page_size(std::uint32_t size) {
  return size >= 512 && size <= 65536 && (size & (size - 1)) == 0;
}

}  // namespace

checksum compute(std::span<const std::byte> data, bool big_endian_words, checksum seed) {
  std::uint32_t s0 = seed.s0, s1 = seed.s1;
  const std::byte* p = data.data();
  const std::byte* end = p + (data.size() & ~std::size_t(7));
  if (big_endian_words) {
    for (; p < end; p += 8) {
      s0 += get_be(p) + s1;
      s1 += get_be(p + 4) + s0;
    }
  } else {
    for (; p < end; p += 8) {
      s0 += get_le(p) + s1;
      s1 += get_le(p + 4) + s0;
    }
  }
  return {s0, s1};
}

std::optional<header> parse_header(std::span<const std::byte> bytes, std::string* why) {
  auto fail = [&](std::string reason) -> std::optional<header> {
    if (why) *why = std::move(reason);
    return std::nullopt;
  };
  if (bytes.size() < header_size) return fail("shorter than a WAL header");
  const std::byte* p = bytes.data();
  header h;
  h.magic = get_be(p);
  if (h.magic != magic_little_endian && h.magic != magic_big_endian) return fail("bad magic");
  h.version = get_be(p + 4);
  if (h.version != format_version) return fail("unknown WAL format version");
  h.page_size = get_be(p + 8);
  if (!valid_page_size(h.page_size)) return fail("invalid page size");
  h.checkpoint_seq = get_be(p + 12);
  h.salt1 = get_be(p + 16);
  h.salt2 = get_be(p + 20);
  h.sum = {get_be(p + 24), get_be(p + 28)};
  if (compute(bytes.first(24), h.big_endian_words(), {}) != h.sum) {
    return fail("header checksum mismatch");
  }
  return h;
}

frame_header parse_frame_header(std::span<const std::byte> bytes) {
  const std::byte* p = bytes.data();
  return {
      get_be(p), get_be(p + 4), get_be(p + 8), get_be(p + 12), {get_be(p + 16), get_be(p + 20)}};
}

scan_result scan(std::span<const std::byte> data, const header& h, std::uint64_t offset,
                 checksum seed) {
  scan_result r;
  r.valid_end = r.commit_end = offset;
  r.commit_sum = seed;
  checksum running = seed;
  const std::size_t frame = h.frame_size();
  std::size_t at = 0;
  for (;;) {
    if (at == data.size()) {
      r.stopped = "end of data";
      break;
    }
    if (data.size() - at < frame) {
      r.stopped = "partial frame";
      break;
    }
    const auto bytes = data.subspan(at, frame);
    const frame_header f = parse_frame_header(bytes);
    if (f.salt1 != h.salt1 || f.salt2 != h.salt2) {
      r.stopped = "salt mismatch";
      break;
    }
    // The chain covers the frame header's first 8 bytes, then the page.
    checksum next = compute(bytes.first(8), h.big_endian_words(), running);
    next = compute(bytes.subspan(frame_header_size), h.big_endian_words(), next);
    if (next != f.sum) {
      r.stopped = "checksum mismatch";
      break;
    }
    running = next;
    at += frame;
    ++r.frames;
    r.valid_end = offset + at;
    if (f.is_commit()) {
      ++r.commits;
      r.commit_end = r.valid_end;
      r.commit_sum = running;
      r.db_pages = f.commit_size;
    }
  }
  return r;
}

std::vector<std::byte> encode_header(header& h) {
  std::vector<std::byte> out(header_size);
  put_be(out, 0, h.magic);
  put_be(out, 4, h.version);
  put_be(out, 8, h.page_size);
  put_be(out, 12, h.checkpoint_seq);
  put_be(out, 16, h.salt1);
  put_be(out, 20, h.salt2);
  h.sum = compute(std::span(out).first(24), h.big_endian_words(), {});
  put_be(out, 24, h.sum.s0);
  put_be(out, 28, h.sum.s1);
  return out;
}

std::vector<std::byte> encode_frame(const header& h, std::uint32_t page_number,
                                    std::uint32_t commit_size, std::span<const std::byte> page,
                                    checksum& previous) {
  std::vector<std::byte> out(frame_header_size + page.size());
  put_be(out, 0, page_number);
  put_be(out, 4, commit_size);
  put_be(out, 8, h.salt1);
  put_be(out, 12, h.salt2);
  std::copy(page.begin(), page.end(), out.begin() + frame_header_size);
  checksum sum = compute(std::span(out).first(8), h.big_endian_words(), previous);
  sum = compute(std::span(out).subspan(frame_header_size), h.big_endian_words(), sum);
  put_be(out, 16, sum.s0);
  put_be(out, 20, sum.s1);
  previous = sum;
  return out;
}

}  // namespace sm::db::wal
