// libcurl and libcrypto, loaded with dlopen when the first http(s) store is made rather than
// linked: linked, they and the ~35 libraries they pull in cost about 6 MiB of resident memory
// in every state-manager, including the many that only ever use the file:// store.
// The headers still come from libcurl4-openssl-dev and libssl-dev; the runtime needs libcurl4
// and libssl3 (Debian's names) only when an S3 endpoint is configured.
#pragma once

#include <curl/curl.h>
#include <openssl/evp.h>

namespace sm::s3::lib {

struct curl_functions {
  decltype(&::curl_global_init) global_init;
  decltype(&::curl_easy_init) easy_init;
  CURLcode (*easy_setopt)(CURL*, CURLoption, ...);
  CURLcode (*easy_getinfo)(CURL*, CURLINFO, ...);
  decltype(&::curl_easy_cleanup) easy_cleanup;
  decltype(&::curl_easy_strerror) easy_strerror;
  decltype(&::curl_slist_append) slist_append;
  decltype(&::curl_slist_free_all) slist_free_all;
  decltype(&::curl_multi_init) multi_init;
  CURLMcode (*multi_setopt)(CURLM*, CURLMoption, ...);
  decltype(&::curl_multi_add_handle) multi_add_handle;
  decltype(&::curl_multi_remove_handle) multi_remove_handle;
  decltype(&::curl_multi_socket_action) multi_socket_action;
  decltype(&::curl_multi_info_read) multi_info_read;
  decltype(&::curl_multi_cleanup) multi_cleanup;
};

struct crypto_functions {
  decltype(&::EVP_Digest) digest;
  decltype(&::EVP_sha256) sha256;
  decltype(&::EVP_md5) md5;
  decltype(&::EVP_EncodeBlock) encode_block;
  // Streaming digests (checkpoints' file checksums).
  decltype(&::EVP_MD_CTX_new) md_ctx_new;
  decltype(&::EVP_MD_CTX_free) md_ctx_free;
  decltype(&::EVP_DigestInit_ex) digest_init;
  decltype(&::EVP_DigestUpdate) digest_update;
  decltype(&::EVP_DigestFinal_ex) digest_final;
};

// Loaded (and curl_global_init called) on first use; later calls return the same table.
// Throws std::runtime_error naming the library when it cannot be loaded.
const curl_functions& curl();
const crypto_functions& crypto();

}  // namespace sm::s3::lib
