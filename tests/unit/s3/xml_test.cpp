#define BOOST_TEST_MODULE s3_xml
#include <boost/test/unit_test.hpp>

#include "support/seeded_random.hpp"

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "s3/object_store.hpp"
#include "s3/responses.hpp"
#include "s3/xml.hpp"

namespace s3 = sm::s3;
namespace xml = sm::s3::xml;
using namespace std::chrono_literals;

namespace {

// Recorded answers, in the shapes AWS, MinIO and Swift's s3api send. None ends with a newline, so
// that every proper prefix of one is a truncated document.

// AWS, pretty-printed: a page of a listing with a delimiter, cut short by max-keys.
constexpr std::string_view aws_list_page = R"xml(<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>env-bucket</Name>
  <Prefix>envs/42/checkpoints/</Prefix>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
  <KeyCount>4</KeyCount>
  <MaxKeys>4</MaxKeys>
  <Delimiter>/</Delimiter>
  <IsTruncated>true</IsTruncated>
  <Contents>
    <Key>envs/42/checkpoints/latest</Key>
    <LastModified>2026-11-22T13:00:00.000Z</LastModified>
    <ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag>
    <Size>36</Size>
    <StorageClass>STANDARD</StorageClass>
  </Contents>
  <Contents>
    <Key>envs/42/checkpoints/manifest.json</Key>
    <LastModified>2026-11-22T13:05:17.250Z</LastModified>
    <ETag>"3858f62230ac3c915f300c664312c11f-9"</ETag>
    <Size>47185920</Size>
    <StorageClass>STANDARD</StorageClass>
  </Contents>
  <CommonPrefixes>
    <Prefix>envs/42/checkpoints/0001/</Prefix>
  </CommonPrefixes>
  <CommonPrefixes>
    <Prefix>envs/42/checkpoints/0002/</Prefix>
  </CommonPrefixes>
</ListBucketResult>)xml";

// Swift's s3api: single-quoted declaration, one line, no KeyCount, the last page.
constexpr std::string_view swift_list_page =
    "<?xml version='1.0' encoding='UTF-8'?>\n"
    "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>env-bucket</Name>"
    "<Prefix>envs/42/</Prefix><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>"
    "<Contents><Key>envs/42/lease</Key><LastModified>2026-01-05T08:09:10.000Z</LastModified>"
    "<ETag>\"d41d8cd98f00b204e9800998ecf8427e\"</ETag><Size>0</Size>"
    "<StorageClass>STANDARD</StorageClass><Owner><ID>test:tester</ID>"
    "<DisplayName>test:tester</DisplayName></Owner></Contents></ListBucketResult>";

// Keys with an ampersand, character references, raw UTF-8 and spaces (leading and trailing).
constexpr std::string_view awkward_keys_page =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
    "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>b</Name>"
    "<Prefix>p/</Prefix><KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys>"
    "<IsTruncated>false</IsTruncated>"
    "<Contents><Key>p/salt &amp; pepper.txt</Key>"
    "<LastModified>2026-11-22T13:00:00Z</LastModified><ETag>\"a\"</ETag><Size>1</Size></Contents>"
    "<Contents><Key>p/r&#xE9;sum&#233; \xe6\x97\xa5\xe6\x9c\xac.pdf</Key>"
    "<LastModified>2026-11-22T13:00:00Z</LastModified><ETag>\"b\"</ETag><Size>2</Size></Contents>"
    "<Contents><Key>p/ spaced out </Key>"
    "<LastModified>2026-11-22T13:00:00Z</LastModified><ETag>\"c\"</ETag><Size>3</Size></Contents>"
    "</ListBucketResult>";

constexpr std::string_view no_such_key = R"xml(<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Key>envs/42/lease</Key><RequestId>4442587FB7D0A2F9</RequestId><HostId>eftixk72aD6Ap51TnqcoF8eFidJG9Z/2mkiDFu8yU9AS1ed4OpIszj7UDNEHGran</HostId></Error>)xml";

constexpr std::string_view access_denied = R"xml(<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>AccessDenied</Code><Message>Access Denied</Message><RequestId>656c76696e672061</RequestId><HostId>Uuag1LuByRx9e6j5Onimru9pO4ZVKnJ2Qz7/C1NPcfTWAtRPfTaOFg==</HostId></Error>)xml";

constexpr std::string_view signature_mismatch = R"xml(<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided. Check your key and signing method.</Message><AWSAccessKeyId>AKIAIOSFODNN7EXAMPLE</AWSAccessKeyId><StringToSign>AWS4-HMAC-SHA256
20261122T130000Z
20261122/us-east-1/s3/aws4_request
5f8d0e4b2e1e0e1f</StringToSign><CanonicalRequest>GET
/env-bucket
list-type=2&amp;prefix=envs%2F42%2F
host:s3.amazonaws.com

host
UNSIGNED-PAYLOAD</CanonicalRequest><RequestId>2A5A1B3C4D5E6F70</RequestId><HostId>dGVzdA==</HostId></Error>)xml";

constexpr std::string_view initiate_result = R"xml(<?xml version="1.0" encoding="UTF-8"?>
<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>env-bucket</Bucket><Key>envs/42/checkpoints/0002/fs.tar</Key><UploadId>VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA</UploadId></InitiateMultipartUploadResult>)xml";

constexpr std::string_view complete_result = R"xml(<?xml version="1.0" encoding="UTF-8"?>
<CompleteMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Location>https://env-bucket.s3.us-east-1.amazonaws.com/envs/42/checkpoints/0002/fs.tar</Location><Bucket>env-bucket</Bucket><Key>envs/42/checkpoints/0002/fs.tar</Key><ETag>"3858f62230ac3c915f300c664312c11f-9"</ETag></CompleteMultipartUploadResult>)xml";

// 200 OK, then the keep-alive spaces S3 sends while it works, then the failure.
constexpr std::string_view complete_failed_after_200 =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n          \n          \n"
    "<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try "
    "again.</Message><RequestId>656c76696e6727732072</RequestId><HostId>Uuag1LuByRx9e6j5Onim"
    "</HostId></Error>";

constexpr std::string_view copy_result = R"xml(<?xml version="1.0" encoding="UTF-8"?>
<CopyObjectResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LastModified>2026-11-22T13:00:00.000Z</LastModified><ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag></CopyObjectResult>)xml";

constexpr std::string_view copy_failed_after_200 =
    "        <?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>"
    "<Message>Please reduce your request rate.</Message></Error>";

constexpr std::string_view delete_result = R"xml(<?xml version="1.0" encoding="UTF-8"?>
<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Deleted><Key>envs/42/wal/0001</Key></Deleted><Error><Key>envs/42/wal/0002 &amp; more</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error><Error><Key>envs/42/wal/0003</Key><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error></DeleteResult>)xml";

constexpr std::string_view delete_all_done = R"xml(<?xml version="1.0" encoding="UTF-8"?>
<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"></DeleteResult>)xml";

const std::vector<std::string_view> all_documents = {
    aws_list_page,   swift_list_page,       awkward_keys_page,
    no_such_key,     access_denied,         signature_mismatch,
    initiate_result, complete_result,       complete_failed_after_200,
    copy_result,     copy_failed_after_200, delete_result,
    delete_all_done};

bool is_malformed(const s3::error& e) {
  return e.code() == "MalformedResponse" && e.status() == 0 && e.retryable();
}

std::chrono::system_clock::time_point utc(std::chrono::sys_days day,
                                          std::chrono::system_clock::duration time) {
  return std::chrono::system_clock::time_point(day) + time;
}

// Every typed parser over `body`. They may throw s3::error, nothing else; the caller sees
// anything else escape as a test failure.
void run_every_parser(std::string_view body) {
  const std::vector<std::function<void()>> parsers = {
      [&] { s3::parse_list_objects_v2(body, "envs/42/"); },
      [&] { s3::parse_list_objects_v2(body, ""); },
      [&] { s3::parse_error(body); },
      [&] { s3::parse_initiate_multipart(body); },
      [&] { s3::parse_complete_multipart(body); },
      [&] { s3::parse_copy_result(body); },
      [&] { s3::parse_delete_result(body, "envs/42/"); },
  };
  for (const auto& parse : parsers) {
    try {
      parse();
    } catch (const s3::error&) {
      // an expected outcome for a damaged body
    }
  }
}

std::string nested(std::size_t depth, bool innermost_self_closing = false) {
  std::string doc;
  for (std::size_t i = 0; i < depth; ++i) doc += "<a>";
  if (innermost_self_closing) doc += "<a/>";
  for (std::size_t i = 0; i < depth; ++i) doc += "</a>";
  return doc;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(xml_reader)

BOOST_AUTO_TEST_CASE(tree_of_a_document) {
  std::string error;
  const auto root = xml::parse(
      "<?xml version=\"1.0\"?>\n<!-- before -->\n<Root a=\"1\" b='two &amp; three'>\n"
      "  <Item>first</Item>\n  <!-- between -->\n  <Item>second</Item>\n"
      "  <Empty/>\n  <Spaced> kept </Spaced>\n</Root>\n<!-- after -->\n",
      &error);
  BOOST_REQUIRE_MESSAGE(root.has_value(), error);
  BOOST_TEST(root->name == "Root");
  BOOST_TEST(root->text == "");  // only indentation between children
  BOOST_REQUIRE_EQUAL(root->children.size(), 4u);
  const std::vector<const xml::element*> items = root->children_named("Item");
  BOOST_REQUIRE_EQUAL(items.size(), 2u);
  BOOST_TEST(items[0]->text == "first");
  BOOST_TEST(items[1]->text == "second");
  BOOST_TEST(root->child("Item") == items[0]);
  BOOST_REQUIRE(root->child("Empty") != nullptr);
  BOOST_TEST(root->child("Empty")->text == "");
  BOOST_TEST(root->child("Empty")->children.empty());
  BOOST_TEST(root->child_text("Spaced") == " kept ");
  BOOST_TEST(root->child("Missing") == nullptr);
  BOOST_TEST(root->child_text("Missing") == "");
  BOOST_TEST(root->children_named("Missing").empty());
}

BOOST_AUTO_TEST_CASE(namespace_prefixes_are_ignored_when_matching) {
  const auto root = xml::parse(
      "<s3:ListBucketResult xmlns:s3=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
      "<s3:Key>k</s3:Key><Key>plain</Key></s3:ListBucketResult>");
  BOOST_REQUIRE(root.has_value());
  BOOST_TEST(root->name == "s3:ListBucketResult");  // kept as written
  BOOST_TEST(root->is("ListBucketResult"));
  BOOST_TEST(root->is("s3:ListBucketResult"));
  BOOST_TEST(!root->is("x:ListBucketResult"));
  BOOST_TEST(root->children_named("Key").size() == 2u);
  BOOST_TEST(root->child_text("Key") == "k");
  BOOST_TEST(root->children_named("s3:Key").size() == 1u);
  BOOST_TEST(root->child("other:Key") == nullptr);
}

BOOST_AUTO_TEST_CASE(entities_and_character_references) {
  const auto root = xml::parse(
      "<t>&amp;&lt;&gt;&quot;&apos;|&#65;&#x42;&#X43;&#xe9;&#x20AC;&#x1F600;&#128512;</t>");
  // &#X43; is not XML (the x is lower case); the parser refuses it.
  BOOST_TEST(!root.has_value());

  const auto ok =
      xml::parse("<t>&amp;&lt;&gt;&quot;&apos;|&#65;&#x42;&#xe9;&#x20AC;&#x1F600;&#128512;</t>");
  BOOST_REQUIRE(ok.has_value());
  BOOST_TEST(ok->text == "&<>\"'|AB\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf0\x9f\x98\x80");
}

BOOST_AUTO_TEST_CASE(cdata_comments_and_line_ends) {
  const auto root =
      xml::parse("<t>a<![CDATA[<not a tag> & no entity]]>b<!-- c -->d\r\ne\rf<?pi x?>g</t>");
  BOOST_REQUIRE(root.has_value());
  BOOST_TEST(root->text == "a<not a tag> & no entitybd\ne\nfg");
  BOOST_TEST(root->children.empty());
}

BOOST_AUTO_TEST_CASE(self_closing_root_and_byte_order_mark) {
  const auto root = xml::parse("\xEF\xBB\xBF<?xml version=\"1.0\"?><Prefix xmlns=\"x\" />");
  BOOST_REQUIRE(root.has_value());
  BOOST_TEST(root->name == "Prefix");
  BOOST_TEST(root->text == "");
}

BOOST_AUTO_TEST_CASE(malformed_documents_are_refused) {
  const std::vector<std::string> bad = {
      "",
      "   \n",
      "<?xml version=\"1.0\"?>",
      "just text",
      "<a>",
      "<a>text",
      "<a",
      "<a></b>",
      "<a><b></a></b>",
      "<a></a>trailing",
      "<a></a><b></b>",
      "<a>&bogus;</a>",
      "<a>&amp</a>",
      "<a>& </a>",
      "<a>&#;</a>",
      "<a>&#x;</a>",
      "<a>&#12a;</a>",
      "<a>&#0;</a>",
      "<a>&#xD800;</a>",
      "<a>&#x110000;</a>",
      "<a>&#99999999999999999999999;</a>",
      "<a b></a>",
      "<a b=c></a>",
      "<a b=\"c></a>",
      "<a b=\"<\"></a>",
      "<a b=\"&nope;\"></a>",
      "<a b=\"1\"c=\"2\"></a>",
      "< a></a>",
      "<1a></1a>",
      "<a></ a>",
      "<a></a",
      "<!-- unterminated <a></a>",
      "<a><!-- unterminated </a>",
      "<a><![CDATA[unterminated</a>",
      "<a><?pi unterminated</a>",
      "<!DOCTYPE a [<!ENTITY e \"x\">]><a>&e;</a>",
      "<a><!ELEMENT b></a>",
      "<? ?><a/>",
  };
  for (const std::string& doc : bad) {
    std::string error;
    std::optional<xml::element> root;
    BOOST_REQUIRE_NO_THROW(root = xml::parse(doc, &error));
    BOOST_TEST(!root.has_value(), "accepted: " << doc);
    BOOST_TEST(!error.empty(), "no message for: " << doc);
    BOOST_TEST(!xml::parse(doc).has_value());  // without an error string, too
  }
}

BOOST_AUTO_TEST_CASE(error_messages_say_where) {
  std::string error;
  BOOST_TEST(!xml::parse("<a><b></c></a>", &error).has_value());
  BOOST_TEST(error.find("at byte 6") != std::string::npos, error);
  BOOST_TEST(error.find("<b>") != std::string::npos, error);
  BOOST_TEST(!xml::parse("<Root><Open>", &error).has_value());
  BOOST_TEST(error.find("unclosed <Open>") != std::string::npos, error);
}

BOOST_AUTO_TEST_CASE(depth_is_limited) {
  BOOST_TEST(xml::parse(nested(xml::max_depth)).has_value());
  BOOST_TEST(xml::parse(nested(xml::max_depth - 1, true)).has_value());

  std::string error;
  BOOST_TEST(!xml::parse(nested(xml::max_depth + 1), &error).has_value());
  BOOST_TEST(error.find("deeper") != std::string::npos, error);
  BOOST_TEST(!xml::parse(nested(xml::max_depth, true)).has_value());
  // A million open tags: refused at the limit, no stack spent on them.
  std::string hostile;
  for (int i = 0; i < 1'000'000; ++i) hostile += "<a>";
  BOOST_TEST(!xml::parse(hostile, &error).has_value());
  BOOST_TEST(error.find("deeper") != std::string::npos, error);
}

BOOST_AUTO_TEST_CASE(size_is_limited) {
  std::string doc = "<a>";
  doc.resize(xml::max_document_bytes - 4, ' ');
  doc += "</a>";
  BOOST_REQUIRE_EQUAL(doc.size(), xml::max_document_bytes);
  BOOST_TEST(xml::parse(doc).has_value());

  doc.insert(doc.begin() + 3, ' ');
  std::string error;
  BOOST_TEST(!xml::parse(doc, &error).has_value());
  BOOST_TEST(error.find("limit") != std::string::npos, error);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(list_objects)

BOOST_AUTO_TEST_CASE(aws_truncated_page_with_delimiter) {
  const s3::list_page page = s3::parse_list_objects_v2(aws_list_page, "envs/42/");
  BOOST_REQUIRE_EQUAL(page.objects.size(), 2u);
  BOOST_TEST(page.objects[0].key == "checkpoints/latest");
  BOOST_TEST(page.objects[0].size == 36u);
  BOOST_TEST(page.objects[0].etag == "9b2cf535f27731c974343645a3985328");
  BOOST_TEST((page.objects[0].last_modified ==
              utc(std::chrono::sys_days{std::chrono::year{2026} / 11 / 22}, 13h)));
  BOOST_TEST(page.objects[1].key == "checkpoints/manifest.json");
  BOOST_TEST(page.objects[1].size == 47185920u);
  BOOST_TEST(page.objects[1].etag == "3858f62230ac3c915f300c664312c11f-9");
  BOOST_TEST(
      (page.objects[1].last_modified ==
       utc(std::chrono::sys_days{std::chrono::year{2026} / 11 / 22}, 13h + 5min + 17s + 250ms)));
  BOOST_TEST(
      (page.common_prefixes == std::vector<std::string>{"checkpoints/0001/", "checkpoints/0002/"}));
  BOOST_TEST(page.next_token == "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
}

BOOST_AUTO_TEST_CASE(swift_last_page_without_key_count) {
  const s3::list_page page = s3::parse_list_objects_v2(swift_list_page, "envs/42/");
  BOOST_REQUIRE_EQUAL(page.objects.size(), 1u);
  BOOST_TEST(page.objects[0].key == "lease");
  BOOST_TEST(page.objects[0].size == 0u);
  BOOST_TEST(page.objects[0].etag == "d41d8cd98f00b204e9800998ecf8427e");
  BOOST_TEST((page.objects[0].last_modified ==
              utc(std::chrono::sys_days{std::chrono::year{2026} / 1 / 5}, 8h + 9min + 10s)));
  BOOST_TEST(page.common_prefixes.empty());
  BOOST_TEST(page.next_token == "");
}

BOOST_AUTO_TEST_CASE(keys_with_entities_unicode_and_spaces) {
  const s3::list_page page = s3::parse_list_objects_v2(awkward_keys_page, "p/");
  BOOST_REQUIRE_EQUAL(page.objects.size(), 3u);
  BOOST_TEST(page.objects[0].key == "salt & pepper.txt");
  BOOST_TEST(page.objects[1].key == "r\xc3\xa9sum\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac.pdf");
  BOOST_TEST(page.objects[2].key == " spaced out ");
  BOOST_TEST(page.next_token == "");
}

BOOST_AUTO_TEST_CASE(url_encoded_keys_are_decoded) {
  const std::string body =
      "<ListBucketResult><EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>"
      "<Contents><Key>p%2Fa+b%2Bc%0D%0A%C3%A9</Key><LastModified>2026-11-22T13:00:00.5+01:00"
      "</LastModified><ETag>\"e\"</ETag><Size>18446744073709551615</Size></Contents>"
      "<CommonPrefixes><Prefix>p%2Fsub+dir%2F</Prefix></CommonPrefixes></ListBucketResult>";
  const s3::list_page page = s3::parse_list_objects_v2(body, "p/");
  BOOST_REQUIRE_EQUAL(page.objects.size(), 1u);
  BOOST_TEST(page.objects[0].key == "a b+c\r\n\xc3\xa9");
  BOOST_TEST(page.objects[0].size == 18446744073709551615u);
  BOOST_TEST((page.objects[0].last_modified ==
              utc(std::chrono::sys_days{std::chrono::year{2026} / 11 / 22}, 12h + 500ms)));
  BOOST_TEST((page.common_prefixes == std::vector<std::string>{"sub dir/"}));
}

BOOST_AUTO_TEST_CASE(prefixed_element_names) {
  const std::string body =
      "<s3:ListBucketResult xmlns:s3=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
      "<s3:IsTruncated>false</s3:IsTruncated><s3:Contents><s3:Key>k</s3:Key>"
      "<s3:LastModified>2026-11-22T13:00:00.000Z</s3:LastModified><s3:ETag>\"e\"</s3:ETag>"
      "<s3:Size>5</s3:Size></s3:Contents></s3:ListBucketResult>";
  const s3::list_page page = s3::parse_list_objects_v2(body, "");
  BOOST_REQUIRE_EQUAL(page.objects.size(), 1u);
  BOOST_TEST(page.objects[0].key == "k");
  BOOST_TEST(page.objects[0].size == 5u);
}

BOOST_AUTO_TEST_CASE(malformed_listings_are_refused) {
  const auto page = [](std::string contents, std::string tail = "") {
    return "<ListBucketResult><IsTruncated>false</IsTruncated><Contents>" + contents +
           "</Contents>" + tail + "</ListBucketResult>";
  };
  const std::string key = "<Key>p/k</Key>";
  const std::string date = "<LastModified>2026-11-22T13:00:00.000Z</LastModified>";
  const std::string etag = "<ETag>\"e\"</ETag>";
  const std::string size = "<Size>1</Size>";
  BOOST_REQUIRE_NO_THROW(s3::parse_list_objects_v2(page(key + date + etag + size), "p/"));

  const std::vector<std::string> bad = {
      page(date + etag + size),                                       // no Key
      page(key + date + etag),                                        // no Size
      page(key + etag + size),                                        // no LastModified
      page(key + date + size),                                        // no ETag
      page(key + date + etag + "<Size>-1</Size>"),                    // negative Size
      page(key + date + etag + "<Size>12a</Size>"),                   // not a number
      page(key + date + etag + "<Size></Size>"),                      // empty
      page(key + date + etag + "<Size>18446744073709551616</Size>"),  // too large
      page(key + "<LastModified>yesterday</LastModified>" + etag + size),
      page(key + "<LastModified>2026-13-01T00:00:00Z</LastModified>" + etag + size),
      page(key + "<LastModified>2026-02-30T00:00:00Z</LastModified>" + etag + size),
      page(key + "<LastModified>2026-11-22T24:00:00Z</LastModified>" + etag + size),
      page(key + "<LastModified>2026-11-22T13:00:00</LastModified>" + etag + size),
      page(key + "<LastModified>2026-11-22T13:00:00.Z</LastModified>" + etag + size),
      page(key + "<LastModified>9999-11-22T13:00:00Z</LastModified>" + etag + size),
      page(key + "<LastModified>2026-11-22T13:00:00Zjunk</LastModified>" + etag + size),
      page("<Key>elsewhere/k</Key>" + date + etag + size),  // outside the prefix
      page(key + date + etag + size, "<CommonPrefixes></CommonPrefixes>"),
      page(key + date + etag + size, "<CommonPrefixes><Prefix>q/</Prefix></CommonPrefixes>"),
      "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",  // no token
      "<ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken/>"
      "</ListBucketResult>",
      "<ListBucketResult><IsTruncated>maybe</IsTruncated></ListBucketResult>",
      "<ListBucketResult></ListBucketResult>",  // no IsTruncated
      "<ListAllMyBucketsResult><IsTruncated>false</IsTruncated></ListAllMyBucketsResult>",
      "<ListBucketResult><EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>"
      "<Contents><Key>p/%zz</Key>" +
          date + etag + size + "</Contents></ListBucketResult>",
      std::string(no_such_key),
      "<html><body>502 Bad Gateway</body></html>",
      "",
  };
  for (const std::string& body : bad) {
    BOOST_CHECK_EXCEPTION(s3::parse_list_objects_v2(body, "p/"), s3::error, is_malformed);
  }
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(errors)

BOOST_AUTO_TEST_CASE(error_documents) {
  const std::optional<s3::error_body> missing = s3::parse_error(no_such_key);
  BOOST_REQUIRE(missing.has_value());
  BOOST_TEST(missing->code == "NoSuchKey");
  BOOST_TEST(missing->message == "The specified key does not exist.");

  const std::optional<s3::error_body> denied = s3::parse_error(access_denied);
  BOOST_REQUIRE(denied.has_value());
  BOOST_TEST(denied->code == "AccessDenied");
  BOOST_TEST(denied->message == "Access Denied");

  const std::optional<s3::error_body> signature = s3::parse_error(signature_mismatch);
  BOOST_REQUIRE(signature.has_value());
  BOOST_TEST(signature->code == "SignatureDoesNotMatch");
  BOOST_TEST(signature->message.starts_with("The request signature we calculated"));

  const std::optional<s3::error_body> no_message = s3::parse_error("<Error><Code>X</Code></Error>");
  BOOST_REQUIRE(no_message.has_value());
  BOOST_TEST(no_message->code == "X");
  BOOST_TEST(no_message->message == "");
}

BOOST_AUTO_TEST_CASE(bodies_that_are_not_error_documents) {
  const std::vector<std::string> not_errors = {
      "",
      "Service Unavailable",
      "<html><head><title>502 Bad Gateway</title></head><body><h1>502</h1></body></html>",
      "<!DOCTYPE html><html><body>Gateway Timeout</body></html>",
      "<html><body>broken<br></body></html>",
      "<Error><Message>no code</Message></Error>",
      "<Error><Code></Code></Error>",
      "<Error><Code>NoSuchKey</Code>",  // truncated
      std::string(initiate_result),
  };
  for (const std::string& body : not_errors) {
    BOOST_TEST(!s3::parse_error(body).has_value(), "read as an error: " << body);
  }
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(multipart_copy_delete)

BOOST_AUTO_TEST_CASE(initiate) {
  BOOST_TEST(s3::parse_initiate_multipart(initiate_result) ==
             "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA");
  BOOST_CHECK_EXCEPTION(s3::parse_initiate_multipart("<InitiateMultipartUploadResult>"
                                                     "<UploadId/></InitiateMultipartUploadResult>"),
                        s3::error, is_malformed);
  BOOST_CHECK_EXCEPTION(s3::parse_initiate_multipart(complete_result), s3::error, is_malformed);
}

BOOST_AUTO_TEST_CASE(complete) {
  BOOST_TEST(s3::parse_complete_multipart(complete_result) == "3858f62230ac3c915f300c664312c11f-9");
  BOOST_CHECK_EXCEPTION(s3::parse_complete_multipart("<CompleteMultipartUploadResult/>"), s3::error,
                        is_malformed);
}

BOOST_AUTO_TEST_CASE(complete_failed_after_200_is_retried) {
  BOOST_CHECK_EXCEPTION(
      s3::parse_complete_multipart(complete_failed_after_200), s3::error, [](const s3::error& e) {
        return e.status() == 500 && e.code() == "InternalError" &&
               e.message() == "We encountered an internal error. Please try again." &&
               e.retryable();
      });
}

BOOST_AUTO_TEST_CASE(copy) {
  BOOST_TEST(s3::parse_copy_result(copy_result) == "9b2cf535f27731c974343645a3985328");
  BOOST_CHECK_EXCEPTION(s3::parse_copy_result(copy_failed_after_200), s3::error,
                        [](const s3::error& e) {
                          return e.status() == 500 && e.code() == "SlowDown" && e.retryable();
                        });
  BOOST_CHECK_EXCEPTION(s3::parse_copy_result("<CopyObjectResult><LastModified>x</LastModified>"
                                              "</CopyObjectResult>"),
                        s3::error, is_malformed);
}

BOOST_AUTO_TEST_CASE(delete_result_lists_failures) {
  const auto failed = s3::parse_delete_result(delete_result, "envs/42/");
  BOOST_REQUIRE_EQUAL(failed.size(), 2u);
  BOOST_TEST(failed[0].first == "wal/0002 & more");
  BOOST_TEST(failed[0].second.code == "AccessDenied");
  BOOST_TEST(failed[0].second.message == "Access Denied");
  BOOST_TEST(failed[1].first == "wal/0003");
  BOOST_TEST(failed[1].second.code == "InternalError");

  BOOST_TEST(s3::parse_delete_result(delete_all_done, "envs/42/").empty());
  BOOST_TEST(s3::parse_delete_result("<DeleteResult><Deleted><Key>envs/42/a</Key></Deleted>"
                                     "</DeleteResult>",
                                     "envs/42/")
                 .empty());
  BOOST_CHECK_EXCEPTION(s3::parse_delete_result(delete_result, "other/"), s3::error, is_malformed);
  BOOST_CHECK_EXCEPTION(s3::parse_delete_result(access_denied, "envs/42/"), s3::error,
                        [](const s3::error& e) { return e.code() == "AccessDenied"; });
}

BOOST_AUTO_TEST_CASE(delete_request_round_trips) {
  const std::vector<std::string> keys = {
      "envs/42/plain",     "envs/42/a & b",           "envs/42/<tag>",
      "envs/42/\"q\" 'a'", "envs/42/caf\xc3\xa9 ",    "envs/42/line\r\nbreak\ttab",
      "envs/42/]]>",       "envs/42/&amp; literally",
  };
  const std::string body = s3::delete_request_body(keys);
  BOOST_TEST(body.find("<Quiet>true</Quiet>") != std::string::npos);
  std::string error;
  const auto root = xml::parse(body, &error);
  BOOST_REQUIRE_MESSAGE(root.has_value(), error);
  BOOST_TEST(root->is("Delete"));
  BOOST_TEST(root->child_text("Quiet") == "true");
  std::vector<std::string> parsed;
  for (const xml::element* object : root->children_named("Object")) {
    parsed.push_back(object->child_text("Key"));
  }
  BOOST_TEST((parsed == keys));
}

BOOST_AUTO_TEST_CASE(complete_request_round_trips) {
  const std::string body = s3::complete_multipart_body(
      {"\"a54357aff0632cce46d942af68356b38\"", "0c78aef83f66abc1fa1e8477f296d394", "x<&"});
  std::string error;
  const auto root = xml::parse(body, &error);
  BOOST_REQUIRE_MESSAGE(root.has_value(), error);
  BOOST_TEST(root->is("CompleteMultipartUpload"));
  const std::vector<const xml::element*> parts = root->children_named("Part");
  BOOST_REQUIRE_EQUAL(parts.size(), 3u);
  BOOST_TEST(parts[0]->child_text("PartNumber") == "1");
  BOOST_TEST(parts[0]->child_text("ETag") == "\"a54357aff0632cce46d942af68356b38\"");
  BOOST_TEST(parts[1]->child_text("PartNumber") == "2");
  BOOST_TEST(parts[1]->child_text("ETag") == "\"0c78aef83f66abc1fa1e8477f296d394\"");
  BOOST_TEST(parts[2]->child_text("PartNumber") == "3");
  BOOST_TEST(parts[2]->child_text("ETag") == "\"x<&\"");
  BOOST_TEST(body.find("<ETag>\"a54357aff0632cce46d942af68356b38\"</ETag>") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(damaged_input)

// Every proper prefix of a recorded answer is a truncated document: the reader refuses it and
// the typed parser reports MalformedResponse (never a partial result, never a crash).
BOOST_AUTO_TEST_CASE(truncation_at_every_offset) {
  using typed_parser = std::function<void(std::string_view)>;
  const std::vector<std::pair<std::string_view, typed_parser>> cases = {
      {aws_list_page, [](std::string_view b) { s3::parse_list_objects_v2(b, "envs/42/"); }},
      {swift_list_page, [](std::string_view b) { s3::parse_list_objects_v2(b, "envs/42/"); }},
      {awkward_keys_page, [](std::string_view b) { s3::parse_list_objects_v2(b, "p/"); }},
      {initiate_result, [](std::string_view b) { s3::parse_initiate_multipart(b); }},
      {complete_result, [](std::string_view b) { s3::parse_complete_multipart(b); }},
      {complete_failed_after_200, [](std::string_view b) { s3::parse_complete_multipart(b); }},
      {copy_result, [](std::string_view b) { s3::parse_copy_result(b); }},
      {copy_failed_after_200, [](std::string_view b) { s3::parse_copy_result(b); }},
      {delete_result, [](std::string_view b) { s3::parse_delete_result(b, "envs/42/"); }},
  };
  std::size_t checked = 0, expected = 0;
  for (const auto& [document, typed] : cases) {
    expected += document.size();
    BOOST_REQUIRE(xml::parse(document).has_value());
    BOOST_REQUIRE_NO_THROW(run_every_parser(document));
    for (std::size_t n = 0; n < document.size(); ++n) {
      const std::string_view cut = document.substr(0, n);
      std::string error;
      if (xml::parse(cut, &error).has_value() || error.empty()) {
        BOOST_ERROR("a truncation at byte " << n << " was accepted: " << cut);
        continue;
      }
      BOOST_CHECK_EXCEPTION(typed(cut), s3::error, is_malformed);
      BOOST_TEST(!s3::parse_error(cut).has_value());
      ++checked;
    }
  }
  for (std::string_view document : {no_such_key, access_denied, signature_mismatch}) {
    expected += document.size();
    BOOST_REQUIRE(s3::parse_error(document).has_value());
    for (std::size_t n = 0; n < document.size(); ++n) {
      BOOST_TEST(!s3::parse_error(document.substr(0, n)).has_value(), "at byte " << n);
      ++checked;
    }
  }
  BOOST_TEST(checked == expected);
}

// Random damage to recorded answers: whatever comes out, the reader returns a tree or a
// message, and the typed parsers return or throw s3::error, nothing else.
BOOST_AUTO_TEST_CASE(random_mutations_never_crash) {
  sm::test::seeded_random random{20261122};
  static constexpr char interesting_bytes[] = "<>/&;#x![]-?=\"' \n\r\0\xff:";
  const std::string_view interesting(interesting_bytes, sizeof interesting_bytes - 1);
  std::size_t accepted = 0, refused = 0;
  for (int round = 0; round < 4000; ++round) {
    std::string doc(all_documents[random.below(all_documents.size())]);
    const std::size_t mutations = 1 + random.below(4);
    for (std::size_t m = 0; m < mutations && !doc.empty(); ++m) {
      const std::size_t at = random.below(doc.size());
      switch (random.below(6)) {
        case 0:  // overwrite a byte with a character that means something to XML
          doc[at] = interesting[random.below(interesting.size())];
          break;
        case 1:  // overwrite a byte with any byte
          doc[at] = static_cast<char>(random.below(256));
          break;
        case 2:  // insert a meaningful character
          doc.insert(at, 1, interesting[random.below(interesting.size())]);
          break;
        case 3:  // delete a run
          doc.erase(at, 1 + random.below(16));
          break;
        case 4: {  // duplicate a run elsewhere (repeats tags, breaks nesting)
          const std::string run = doc.substr(at, 1 + random.below(32));
          doc.insert(random.below(doc.size() + 1), run);
          break;
        }
        default:  // cut the end off
          doc.resize(at);
          break;
      }
    }
    std::string error;
    std::optional<xml::element> root;
    BOOST_REQUIRE_NO_THROW(root = xml::parse(doc, &error));
    if (root.has_value()) {
      ++accepted;
    } else {
      BOOST_REQUIRE_MESSAGE(!error.empty(), "refused without a message: " << doc);
      ++refused;
    }
    BOOST_REQUIRE_NO_THROW(run_every_parser(doc));
  }
  // The loop is worth something only if it exercises both outcomes.
  BOOST_TEST(accepted > 100u);
  BOOST_TEST(refused > 1000u);
}

BOOST_AUTO_TEST_SUITE_END()
