#include "http/response.hpp"

#include <charconv>

#include "base/log.hpp"

namespace sm::http {

std::string_view reason_phrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 415:
      return "Unsupported Media Type";
    case 417:
      return "Expectation Failed";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    case 507:
      return "Insufficient Storage";
    default:
      return "Unknown";
  }
}

response error_response(int status, std::string_view message, std::string_view extra) {
  response r;
  r.status = status;
  r.body.reserve(message.size() + extra.size() + 16);
  r.body += "{\"error\":\"";
  log::append_json_escaped(r.body, message);
  r.body += '"';
  if (!extra.empty()) {
    r.body += ',';
    r.body += extra;
  }
  r.body += "}\n";
  return r;
}

void serialize_head(const response& r, bool keep_alive, std::string_view date, std::string& out,
                    int version_minor) {
  char number[24];
  out += "HTTP/1.1 ";
  out.append(number, std::to_chars(number, number + sizeof number, r.status).ptr);
  out += ' ';
  out += reason_phrase(r.status);
  out += "\r\nServer: state-manager\r\nDate: ";
  out += date;
  if (!r.content_type.empty()) {
    out += "\r\nContent-Type: ";
    out += r.content_type;
  }
  if (!r.stream) {
    out += "\r\nContent-Length: ";
    out.append(number, std::to_chars(number, number + sizeof number, r.body.size()).ptr);
  }
  for (const auto& [name, value] : r.headers) {
    out += "\r\n";
    out += name;
    out += ": ";
    out += value;
  }
  if (!keep_alive || r.close || r.stream) {
    out += "\r\nConnection: close\r\n\r\n";
  } else if (version_minor == 0) {
    out += "\r\nConnection: keep-alive\r\n\r\n";
  } else {
    out += "\r\n\r\n";
  }
}

}  // namespace sm::http
