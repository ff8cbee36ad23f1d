// SPDX-License-Identifier: Apache-2.0
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/core.h>

#include "hmk/fs/block_io.hpp"

namespace hmk::fs {

Result<std::unique_ptr<FileBlockIo>, std::string> FileBlockIo::open(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return Err{fmt::format("{}: cannot open: {}", path, std::strerror(errno))};
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        return Err{fmt::format("{}: not a regular file", path)};
    }
    if (st.st_size % k_block_size != 0) {
        ::close(fd);
        return Err{fmt::format("{}: size {} is not a whole number of {}-byte blocks", path,
                               st.st_size, k_block_size)};
    }
    return std::unique_ptr<FileBlockIo>(
        new FileBlockIo(fd, static_cast<std::uint64_t>(st.st_size) / k_block_size));
}

Result<std::unique_ptr<FileBlockIo>, std::string> FileBlockIo::create(const std::string& path,
                                                                      std::uint64_t blocks) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return Err{fmt::format("{}: cannot create: {}", path, std::strerror(errno))};
    if (::ftruncate(fd, static_cast<off_t>(blocks * k_block_size)) != 0) {
        const int e = errno;
        ::close(fd);
        return Err{fmt::format("{}: cannot size to {} blocks: {}", path, blocks, std::strerror(e))};
    }
    return std::unique_ptr<FileBlockIo>(new FileBlockIo(fd, blocks));
}

FileBlockIo::~FileBlockIo() {
    if (m_fd >= 0) ::close(m_fd);
}

void FileBlockIo::submit(BlockOp& op) {
    Result<void, IoError> r;
    if (op.kind == BlockOp::Kind::info) {
        op.info_blocks = m_blocks;
        op.complete(r);
        return;
    }
    if (op.kind == BlockOp::Kind::flush) {
        if (m_durable && ::fdatasync(m_fd) != 0) r = Err{IoError::io_error};
        op.complete(r);
        return;
    }
    if (op.block >= m_blocks) {
        op.complete(Err{IoError::out_of_range});
        return;
    }
    const auto at = static_cast<off_t>(op.block * k_block_size);
    if (op.kind == BlockOp::Kind::read) {
        if (op.read_into.size() != k_block_size) {
            r = Err{IoError::bad_request};
        } else if (::pread(m_fd, op.read_into.data(), k_block_size, at) !=
                   static_cast<ssize_t>(k_block_size)) {
            r = Err{IoError::io_error};
        }
    } else if (op.write_from.size() != k_block_size) {
        r = Err{IoError::bad_request};
    } else if (::pwrite(m_fd, op.write_from.data(), k_block_size, at) !=
               static_cast<ssize_t>(k_block_size)) {
        r = Err{IoError::io_error};
    }
    op.complete(r);
}

}  // namespace hmk::fs
