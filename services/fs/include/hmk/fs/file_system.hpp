// SPDX-License-Identifier: Apache-2.0
// hmkfs: a small journaling file system on a BlockIo (docs/fs.md).
//
// Every operation is one transaction (a large write is several): the blocks
// it changes go to the journal first, then a commit block, then to their
// places. A crash at any point leaves either the state before the
// transaction or the state after it; mount replays a committed transaction.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "hmk/fs/block_io.hpp"
#include "hmk/result.hpp"
#include "hmk/services/task.hpp"

namespace hmk::fs {

/// File system errors. The numbers cross the bus (schemas/fs.fbs Status).
enum class FsError : std::uint8_t {
    bad_request = 1,  ///< a malformed request
    not_found = 2,    ///< no such file or directory
    exists = 3,       ///< the name is taken
    not_a_directory = 4,
    is_a_directory = 5,
    not_empty = 6,      ///< a directory with entries cannot be removed
    name_too_long = 7,  ///< a name over k_max_name bytes, or a path over k_max_path
    bad_path = 8,       ///< not absolute, empty names, ".", "..", NUL
    no_space = 9,       ///< out of blocks or inodes
    io_error = 10,      ///< the block device failed
    corrupt = 11,       ///< the image is not hmkfs, or is damaged
    too_big = 12,       ///< beyond the largest file
    busy = 13,          ///< the root, or a directory moved into itself
};
const char* to_string(FsError e);

inline constexpr std::size_t k_max_name = 120;
inline constexpr std::size_t k_max_path = 1024;
inline constexpr std::uint32_t k_journal_blocks = 512;

enum class FileKind : std::uint8_t { none = 0, file = 1, directory = 2 };

struct Stat {
    FileKind kind = FileKind::none;
    std::uint32_t inode = 0;
    std::uint64_t size = 0;
    std::uint64_t mtime_ns = 0;
};

struct DirEntry {
    std::string name;
    Stat stat;
};

/// What mkfs lays out (and the superblock records).
struct Geometry {
    std::uint64_t blocks = 0;
    std::uint32_t journal_start = 1;
    std::uint32_t journal_blocks = k_journal_blocks;
    std::uint64_t bitmap_start = 0;
    std::uint64_t bitmap_blocks = 0;
    std::uint64_t inode_start = 0;
    std::uint64_t inode_blocks = 0;
    std::uint32_t inodes = 0;
    std::uint64_t data_start = 0;
};

/// Writes an empty file system over the whole device. `inodes` 0: one per
/// four blocks. Error: the device is too small, or a write failed.
services::Task<Result<Geometry, FsError>> mkfs(BlockIo& io, std::uint32_t inodes = 0);

/// What fsck found: nothing wrong when problems is empty.
struct FsckReport {
    Geometry geometry;
    bool replayed = false;  ///< a committed transaction was replayed first
    std::uint64_t files = 0;
    std::uint64_t directories = 0;
    std::uint64_t used_blocks = 0;
    std::vector<std::string> problems;
};

/// A mounted file system. One thread at a time (the fs module's); its
/// operations are coroutines that wait on the device.
class FileSystem {
  public:
    /// Mounts the file system on `io`: replays a committed transaction left
    /// in the journal. Error: not hmkfs (corrupt), or the device failed.
    static services::Task<Result<std::unique_ptr<FileSystem>, FsError>> mount(BlockIo& io);

    FileSystem(const FileSystem&) = delete;
    FileSystem& operator=(const FileSystem&) = delete;
    ~FileSystem();

    /// The time stamped on what the next operations change.
    void set_now(std::uint64_t now_ns) { m_now = now_ns; }
    const Geometry& geometry() const { return m_geo; }
    /// True if mount replayed a transaction.
    bool replayed() const { return m_replayed; }

    services::Task<Result<Stat, FsError>> stat(std::string_view path);
    services::Task<Result<std::vector<DirEntry>, FsError>> list(std::string_view path);
    services::Task<Result<void, FsError>> mkdir(std::string_view path);
    /// Creates an empty file. Error: exists.
    services::Task<Result<void, FsError>> create(std::string_view path);
    /// At most `length` bytes from `offset` (fewer at the end of the file).
    services::Task<Result<std::vector<std::byte>, FsError>> read(std::string_view path,
                                                                 std::uint64_t offset,
                                                                 std::uint32_t length);
    enum class Create : std::uint8_t { no, yes };
    /// Writes `data` at `offset` (a hole before it reads as zeros); with
    /// Create::yes a missing file is created. Atomic up to
    /// k_max_tx_data bytes; a larger write is several transactions.
    services::Task<Result<void, FsError>> write(std::string_view path, std::uint64_t offset,
                                                std::span<const std::byte> data,
                                                Create create = Create::no);
    /// Writes at the end of the file; the new size.
    services::Task<Result<std::uint64_t, FsError>> append(std::string_view path,
                                                          std::span<const std::byte> data,
                                                          Create create = Create::no);
    services::Task<Result<void, FsError>> truncate(std::string_view path, std::uint64_t size);
    /// Renames a file or directory; an existing file at `to` is replaced.
    services::Task<Result<void, FsError>> rename(std::string_view from, std::string_view to);
    /// Removes a file or an empty directory.
    services::Task<Result<void, FsError>> remove(std::string_view path);
    /// Checks the whole file system (read only).
    services::Task<FsckReport> check();

    static constexpr std::uint64_t k_max_tx_data = 1 << 20;
    struct Inode;

  private:
    explicit FileSystem(BlockIo& io) : m_io(io) {}
    using Block = std::vector<std::byte>;

    // Blocks: the transaction's copy, else the cache, else the device.
    services::Task<Result<const Block*, FsError>> get(std::uint64_t b);
    // A block the transaction changes (read first unless `fresh`: zeros).
    services::Task<Result<Block*, FsError>> change(std::uint64_t b, bool fresh = false);
    services::Task<Result<void, FsError>> commit();
    // Reads blocks first..first+count into the cache, many at a time.
    services::Task<Result<void, FsError>> prefetch(std::uint64_t first, std::uint64_t count);
    void abort() { m_tx.clear(); }

    services::Task<Result<Inode, FsError>> load_inode(std::uint32_t ino);
    services::Task<Result<void, FsError>> store_inode(std::uint32_t ino, const Inode& inode);
    services::Task<Result<std::uint32_t, FsError>> alloc_inode();
    services::Task<Result<std::uint64_t, FsError>> alloc_block();
    services::Task<Result<void, FsError>> free_block(std::uint64_t b);
    // The device block of file block `index` (0: a hole); with `alloc`, one is made.
    services::Task<Result<std::uint64_t, FsError>> map(Inode& inode, std::uint64_t index,
                                                       bool alloc);
    services::Task<Result<void, FsError>> shrink(Inode& inode, std::uint64_t size);
    services::Task<Result<void, FsError>> write_tx(std::uint32_t ino, Inode& inode,
                                                   std::uint64_t offset,
                                                   std::span<const std::byte> data);

    struct Found {
        std::uint32_t parent = 0;
        std::uint32_t ino = 0;  // 0: no such entry
        std::string name;
    };
    services::Task<Result<std::uint32_t, FsError>> lookup_dir(const std::vector<std::string>& parts,
                                                              std::size_t count);
    services::Task<Result<Found, FsError>> resolve(std::string_view path);
    services::Task<Result<std::uint32_t, FsError>> find_entry(std::uint32_t dir,
                                                              std::string_view name);
    services::Task<Result<void, FsError>> add_entry(std::uint32_t dir, std::string_view name,
                                                    std::uint32_t ino, FileKind kind);
    services::Task<Result<void, FsError>> remove_entry(std::uint32_t dir, std::string_view name);
    services::Task<Result<bool, FsError>> dir_empty(std::uint32_t dir);
    services::Task<Result<std::vector<std::pair<std::string, std::uint32_t>>, FsError>> entries(
        std::uint32_t dir);
    services::Task<Result<std::uint32_t, FsError>> make(std::string_view path, FileKind kind);

    BlockIo& m_io;
    Geometry m_geo;
    bool m_replayed = false;
    std::uint64_t m_now = 0;
    std::uint64_t m_seq = 1;
    std::uint64_t m_block_hint = 0;
    std::uint32_t m_inode_hint = 1;
    std::map<std::uint64_t, Block> m_tx;
    std::unordered_map<std::uint64_t, Block> m_cache;
};

/// Mounts (replaying the journal) and checks.
services::Task<Result<FsckReport, FsError>> fsck(BlockIo& io);

}  // namespace hmk::fs
