// SPDX-License-Identifier: Apache-2.0
#include "fs_commands.hpp"

#include <fmt/core.h>
#include <sys/stat.h>

#include "hmk/fs/file_system.hpp"

namespace hmk::tools {

int cmd_mkfs(const MkfsOptions& o) {
    struct stat st {};
    const bool exists = ::stat(o.image.c_str(), &st) == 0;
    std::unique_ptr<fs::FileBlockIo> io;
    if (!exists || (o.size_mib != 0 && o.force)) {
        const std::uint64_t mib = o.size_mib != 0 ? o.size_mib : 64;
        auto made = fs::FileBlockIo::create(o.image, mib * (1 << 20) / fs::k_block_size);
        if (!made) {
            fmt::print(stderr, "hmk mkfs: {}\n", made.error());
            return 2;
        }
        io = std::move(*made);
    } else {
        if (o.size_mib != 0) {
            fmt::print(stderr, "hmk mkfs: {} exists: --size makes a new image only with --force\n",
                       o.image);
            return 2;
        }
        auto opened = fs::FileBlockIo::open(o.image);
        if (!opened) {
            fmt::print(stderr, "hmk mkfs: {}\n", opened.error());
            return 2;
        }
        io = std::move(*opened);
        // Never over a file system by accident.
        auto there = services::run_now(fs::FileSystem::mount(*io));
        if (there && !o.force) {
            fmt::print(stderr,
                       "hmk mkfs: {} holds an hmkfs file system already (--force to replace "
                       "it)\n",
                       o.image);
            return 1;
        }
    }
    auto g = services::run_now(fs::mkfs(*io, o.inodes));
    if (!g) {
        fmt::print(stderr, "hmk mkfs: {}: {} ({} blocks; at least 1024 are needed)\n", o.image,
                   fs::to_string(g.error()), io->blocks());
        return 2;
    }
    fmt::print(
        "{}: hmkfs, {} blocks of {} bytes ({} MiB), {} inodes, journal {} blocks, data "
        "from block {}\n",
        o.image, g->blocks, fs::k_block_size, g->blocks * fs::k_block_size >> 20, g->inodes,
        g->journal_blocks, g->data_start);
    return 0;
}

int cmd_fsck(const std::string& image) {
    auto io = fs::FileBlockIo::open(image);
    if (!io) {
        fmt::print(stderr, "hmk fsck: {}\n", io.error());
        return 2;
    }
    auto report = services::run_now(fs::fsck(**io));
    if (!report) {
        fmt::print(stderr, "hmk fsck: {}: {}\n", image, fs::to_string(report.error()));
        return 2;
    }
    const fs::FsckReport& r = *report;
    if (r.replayed) fmt::print("{}: replayed a committed transaction from the journal\n", image);
    for (const std::string& p : r.problems) fmt::print("{}: {}\n", image, p);
    fmt::print("{}: {}: {} files, {} directories, {} of {} blocks used\n", image,
               r.problems.empty() ? "clean" : fmt::format("{} problems", r.problems.size()),
               r.files, r.directories, r.used_blocks, r.geometry.blocks);
    return r.problems.empty() ? 0 : 1;
}

}  // namespace hmk::tools
