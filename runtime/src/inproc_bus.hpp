// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "hmk/broadcast_ring.hpp"
#include "hmk/routing.hpp"
#include "hmk/runtime/module.hpp"
#include "hmk/topology.hpp"

namespace hmk::detail {

/// A sleeping reader's wake-up word. The reader arms it before it sleeps; the
/// bus rings only armed doorbells, once per burst.
struct Doorbell {
    std::atomic<std::uint32_t> word{0};
    std::atomic<bool> armed{false};
};

/// Settings of one bus, from the system description.
struct BusSettings {
    std::uint32_t slot_count = 4096;
    std::uint32_t max_payload = 4096;
    UpPolicy up;
};

/// An in-process bus: the owner's broadcast ring plus the owner's publish path.
/// Senders call publish() from their own threads; the bus serialises them, so
/// the ring keeps a single writer and one total order. The bus, as its owner's
/// agent, stamps seq, bus, via and timestamp and checks the claimed sender.
class InprocBus {
  public:
    InprocBus(BusId id, std::string name, const BusSettings& settings, const Topology& topology);
    InprocBus(const InprocBus&) = delete;
    InprocBus& operator=(const InprocBus&) = delete;

    /// Any thread. Publishes `header` (sender, destination, scope, type,
    /// correlation, hops, flags taken from it) as put on the bus by `via`.
    /// Returns the sequence number given.
    Result<std::uint64_t, SendError> publish(Header header, std::span<const std::byte> payload,
                                             ModuleId via);

    /// Before start only: a reader whose doorbell the bus rings.
    void subscribe(Doorbell* doorbell) { m_subscribers.push_back(doorbell); }
    /// Reader, around sleeping: count of armed readers lets publish skip the scan.
    void reader_armed() { m_armed.fetch_add(1, std::memory_order_acq_rel); }
    void reader_disarmed() { m_armed.fetch_sub(1, std::memory_order_acq_rel); }

    const BroadcastRing& ring() const { return m_ring; }
    BusId id() const { return m_id; }
    const std::string& name() const { return m_name; }
    const BusSettings& settings() const { return m_settings; }
    std::uint64_t bytes() const { return m_bytes.load(std::memory_order_relaxed); }
    std::uint64_t rejected() const { return m_rejected.load(std::memory_order_relaxed); }

  private:
    void wake_armed();

    BusId m_id;
    std::string m_name;
    BusSettings m_settings;
    const Topology& m_topology;
    std::unique_ptr<std::byte, void (*)(std::byte*)> m_memory;
    BroadcastRing m_ring;
    std::mutex m_write;
    std::vector<Doorbell*> m_subscribers;
    alignas(64) std::atomic<std::uint32_t> m_armed{0};
    std::atomic<std::uint64_t> m_bytes{0};
    std::atomic<std::uint64_t> m_rejected{0};
};

}  // namespace hmk::detail
