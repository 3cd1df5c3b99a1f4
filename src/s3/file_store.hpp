// The embedded store: objects as files under <root>/<bucket>/<key_prefix><key>, so that the
// product runs with no S3 at all, through the same interface. Writes are atomic (a temporary
// file, then rename or link); conditional create and replace are atomic across processes
// sharing the directory. Blocking file-system calls run off the executor (offload).
#pragma once

#include "s3/object_store.hpp"

namespace sm::s3 {

std::unique_ptr<object_store> make_file_store(asio::any_io_executor executor,
                                              std::filesystem::path root, store_config config);

}  // namespace sm::s3
