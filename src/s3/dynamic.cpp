#include "s3/dynamic.hpp"

#include <dlfcn.h>

#include <mutex>
#include <stdexcept>
#include <string>

namespace sm::s3::lib {

namespace {

void* open_library(const char* name, const char* package) {
  // RTLD_LOCAL: its symbols stay out of the global namespace; nothing else resolves against it.
  void* handle = ::dlopen(name, RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* why = ::dlerror();
    throw std::runtime_error(std::string(name) + " could not be loaded (install " + package +
                             "): " + (why ? why : "unknown error"));
  }
  return handle;
}

template <typename F>
void bind(void* handle, const char* symbol, F& target) {
  void* address = ::dlsym(handle, symbol);
  if (!address) throw std::runtime_error(std::string("missing symbol ") + symbol);
  target = reinterpret_cast<F>(address);
}

}  // namespace

const curl_functions& curl() {
  static curl_functions functions;
  static std::once_flag once;
  static std::string failure;
  std::call_once(once, [] {
    try {
      void* h = open_library("libcurl.so.4", "libcurl4");
      bind(h, "curl_global_init", functions.global_init);
      bind(h, "curl_easy_init", functions.easy_init);
      bind(h, "curl_easy_setopt", functions.easy_setopt);
      bind(h, "curl_easy_getinfo", functions.easy_getinfo);
      bind(h, "curl_easy_cleanup", functions.easy_cleanup);
      bind(h, "curl_easy_strerror", functions.easy_strerror);
      bind(h, "curl_slist_append", functions.slist_append);
      bind(h, "curl_slist_free_all", functions.slist_free_all);
      bind(h, "curl_multi_init", functions.multi_init);
      bind(h, "curl_multi_setopt", functions.multi_setopt);
      bind(h, "curl_multi_add_handle", functions.multi_add_handle);
      bind(h, "curl_multi_remove_handle", functions.multi_remove_handle);
      bind(h, "curl_multi_socket_action", functions.multi_socket_action);
      bind(h, "curl_multi_info_read", functions.multi_info_read);
      bind(h, "curl_multi_cleanup", functions.multi_cleanup);
      functions.global_init(CURL_GLOBAL_DEFAULT);
    } catch (const std::exception& e) {
      failure = e.what();
    }
  });
  if (!failure.empty()) throw std::runtime_error(failure);
  return functions;
}

const crypto_functions& crypto() {
  static crypto_functions functions;
  static std::once_flag once;
  static std::string failure;
  std::call_once(once, [] {
    try {
      void* h = open_library("libcrypto.so.3", "libssl3");
      bind(h, "EVP_Digest", functions.digest);
      bind(h, "EVP_sha256", functions.sha256);
      bind(h, "EVP_md5", functions.md5);
      bind(h, "EVP_EncodeBlock", functions.encode_block);
      bind(h, "EVP_MD_CTX_new", functions.md_ctx_new);
      bind(h, "EVP_MD_CTX_free", functions.md_ctx_free);
      bind(h, "EVP_DigestInit_ex", functions.digest_init);
      bind(h, "EVP_DigestUpdate", functions.digest_update);
      bind(h, "EVP_DigestFinal_ex", functions.digest_final);
    } catch (const std::exception& e) {
      failure = e.what();
    }
  });
  if (!failure.empty()) throw std::runtime_error(failure);
  return functions;
}

}  // namespace sm::s3::lib
