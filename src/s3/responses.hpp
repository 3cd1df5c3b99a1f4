// The S3 answers the client reads and the request bodies it writes, as plain functions over
// strings and the object store's types: no I/O, so each is tested on recorded answers.
//
// Every parser that returns a result throws s3::error(0, "MalformedResponse", ...) when the body
// is not the XML it expects (not XML at all, another root, a required field missing or
// unreadable). Status 0 makes that retryable: a truncated body is the usual cause.
// Keys in results are relative: the store's key_prefix is removed, and a key outside it is a
// malformed answer, since every request the store sends is confined to its prefix.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "s3/object_store.hpp"

namespace sm::s3 {

// ListObjectsV2 (ListBucketResult). Contents need Key, Size, ETag and LastModified (ISO 8601,
// e.g. 2026-11-22T13:00:00.000Z); KeyCount is not needed (Swift's s3api omits it). When
// IsTruncated is true, NextContinuationToken must be present and becomes next_token; otherwise
// next_token is empty. Keys and prefixes are percent-decoded when the answer says
// <EncodingType>url</EncodingType>.
list_page parse_list_objects_v2(std::string_view body, std::string_view key_prefix);

// An S3 error document: <Error><Code>..</Code><Message>..</Message>...</Error>.
struct error_body {
  std::string code, message;
};

// nullopt when the body is not such a document (empty, an HTML page from a proxy, another root,
// no Code). A missing Message is "".
std::optional<error_body> parse_error(std::string_view body);

// InitiateMultipartUploadResult: the UploadId.
std::string parse_initiate_multipart(std::string_view body);

// CompleteMultipartUploadResult: the new object's ETag, quotes removed. S3 answers 200 before it
// has finished and reports a failure in the body as <Error>; that is thrown as
// s3::error(500, Code, Message), so that it is retried like a server error.
std::string parse_complete_multipart(std::string_view body);

// CopyObjectResult: the copy's ETag, quotes removed. A 200 with an <Error> body is thrown as for
// parse_complete_multipart.
std::string parse_copy_result(std::string_view body);

// DeleteResult of a Multi-Object Delete: the keys that could not be deleted (relative), each
// with its error. Empty when every key was deleted. An <Error> root is thrown as for
// parse_complete_multipart: the whole request failed, and reading it as "nothing failed" would
// lose that.
std::vector<std::pair<std::string, error_body>> parse_delete_result(std::string_view body,
                                                                    std::string_view key_prefix);

// The Multi-Object Delete request for `full_keys` (key_prefix already added), in quiet mode so
// that the answer lists only failures. At most 1000 keys per request; the caller splits.
std::string delete_request_body(const std::vector<std::string>& full_keys);

// The CompleteMultipartUpload request: part i+1 has the ETag part_etags[i] (given with or
// without its quotes; it is sent quoted).
std::string complete_multipart_body(const std::vector<std::string>& part_etags);

}  // namespace sm::s3
