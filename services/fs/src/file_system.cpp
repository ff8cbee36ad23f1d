// SPDX-License-Identifier: Apache-2.0
// hmkfs: layout, transactions, directories and files (docs/fs.md).
#include "hmk/fs/file_system.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "hmk/crc32c.hpp"
#include "hmk/detail/endian.hpp"

namespace hmk::fs {

using hmk::detail::get_le;
using hmk::detail::put_le;
using services::Task;

const char* to_string(FsError e) {
    switch (e) {
        case FsError::bad_request:
            return "bad request";
        case FsError::not_found:
            return "no such file or directory";
        case FsError::exists:
            return "exists already";
        case FsError::not_a_directory:
            return "not a directory";
        case FsError::is_a_directory:
            return "is a directory";
        case FsError::not_empty:
            return "directory not empty";
        case FsError::name_too_long:
            return "name or path too long";
        case FsError::bad_path:
            return "bad path (absolute, no empty names, no . or ..)";
        case FsError::no_space:
            return "no space left";
        case FsError::io_error:
            return "block device error";
        case FsError::corrupt:
            return "not an hmkfs image, or damaged";
        case FsError::too_big:
            return "file too big";
        case FsError::busy:
            return "not possible on that directory";
    }
    return "unknown error";
}

namespace {

constexpr char k_magic[8] = {'H', 'M', 'K', 'F', 'S', '\0', 'v', '1'};
constexpr char k_desc_magic[8] = {'H', 'M', 'K', 'J', 'D', 'E', 'S', 'C'};
constexpr char k_commit_magic[8] = {'H', 'M', 'K', 'J', 'C', 'M', 'I', 'T'};
constexpr std::uint32_t k_root = 1;
constexpr std::size_t k_inode_size = 256;
constexpr std::uint32_t k_inodes_per_block = k_block_size / k_inode_size;
constexpr std::size_t k_direct = 54;
constexpr std::uint64_t k_per_indirect = k_block_size / 4;
constexpr std::size_t k_entry_size = 128;
constexpr std::size_t k_entries_per_block = k_block_size / k_entry_size;
constexpr std::size_t k_desc_header = 24;
constexpr std::size_t k_max_tx_blocks = (k_block_size - k_desc_header) / 8;
constexpr std::uint64_t k_max_file_blocks =
    k_direct + k_per_indirect + k_per_indirect * k_per_indirect;

bool has_magic(const std::byte* p, const char (&magic)[8]) {
    return std::memcmp(p, magic, 8) == 0;
}

void encode_geometry(const Geometry& g, std::byte* p) {
    std::memset(p, 0, k_block_size);
    std::memcpy(p, k_magic, 8);
    put_le<std::uint32_t>(p, 8, 1);
    put_le<std::uint32_t>(p, 12, k_block_size);
    put_le<std::uint64_t>(p, 16, g.blocks);
    put_le<std::uint32_t>(p, 24, g.journal_start);
    put_le<std::uint32_t>(p, 28, g.journal_blocks);
    put_le<std::uint64_t>(p, 32, g.bitmap_start);
    put_le<std::uint64_t>(p, 40, g.bitmap_blocks);
    put_le<std::uint64_t>(p, 48, g.inode_start);
    put_le<std::uint64_t>(p, 56, g.inode_blocks);
    put_le<std::uint32_t>(p, 64, g.inodes);
    put_le<std::uint64_t>(p, 72, g.data_start);
    put_le<std::uint32_t>(p, 80, crc32c(std::span<const std::byte>(p, 80)));
}

Result<Geometry, FsError> decode_geometry(const std::byte* p, std::uint64_t device_blocks) {
    if (!has_magic(p, k_magic) || get_le<std::uint32_t>(p, 8) != 1 ||
        get_le<std::uint32_t>(p, 12) != k_block_size ||
        get_le<std::uint32_t>(p, 80) != crc32c(std::span<const std::byte>(p, 80)))
        return Err{FsError::corrupt};
    Geometry g;
    g.blocks = get_le<std::uint64_t>(p, 16);
    g.journal_start = get_le<std::uint32_t>(p, 24);
    g.journal_blocks = get_le<std::uint32_t>(p, 28);
    g.bitmap_start = get_le<std::uint64_t>(p, 32);
    g.bitmap_blocks = get_le<std::uint64_t>(p, 40);
    g.inode_start = get_le<std::uint64_t>(p, 48);
    g.inode_blocks = get_le<std::uint64_t>(p, 56);
    g.inodes = get_le<std::uint32_t>(p, 64);
    g.data_start = get_le<std::uint64_t>(p, 72);
    // The regions follow each other and fit the device.
    const bool sane = g.blocks <= device_blocks && g.journal_start == 1 &&
                      g.journal_blocks >= k_max_tx_blocks + 2 &&
                      g.bitmap_start == g.journal_start + g.journal_blocks &&
                      g.bitmap_blocks * k_block_size * 8 >= g.blocks &&
                      g.inode_start == g.bitmap_start + g.bitmap_blocks &&
                      g.inode_blocks * k_inodes_per_block >= g.inodes && g.inodes > k_root &&
                      g.data_start == g.inode_start + g.inode_blocks && g.data_start < g.blocks;
    if (!sane) return Err{FsError::corrupt};
    return g;
}

Geometry layout(std::uint64_t blocks, std::uint32_t inodes) {
    Geometry g;
    g.blocks = blocks;
    g.bitmap_start = g.journal_start + g.journal_blocks;
    g.bitmap_blocks = (blocks + k_block_size * 8 - 1) / (k_block_size * 8);
    g.inode_start = g.bitmap_start + g.bitmap_blocks;
    if (inodes == 0) inodes = static_cast<std::uint32_t>(std::max<std::uint64_t>(64, blocks / 4));
    inodes = (inodes + k_inodes_per_block - 1) / k_inodes_per_block * k_inodes_per_block;
    g.inodes = inodes;
    g.inode_blocks = inodes / k_inodes_per_block;
    g.data_start = g.inode_start + g.inode_blocks;
    return g;
}

// Splits an absolute path into its names.
Result<std::vector<std::string>, FsError> split(std::string_view path) {
    if (path.size() > k_max_path) return Err{FsError::name_too_long};
    if (path.empty() || path.front() != '/') return Err{FsError::bad_path};
    std::vector<std::string> parts;
    std::size_t at = 1;
    while (at < path.size()) {
        std::size_t end = path.find('/', at);
        if (end == std::string_view::npos) end = path.size();
        const std::string_view name = path.substr(at, end - at);
        if (name.empty()) {
            if (end == path.size()) break;  // a trailing slash
            return Err{FsError::bad_path};
        }
        if (name == "." || name == ".." || name.find('\0') != std::string_view::npos)
            return Err{FsError::bad_path};
        if (name.size() > k_max_name) return Err{FsError::name_too_long};
        parts.emplace_back(name);
        at = end + 1;
    }
    return parts;
}

}  // namespace

struct FileSystem::Inode {
    FileKind kind = FileKind::none;
    std::uint32_t links = 0;
    std::uint64_t size = 0;
    std::uint64_t mtime_ns = 0;
    std::uint32_t direct[k_direct] = {};
    std::uint32_t indirect = 0;
    std::uint32_t dindirect = 0;

    void decode(const std::byte* p) {
        kind = static_cast<FileKind>(p[0]);
        links = get_le<std::uint32_t>(p, 4);
        size = get_le<std::uint64_t>(p, 8);
        mtime_ns = get_le<std::uint64_t>(p, 16);
        for (std::size_t i = 0; i < k_direct; ++i) direct[i] = get_le<std::uint32_t>(p, 24 + 4 * i);
        indirect = get_le<std::uint32_t>(p, 240);
        dindirect = get_le<std::uint32_t>(p, 244);
    }
    void encode(std::byte* p) const {
        std::memset(p, 0, k_inode_size);
        p[0] = static_cast<std::byte>(kind);
        put_le<std::uint32_t>(p, 4, links);
        put_le<std::uint64_t>(p, 8, size);
        put_le<std::uint64_t>(p, 16, mtime_ns);
        for (std::size_t i = 0; i < k_direct; ++i) put_le<std::uint32_t>(p, 24 + 4 * i, direct[i]);
        put_le<std::uint32_t>(p, 240, indirect);
        put_le<std::uint32_t>(p, 244, dindirect);
    }
    Stat stat(std::uint32_t ino) const { return Stat{kind, ino, size, mtime_ns}; }
};

// --- block device helpers -------------------------------------------------

Task<Result<void, IoError>> BlockIo::read(std::uint64_t block, std::span<std::byte> out) {
    BlockOp op;
    op.kind = BlockOp::Kind::read;
    op.block = block;
    op.read_into = out;
    co_return co_await run(op);
}

Task<Result<void, IoError>> BlockIo::write(std::uint64_t block, std::span<const std::byte> data) {
    BlockOp op;
    op.kind = BlockOp::Kind::write;
    op.block = block;
    op.write_from = data;
    co_return co_await run(op);
}

Task<Result<void, IoError>> BlockIo::flush() {
    BlockOp op;
    op.kind = BlockOp::Kind::flush;
    co_return co_await run(op);
}

Task<Result<std::uint64_t, IoError>> BlockIo::info() {
    BlockOp op;
    op.kind = BlockOp::Kind::info;
    if (auto r = co_await run(op); !r) co_return Err{r.error()};
    co_return op.info_blocks;
}

Task<Result<void, IoError>> BlockIo::write_all(
    const std::vector<std::pair<std::uint64_t, std::span<const std::byte>>>& blocks) {
    // Every write in flight before waiting for any: the device (or the
    // driver's queue) sees them all at once.
    std::vector<BlockOp> ops(blocks.size());
    for (std::size_t i = 0; i < blocks.size(); ++i) {
        ops[i].kind = BlockOp::Kind::write;
        ops[i].block = blocks[i].first;
        ops[i].write_from = blocks[i].second;
        submit(ops[i]);
    }
    Result<void, IoError> first;
    for (BlockOp& op : ops) {
        if (!op.done) {
            struct Wait {
                BlockOp& op;
                bool await_ready() const { return op.done; }
                void await_suspend(std::coroutine_handle<> h) { op.waiter = h; }
                void await_resume() {}
            };
            co_await Wait{op};
        }
        if (!op.result && first) first = op.result;
    }
    co_return first;
}

Task<Result<void, IoError>> BlockIo::read_all(
    const std::vector<std::pair<std::uint64_t, std::span<std::byte>>>& blocks) {
    std::vector<BlockOp> ops(blocks.size());
    for (std::size_t i = 0; i < blocks.size(); ++i) {
        ops[i].kind = BlockOp::Kind::read;
        ops[i].block = blocks[i].first;
        ops[i].read_into = blocks[i].second;
        submit(ops[i]);
    }
    Result<void, IoError> first;
    for (BlockOp& op : ops) {
        if (!op.done) {
            struct Wait {
                BlockOp& op;
                bool await_ready() const { return op.done; }
                void await_suspend(std::coroutine_handle<> h) { op.waiter = h; }
                void await_resume() {}
            };
            co_await Wait{op};
        }
        if (!op.result && first) first = op.result;
    }
    co_return first;
}

// --- mkfs -----------------------------------------------------------------

Task<Result<Geometry, FsError>> mkfs(BlockIo& io, std::uint32_t inodes) {
    const Geometry g = layout(io.blocks(), inodes);
    if (io.blocks() < 1024 || g.data_start + 16 > g.blocks || g.blocks > 0xffffffffULL)
        co_return Err{FsError::no_space};
    std::vector<std::byte> zero(k_block_size);
    // The journal's first block (no transaction), bitmaps and inode table.
    {
        auto r = co_await io.write(g.journal_start, zero);
        if (!r) co_return Err{FsError::io_error};
    }
    for (std::uint64_t b = 0; b < g.bitmap_blocks; ++b) {
        std::vector<std::byte> bits(k_block_size);
        // The metadata blocks, and the bits past the end, are taken.
        for (std::uint64_t i = 0; i < k_block_size * 8; ++i) {
            const std::uint64_t block = b * k_block_size * 8 + i;
            if (block < g.data_start || block >= g.blocks)
                bits[i / 8] |= static_cast<std::byte>(1u << (i % 8));
        }
        auto r = co_await io.write(g.bitmap_start + b, bits);
        if (!r) co_return Err{FsError::io_error};
    }
    for (std::uint64_t b = 0; b < g.inode_blocks; ++b) {
        std::vector<std::byte> table(k_block_size);
        if (b == 0) {
            FileSystem::Inode root;
            root.kind = FileKind::directory;
            root.links = 1;
            root.encode(table.data() + k_root * k_inode_size);
        }
        auto r = co_await io.write(g.inode_start + b, table);
        if (!r) co_return Err{FsError::io_error};
    }
    // The superblock last: until it is there, this is no file system.
    std::vector<std::byte> sb(k_block_size);
    encode_geometry(g, sb.data());
    if (auto r = co_await io.write(0, sb); !r) co_return Err{FsError::io_error};
    if (auto r = co_await io.flush(); !r) co_return Err{FsError::io_error};
    co_return g;
}

// --- mount and the journal ------------------------------------------------

FileSystem::~FileSystem() = default;

Task<Result<std::unique_ptr<FileSystem>, FsError>> FileSystem::mount(BlockIo& io) {
    std::unique_ptr<FileSystem> fs(new FileSystem(io));
    std::vector<std::byte> buf(k_block_size);
    if (io.blocks() == 0) co_return Err{FsError::corrupt};
    if (auto r = co_await io.read(0, buf); !r) co_return Err{FsError::io_error};
    HMK_CO_TRY_AS(fs->m_geo, decode_geometry(buf.data(), io.blocks()));
    const Geometry& g = fs->m_geo;

    // A transaction in the journal whose commit block matches is replayed
    // (again, if it was already: writing the same blocks is harmless).
    std::vector<std::byte> desc(k_block_size);
    if (auto r = co_await io.read(g.journal_start, desc); !r) co_return Err{FsError::io_error};
    if (has_magic(desc.data(), k_desc_magic)) {
        const std::uint64_t seq = get_le<std::uint64_t>(desc.data(), 8);
        const std::uint32_t count = get_le<std::uint32_t>(desc.data(), 16);
        fs->m_seq = seq + 1;
        if (count >= 1 && count <= k_max_tx_blocks && count + 2 <= g.journal_blocks) {
            std::vector<std::byte> commit(k_block_size);
            if (auto r = co_await io.read(g.journal_start + 1 + count, commit); !r)
                co_return Err{FsError::io_error};
            if (has_magic(commit.data(), k_commit_magic) &&
                get_le<std::uint64_t>(commit.data(), 8) == seq &&
                get_le<std::uint32_t>(commit.data(), 16) == count) {
                std::vector<Block> data(count, Block(k_block_size));
                std::uint32_t crc = crc32c(desc);
                bool targets_ok = true;
                for (std::uint32_t i = 0; i < count; ++i) {
                    if (auto r = co_await io.read(g.journal_start + 1 + i, data[i]); !r)
                        co_return Err{FsError::io_error};
                    crc = crc32c(data[i], crc);
                    const std::uint64_t target =
                        get_le<std::uint64_t>(desc.data(), k_desc_header + 8 * i);
                    if (target == 0 || target < g.bitmap_start || target >= g.blocks)
                        targets_ok = false;
                }
                if (crc == get_le<std::uint32_t>(commit.data(), 20) && targets_ok) {
                    std::vector<std::pair<std::uint64_t, std::span<const std::byte>>> writes;
                    for (std::uint32_t i = 0; i < count; ++i) {
                        writes.emplace_back(
                            get_le<std::uint64_t>(desc.data(), k_desc_header + 8 * i), data[i]);
                    }
                    if (auto r = co_await io.write_all(writes); !r)
                        co_return Err{FsError::io_error};
                    if (auto r = co_await io.flush(); !r) co_return Err{FsError::io_error};
                    fs->m_replayed = true;
                }
            }
        }
    }
    fs->m_block_hint = g.data_start;
    co_return std::move(fs);
}

Task<Result<const FileSystem::Block*, FsError>> FileSystem::get(std::uint64_t b) {
    if (b >= m_geo.blocks) co_return Err{FsError::corrupt};
    if (auto t = m_tx.find(b); t != m_tx.end()) co_return &t->second;
    if (auto c = m_cache.find(b); c != m_cache.end()) co_return &c->second;
    Block block(k_block_size);
    if (auto r = co_await m_io.read(b, block); !r) co_return Err{FsError::io_error};
    // A bounded cache: when full, start over (the hot blocks come back).
    if (m_cache.size() >= 8192) m_cache.clear();
    auto [it, added] = m_cache.emplace(b, std::move(block));
    co_return &it->second;
}

Task<Result<void, FsError>> FileSystem::prefetch(std::uint64_t first, std::uint64_t count) {
    // In pieces, all of a piece in flight at once (a cold check of a large
    // inode table is otherwise one round trip to the disk per block).
    constexpr std::uint64_t k_piece = 256;
    for (std::uint64_t at = first; at < first + count; at += k_piece) {
        std::vector<std::uint64_t> want;
        for (std::uint64_t b = at; b < std::min(first + count, at + k_piece); ++b) {
            if (b < m_geo.blocks && m_tx.count(b) == 0 && m_cache.count(b) == 0) want.push_back(b);
        }
        if (want.empty()) continue;
        std::vector<Block> blocks(want.size(), Block(k_block_size));
        std::vector<std::pair<std::uint64_t, std::span<std::byte>>> reads;
        for (std::size_t i = 0; i < want.size(); ++i) reads.emplace_back(want[i], blocks[i]);
        if (auto r = co_await m_io.read_all(reads); !r) co_return Err{FsError::io_error};
        if (m_cache.size() + want.size() >= 8192) m_cache.clear();
        for (std::size_t i = 0; i < want.size(); ++i) m_cache[want[i]] = std::move(blocks[i]);
    }
    co_return Result<void, FsError>{};
}

Task<Result<FileSystem::Block*, FsError>> FileSystem::change(std::uint64_t b, bool fresh) {
    if (b >= m_geo.blocks) co_return Err{FsError::corrupt};
    if (auto t = m_tx.find(b); t != m_tx.end()) {
        if (fresh) std::fill(t->second.begin(), t->second.end(), std::byte{0});
        co_return &t->second;
    }
    if (m_tx.size() >= k_max_tx_blocks) co_return Err{FsError::too_big};
    Block copy(k_block_size);
    if (!fresh) {
        HMK_CO_TRY_AS(const Block* old, co_await get(b));
        copy = *old;
    }
    auto [it, added] = m_tx.emplace(b, std::move(copy));
    co_return &it->second;
}

Task<Result<void, FsError>> FileSystem::commit() {
    if (m_tx.empty()) co_return Result<void, FsError>{};
    const Geometry& g = m_geo;
    const auto count = static_cast<std::uint32_t>(m_tx.size());
    Block desc(k_block_size);
    std::memcpy(desc.data(), k_desc_magic, 8);
    put_le<std::uint64_t>(desc.data(), 8, m_seq);
    put_le<std::uint32_t>(desc.data(), 16, count);
    std::uint32_t i = 0;
    for (const auto& [b, data] : m_tx)
        put_le<std::uint64_t>(desc.data(), k_desc_header + 8 * i++, b);
    std::uint32_t crc = crc32c(desc);
    std::vector<std::pair<std::uint64_t, std::span<const std::byte>>> journal;
    journal.emplace_back(g.journal_start, desc);
    i = 0;
    for (const auto& [b, data] : m_tx) {
        crc = crc32c(data, crc);
        journal.emplace_back(g.journal_start + 1 + i++, data);
    }
    Block commit(k_block_size);
    std::memcpy(commit.data(), k_commit_magic, 8);
    put_le<std::uint64_t>(commit.data(), 8, m_seq);
    put_le<std::uint32_t>(commit.data(), 16, count);
    put_le<std::uint32_t>(commit.data(), 20, crc);
    // 1. The blocks into the journal; 2. the commit block, once they are
    // on the device; 3. the blocks to their places. A crash before 2 leaves
    // the old state, after it the new one (mount replays the journal).
    auto failed = [this]() {
        // What the device holds is unknown now: forget the cache, and let
        // the next mount sort it out from the journal.
        m_tx.clear();
        m_cache.clear();
        return Err{FsError::io_error};
    };
    // (Waiting for each step's writes orders them; a flush also makes them
    // durable, where the device can.)
    const bool flushes = m_io.flushes();
    if (auto r = co_await m_io.write_all(journal); !r) co_return failed();
    if (flushes) {
        if (auto r = co_await m_io.flush(); !r) co_return failed();
    }
    if (auto r = co_await m_io.write(g.journal_start + 1 + count, commit); !r) co_return failed();
    if (flushes) {
        if (auto r = co_await m_io.flush(); !r) co_return failed();
    }
    std::vector<std::pair<std::uint64_t, std::span<const std::byte>>> home;
    for (const auto& [b, data] : m_tx) home.emplace_back(b, data);
    if (auto r = co_await m_io.write_all(home); !r) co_return failed();
    if (flushes) {
        if (auto r = co_await m_io.flush(); !r) co_return failed();
    }
    ++m_seq;
    for (auto& [b, data] : m_tx) {
        if (m_cache.size() >= 8192) m_cache.clear();
        m_cache[b] = std::move(data);
    }
    m_tx.clear();
    co_return Result<void, FsError>{};
}

// --- inodes and blocks ----------------------------------------------------

Task<Result<FileSystem::Inode, FsError>> FileSystem::load_inode(std::uint32_t ino) {
    if (ino == 0 || ino >= m_geo.inodes) co_return Err{FsError::corrupt};
    HMK_CO_TRY_AS(const Block* b, co_await get(m_geo.inode_start + ino / k_inodes_per_block));
    Inode inode;
    inode.decode(b->data() + (ino % k_inodes_per_block) * k_inode_size);
    co_return inode;
}

Task<Result<void, FsError>> FileSystem::store_inode(std::uint32_t ino, const Inode& inode) {
    if (ino == 0 || ino >= m_geo.inodes) co_return Err{FsError::corrupt};
    HMK_CO_TRY_AS(Block * b, co_await change(m_geo.inode_start + ino / k_inodes_per_block));
    inode.encode(b->data() + (ino % k_inodes_per_block) * k_inode_size);
    co_return Result<void, FsError>{};
}

Task<Result<std::uint32_t, FsError>> FileSystem::alloc_inode() {
    for (std::uint32_t n = 0; n < m_geo.inodes; ++n) {
        const std::uint32_t ino = (m_inode_hint + n) % m_geo.inodes;
        if (ino <= k_root) continue;
        HMK_CO_TRY_AS(Inode inode, co_await load_inode(ino));
        if (inode.kind == FileKind::none) {
            m_inode_hint = ino + 1;
            co_return ino;
        }
    }
    co_return Err{FsError::no_space};
}

Task<Result<std::uint64_t, FsError>> FileSystem::alloc_block() {
    const std::uint64_t bits_per_block = std::uint64_t{k_block_size} * 8;
    const std::uint64_t span = m_geo.blocks - m_geo.data_start;
    for (std::uint64_t n = 0; n < span;) {
        const std::uint64_t b = m_geo.data_start + (m_block_hint - m_geo.data_start + n) % span;
        const std::uint64_t map_block = m_geo.bitmap_start + b / bits_per_block;
        HMK_CO_TRY_AS(const Block* bits, co_await get(map_block));
        // Scan the rest of this bitmap block for a clear bit.
        const std::uint64_t first = b % bits_per_block;
        for (std::uint64_t i = first; i < bits_per_block && n < span; ++i, ++n) {
            const std::uint64_t block = b - first + i;
            if (block >= m_geo.blocks) break;  // wraps to the data area's start
            if (((*bits)[i / 8] & static_cast<std::byte>(1u << (i % 8))) != std::byte{0}) continue;
            HMK_CO_TRY_AS(Block * w, co_await change(map_block));
            (*w)[i / 8] |= static_cast<std::byte>(1u << (i % 8));
            m_block_hint = block + 1 < m_geo.blocks ? block + 1 : m_geo.data_start;
            co_return block;
        }
    }
    co_return Err{FsError::no_space};
}

Task<Result<void, FsError>> FileSystem::free_block(std::uint64_t b) {
    if (b < m_geo.data_start || b >= m_geo.blocks) co_return Err{FsError::corrupt};
    const std::uint64_t bits_per_block = std::uint64_t{k_block_size} * 8;
    HMK_CO_TRY_AS(Block * w, co_await change(m_geo.bitmap_start + b / bits_per_block));
    const std::uint64_t i = b % bits_per_block;
    (*w)[i / 8] &= ~static_cast<std::byte>(1u << (i % 8));
    co_return Result<void, FsError>{};
}

Task<Result<std::uint64_t, FsError>> FileSystem::map(Inode& inode, std::uint64_t index,
                                                     bool alloc) {
    if (index >= k_max_file_blocks) co_return Err{FsError::too_big};
    // The pointer to the block: in the inode, or in an indirect block.
    auto slot = [&](std::uint32_t& ptr) -> Task<Result<std::uint64_t, FsError>> {
        if (ptr == 0 && alloc) {
            HMK_CO_TRY_AS(const std::uint64_t b, co_await alloc_block());
            HMK_CO_TRY(co_await change(b, true));
            ptr = static_cast<std::uint32_t>(b);
        }
        co_return std::uint64_t{ptr};
    };
    auto through = [&](std::uint64_t table,
                       std::uint64_t at) -> Task<Result<std::uint64_t, FsError>> {
        HMK_CO_TRY_AS(const Block* t, co_await get(table));
        std::uint32_t ptr = get_le<std::uint32_t>(t->data(), 4 * at);
        if (ptr == 0 && alloc) {
            HMK_CO_TRY_AS(const std::uint64_t b, co_await alloc_block());
            HMK_CO_TRY(co_await change(b, true));
            HMK_CO_TRY_AS(Block * w, co_await change(table));
            ptr = static_cast<std::uint32_t>(b);
            put_le<std::uint32_t>(w->data(), 4 * at, ptr);
        }
        if (ptr != 0 && (ptr < m_geo.data_start || ptr >= m_geo.blocks))
            co_return Err{FsError::corrupt};
        co_return std::uint64_t{ptr};
    };
    if (index < k_direct) co_return co_await slot(inode.direct[index]);
    index -= k_direct;
    if (index < k_per_indirect) {
        HMK_CO_TRY_AS(const std::uint64_t table, co_await slot(inode.indirect));
        if (table == 0) co_return std::uint64_t{0};
        co_return co_await through(table, index);
    }
    index -= k_per_indirect;
    HMK_CO_TRY_AS(const std::uint64_t top, co_await slot(inode.dindirect));
    if (top == 0) co_return std::uint64_t{0};
    HMK_CO_TRY_AS(const std::uint64_t table, co_await through(top, index / k_per_indirect));
    if (table == 0) co_return std::uint64_t{0};
    co_return co_await through(table, index % k_per_indirect);
}

Task<Result<void, FsError>> FileSystem::shrink(Inode& inode, std::uint64_t size) {
    const std::uint64_t keep = (size + k_block_size - 1) / k_block_size;
    // The tail of the last kept block reads as zeros if the file grows again.
    if (size % k_block_size != 0 && size < inode.size) {
        HMK_CO_TRY_AS(const std::uint64_t b, co_await map(inode, size / k_block_size, false));
        if (b != 0) {
            HMK_CO_TRY_AS(Block * w, co_await change(b));
            std::fill(w->begin() + static_cast<std::ptrdiff_t>(size % k_block_size), w->end(),
                      std::byte{0});
        }
    }
    for (std::size_t i = keep; i < k_direct; ++i) {
        if (inode.direct[i] != 0) HMK_CO_TRY(co_await free_block(inode.direct[i]));
        inode.direct[i] = 0;
    }
    // Frees the entries of `table` from `from` on; true if it is empty now.
    auto free_table = [&](std::uint32_t table, std::uint64_t from,
                          bool two_level) -> Task<Result<bool, FsError>> {
        HMK_CO_TRY_AS(const Block* t, co_await get(table));
        const Block copy = *t;
        bool any_left = false;
        bool changed = false;
        Block next = copy;
        for (std::uint64_t i = 0; i < k_per_indirect; ++i) {
            const std::uint32_t ptr = get_le<std::uint32_t>(copy.data(), 4 * i);
            if (ptr == 0) continue;
            if (ptr < m_geo.data_start || ptr >= m_geo.blocks) co_return Err{FsError::corrupt};
            if (two_level) {
                const std::uint64_t base = i * k_per_indirect;
                const std::uint64_t sub_from = from > base ? from - base : 0;
                if (sub_from >= k_per_indirect) {
                    any_left = true;
                    continue;
                }
                // One level down, by hand (a lambda cannot call itself here).
                HMK_CO_TRY_AS(const Block* st, co_await get(ptr));
                const Block sub = *st;
                bool sub_left = false;
                bool sub_changed = false;
                Block sub_next = sub;
                for (std::uint64_t j = 0; j < k_per_indirect; ++j) {
                    const std::uint32_t p = get_le<std::uint32_t>(sub.data(), 4 * j);
                    if (p == 0) continue;
                    if (j < sub_from) {
                        sub_left = true;
                        continue;
                    }
                    HMK_CO_TRY(co_await free_block(p));
                    put_le<std::uint32_t>(sub_next.data(), 4 * j, 0);
                    sub_changed = true;
                }
                if (!sub_left) {
                    HMK_CO_TRY(co_await free_block(ptr));
                    put_le<std::uint32_t>(next.data(), 4 * i, 0);
                    changed = true;
                } else {
                    any_left = true;
                    if (sub_changed) {
                        HMK_CO_TRY_AS(Block * w, co_await change(ptr));
                        *w = sub_next;
                    }
                }
            } else if (i >= from) {
                HMK_CO_TRY(co_await free_block(ptr));
                put_le<std::uint32_t>(next.data(), 4 * i, 0);
                changed = true;
            } else {
                any_left = true;
            }
        }
        if (!any_left) {
            HMK_CO_TRY(co_await free_block(table));
            co_return true;
        }
        if (changed) {
            HMK_CO_TRY_AS(Block * w, co_await change(table));
            *w = next;
        }
        co_return false;
    };
    if (inode.indirect != 0) {
        const std::uint64_t from = keep > k_direct ? keep - k_direct : 0;
        if (from < k_per_indirect) {
            HMK_CO_TRY_AS(const bool gone, co_await free_table(inode.indirect, from, false));
            if (gone) inode.indirect = 0;
        }
    }
    if (inode.dindirect != 0) {
        const std::uint64_t base = k_direct + k_per_indirect;
        const std::uint64_t from = keep > base ? keep - base : 0;
        HMK_CO_TRY_AS(const bool gone, co_await free_table(inode.dindirect, from, true));
        if (gone) inode.dindirect = 0;
    }
    inode.size = size;
    co_return Result<void, FsError>{};
}

// --- directories ----------------------------------------------------------

Task<Result<std::vector<std::pair<std::string, std::uint32_t>>, FsError>> FileSystem::entries(
    std::uint32_t dir) {
    HMK_CO_TRY_AS(Inode inode, co_await load_inode(dir));
    if (inode.kind != FileKind::directory) co_return Err{FsError::not_a_directory};
    std::vector<std::pair<std::string, std::uint32_t>> out;
    for (std::uint64_t i = 0; i * k_block_size < inode.size; ++i) {
        HMK_CO_TRY_AS(const std::uint64_t b, co_await map(inode, i, false));
        if (b == 0) continue;
        HMK_CO_TRY_AS(const Block* blk, co_await get(b));
        for (std::size_t e = 0; e < k_entries_per_block; ++e) {
            const std::byte* p = blk->data() + e * k_entry_size;
            const std::uint32_t ino = get_le<std::uint32_t>(p, 0);
            if (ino == 0) continue;
            const auto len = static_cast<std::size_t>(p[4]);
            if (len == 0 || len > k_max_name || ino >= m_geo.inodes)
                co_return Err{FsError::corrupt};
            out.emplace_back(std::string(reinterpret_cast<const char*>(p + 8), len), ino);
        }
    }
    co_return out;
}

Task<Result<std::uint32_t, FsError>> FileSystem::find_entry(std::uint32_t dir,
                                                            std::string_view name) {
    HMK_CO_TRY_AS(const auto all, co_await entries(dir));
    for (const auto& [n, ino] : all) {
        if (n == name) co_return ino;
    }
    co_return std::uint32_t{0};
}

Task<Result<void, FsError>> FileSystem::add_entry(std::uint32_t dir, std::string_view name,
                                                  std::uint32_t ino, FileKind kind) {
    HMK_CO_TRY_AS(Inode inode, co_await load_inode(dir));
    auto put = [&](Block& blk, std::size_t e) {
        std::byte* p = blk.data() + e * k_entry_size;
        std::memset(p, 0, k_entry_size);
        put_le<std::uint32_t>(p, 0, ino);
        p[4] = static_cast<std::byte>(name.size());
        p[5] = static_cast<std::byte>(kind);
        std::memcpy(p + 8, name.data(), name.size());
    };
    for (std::uint64_t i = 0; i * k_block_size < inode.size; ++i) {
        HMK_CO_TRY_AS(const std::uint64_t b, co_await map(inode, i, false));
        if (b == 0) continue;
        HMK_CO_TRY_AS(const Block* blk, co_await get(b));
        for (std::size_t e = 0; e < k_entries_per_block; ++e) {
            if (get_le<std::uint32_t>(blk->data(), e * k_entry_size) != 0) continue;
            HMK_CO_TRY_AS(Block * w, co_await change(b));
            put(*w, e);
            inode.mtime_ns = m_now;
            co_return co_await store_inode(dir, inode);
        }
    }
    // No free slot: one more block.
    const std::uint64_t index = inode.size / k_block_size;
    HMK_CO_TRY_AS(const std::uint64_t b, co_await map(inode, index, true));
    HMK_CO_TRY_AS(Block * w, co_await change(b, true));
    put(*w, 0);
    inode.size = (index + 1) * k_block_size;
    inode.mtime_ns = m_now;
    co_return co_await store_inode(dir, inode);
}

Task<Result<void, FsError>> FileSystem::remove_entry(std::uint32_t dir, std::string_view name) {
    HMK_CO_TRY_AS(Inode inode, co_await load_inode(dir));
    for (std::uint64_t i = 0; i * k_block_size < inode.size; ++i) {
        HMK_CO_TRY_AS(const std::uint64_t b, co_await map(inode, i, false));
        if (b == 0) continue;
        HMK_CO_TRY_AS(const Block* blk, co_await get(b));
        for (std::size_t e = 0; e < k_entries_per_block; ++e) {
            const std::byte* p = blk->data() + e * k_entry_size;
            if (get_le<std::uint32_t>(p, 0) == 0 || static_cast<std::size_t>(p[4]) != name.size() ||
                std::memcmp(p + 8, name.data(), name.size()) != 0)
                continue;
            HMK_CO_TRY_AS(Block * w, co_await change(b));
            std::memset(w->data() + e * k_entry_size, 0, k_entry_size);
            inode.mtime_ns = m_now;
            co_return co_await store_inode(dir, inode);
        }
    }
    co_return Err{FsError::not_found};
}

Task<Result<bool, FsError>> FileSystem::dir_empty(std::uint32_t dir) {
    HMK_CO_TRY_AS(const auto all, co_await entries(dir));
    co_return all.empty();
}

Task<Result<std::uint32_t, FsError>> FileSystem::lookup_dir(const std::vector<std::string>& parts,
                                                            std::size_t count) {
    std::uint32_t at = k_root;
    for (std::size_t i = 0; i < count; ++i) {
        HMK_CO_TRY_AS(const std::uint32_t next, co_await find_entry(at, parts[i]));
        if (next == 0) co_return Err{FsError::not_found};
        HMK_CO_TRY_AS(const Inode inode, co_await load_inode(next));
        if (inode.kind != FileKind::directory) co_return Err{FsError::not_a_directory};
        at = next;
    }
    co_return at;
}

Task<Result<FileSystem::Found, FsError>> FileSystem::resolve(std::string_view path) {
    HMK_CO_TRY_AS(const auto parts, split(path));
    Found f;
    if (parts.empty()) {
        f.ino = k_root;
        co_return f;
    }
    HMK_CO_TRY_AS(f.parent, co_await lookup_dir(parts, parts.size() - 1));
    f.name = parts.back();
    HMK_CO_TRY_AS(f.ino, co_await find_entry(f.parent, f.name));
    co_return f;
}

Task<Result<std::uint32_t, FsError>> FileSystem::make(std::string_view path, FileKind kind) {
    HMK_CO_TRY_AS(const Found f, co_await resolve(path));
    if (f.ino != 0) co_return Err{FsError::exists};
    HMK_CO_TRY_AS(const std::uint32_t ino, co_await alloc_inode());
    Inode inode;
    inode.kind = kind;
    inode.links = 1;
    inode.mtime_ns = m_now;
    HMK_CO_TRY(co_await store_inode(ino, inode));
    HMK_CO_TRY(co_await add_entry(f.parent, f.name, ino, kind));
    co_return ino;
}

// --- operations -----------------------------------------------------------
// Each runs as one transaction: on any error, nothing it changed is kept.

Task<Result<Stat, FsError>> FileSystem::stat(std::string_view path) {
    HMK_CO_TRY_AS(const Found f, co_await resolve(path));
    if (f.ino == 0) co_return Err{FsError::not_found};
    HMK_CO_TRY_AS(const Inode inode, co_await load_inode(f.ino));
    co_return inode.stat(f.ino);
}

Task<Result<std::vector<DirEntry>, FsError>> FileSystem::list(std::string_view path) {
    HMK_CO_TRY_AS(const Found f, co_await resolve(path));
    if (f.ino == 0) co_return Err{FsError::not_found};
    HMK_CO_TRY_AS(const auto all, co_await entries(f.ino));
    std::vector<DirEntry> out;
    for (const auto& [name, ino] : all) {
        HMK_CO_TRY_AS(const Inode inode, co_await load_inode(ino));
        out.push_back(DirEntry{name, inode.stat(ino)});
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    co_return out;
}

Task<Result<void, FsError>> FileSystem::mkdir(std::string_view path) {
    auto r = co_await make(path, FileKind::directory);
    if (!r) {
        abort();
        co_return Err{r.error()};
    }
    co_return co_await commit();
}

Task<Result<void, FsError>> FileSystem::create(std::string_view path) {
    auto r = co_await make(path, FileKind::file);
    if (!r) {
        abort();
        co_return Err{r.error()};
    }
    co_return co_await commit();
}

Task<Result<std::vector<std::byte>, FsError>> FileSystem::read(std::string_view path,
                                                               std::uint64_t offset,
                                                               std::uint32_t length) {
    HMK_CO_TRY_AS(const Found f, co_await resolve(path));
    if (f.ino == 0) co_return Err{FsError::not_found};
    HMK_CO_TRY_AS(Inode inode, co_await load_inode(f.ino));
    if (inode.kind == FileKind::directory) co_return Err{FsError::is_a_directory};
    std::vector<std::byte> out;
    if (offset >= inode.size) co_return out;
    const std::uint64_t end = std::min<std::uint64_t>(inode.size, offset + length);
    out.resize(end - offset);
    for (std::uint64_t at = offset; at < end;) {
        const std::uint64_t index = at / k_block_size;
        const std::uint64_t in = at % k_block_size;
        const std::uint64_t n = std::min<std::uint64_t>(k_block_size - in, end - at);
        HMK_CO_TRY_AS(const std::uint64_t b, co_await map(inode, index, false));
        if (b != 0) {
            HMK_CO_TRY_AS(const Block* blk, co_await get(b));
            std::memcpy(out.data() + (at - offset), blk->data() + in, n);
        }
        at += n;
    }
    co_return out;
}

Task<Result<void, FsError>> FileSystem::write_tx(std::uint32_t ino, Inode& inode,
                                                 std::uint64_t offset,
                                                 std::span<const std::byte> data) {
    for (std::uint64_t done = 0; done < data.size();) {
        const std::uint64_t at = offset + done;
        const std::uint64_t index = at / k_block_size;
        const std::uint64_t in = at % k_block_size;
        const std::uint64_t n = std::min<std::uint64_t>(k_block_size - in, data.size() - done);
        // A block beyond the old end, or one not there yet, starts as zeros.
        HMK_CO_TRY_AS(const std::uint64_t had, co_await map(inode, index, false));
        std::uint64_t b = had;
        if (b == 0) {
            HMK_CO_TRY_AS(b, co_await map(inode, index, true));
        }
        const bool whole = n == k_block_size;
        HMK_CO_TRY_AS(Block * w, co_await change(b, whole || had == 0));
        std::memcpy(w->data() + in, data.data() + done, n);
        done += n;
    }
    if (!data.empty()) inode.size = std::max<std::uint64_t>(inode.size, offset + data.size());
    inode.mtime_ns = m_now;
    co_return co_await store_inode(ino, inode);
}

Task<Result<void, FsError>> FileSystem::write(std::string_view path, std::uint64_t offset,
                                              std::span<const std::byte> data, Create create_it) {
    if (offset + data.size() > k_max_file_blocks * k_block_size || offset + data.size() < offset)
        co_return Err{FsError::too_big};
    HMK_CO_TRY_AS(Found f, co_await resolve(path));
    if (f.ino == 0) {
        if (create_it == Create::no || f.name.empty()) co_return Err{FsError::not_found};
        auto made = co_await make(path, FileKind::file);
        if (!made) {
            abort();
            co_return Err{made.error()};
        }
        f.ino = *made;
    }
    HMK_CO_TRY_AS(Inode inode, co_await load_inode(f.ino));
    if (inode.kind == FileKind::directory) {
        abort();
        co_return Err{FsError::is_a_directory};
    }
    // One transaction per k_max_tx_data bytes (the journal holds that much).
    std::uint64_t done = 0;
    do {
        const std::uint64_t n = std::min<std::uint64_t>(k_max_tx_data, data.size() - done);
        auto r = co_await write_tx(f.ino, inode, offset + done, data.subspan(done, n));
        if (!r) {
            abort();
            co_return Err{r.error()};
        }
        HMK_CO_TRY(co_await commit());
        done += n;
    } while (done < data.size());
    co_return Result<void, FsError>{};
}

Task<Result<std::uint64_t, FsError>> FileSystem::append(std::string_view path,
                                                        std::span<const std::byte> data,
                                                        Create create_it) {
    std::uint64_t size = 0;
    {
        auto s = co_await stat(path);
        if (s) {
            if (s->kind == FileKind::directory) co_return Err{FsError::is_a_directory};
            size = s->size;
        } else if (s.error() != FsError::not_found || create_it == Create::no) {
            co_return Err{s.error()};
        }
    }
    HMK_CO_TRY(co_await write(path, size, data, create_it));
    co_return size + data.size();
}

Task<Result<void, FsError>> FileSystem::truncate(std::string_view path, std::uint64_t size) {
    if (size > k_max_file_blocks * k_block_size) co_return Err{FsError::too_big};
    HMK_CO_TRY_AS(const Found f, co_await resolve(path));
    if (f.ino == 0) co_return Err{FsError::not_found};
    HMK_CO_TRY_AS(Inode inode, co_await load_inode(f.ino));
    if (inode.kind == FileKind::directory) co_return Err{FsError::is_a_directory};
    if (size < inode.size) {
        auto r = co_await shrink(inode, size);
        if (!r) {
            abort();
            co_return Err{r.error()};
        }
    }
    inode.size = size;
    inode.mtime_ns = m_now;
    auto r = co_await store_inode(f.ino, inode);
    if (!r) {
        abort();
        co_return Err{r.error()};
    }
    co_return co_await commit();
}

Task<Result<void, FsError>> FileSystem::rename(std::string_view from, std::string_view to) {
    HMK_CO_TRY_AS(const auto from_parts, split(from));
    HMK_CO_TRY_AS(const auto to_parts, split(to));
    if (from_parts.empty() || to_parts.empty()) co_return Err{FsError::busy};
    // Not into itself: `to` may not lie below `from`.
    if (to_parts.size() > from_parts.size() &&
        std::equal(from_parts.begin(), from_parts.end(), to_parts.begin()))
        co_return Err{FsError::busy};
    HMK_CO_TRY_AS(const Found src, co_await resolve(from));
    if (src.ino == 0) co_return Err{FsError::not_found};
    HMK_CO_TRY_AS(const Found dst, co_await resolve(to));
    if (dst.ino == src.ino) co_return Result<void, FsError>{};
    HMK_CO_TRY_AS(const Inode moving, co_await load_inode(src.ino));
    auto run = [&]() -> Task<Result<void, FsError>> {
        if (dst.ino != 0) {
            // An existing file is replaced; a directory is not.
            HMK_CO_TRY_AS(Inode old, co_await load_inode(dst.ino));
            if (old.kind == FileKind::directory || moving.kind == FileKind::directory)
                co_return Err{FsError::exists};
            HMK_CO_TRY(co_await shrink(old, 0));
            old = Inode{};
            HMK_CO_TRY(co_await store_inode(dst.ino, old));
            HMK_CO_TRY(co_await remove_entry(dst.parent, dst.name));
        }
        HMK_CO_TRY(co_await remove_entry(src.parent, src.name));
        HMK_CO_TRY(co_await add_entry(dst.parent, dst.name, src.ino, moving.kind));
        co_return Result<void, FsError>{};
    };
    auto r = co_await run();
    if (!r) {
        abort();
        co_return Err{r.error()};
    }
    co_return co_await commit();
}

Task<Result<void, FsError>> FileSystem::remove(std::string_view path) {
    HMK_CO_TRY_AS(const Found f, co_await resolve(path));
    if (f.ino == k_root) co_return Err{FsError::busy};
    if (f.ino == 0) co_return Err{FsError::not_found};
    HMK_CO_TRY_AS(Inode inode, co_await load_inode(f.ino));
    if (inode.kind == FileKind::directory) {
        HMK_CO_TRY_AS(const bool empty, co_await dir_empty(f.ino));
        if (!empty) co_return Err{FsError::not_empty};
    }
    auto run = [&]() -> Task<Result<void, FsError>> {
        HMK_CO_TRY(co_await shrink(inode, 0));
        HMK_CO_TRY(co_await store_inode(f.ino, Inode{}));
        HMK_CO_TRY(co_await remove_entry(f.parent, f.name));
        co_return Result<void, FsError>{};
    };
    auto r = co_await run();
    if (!r) {
        abort();
        co_return Err{r.error()};
    }
    co_return co_await commit();
}

// --- check ----------------------------------------------------------------

Task<FsckReport> FileSystem::check() {
    FsckReport report;
    report.geometry = m_geo;
    report.replayed = m_replayed;
    const Geometry& g = m_geo;
    std::vector<std::uint8_t> used(g.blocks, 0);
    for (std::uint64_t b = 0; b < g.data_start; ++b) used[b] = 1;
    auto problem = [&](std::string text) {
        if (report.problems.size() < 100) report.problems.push_back(std::move(text));
    };
    auto claim = [&](std::uint64_t b, std::uint32_t ino) {
        if (b < g.data_start || b >= g.blocks) {
            problem(fmt::format("inode {} points at block {}, outside the data area", ino, b));
            return false;
        }
        if (used[b] != 0) {
            problem(fmt::format("block {} is used twice (again by inode {})", b, ino));
            return false;
        }
        used[b] = 1;
        return true;
    };
    std::vector<std::uint8_t> seen(g.inodes, 0);
    (void)co_await prefetch(g.bitmap_start, g.bitmap_blocks);
    (void)co_await prefetch(g.inode_start, std::min<std::uint64_t>(g.inode_blocks, 4096));
    // Walk the tree from the root; every reachable inode once.
    std::vector<std::pair<std::uint32_t, std::string>> todo{{k_root, "/"}};
    seen[k_root] = 1;
    while (!todo.empty()) {
        // (Not a structured binding: clang 14 cannot capture those in the lambda below.)
        const std::uint32_t ino = todo.back().first;
        const std::string where = todo.back().second;
        todo.pop_back();
        auto inode = co_await load_inode(ino);
        if (!inode) {
            problem(
                fmt::format("{}: inode {} unreadable: {}", where, ino, to_string(inode.error())));
            continue;
        }
        if (inode->kind != FileKind::file && inode->kind != FileKind::directory) {
            problem(fmt::format("{}: inode {} is not in use", where, ino));
            continue;
        }
        if (inode->kind == FileKind::file)
            ++report.files;
        else
            ++report.directories;
        // Its blocks: data and tables.
        const std::uint64_t nblocks = (inode->size + k_block_size - 1) / k_block_size;
        if (nblocks > k_max_file_blocks) {
            problem(fmt::format("{}: size {} beyond the largest file", where, inode->size));
            continue;
        }
        for (std::size_t i = 0; i < k_direct; ++i) {
            if (inode->direct[i] == 0) continue;
            if (i >= nblocks)
                problem(fmt::format("{}: block {} past the end of the file", where, i));
            claim(inode->direct[i], ino);
        }
        auto table = [&](std::uint32_t t, std::uint64_t first, std::uint64_t per,
                         bool two_level) -> Task<void> {
            if (!claim(t, ino)) co_return;
            auto blk = co_await get(t);
            if (!blk) {
                problem(fmt::format("{}: table block {} unreadable", where, t));
                co_return;
            }
            const Block copy = **blk;
            for (std::uint64_t i = 0; i < k_per_indirect; ++i) {
                const std::uint32_t p = get_le<std::uint32_t>(copy.data(), 4 * i);
                if (p == 0) continue;
                const std::uint64_t index = first + i * per;
                if (index >= nblocks)
                    problem(fmt::format("{}: block {} past the end of the file", where, index));
                if (!two_level) {
                    claim(p, ino);
                    continue;
                }
                if (!claim(p, ino)) continue;
                auto sub = co_await get(p);
                if (!sub) {
                    problem(fmt::format("{}: table block {} unreadable", where, p));
                    continue;
                }
                const Block sub_copy = **sub;
                for (std::uint64_t j = 0; j < k_per_indirect; ++j) {
                    const std::uint32_t q = get_le<std::uint32_t>(sub_copy.data(), 4 * j);
                    if (q == 0) continue;
                    if (index + j >= nblocks)
                        problem(
                            fmt::format("{}: block {} past the end of the file", where, index + j));
                    claim(q, ino);
                }
            }
        };
        if (inode->indirect != 0) co_await table(inode->indirect, k_direct, 1, false);
        if (inode->dindirect != 0)
            co_await table(inode->dindirect, k_direct + k_per_indirect, k_per_indirect, true);
        if (inode->kind != FileKind::directory) continue;
        if (inode->size % k_block_size != 0)
            problem(fmt::format("{}: directory size {} is not whole blocks", where, inode->size));
        auto all = co_await entries(ino);
        if (!all) {
            problem(fmt::format("{}: directory unreadable: {}", where, to_string(all.error())));
            continue;
        }
        std::set<std::string> names;
        for (const auto& [name, child] : *all) {
            const std::string child_path = where == "/" ? "/" + name : where + "/" + name;
            if (!names.insert(name).second)
                problem(fmt::format("{}: name twice in its directory", child_path));
            if (name.find('/') != std::string::npos || name == "." || name == "..")
                problem(fmt::format("{}: a bad name", child_path));
            if (child <= k_root || child >= g.inodes) {
                problem(fmt::format("{}: inode {} out of range", child_path, child));
                continue;
            }
            if (seen[child] != 0) {
                problem(fmt::format("{}: inode {} reached twice", child_path, child));
                continue;
            }
            seen[child] = 1;
            todo.emplace_back(child, child_path);
        }
    }
    // Inodes in use that nothing reaches; bitmap against the blocks in use.
    for (std::uint32_t ino = k_root + 1; ino < g.inodes; ++ino) {
        if (seen[ino] != 0) continue;
        auto inode = co_await load_inode(ino);
        if (inode && inode->kind != FileKind::none)
            problem(fmt::format("inode {} is in use but in no directory", ino));
    }
    const std::uint64_t bits_per_block = std::uint64_t{k_block_size} * 8;
    for (std::uint64_t b = 0; b < g.blocks; ++b) {
        auto bits = co_await get(g.bitmap_start + b / bits_per_block);
        if (!bits) {
            problem(fmt::format("bitmap block {} unreadable", g.bitmap_start + b / bits_per_block));
            break;
        }
        const std::uint64_t i = b % bits_per_block;
        const bool marked =
            ((**bits)[i / 8] & static_cast<std::byte>(1u << (i % 8))) != std::byte{0};
        if (marked != (used[b] != 0))
            problem(fmt::format("block {} is {} but marked {} in the bitmap", b,
                                used[b] != 0 ? "in use" : "free", marked ? "used" : "free"));
        if (used[b] != 0) ++report.used_blocks;
    }
    co_return report;
}

Task<Result<FsckReport, FsError>> fsck(BlockIo& io) {
    HMK_CO_TRY_AS(auto fs, co_await FileSystem::mount(io));
    co_return co_await fs->check();
}

// --- devices --------------------------------------------------------------

const char* to_string(IoError e) {
    switch (e) {
        case IoError::bad_request:
            return "bad request";
        case IoError::out_of_range:
            return "block out of range";
        case IoError::io_error:
            return "I/O error";
    }
    return "unknown error";
}

void MemoryBlockIo::submit(BlockOp& op) {
    Result<void, IoError> r;
    const std::uint64_t n = blocks();
    if (op.kind == BlockOp::Kind::info) {
        op.info_blocks = n;
    } else if (op.kind != BlockOp::Kind::flush && op.block >= n) {
        r = Err{IoError::out_of_range};
    } else if (op.kind == BlockOp::Kind::read) {
        if (op.read_into.size() != k_block_size) {
            r = Err{IoError::bad_request};
        } else {
            std::memcpy(op.read_into.data(), m_data.data() + op.block * k_block_size, k_block_size);
        }
    } else if (op.kind == BlockOp::Kind::write) {
        if (op.write_from.size() != k_block_size) {
            r = Err{IoError::bad_request};
        } else if (m_writes_left != 0) {
            std::memcpy(m_data.data() + op.block * k_block_size, op.write_from.data(),
                        k_block_size);
            ++m_writes;
            if (m_writes_left > 0) --m_writes_left;
        }
    }
    op.complete(r);
}

}  // namespace hmk::fs
