// SPDX-License-Identifier: Apache-2.0
#include "inproc_bus.hpp"

#include <cstdio>
#include <cstdlib>
#include <new>

#include "hmk/platform/clock.hpp"
#include "hmk/platform/futex.hpp"

namespace hmk::detail {
namespace {

platform::SharedRegion make_region(BusId id, const BusSettings& s) {
    auto region =
        platform::SharedRegion::create(("hmk-bus-" + std::to_string(id)).c_str(),
                                       BroadcastRing::region_size(s.slot_count, s.max_payload));
    // Out of memory or fds at start-up: nothing sensible to go on with.
    if (!region) {
        std::fprintf(stderr, "hmk: cannot create bus %u: %s\n", id, region.error().c_str());
        std::abort();
    }
    return std::move(region).value();
}

BroadcastRing make_ring(platform::SharedRegion& region, const BusSettings& s) {
    auto ring = BroadcastRing::create(region.bytes(), s.slot_count, s.max_payload);
    // Settings are checked when the system is loaded; a bad geometry here is a bug.
    if (!ring) std::abort();
    // From now on nobody can map the ring writable again: readers in other
    // processes get read-only memory they cannot mprotect to writable.
    if (auto sealed = region.seal_writes(); !sealed) {
        std::fprintf(stderr, "hmk: cannot seal bus ring: %s\n", sealed.error().c_str());
        std::abort();
    }
    return *ring;
}

}  // namespace

InprocBus::InprocBus(BusId id, std::string name, const BusSettings& settings,
                     const Topology& topology)
    : m_id(id),
      m_name(std::move(name)),
      m_settings(settings),
      m_topology(topology),
      m_memory(make_region(id, settings)),
      m_ring(make_ring(m_memory, settings)) {}

void InprocBus::subscribe(Doorbell doorbell, bool remote) {
    m_subscribers.push_back(doorbell);
    m_has_remote = m_has_remote || remote;
}

Result<std::uint64_t, SendError> InprocBus::publish(Header header,
                                                    std::span<const std::byte> payload,
                                                    ModuleId via) {
    auto seq = publish_deferred(header, payload, via);
    if (seq) wake_readers();
    return seq;
}

Result<std::uint64_t, SendError> InprocBus::publish_deferred(Header header,
                                                             std::span<const std::byte> payload,
                                                             ModuleId via) {
    if (payload.size() > m_settings.max_payload) return Err{SendError::payload_too_large};
    // The owner's checks: the module putting the message here must be attached
    // to this bus, and may speak only for itself or, if it is a gateway that
    // forwards up, for modules of its own subtree.
    const TopologyNode* v = m_topology.find(via);
    const bool attached = v != nullptr && (v->id == m_id || v->parent == m_id);
    // A leaf speaks only for itself and never forwards; a gateway forwarding
    // up may speak for its own subtree; the owner may forward anything down.
    const bool sender_ok =
        attached &&
        ((header.sender == via && (header.hops == 0 || v->is_gateway())) ||
         (header.hops > 0 && v->is_gateway() && m_topology.in_subtree(header.sender, via)) ||
         (via == m_id && header.hops > 0));
    if (!sender_ok || header.hops > k_max_hops) {
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
    // Readers in other processes are looked at on every publish (their bells
    // are seq_cst against the ring head, see BroadcastRing::head()).
    return seq;
}

void InprocBus::wake_readers() {
    if (m_armed.fetch_add(0, std::memory_order_acq_rel) != 0 || m_has_remote) wake_armed();
}

void InprocBus::wake_armed() {
    for (const Doorbell& d : m_subscribers) d.ring();
}

}  // namespace hmk::detail
