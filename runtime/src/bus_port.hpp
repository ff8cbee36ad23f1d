// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <atomic>
#include <cstdint>
#include <span>
#include <string>

#include "hmk/broadcast_ring.hpp"
#include "hmk/platform/futex.hpp"
#include "hmk/runtime/module.hpp"

namespace hmk::detail {

/// Where a sleeping reader can be woken: a futex word and an "armed" flag,
/// in the reader's own memory (in-process) or in its uplink region (a module
/// in another process).
struct Doorbell {
    std::atomic<std::uint32_t>* word = nullptr;
    std::atomic<std::uint32_t>* armed = nullptr;
    platform::FutexScope scope = platform::FutexScope::process;

    /// Wakes the reader if it armed the bell; one wake per sleep.
    void ring() const {
        if (armed->load(std::memory_order_seq_cst) != 0 &&
            armed->exchange(0, std::memory_order_seq_cst) != 0) {
            word->fetch_add(1, std::memory_order_seq_cst);
            platform::futex_wake(*word, 1, scope);
        }
    }
};

/// Whether a bus waits for a reader before it overwrites what it has not read.
enum class Gated : std::uint8_t { no, yes };

/// One bus as one attached module uses it: read its ring, publish on it.
class BusPort {
  public:
    virtual ~BusPort() = default;
    virtual const BroadcastRing& ring() const = 0;
    virtual const std::string& name() const = 0;
    /// Any thread. Publishes as `via` (the owner checks and stamps).
    virtual Result<std::uint64_t, SendError> publish(Header header,
                                                     std::span<const std::byte> payload,
                                                     ModuleId via) = 0;
    /// Called around a reader's sleep (after it armed its doorbell / after it woke).
    virtual void reader_armed() {}
    virtual void reader_disarmed() {}
    /// The bus's journal (its monitor, `by`) has everything up to `seq`.
    /// Only a bus in the owner's process has a journal; elsewhere a no-op.
    virtual void acknowledge(std::uint64_t /*seq*/, ModuleId /*by*/) {}

    // Reliable delivery (docs/delivery.md): a publish may get `full` while
    // a reader is a whole ring behind. The publisher then reads ahead of
    // its own handler (so that it never waits for itself), waits a little
    // and tries again, for at most about wait_limit_ms().

    /// The reader of this bus that is instance `epoch` of `module`, whose
    /// own word `own` holds the next seq it takes off the ring. Returns the
    /// word where it must keep that number for the owner to see: its own,
    /// registered with the bus if `gated` (a replica is not, until it is
    /// the module), or a word in its uplink region (a module host: its
    /// parent registers that). Called again with Gated::yes when a replica
    /// takes over.
    virtual std::atomic<std::uint64_t>* attach_reader(std::atomic<std::uint64_t>& own,
                                                      ModuleId /*module*/, std::uint64_t /*epoch*/,
                                                      Gated /*gated*/) {
        return &own;
    }
    /// The reader is gone (its handle from attach_reader is forgotten).
    virtual void detach_reader(std::atomic<std::uint64_t>& /*own*/) {}
    /// A publisher that got `full` waits here for room, at most `timeout_ns`.
    virtual void wait_for_room(std::int64_t timeout_ns) = 0;
    /// A reader moved its cursor (wakes publishers waiting for room).
    virtual void reader_moved() {}
    /// How long a publisher may expect to wait for room, at most (ms).
    virtual std::uint32_t wait_limit_ms() const = 0;
};

}  // namespace hmk::detail
