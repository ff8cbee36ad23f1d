// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstddef>
#include <span>
#include <string>

#include "hmk/result.hpp"

namespace hmk::platform {

/// An owned file descriptor; closed on destruction.
class UniqueFd {
  public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : m_fd(fd) {}
    ~UniqueFd();
    UniqueFd(UniqueFd&& other) noexcept : m_fd(other.release()) {}
    UniqueFd& operator=(UniqueFd&& other) noexcept;
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;

    int get() const { return m_fd; }
    bool valid() const { return m_fd >= 0; }
    int release() {
        const int fd = m_fd;
        m_fd = -1;
        return fd;
    }

  private:
    int m_fd = -1;
};

enum class Access : std::uint8_t { read_only, read_write };

/// A shared-memory mapping backed by a memfd. Move-only; unmaps and closes on
/// destruction. The fd can be handed to another process, which maps it too.
class SharedRegion {
  public:
    /// An empty region (no memory); assign a created or mapped one to it.
    SharedRegion() = default;
    /// A new zero-filled region of `size` bytes, mapped read-write.
    static Result<SharedRegion, std::string> create(const char* name, std::size_t size);
    /// Maps a region another process made, from its fd (which this takes over).
    static Result<SharedRegion, std::string> map(UniqueFd fd, Access access);

    /// Forbids any new writable mapping of the region, by anyone, from now on
    /// (F_SEAL_FUTURE_WRITE), and any change of its size. Existing writable
    /// mappings (this one) keep working. A reader that maps it later gets
    /// read-only memory it cannot make writable.
    Result<void, std::string> seal_writes();
    /// Forbids any change of the region's size. A region another process may
    /// write must have it: shrinking it would make our own accesses SIGBUS.
    Result<void, std::string> seal_size();

    SharedRegion(SharedRegion&& other) noexcept;
    SharedRegion& operator=(SharedRegion&& other) noexcept;
    SharedRegion(const SharedRegion&) = delete;
    SharedRegion& operator=(const SharedRegion&) = delete;
    ~SharedRegion();

    std::span<std::byte> bytes() const { return {m_data, m_size}; }
    std::byte* data() const { return m_data; }
    std::size_t size() const { return m_size; }
    int fd() const { return m_fd.get(); }

  private:
    SharedRegion(UniqueFd fd, std::byte* data, std::size_t size)
        : m_fd(std::move(fd)), m_data(data), m_size(size) {}
    UniqueFd m_fd;
    std::byte* m_data = nullptr;
    std::size_t m_size = 0;
};

}  // namespace hmk::platform
