// SPDX-License-Identifier: Apache-2.0
// What the file system stores its blocks on: a file (tools, tests) or the
// disk driver over the bus (the `fs` module).
#pragma once

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "hmk/result.hpp"
#include "hmk/services/task.hpp"

namespace hmk::fs {

inline constexpr std::uint32_t k_block_size = 4096;

/// Block device errors. The numbers cross the bus (schemas/block.fbs Status).
enum class IoError : std::uint8_t {
    bad_request = 1,   ///< malformed request, or a buffer of the wrong size
    out_of_range = 2,  ///< no such block
    io_error = 3,      ///< the device failed (or never answered, after retries)
};
const char* to_string(IoError e);

/// One read, write or flush, awaited by the file system. A device completes
/// it either inside submit() (done set: no suspension) or later, by calling
/// complete() from its owner's thread.
struct BlockOp {
    enum class Kind : std::uint8_t { read, write, flush, info };
    Kind kind = Kind::read;
    std::uint64_t block = 0;
    std::span<std::byte> read_into;         ///< read: k_block_size bytes
    std::span<const std::byte> write_from;  ///< write: k_block_size bytes
    std::uint64_t info_blocks = 0;          ///< info: the device's size, in blocks
    bool done = false;
    Result<void, IoError> result;
    std::coroutine_handle<> waiter;

    /// Called by the device: the op is finished; resumes whoever waits.
    void complete(Result<void, IoError> r) {
        result = r;
        done = true;
        if (waiter) std::exchange(waiter, nullptr).resume();
    }
};

/// A block device. Every call from one thread (the module's).
class BlockIo {
  public:
    virtual ~BlockIo() = default;
    /// Blocks of k_block_size bytes on the device.
    virtual std::uint64_t blocks() const = 0;
    /// Starts `op`; the device calls op.complete() now or later.
    virtual void submit(BlockOp& op) = 0;

    /// Awaitable for one op: co_await io.run(op).
    struct Await {
        BlockIo& io;
        BlockOp& op;
        bool await_ready() {
            io.submit(op);
            return op.done;
        }
        void await_suspend(std::coroutine_handle<> h) { op.waiter = h; }
        Result<void, IoError> await_resume() { return op.result; }
    };
    Await run(BlockOp& op) { return Await{*this, op}; }

    services::Task<Result<void, IoError>> read(std::uint64_t block, std::span<std::byte> out);
    services::Task<Result<void, IoError>> write(std::uint64_t block,
                                                std::span<const std::byte> data);
    services::Task<Result<void, IoError>> flush();
    /// The device's size in blocks, as the device says.
    services::Task<Result<std::uint64_t, IoError>> info();
    /// False if a flush does nothing on this device (a write that is done
    /// survives any crash but the host's): the file system then orders its
    /// writes by waiting for them and sends no flushes. Known after info().
    virtual bool flushes() const { return true; }
    /// Writes every block of `blocks` (number, data), all in flight at once;
    /// the first error, once all are finished.
    services::Task<Result<void, IoError>> write_all(
        const std::vector<std::pair<std::uint64_t, std::span<const std::byte>>>& blocks);
    /// Reads every block of `blocks` (number, buffer), all in flight at once.
    services::Task<Result<void, IoError>> read_all(
        const std::vector<std::pair<std::uint64_t, std::span<std::byte>>>& blocks);
};

/// An image file, read and written with pread/pwrite (mkfs, fsck, tests,
/// and the kernel's block device).
class FileBlockIo final : public BlockIo {
  public:
    /// Opens `path` read-write. Error: why (with the path).
    static Result<std::unique_ptr<FileBlockIo>, std::string> open(const std::string& path);
    /// Creates (or truncates) `path` with `blocks` zero blocks.
    static Result<std::unique_ptr<FileBlockIo>, std::string> create(const std::string& path,
                                                                    std::uint64_t blocks);
    ~FileBlockIo() override;
    FileBlockIo(const FileBlockIo&) = delete;
    FileBlockIo& operator=(const FileBlockIo&) = delete;

    std::uint64_t blocks() const override { return m_blocks; }
    void submit(BlockOp& op) override;
    /// flush() calls fdatasync when true (default false: a process crash
    /// keeps what was written; power loss needs it).
    void set_durable(bool durable) { m_durable = durable; }
    bool durable() const { return m_durable; }

  private:
    FileBlockIo(int fd, std::uint64_t blocks) : m_fd(fd), m_blocks(blocks) {}
    int m_fd = -1;
    std::uint64_t m_blocks = 0;
    bool m_durable = false;
};

/// Blocks in memory, for tests: can be made to "crash" after a number of
/// writes (every later write is dropped, as if the power went), and its
/// contents copied as a disk image would be after that crash.
class MemoryBlockIo final : public BlockIo {
  public:
    explicit MemoryBlockIo(std::uint64_t blocks) : m_data(blocks * k_block_size) {}
    std::uint64_t blocks() const override { return m_data.size() / k_block_size; }
    void submit(BlockOp& op) override;
    /// After `writes` more writes succeed, later ones are dropped (still
    /// reported done): the device "lost power". Negative: never.
    void crash_after(std::int64_t writes) { m_writes_left = writes; }
    bool crashed() const { return m_writes_left == 0; }
    std::uint64_t writes() const { return m_writes; }
    const std::vector<std::byte>& data() const { return m_data; }
    std::vector<std::byte>& data() { return m_data; }

  private:
    std::vector<std::byte> m_data;
    std::int64_t m_writes_left = -1;
    std::uint64_t m_writes = 0;
};

}  // namespace hmk::fs
