#include "s3/responses.hpp"

#include <charconv>
#include <chrono>
#include <cstdint>
#include <optional>

#include "base/clock.hpp"
#include "base/percent.hpp"
#include "s3/xml.hpp"

namespace sm::s3 {

namespace {

constexpr std::string_view s3_namespace = "http://s3.amazonaws.com/doc/2006-03-01/";

[[noreturn]] void malformed(const std::string& what) {
  throw error(0, "MalformedResponse", what);
}

xml::element parse_document(std::string_view body, std::string_view expected_root) {
  std::string problem;
  std::optional<xml::element> root = xml::parse(body, &problem);
  if (!root)
    malformed("not a well-formed <" + std::string(expected_root) + "> document (" + problem + ")");
  return std::move(*root);
}

// S3 answers CompleteMultipartUpload and CopyObject with 200 before the work is done, and
// reports a failure that comes later as an <Error> body. It is thrown as a server error so that
// the caller retries it like one.
void throw_embedded_error(const xml::element& root) {
  if (!root.is("Error")) return;
  std::string code = root.child_text("Code");
  if (code.empty()) code = "InternalError";
  throw error(500, std::move(code), root.child_text("Message"));
}

void require_root(const xml::element& root, std::string_view expected) {
  if (!root.is(expected)) {
    malformed("expected <" + std::string(expected) + ">, got <" + root.name + ">");
  }
}

const xml::element& required(const xml::element& parent, std::string_view name) {
  const xml::element* found = parent.child(name);
  if (found == nullptr) malformed("<" + parent.name + "> has no <" + std::string(name) + ">");
  return *found;
}

std::string without_quotes(std::string_view etag) {
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') {
    etag = etag.substr(1, etag.size() - 2);
  }
  return std::string(etag);
}

std::uint64_t parse_size(std::string_view text) {
  std::uint64_t size = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), size);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
    malformed("unreadable Size \"" + std::string(text) + "\"");
  }
  return size;
}

// ISO 8601 as S3 writes it, "2026-11-22T13:00:00.000Z", which is RFC 3339.
std::chrono::system_clock::time_point parse_timestamp(std::string_view text) {
  std::optional<wall_time> t = parse_rfc3339(text);
  if (!t) malformed("unreadable LastModified \"" + std::string(text) + "\"");
  return *t;
}

// encoding-type=url: S3 writes a space as '+' (and a '+' as %2B), as in a form.
std::string url_decoded(std::string_view text) {
  std::optional<std::string> out = percent_decode(text, plus_sign::space);
  if (!out) malformed("bad percent-encoding in \"" + std::string(text) + "\"");
  return std::move(*out);
}

std::string relative_key(std::string_view full_key, std::string_view key_prefix) {
  if (!full_key.starts_with(key_prefix)) {
    malformed("key \"" + std::string(full_key) + "\" is outside the prefix \"" +
              std::string(key_prefix) + "\"");
  }
  return std::string(full_key.substr(key_prefix.size()));
}

// Character data for a request body: the five special characters as entities, and control
// characters as references, since an XML reader turns a raw "\r" into "\n".
std::string xml_escaped(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += "&#" + std::to_string(static_cast<int>(c)) + ";";
        } else {
          out += c;
        }
    }
  }
  return out;
}

}  // namespace

list_page parse_list_objects_v2(std::string_view body, std::string_view key_prefix) {
  const xml::element root = parse_document(body, "ListBucketResult");
  require_root(root, "ListBucketResult");
  const bool url_encoded = root.child_text("EncodingType") == "url";
  const auto key_of = [&](const xml::element& e) {
    return relative_key(url_encoded ? url_decoded(e.text) : e.text, key_prefix);
  };

  list_page page;
  for (const xml::element* contents : root.children_named("Contents")) {
    object_info info;
    info.key = key_of(required(*contents, "Key"));
    info.size = parse_size(required(*contents, "Size").text);
    info.etag = without_quotes(required(*contents, "ETag").text);
    info.last_modified = parse_timestamp(required(*contents, "LastModified").text);
    page.objects.push_back(std::move(info));
  }
  for (const xml::element* common : root.children_named("CommonPrefixes")) {
    const std::vector<const xml::element*> prefixes = common->children_named("Prefix");
    if (prefixes.empty()) malformed("<CommonPrefixes> has no <Prefix>");
    for (const xml::element* prefix : prefixes) page.common_prefixes.push_back(key_of(*prefix));
  }

  // A truncated page without a token would end the listing early, silently: refuse it.
  const std::string& truncated = required(root, "IsTruncated").text;
  if (truncated == "true" || truncated == "1") {
    page.next_token = required(root, "NextContinuationToken").text;
    if (page.next_token.empty()) malformed("a truncated listing with an empty continuation token");
  } else if (truncated != "false" && truncated != "0") {
    malformed("unreadable IsTruncated \"" + truncated + "\"");
  }
  return page;
}

std::optional<error_body> parse_error(std::string_view body) {
  const std::optional<xml::element> root = xml::parse(body);
  if (!root || !root->is("Error")) return std::nullopt;
  const xml::element* code = root->child("Code");
  if (code == nullptr || code->text.empty()) return std::nullopt;
  return error_body{code->text, root->child_text("Message")};
}

std::string parse_initiate_multipart(std::string_view body) {
  const xml::element root = parse_document(body, "InitiateMultipartUploadResult");
  require_root(root, "InitiateMultipartUploadResult");
  std::string upload_id = required(root, "UploadId").text;
  if (upload_id.empty()) malformed("an empty UploadId");
  return upload_id;
}

std::string parse_complete_multipart(std::string_view body) {
  const xml::element root = parse_document(body, "CompleteMultipartUploadResult");
  throw_embedded_error(root);
  require_root(root, "CompleteMultipartUploadResult");
  return without_quotes(required(root, "ETag").text);
}

std::string parse_copy_result(std::string_view body) {
  const xml::element root = parse_document(body, "CopyObjectResult");
  throw_embedded_error(root);
  require_root(root, "CopyObjectResult");
  return without_quotes(required(root, "ETag").text);
}

std::vector<std::pair<std::string, error_body>> parse_delete_result(std::string_view body,
                                                                    std::string_view key_prefix) {
  const xml::element root = parse_document(body, "DeleteResult");
  throw_embedded_error(root);
  require_root(root, "DeleteResult");
  std::vector<std::pair<std::string, error_body>> failed;
  for (const xml::element* e : root.children_named("Error")) {
    std::string key = relative_key(required(*e, "Key").text, key_prefix);
    failed.emplace_back(std::move(key),
                        error_body{required(*e, "Code").text, e->child_text("Message")});
  }
  return failed;
}

std::string delete_request_body(const std::vector<std::string>& full_keys) {
  std::string body = R"(<?xml version="1.0" encoding="UTF-8"?>)";
  body += "<Delete xmlns=\"" + std::string(s3_namespace) + "\"><Quiet>true</Quiet>";
  for (const std::string& key : full_keys) {
    body += "<Object><Key>" + xml_escaped(key) + "</Key></Object>";
  }
  body += "</Delete>";
  return body;
}

std::string complete_multipart_body(const std::vector<std::string>& part_etags) {
  std::string body = R"(<?xml version="1.0" encoding="UTF-8"?>)";
  body += "<CompleteMultipartUpload xmlns=\"" + std::string(s3_namespace) + "\">";
  for (std::size_t i = 0; i < part_etags.size(); ++i) {
    body += "<Part><PartNumber>" + std::to_string(i + 1) + "</PartNumber><ETag>\"" +
            xml_escaped(without_quotes(part_etags[i])) + "\"</ETag></Part>";
  }
  body += "</CompleteMultipartUpload>";
  return body;
}

}  // namespace sm::s3
