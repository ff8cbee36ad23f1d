// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bus_port.hpp"
#include "hmk/broadcast_ring.hpp"
#include "hmk/platform/shm.hpp"
#include "hmk/routing.hpp"
#include "hmk/runtime/module.hpp"
#include "hmk/topology.hpp"

namespace hmk::detail {

/// Settings of one bus, from the system description.
struct BusSettings {
    std::uint32_t slot_count = 4096;
    std::uint32_t max_payload = 4096;
    UpPolicy up;
};

/// A bus as its owner's process holds it: the broadcast ring (in a sealed
/// shared-memory region, so modules in other processes can map it read-only)
/// plus the owner's publish path. Senders in this process call publish() from
/// their own threads, and the uplink pumps call it for modules in other
/// processes; the bus serialises them, so the ring keeps a single writer and
/// one total order. The bus, as its owner's agent, stamps seq, bus, via and
/// timestamp and checks the claimed sender.
class InprocBus final : public BusPort {
  public:
    InprocBus(BusId id, std::string name, const BusSettings& settings, const Topology& topology);
    InprocBus(const InprocBus&) = delete;
    InprocBus& operator=(const InprocBus&) = delete;

    /// Any thread. Publishes `header` (sender, destination, scope, type,
    /// correlation, hops, flags taken from it) as put on the bus by `via`.
    /// Returns the sequence number given.
    Result<std::uint64_t, SendError> publish(Header header, std::span<const std::byte> payload,
                                             ModuleId via) override;
    /// The same, but leaves waking sleeping readers to a later wake_readers()
    /// call: a batch pays for one wake-up scan, not one per message.
    Result<std::uint64_t, SendError> publish_deferred(Header header,
                                                      std::span<const std::byte> payload,
                                                      ModuleId via);
    /// Wakes the readers that sleep (after publish_deferred calls).
    void wake_readers();

    /// Before start only: a reader whose doorbell the bus rings. A reader in
    /// another process (`remote`) cannot count itself armed in our memory, so
    /// the bus looks at its bell on every publish.
    void subscribe(Doorbell doorbell, bool remote = false);
    /// In-process reader, around sleeping: the count of armed readers lets
    /// publish skip the scan when nobody sleeps.
    void reader_armed() override { m_armed.fetch_add(1, std::memory_order_acq_rel); }
    void reader_disarmed() override { m_armed.fetch_sub(1, std::memory_order_acq_rel); }

    const BroadcastRing& ring() const override { return m_ring; }
    /// The shared-memory region of the ring, for handing to another process.
    const platform::SharedRegion& region() const { return m_memory; }
    BusId id() const { return m_id; }
    const std::string& name() const override { return m_name; }
    const BusSettings& settings() const { return m_settings; }
    std::uint64_t bytes() const { return m_bytes.load(std::memory_order_relaxed); }
    std::uint64_t rejected() const { return m_rejected.load(std::memory_order_relaxed); }

  private:
    void wake_armed();

    BusId m_id;
    std::string m_name;
    BusSettings m_settings;
    const Topology& m_topology;
    platform::SharedRegion m_memory;
    BroadcastRing m_ring;
    std::mutex m_write;
    std::vector<Doorbell> m_subscribers;
    bool m_has_remote = false;
    alignas(64) std::atomic<std::uint32_t> m_armed{0};
    std::atomic<std::uint64_t> m_bytes{0};
    std::atomic<std::uint64_t> m_rejected{0};
};

}  // namespace hmk::detail
