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
};

}  // namespace hmk::detail
