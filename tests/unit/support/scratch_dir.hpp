// A fresh directory for one test, removed with everything in it (permissions restored first).
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <string>

namespace test_support {

// A fresh directory under the temporary directory, removed with everything in it.
struct scratch_dir {
  std::filesystem::path dir;
  explicit scratch_dir(const char* name = "sm-test") {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / (std::string(name) + "-XXXXXX")).string();
    dir = ::mkdtemp(tmpl.data());
  }
  ~scratch_dir() {
    std::error_code ec;
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all, ec);
    std::filesystem::remove_all(dir, ec);
  }
};

}  // namespace test_support
