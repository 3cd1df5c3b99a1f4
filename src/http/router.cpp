#include "http/router.hpp"

#include <algorithm>
#include <optional>

#include "base/percent.hpp"

namespace sm::http {

namespace {

// "/a/b/" -> {"a", "b", ""}; "/" -> {""}. The trailing empty segment makes "/x/" differ from
// "/x": we do not guess that they mean the same resource.
std::vector<std::string_view> split_segments(std::string_view path) {
  std::vector<std::string_view> out;
  if (path.empty() || path.front() != '/') return out;
  path.remove_prefix(1);
  for (;;) {
    const std::size_t slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

bool is_parameter(std::string_view segment) {
  return segment.size() >= 2 && segment.front() == '{' && segment.back() == '}';
}

}  // namespace

bool percent_decode(std::string_view in, std::string& out) {
  out.clear();
  std::optional<std::string> decoded = sm::percent_decode(in);
  // A NUL would end the segment early for whatever C API it reaches (a file name, a key).
  if (!decoded || decoded->find('\0') != std::string::npos) return false;
  out = std::move(*decoded);
  return true;
}

void router::add(std::string method, std::string_view pattern, handler h) {
  route r;
  r.method = std::move(method);
  for (std::string_view segment : split_segments(pattern)) r.segments.emplace_back(segment);
  r.target = std::move(h);
  routes_.push_back(std::move(r));
}

router::match router::find(std::string_view method, std::string_view path) const {
  match result;
  result.outcome = match::kind::not_found;
  const std::vector<std::string_view> raw = split_segments(path);
  if (raw.empty()) {
    result.outcome = match::kind::bad_path;
    return result;
  }
  std::vector<std::string> segments(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (!percent_decode(raw[i], segments[i])) {
      result.outcome = match::kind::bad_path;
      return result;
    }
  }
  std::vector<std::string_view> allowed;
  for (const route& r : routes_) {
    if (r.segments.size() != segments.size()) continue;
    bool same = true;
    for (std::size_t i = 0; i < segments.size() && same; ++i) {
      if (is_parameter(r.segments[i])) {
        same = !segments[i].empty();
      } else {
        same = r.segments[i] == segments[i];
      }
    }
    if (!same) continue;
    const bool method_matches = r.method == method || (method == "HEAD" && r.method == "GET");
    if (method_matches && result.outcome != match::kind::found) {
      result.outcome = match::kind::found;
      result.target = &r.target;
      for (std::size_t i = 0; i < segments.size(); ++i) {
        if (is_parameter(r.segments[i])) result.params.push_back(std::move(segments[i]));
      }
      return result;
    }
    allowed.push_back(r.method);
    if (r.method == "GET") allowed.push_back("HEAD");
  }
  if (!allowed.empty()) {
    std::sort(allowed.begin(), allowed.end());
    allowed.erase(std::unique(allowed.begin(), allowed.end()), allowed.end());
    result.outcome = match::kind::method_not_allowed;
    for (std::string_view m : allowed) {
      if (!result.allow.empty()) result.allow += ", ";
      result.allow += m;
    }
  }
  return result;
}

}  // namespace sm::http
