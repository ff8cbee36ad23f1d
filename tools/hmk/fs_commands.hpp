// SPDX-License-Identifier: Apache-2.0
// hmk mkfs and hmk fsck: hmkfs images off line (docs/fs.md).
#pragma once

#include <cstdint>
#include <string>

namespace hmk::tools {

struct MkfsOptions {
    std::string image;
    std::uint64_t size_mib = 0;  ///< 0: the image's size, or 64 for a new one
    std::uint32_t inodes = 0;    ///< 0: one per four blocks
    bool force = false;          ///< overwrite a file system that is there
};

/// Exit 0 made, 1 refused (a file system is there), 2 bad image or arguments.
int cmd_mkfs(const MkfsOptions& o);
/// Exit 0 clean, 1 problems found, 2 not hmkfs or unreadable.
int cmd_fsck(const std::string& image);

}  // namespace hmk::tools
