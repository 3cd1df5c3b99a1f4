#include "s3/sigv4.hpp"

#include <algorithm>

#include "base/percent.hpp"

namespace sm::s3 {

std::string uri_encode(std::string_view text, bool keep_slash) {
  return percent_encode(text, keep_slash ? "/" : "");
}

std::string canonical_query(query_params params) {
  for (auto& [name, value] : params) {
    name = uri_encode(name, false);
    value = uri_encode(value, false);
  }
  std::sort(params.begin(), params.end());
  std::string out;
  for (const auto& [name, value] : params) {
    if (!out.empty()) out += '&';
    out += name;
    out += '=';
    out += value;
  }
  return out;
}

bool split_endpoint(std::string_view endpoint, endpoint_parts& out) {
  const auto scheme_end = endpoint.find("://");
  if (scheme_end == std::string_view::npos) return false;
  out.scheme = std::string(endpoint.substr(0, scheme_end));
  if (out.scheme != "http" && out.scheme != "https") return false;
  std::string_view rest = endpoint.substr(scheme_end + 3);
  if (rest.ends_with('/')) rest.remove_suffix(1);
  if (rest.empty() || rest.find_first_of("/?#@ ") != std::string_view::npos) return false;
  out.host = std::string(rest);
  return true;
}

std::string object_url(const endpoint_parts& endpoint, std::string_view bucket, bool virtual_host,
                       std::string_view key, const query_params& query) {
  std::string url = endpoint.scheme + "://";
  if (virtual_host) {
    url += bucket;
    url += '.';
    url += endpoint.host;
    url += '/';
  } else {
    url += endpoint.host;
    url += '/';
    url += bucket;
    if (!key.empty() || !query.empty()) url += '/';
  }
  url += uri_encode(key, true);
  if (!query.empty()) {
    url += '?';
    url += canonical_query(query);
  }
  return url;
}

std::string sigv4_param(std::string_view region) {
  return "aws:amz:" + std::string(region) + ":s3";
}

}  // namespace sm::s3
