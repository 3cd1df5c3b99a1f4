// Forwarding of a child's captured output to ours, a line at a time, with a prefix naming it.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <asio/awaitable.hpp>
#include <asio/posix/stream_descriptor.hpp>

namespace sm::proc {

// Reads `from` until EOF and writes each line to `to_fd` as "<prefix><line>\n". A last line
// without its newline gets one; a line longer than 64 KiB is cut there (each piece prefixed),
// so one endless line cannot grow our memory. Whole lines go out in one write(2) each, so lines
// from several children never interleave mid-line.
// `from` is shared so that its owner can close it to end the forwarding early (a grandchild
// may hold the pipe open long after the child is gone).
asio::awaitable<void> forward_lines(std::shared_ptr<asio::posix::stream_descriptor> from, int to_fd,
                                    std::string prefix);

// Splits `pending` into prefixed lines appended to `out`, leaving an unfinished line in
// `pending` (unless it exceeds `max_line`). Pure; forward_lines' core.
void take_lines(std::string& pending, std::string_view prefix, std::size_t max_line,
                std::string& out);

}  // namespace sm::proc
