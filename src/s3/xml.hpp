// A small XML reader for the bodies S3 answers with: bytes in, a tree of elements out. Pure (no
// I/O), so every malformed and truncated answer can be unit-tested.
//
// It reads the subset of XML 1.0 that S3, MinIO, Ceph and Swift's s3api produce: a prolog with an
// XML declaration, processing instructions and comments; elements with attributes (read, checked
// and dropped, xmlns included); self-closing tags; character data with the five predefined entities
// and numeric character references; CDATA sections. A DOCTYPE is refused: no S3 answer has one,
// and refusing it means no entity can be declared. Whatever it does not read is an error, never a
// guess.
//
// Namespaces: an element keeps its name as written ("s3:Key"); the lookups below match on the
// local part, so child("Key") finds both <Key> and <s3:Key>. Asking for a prefixed name
// ("s3:Key") matches only that exact spelling.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sm::s3::xml {

// Limits: a document larger than this, or nested deeper, is refused. The parser itself uses no
// recursion; the depth limit bounds the tree, and so the recursion of its destructor.
inline constexpr std::size_t max_document_bytes = 64 * 1024 * 1024;
inline constexpr std::size_t max_depth = 64;

struct element {
  std::string name;  // as written, prefix included
  // The character data directly inside the element, entities decoded, CDATA included, line ends
  // normalised to "\n" as XML requires. Exact for a leaf (leading and trailing spaces kept);
  // for an element with children it is emptied when it is only the indentation between them.
  std::string text;
  std::vector<element> children;

  // True when `wanted` names this element (its local part, or its exact prefixed name).
  bool is(std::string_view wanted) const;
  // The first child so named; nullptr when there is none.
  const element* child(std::string_view wanted) const;
  // Every child so named, in document order.
  std::vector<const element*> children_named(std::string_view wanted) const;
  // The text of the first child so named; "" when there is none.
  std::string child_text(std::string_view wanted) const;
};

// The root element of `document`, or nullopt when it is not well-formed (empty, truncated, an
// unclosed or mismatched tag, an unknown entity, content after the root, too large, too deep);
// then `*error`, when given, says what and at which byte. Never throws.
std::optional<element> parse(std::string_view document, std::string* error = nullptr);

}  // namespace sm::s3::xml
