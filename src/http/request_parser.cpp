#include "http/request_parser.hpp"

#include "http/ascii.hpp"

#include <algorithm>
#include <limits>

namespace sm::http {

namespace {

// RFC 9110 tchar: the characters of methods, header names and transfer codings.
bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Calls f(element) for each trimmed, non-empty element of a comma-separated header value.
template <class F>
void for_each_list_element(std::string_view value, F&& f) {
  while (!value.empty()) {
    const std::size_t comma = value.find(',');
    const std::string_view element = trim(value.substr(0, comma));
    if (!element.empty()) f(element);
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
}

}  // namespace

request_parser::request_parser(parser_limits limits) : limits_(limits) {}

void request_parser::reset() {
  phase_ = phase::head;
  request_ = request{};
  line_.clear();
  head_bytes_ = 0;
  request_line_done_ = false;
  expects_continue_ = false;
  chunked_ = false;
  has_content_length_ = false;
  remaining_ = 0;
  trailer_bytes_ = 0;
  error_status_ = 0;
  error_message_.clear();
}

request_parser::result request_parser::fail(int status, std::string message, std::size_t consumed) {
  phase_ = phase::failed;
  error_status_ = status;
  error_message_ = std::move(message);
  return {status::error, consumed};
}

bool request_parser::take_line(std::string_view input, std::size_t& pos, std::size_t limit,
                               bool& too_long) {
  const std::size_t lf = input.find('\n', pos);
  const std::size_t end = lf == std::string_view::npos ? input.size() : lf;
  // The limit counts the line's bytes including its line ending.
  const std::size_t taken = end - pos + (lf == std::string_view::npos ? 0 : 1);
  too_long = line_.size() + taken > limit;
  if (too_long) return false;
  line_.append(input.data() + pos, end - pos);
  pos = lf == std::string_view::npos ? input.size() : lf + 1;
  if (lf == std::string_view::npos) return false;
  if (!line_.empty() && line_.back() == '\r') line_.pop_back();
  return true;
}

request_parser::result request_parser::feed(std::string_view input) {
  std::size_t pos = 0;
  for (;;) {
    switch (phase_) {
      case phase::head: {
        if (pos == input.size()) return {status::need_more, pos};
        const std::size_t before = pos;
        bool too_long = false;
        // take_line's limit covers the whole line, part of which may be in line_ (and counted
        // in head_bytes_) from earlier feeds: measure from where the line began.
        const std::size_t before_line = head_bytes_ - line_.size();
        const std::size_t head_left =
            limits_.max_header_bytes > before_line ? limits_.max_header_bytes - before_line : 0;
        const std::size_t limit =
            request_line_done_ ? head_left : std::min(limits_.max_request_line_bytes, head_left);
        const bool whole = take_line(input, pos, limit, too_long);
        head_bytes_ += pos - before;
        if (too_long) {
          if (!request_line_done_ && head_left > limits_.max_request_line_bytes) {
            return fail(414, "request line too long", pos);
          }
          return fail(431, "request header fields too large", pos);
        }
        if (!whole) return {status::need_more, pos};
        if (!request_line_done_) {
          // RFC 9112 2.2: empty lines before the request line are ignored.
          if (line_.empty()) break;
          if (!parse_request_line(line_)) return {status::error, pos};
          request_line_done_ = true;
        } else if (line_.empty()) {
          line_.clear();
          if (!finish_head()) return {status::error, pos};
          if (phase_ == phase::done) return {status::complete, pos};
          break;
        } else if (!parse_header_line(line_)) {
          return {status::error, pos};
        }
        line_.clear();
        break;
      }
      case phase::body_fixed: {
        const std::size_t n = std::min(remaining_, input.size() - pos);
        request_.body.append(input.data() + pos, n);
        pos += n;
        remaining_ -= n;
        if (remaining_ > 0) return {status::need_more, pos};
        phase_ = phase::done;
        return {status::complete, pos};
      }
      case phase::chunk_size: {
        if (pos == input.size()) return {status::need_more, pos};
        bool too_long = false;
        // Size, extensions and line ending; extensions are rare and short.
        if (!take_line(input, pos, 4096, too_long)) {
          if (too_long) return fail(400, "chunk size line too long", pos);
          return {status::need_more, pos};
        }
        std::size_t size = 0;
        std::size_t digits = 0;
        for (; digits < line_.size(); ++digits) {
          const int v = hex_value(line_[digits]);
          if (v < 0) break;
          if (size > (std::numeric_limits<std::size_t>::max() >> 4)) {
            return fail(413, "chunk size too large", pos);
          }
          size = size * 16 + std::size_t(v);
        }
        const std::string_view rest = trim(std::string_view(line_).substr(digits));
        if (digits == 0 || (!rest.empty() && rest.front() != ';')) {
          return fail(400, "malformed chunk size", pos);
        }
        line_.clear();
        if (size == 0) {
          phase_ = phase::trailers;
          break;
        }
        if (size > limits_.max_body_bytes - request_.body.size()) {
          return fail(413, "request body too large", pos);
        }
        remaining_ = size;
        phase_ = phase::chunk_data;
        break;
      }
      case phase::chunk_data: {
        if (pos == input.size()) return {status::need_more, pos};
        const std::size_t n = std::min(remaining_, input.size() - pos);
        request_.body.append(input.data() + pos, n);
        pos += n;
        remaining_ -= n;
        if (remaining_ == 0) phase_ = phase::chunk_data_end;
        break;
      }
      case phase::chunk_data_end: {
        if (pos == input.size()) return {status::need_more, pos};
        bool too_long = false;
        if (!take_line(input, pos, 2, too_long)) {
          if (too_long) return fail(400, "missing CRLF after chunk data", pos);
          return {status::need_more, pos};
        }
        if (!line_.empty()) return fail(400, "missing CRLF after chunk data", pos);
        phase_ = phase::chunk_size;
        break;
      }
      case phase::trailers: {
        if (pos == input.size()) return {status::need_more, pos};
        const std::size_t before = pos;
        bool too_long = false;
        const std::size_t before_line = trailer_bytes_ - line_.size();
        const std::size_t left =
            limits_.max_header_bytes > before_line ? limits_.max_header_bytes - before_line : 0;
        const bool whole = take_line(input, pos, left, too_long);
        trailer_bytes_ += pos - before;
        if (too_long) return fail(431, "trailer fields too large", pos);
        if (!whole) return {status::need_more, pos};
        if (line_.empty()) {
          phase_ = phase::done;
          return {status::complete, pos};
        }
        // Trailers are read and dropped: nothing here needs them, and merging them into the
        // headers would let a body smuggle framing fields in.
        if (line_.find(':') == std::string::npos) return fail(400, "malformed trailer field", pos);
        line_.clear();
        break;
      }
      case phase::done:
        return {status::complete, pos};
      case phase::failed:
        return {status::error, pos};
    }
  }
}

bool request_parser::parse_request_line(std::string_view line) {
  const std::size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) {
    fail(400, "malformed request line", 0);
    return false;
  }
  const std::size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    fail(400, "malformed request line", 0);
    return false;
  }
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!is_token(method)) {
    fail(400, "malformed method", 0);
    return false;
  }
  if (target.empty() ||
      !std::all_of(target.begin(), target.end(), [](char c) { return c > 0x20 && c < 0x7f; })) {
    fail(400, "malformed request target", 0);
    return false;
  }
  // HTTP-version = "HTTP/" DIGIT "." DIGIT
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[5] < '0' ||
      version[5] > '9' || version[6] != '.' || version[7] < '0' || version[7] > '9') {
    fail(400, "malformed HTTP version", 0);
    return false;
  }
  if (version[5] != '1') {
    fail(505, "HTTP version not supported", 0);
    return false;
  }
  std::string_view origin = target;
  if (target.front() != '/') {
    // absolute-form (RFC 9112 3.2.2): keep the path, ignore scheme and authority.
    const std::size_t scheme_end = target.find("://");
    if (target == "*" && method == "OPTIONS") {
      origin = "*";
    } else if (scheme_end != std::string_view::npos && scheme_end > 0) {
      const std::size_t slash = target.find('/', scheme_end + 3);
      origin = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
    } else {
      fail(400, "malformed request target", 0);
      return false;
    }
  }
  request_.method.assign(method);
  request_.target.assign(target);
  const std::size_t question = origin.find('?');
  request_.path.assign(origin.substr(0, question));
  if (question != std::string_view::npos) request_.query.assign(origin.substr(question + 1));
  // A higher minor version is compatible (RFC 9110 2.5): answer it as HTTP/1.1.
  request_.version_minor = std::min(version[7] - '0', 1);
  return true;
}

bool request_parser::parse_header_line(std::string_view line) {
  if (line.front() == ' ' || line.front() == '\t') {
    fail(400, "obsolete line folding is not accepted", 0);
    return false;
  }
  const std::size_t colon = line.find(':');
  if (colon == std::string_view::npos || !is_token(line.substr(0, colon))) {
    fail(400, "malformed header field", 0);
    return false;
  }
  const std::string_view value = trim(line.substr(colon + 1));
  for (char c : value) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) {
      fail(400, "control character in header value", 0);
      return false;
    }
  }
  if (request_.headers.size() >= limits_.max_headers) {
    fail(431, "too many header fields", 0);
    return false;
  }
  request_.headers.emplace_back(std::string(line.substr(0, colon)), std::string(value));
  return true;
}

bool request_parser::finish_head() {
  const bool http11 = request_.version_minor >= 1;
  int hosts = 0;
  bool transfer_encoding = false;
  bool unsupported_coding = false;
  int chunked_codings = 0;
  std::optional<std::size_t> content_length;
  bool close = false, keep_alive = false;
  for (const auto& [name, value] : request_.headers) {
    if (iequals(name, "host")) {
      ++hosts;
    } else if (iequals(name, "transfer-encoding")) {
      transfer_encoding = true;
      for_each_list_element(value, [&](std::string_view coding) {
        if (iequals(coding, "chunked")) {
          ++chunked_codings;
        } else {
          unsupported_coding = true;
        }
      });
    } else if (iequals(name, "content-length")) {
      bool bad = false;
      for_each_list_element(value, [&](std::string_view digits) {
        std::size_t n = 0;
        for (char c : digits) {
          if (c < '0' || c > '9' || n > (std::numeric_limits<std::size_t>::max() - 9) / 10) {
            bad = true;
            return;
          }
          n = n * 10 + std::size_t(c - '0');
        }
        if (content_length && *content_length != n) bad = true;
        content_length = n;
      });
      if (bad || !content_length) {
        fail(400, "invalid Content-Length", 0);
        return false;
      }
    } else if (iequals(name, "connection")) {
      for_each_list_element(value, [&](std::string_view option) {
        if (iequals(option, "close")) close = true;
        if (iequals(option, "keep-alive")) keep_alive = true;
      });
    } else if (iequals(name, "expect")) {
      // RFC 9110 10.1.1: an HTTP/1.0 client cannot mean it; ignore it there.
      if (http11 && iequals(value, "100-continue")) expects_continue_ = true;
    }
  }
  if (http11 && hosts != 1) {
    fail(400, hosts == 0 ? "missing Host header" : "more than one Host header", 0);
    return false;
  }
  request_.keep_alive = !close && (http11 || keep_alive);

  // Framing (RFC 9112 6.3): both Transfer-Encoding and Content-Length is a smuggling attempt.
  if (transfer_encoding) {
    if (content_length) {
      fail(400, "both Transfer-Encoding and Content-Length", 0);
      return false;
    }
    if (unsupported_coding) {
      fail(501, "only the chunked transfer coding is supported", 0);
      return false;
    }
    if (chunked_codings != 1) {
      fail(400, "invalid Transfer-Encoding", 0);
      return false;
    }
    // RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding cannot be trusted to frame the
    // next one; answer it, then close.
    if (!http11) request_.keep_alive = false;
    chunked_ = true;
    phase_ = phase::chunk_size;
    return true;
  }
  if (content_length && *content_length > 0) {
    if (*content_length > limits_.max_body_bytes) {
      fail(413, "request body too large", 0);
      return false;
    }
    has_content_length_ = true;
    remaining_ = *content_length;
    request_.body.reserve(remaining_);
    phase_ = phase::body_fixed;
    return true;
  }
  expects_continue_ = false;  // nothing to continue with
  phase_ = phase::done;
  return true;
}

}  // namespace sm::http
