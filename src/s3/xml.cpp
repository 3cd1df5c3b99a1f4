#include "s3/xml.hpp"

#include <exception>
#include <utility>

namespace sm::s3::xml {

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

// ASCII letters, '_' and ':', and every byte of a multi-byte UTF-8 sequence: names in S3 answers
// are ASCII, and checking the full Unicode name classes would buy nothing here.
bool is_name_start(char c) {
  const auto u = static_cast<unsigned char>(c);
  return (u >= 'A' && u <= 'Z') || (u >= 'a' && u <= 'z') || u == '_' || u == ':' || u >= 0x80;
}

bool is_name_char(char c) {
  return is_name_start(c) || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

bool all_space(std::string_view text) {
  for (char c : text) {
    if (!is_space(c)) return false;
  }
  return true;
}

std::string_view local_part(std::string_view name) {
  const std::size_t colon = name.rfind(':');
  return colon == std::string_view::npos ? name : name.substr(colon + 1);
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// An element name for an error message: a hostile document may hold a name of megabytes.
std::string shown(std::string_view name) {
  constexpr std::size_t max_shown = 64;
  std::string out(1, '<');
  out.append(name.substr(0, max_shown));
  if (name.size() > max_shown) out.append("...");
  out += '>';
  return out;
}

// One pass over the document, left to right. Every read_* and skip_* function starts at the
// construct it names, leaves pos_ just past it and returns true, or sets error_ and returns
// false. Open elements live on an explicit stack, so nesting costs no native stack.
class reader {
 public:
  explicit reader(std::string_view in) : in_(in) {}

  std::optional<element> document();
  const std::string& error() const { return error_; }

 private:
  bool fail(std::string_view what) {
    error_ = "at byte " + std::to_string(pos_) + ": " + std::string(what);
    return false;
  }
  bool at_end() const { return pos_ >= in_.size(); }
  bool at(std::string_view s) const { return in_.substr(pos_).starts_with(s); }
  void skip_space() {
    while (!at_end() && is_space(in_[pos_])) ++pos_;
  }

  bool skip_misc();
  bool skip_until(std::string_view end, std::string_view what);
  bool skip_processing_instruction();
  bool read_name(std::string& out, std::string_view what);
  bool read_start_tag(element& out, bool& self_closing);
  bool read_end_tag(const std::string& open_name);
  bool read_content(element& root);
  bool read_text(std::string& out);
  bool read_cdata(std::string& out);
  bool read_reference(std::string& out);
  bool read_attribute_value();

  std::string_view in_;
  std::size_t pos_ = 0;
  std::string error_;
};

std::optional<element> reader::document() {
  if (in_.empty()) {
    fail("empty document");
    return std::nullopt;
  }
  if (in_.size() > max_document_bytes) {
    fail("document of " + std::to_string(in_.size()) + " bytes is over the limit of " +
         std::to_string(max_document_bytes));
    return std::nullopt;
  }
  if (at("\xEF\xBB\xBF")) pos_ = 3;  // a UTF-8 byte order mark
  // Leading whitespace is accepted even before the XML declaration: S3 sends spaces to keep the
  // connection open while it completes a multipart upload, then the document.
  if (!skip_misc()) return std::nullopt;
  if (at_end()) {
    fail("no root element");
    return std::nullopt;
  }
  if (at("<!DOCTYPE")) {
    fail("a DOCTYPE is not supported");
    return std::nullopt;
  }
  if (in_[pos_] != '<' || at("<!")) {
    fail("expected the root element");
    return std::nullopt;
  }
  element root;
  bool self_closing = false;
  if (!read_start_tag(root, self_closing)) return std::nullopt;
  if (!self_closing && !read_content(root)) return std::nullopt;
  if (!skip_misc()) return std::nullopt;
  if (!at_end()) {
    fail("content after the root element");
    return std::nullopt;
  }
  return root;
}

// Whitespace, comments and processing instructions: what may stand before and after the root.
bool reader::skip_misc() {
  for (;;) {
    skip_space();
    if (at("<!--")) {
      if (!skip_until("-->", "comment")) return false;
    } else if (at("<?")) {
      if (!skip_processing_instruction()) return false;
    } else {
      return true;
    }
  }
}

bool reader::skip_until(std::string_view end, std::string_view what) {
  const std::size_t found = in_.find(end, pos_);
  if (found == std::string_view::npos) return fail("unterminated " + std::string(what));
  pos_ = found + end.size();
  return true;
}

// <?target ...?>, the XML declaration among them. Its content is not needed: S3 answers are
// UTF-8, and a declaration naming another encoding would not change how the bytes are read.
bool reader::skip_processing_instruction() {
  pos_ += 2;
  std::string target;
  if (!read_name(target, "a processing instruction target")) return false;
  return skip_until("?>", "processing instruction");
}

bool reader::read_name(std::string& out, std::string_view what) {
  if (at_end() || !is_name_start(in_[pos_])) return fail("expected " + std::string(what));
  const std::size_t start = pos_;
  while (!at_end() && is_name_char(in_[pos_])) ++pos_;
  out.assign(in_.substr(start, pos_ - start));
  return true;
}

// At '<': the name, the attributes (checked, then dropped), and '>' or "/>".
bool reader::read_start_tag(element& out, bool& self_closing) {
  ++pos_;
  if (!read_name(out.name, "an element name")) return false;
  for (;;) {
    const std::size_t before_space = pos_;
    skip_space();
    if (at_end()) return fail("unterminated start tag " + shown(out.name));
    if (in_[pos_] == '>') {
      ++pos_;
      self_closing = false;
      return true;
    }
    if (at("/>")) {
      pos_ += 2;
      self_closing = true;
      return true;
    }
    if (pos_ == before_space) return fail("expected whitespace before an attribute");
    std::string attribute;
    if (!read_name(attribute, "an attribute name")) return false;
    skip_space();
    if (at_end() || in_[pos_] != '=') return fail("expected '=' after an attribute name");
    ++pos_;
    skip_space();
    if (!read_attribute_value()) return false;
  }
}

bool reader::read_attribute_value() {
  if (at_end() || (in_[pos_] != '"' && in_[pos_] != '\'')) {
    return fail("expected a quoted attribute value");
  }
  const char quote = in_[pos_++];
  std::string ignored;
  for (;;) {
    if (at_end()) return fail("unterminated attribute value");
    const char c = in_[pos_];
    if (c == quote) {
      ++pos_;
      return true;
    }
    if (c == '<') return fail("'<' in an attribute value");
    if (c == '&') {
      if (!read_reference(ignored)) return false;
    } else {
      ++pos_;
    }
  }
}

// At "</": the name must be the one of the innermost open element.
bool reader::read_end_tag(const std::string& open_name) {
  const std::size_t start = pos_;
  pos_ += 2;
  std::string name;
  if (!read_name(name, "an element name in an end tag")) return false;
  skip_space();
  if (at_end() || in_[pos_] != '>') return fail("unterminated end tag " + shown(name));
  if (name != open_name) {
    pos_ = start;
    return fail("end tag " + shown("/" + name) + " does not close " + shown(open_name));
  }
  ++pos_;
  return true;
}

// Everything after the root's start tag up to and including its end tag. `root` holds the
// root's name on entry and the whole tree on success.
bool reader::read_content(element& root) {
  std::vector<element> open;  // open.front() is the root, open.back() the innermost element
  open.push_back(std::move(root));
  while (!open.empty()) {
    if (at_end()) return fail("unclosed " + shown(open.back().name));
    if (in_[pos_] != '<') {
      if (!read_text(open.back().text)) return false;
    } else if (at("</")) {
      if (!read_end_tag(open.back().name)) return false;
      element closed = std::move(open.back());
      open.pop_back();
      if (!closed.children.empty() && all_space(closed.text)) closed.text.clear();
      if (open.empty()) {
        root = std::move(closed);
      } else {
        open.back().children.push_back(std::move(closed));
      }
    } else if (at("<!--")) {
      if (!skip_until("-->", "comment")) return false;
    } else if (at("<![CDATA[")) {
      if (!read_cdata(open.back().text)) return false;
    } else if (at("<?")) {
      if (!skip_processing_instruction()) return false;
    } else if (at("<!")) {
      return fail("unexpected declaration inside an element");
    } else {
      if (open.size() >= max_depth) {
        return fail("elements nested deeper than " + std::to_string(max_depth));
      }
      element child;
      bool self_closing = false;
      if (!read_start_tag(child, self_closing)) return false;
      if (self_closing) {
        open.back().children.push_back(std::move(child));
      } else {
        open.push_back(std::move(child));
      }
    }
  }
  return true;
}

// Character data up to the next '<', references decoded, "\r\n" and "\r" read as "\n".
bool reader::read_text(std::string& out) {
  while (!at_end() && in_[pos_] != '<') {
    const std::size_t special = in_.find_first_of("<&\r", pos_);
    const std::size_t stop = special == std::string_view::npos ? in_.size() : special;
    out.append(in_.substr(pos_, stop - pos_));
    pos_ = stop;
    if (at_end() || in_[pos_] == '<') break;
    if (in_[pos_] == '&') {
      if (!read_reference(out)) return false;
    } else {  // '\r'
      out += '\n';
      ++pos_;
      if (!at_end() && in_[pos_] == '\n') ++pos_;
    }
  }
  return true;
}

bool reader::read_cdata(std::string& out) {
  constexpr std::string_view open = "<![CDATA[";
  const std::size_t start = pos_ + open.size();
  const std::size_t end = in_.find("]]>", start);
  if (end == std::string_view::npos) return fail("unterminated CDATA section");
  for (std::size_t i = start; i < end; ++i) {
    if (in_[i] != '\r') {
      out += in_[i];
    } else if (i + 1 >= end || in_[i + 1] != '\n') {
      out += '\n';
    }
  }
  pos_ = end + 3;
  return true;
}

// At '&': one of the five predefined entities or a character reference, appended as UTF-8.
// Character references to control characters are accepted (S3 writes keys holding them that
// way); NUL, surrogates and values past U+10FFFF are not characters and are refused.
bool reader::read_reference(std::string& out) {
  ++pos_;
  if (!at_end() && in_[pos_] == '#') {
    ++pos_;
    const bool hex = !at_end() && in_[pos_] == 'x';
    if (hex) ++pos_;
    char32_t cp = 0;
    std::size_t digits = 0;
    for (; !at_end() && in_[pos_] != ';'; ++pos_, ++digits) {
      const char c = in_[pos_];
      unsigned value = 0;
      if (c >= '0' && c <= '9') {
        value = static_cast<unsigned>(c - '0');
      } else if (hex && c >= 'a' && c <= 'f') {
        value = static_cast<unsigned>(c - 'a' + 10);
      } else if (hex && c >= 'A' && c <= 'F') {
        value = static_cast<unsigned>(c - 'A' + 10);
      } else {
        return fail("bad digit in a character reference");
      }
      cp = cp * (hex ? 16 : 10) + value;
      if (cp > 0x10FFFF) return fail("character reference past U+10FFFF");
    }
    if (at_end()) return fail("unterminated character reference");
    if (digits == 0) return fail("empty character reference");
    if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return fail("character reference to a non-character");
    }
    ++pos_;  // ';'
    append_utf8(out, cp);
    return true;
  }
  static constexpr std::pair<std::string_view, char> entities[] = {
      {"amp;", '&'}, {"lt;", '<'}, {"gt;", '>'}, {"quot;", '"'}, {"apos;", '\''}};
  for (const auto& [name, replacement] : entities) {
    if (at(name)) {
      pos_ += name.size();
      out += replacement;
      return true;
    }
  }
  return fail("unknown or unterminated entity reference");
}

}  // namespace

bool element::is(std::string_view wanted) const {
  if (name == wanted) return true;
  return wanted.find(':') == std::string_view::npos && local_part(name) == wanted;
}

const element* element::child(std::string_view wanted) const {
  for (const element& c : children) {
    if (c.is(wanted)) return &c;
  }
  return nullptr;
}

std::vector<const element*> element::children_named(std::string_view wanted) const {
  std::vector<const element*> found;
  for (const element& c : children) {
    if (c.is(wanted)) found.push_back(&c);
  }
  return found;
}

std::string element::child_text(std::string_view wanted) const {
  const element* c = child(wanted);
  return c == nullptr ? std::string() : c->text;
}

std::optional<element> parse(std::string_view document, std::string* error) {
  // The only exception the reader can meet is an allocation failure; it becomes an error like
  // any other, so that a caller never has to guard a parse.
  try {
    reader r(document);
    std::optional<element> root = r.document();
    if (!root && error != nullptr) *error = r.error();
    return root;
  } catch (const std::exception& e) {
    try {
      if (error != nullptr) *error = std::string("cannot parse: ") + e.what();
    } catch (...) {
      // No memory even for the message: the nullopt says enough.
    }
    return std::nullopt;
  }
}

}  // namespace sm::s3::xml
