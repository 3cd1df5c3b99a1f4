// What curl's CURLOPT_AWS_SIGV4 leaves to us: the canonical path and
// query in the URL (curl signs them as given), the payload hash header, and the URL's shape
// (path-style or virtual-host). Pure functions.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sm::s3 {

// RFC 3986 percent-encoding as SigV4 wants it (base/percent.hpp's): A-Z a-z 0-9 - . _ ~ stay,
// every other byte is %XX (upper-case hex); '/' stays only when `keep_slash` (object keys in
// paths).
std::string uri_encode(std::string_view text, bool keep_slash);

// Parameters encoded, sorted by encoded name then value, joined: "a=1&b=&list-type=2".
using query_params = std::vector<std::pair<std::string, std::string>>;
std::string canonical_query(query_params params);

struct endpoint_parts {
  std::string scheme;  // "http" or "https"
  std::string host;    // with ":port" when one was given
};
// Splits "http://host:port" (a trailing '/' allowed, no path); false when it is not that.
bool split_endpoint(std::string_view endpoint, endpoint_parts& out);

// The URL of `key` (already including the key prefix; empty: the bucket itself) with its
// canonical query: http://host/bucket/key?query, or http://bucket.host/key?query.
std::string object_url(const endpoint_parts& endpoint, std::string_view bucket, bool virtual_host,
                       std::string_view key, const query_params& query = {});

// curl's CURLOPT_AWS_SIGV4 parameter for a region: "aws:amz:<region>:s3".
std::string sigv4_param(std::string_view region);

}  // namespace sm::s3
