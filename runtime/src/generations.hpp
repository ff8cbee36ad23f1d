// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>

#include "hmk/result.hpp"
#include "hmk/runtime/system_spec.hpp"

namespace hmk::detail {

/// The versions of a running system's description (docs/relocation.md).
/// Version 0 is the one it booted with; a swap (another kind) or a move
/// (another tree) adds one. The number of a version is also a routing
/// *generation*: each message carries the generation it was first
/// published in and is routed by that version's tree all the way, so a
/// move changes the route of new messages only.
///
/// Versions are immutable and kept for the life of the system: references
/// handed out (a module's Env::topology(), a spec pointer) stay valid.
/// Readers look versions up by number from any thread without a lock;
/// only the supervision thread adds versions.
class Generations {
  public:
    static constexpr std::uint32_t k_max = 65536;

    explicit Generations(SystemSpec first);
    Generations(const Generations&) = delete;
    Generations& operator=(const Generations&) = delete;

    /// The generation buses stamp on new messages.
    std::uint32_t current() const { return m_current.load(std::memory_order_acquire); }
    /// Version `g`; a number not (yet) added gives the current version.
    const SystemSpec& spec(std::uint32_t g) const {
        const std::uint32_t count = m_count.load(std::memory_order_acquire);
        return *at(g < count ? g : current());
    }
    const Topology& topology(std::uint32_t g) const { return spec(g).topology; }
    const SystemSpec& latest() const { return spec(current()); }
    /// The newest version added (current or about to be).
    std::uint32_t newest() const { return m_count.load(std::memory_order_acquire) - 1; }

    /// Adds a version, not current yet. Error: k_max versions already.
    Result<std::uint32_t, std::string> add(SystemSpec next);
    /// Buses stamp `g` from now on.
    void make_current(std::uint32_t g) { m_current.store(g, std::memory_order_release); }

    /// While a module moves, its old place is still valid for it: the
    /// generation whose tree has it there (k_none: no move under way).
    static constexpr std::uint32_t k_none = UINT32_MAX;
    std::uint32_t draining() const { return m_draining.load(std::memory_order_acquire); }
    void set_draining(std::uint32_t g) { m_draining.store(g, std::memory_order_release); }

  private:
    static constexpr std::uint32_t k_chunk = 1024;
    using Chunk = std::array<const SystemSpec*, k_chunk>;
    const SystemSpec* at(std::uint32_t g) const {
        // Written before m_count was raised past g (release), never again.
        return (*m_chunks[g / k_chunk].load(std::memory_order_acquire))[g % k_chunk];
    }

    std::mutex m_mutex;  // add()
    std::deque<SystemSpec> m_storage;
    std::array<std::atomic<Chunk*>, k_max / k_chunk> m_chunks{};
    std::deque<Chunk> m_chunk_storage;
    std::atomic<std::uint32_t> m_count{0};
    std::atomic<std::uint32_t> m_current{0};
    std::atomic<std::uint32_t> m_draining{k_none};
};

}  // namespace hmk::detail
