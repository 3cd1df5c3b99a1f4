// A small XFS file system with reflink, loop-mounted for one test and unmounted after it: where
// the fast, extent-sharing paths are taken. `dir` is empty where that cannot be had here (not
// root, no mkfs.xfs from xfsprogs, no loop device): the test then says so and checks nothing.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "support/scratch_dir.hpp"

namespace test_support {

struct reflink_dir {
  scratch_dir base{"sm-xfs"};
  std::filesystem::path dir;
  std::string why_not;

  reflink_dir() {
    if (::geteuid() != 0) {
      why_not = "not root";
      return;
    }
    const std::filesystem::path image = base.dir / "xfs.img", mount_point = base.dir / "mnt";
    { std::ofstream create(image); }
    std::filesystem::resize_file(image, 320u << 20);  // sparse; mkfs.xfs wants 300 MB at least
    std::filesystem::create_directory(mount_point);
    const std::string path = "PATH=\"$PATH:/usr/sbin:/sbin\" ";
    if (std::system(
            (path + "mkfs.xfs -q -m reflink=1 " + image.string() + " >/dev/null 2>&1").c_str()) !=
        0) {
      why_not = "mkfs.xfs failed or is missing (xfsprogs)";
      return;
    }
    if (std::system((path + "mount -o loop " + image.string() + " " + mount_point.string() +
                     " >/dev/null 2>&1")
                        .c_str()) != 0) {
      why_not = "mount -o loop failed";
      return;
    }
    dir = mount_point;
  }
  ~reflink_dir() {
    if (!dir.empty()) {
      std::system(("umount " + dir.string() + " || umount -l " + dir.string()).c_str());
    }
  }
  reflink_dir(const reflink_dir&) = delete;
  reflink_dir& operator=(const reflink_dir&) = delete;
};

}  // namespace test_support
