// SPDX-License-Identifier: Apache-2.0
#include "inproc_bus.hpp"

#include <cstdlib>
#include <new>

#include "hmk/platform/clock.hpp"
#include "hmk/platform/futex.hpp"

namespace hmk::detail {
namespace {

std::byte* allocate_region(std::size_t size) {
    return static_cast<std::byte*>(::operator new (size, std::align_val_t{64}));
}
void free_region(std::byte* p) {
    ::operator delete (p, std::align_val_t{64});
}

BroadcastRing make_ring(std::byte* memory, const BusSettings& s) {
    auto ring = BroadcastRing::create(
        std::span<std::byte>(memory, BroadcastRing::region_size(s.slot_count, s.max_payload)),
        s.slot_count, s.max_payload);
    // Settings are checked when the system is loaded; a bad geometry here is a bug.
    if (!ring) std::abort();
    return *ring;
}

}  // namespace

InprocBus::InprocBus(BusId id, std::string name, const BusSettings& settings,
                     const Topology& topology)
    : m_id(id),
      m_name(std::move(name)),
      m_settings(settings),
      m_topology(topology),
      m_memory(
          allocate_region(BroadcastRing::region_size(settings.slot_count, settings.max_payload)),
          free_region),
      m_ring(make_ring(m_memory.get(), settings)) {}

Result<std::uint64_t, SendError> InprocBus::publish(Header header,
                                                    std::span<const std::byte> payload,
                                                    ModuleId via) {
    if (payload.size() > m_settings.max_payload) return Err{SendError::payload_too_large};
    // The owner's checks: the module putting the message here must be attached
    // to this bus, and may speak only for itself or, if it is a gateway that
    // forwards up, for modules of its own subtree.
    const TopologyNode* v = m_topology.find(via);
    const bool attached = v != nullptr && (v->id == m_id || v->parent == m_id);
    const bool sender_ok = header.sender == via ||
                           (header.hops > 0 && m_topology.in_subtree(header.sender, via)) ||
                           (via == m_id && header.hops > 0);  // owner forwarding down
    if (!attached || !sender_ok || header.hops > k_max_hops) {
        m_rejected.fetch_add(1, std::memory_order_relaxed);
        return Err{SendError::rejected};
    }
    header.bus = m_id;
    header.via = via;
    std::uint64_t seq = 0;
    {
        const std::lock_guard lock(m_write);
        header.timestamp_ns = platform::monotonic_ns();
        // Size was checked above against the same limit the ring was made with.
        seq = m_ring.publish(header, payload).value();
    }
    m_bytes.fetch_add(k_header_size + payload.size(), std::memory_order_relaxed);
    // Wake-up handshake with a reader about to sleep. Both sides do a
    // read-modify-write on m_armed: the reader increments it and then checks
    // the ring head; we publish the head and then read m_armed with an RMW.
    // The RMWs are totally ordered, so either ours comes later and sees the
    // reader armed, or the reader's comes later and (by release/acquire on
    // that chain) sees the new head. No fence needed, and TSan can follow it.
    if (m_armed.fetch_add(0, std::memory_order_acq_rel) != 0) wake_armed();
    return seq;
}

void InprocBus::wake_armed() {
    for (Doorbell* d : m_subscribers) {
        if (d->armed.exchange(false, std::memory_order_seq_cst)) {
            d->word.fetch_add(1, std::memory_order_seq_cst);
            platform::futex_wake(d->word, 1);
        }
    }
}

}  // namespace hmk::detail
