// S3 over HTTP(S): libcurl multi driven by the executor, SigV4 signing, retries with backoff.
#pragma once

#include "s3/object_store.hpp"

namespace sm::s3 {

std::unique_ptr<object_store> make_s3_client(asio::any_io_executor executor, store_config config);

}  // namespace sm::s3
