// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bus_port.hpp"
#include "generations.hpp"
#include "hmk/broadcast_ring.hpp"
#include "hmk/platform/shm.hpp"
#include "hmk/routing.hpp"
#include "hmk/runtime/log.hpp"
#include "hmk/runtime/module.hpp"
#include "hmk/runtime/system_spec.hpp"
#include "hmk/topology.hpp"

namespace hmk::detail {

/// Settings of one bus, from the system description.
struct BusSettings {
    std::uint32_t slot_count = 4096;
    std::uint32_t max_payload = 4096;
    UpPolicy up;
    std::uint64_t first_seq = 1;                 ///< a journaled bus continues after its journal
    CommitMode commit = CommitMode::on_publish;  ///< explicit_: durable visibility
    Delivery delivery = Delivery::reliable;
    std::uint32_t reader_deadline_ms = 5000;
};

/// Told when a reliable bus evicts a reader that held its senders up for
/// longer than its deadline (docs/delivery.md). Called on the thread of
/// the publisher that found it out, with no lock of the bus held.
class EvictionListener {
  public:
    virtual ~EvictionListener() = default;
    virtual void reader_evicted(BusId bus, ModuleId module, std::uint64_t epoch,
                                const std::string& why) = 0;
};

/// Told of each handoff message a bus publishes (docs/swap.md): a module
/// host's replica may speak once its old instance's last word is out.
class HandoffWatcher {
  public:
    virtual ~HandoffWatcher() = default;
    /// Any thread, right after `header` was published.
    virtual void handoff_published(const Header& header, std::span<const std::byte> payload) = 0;
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
    InprocBus(BusId id, std::string name, const BusSettings& settings,
              const Generations& generations, Logger& logger);
    InprocBus(const InprocBus&) = delete;
    InprocBus& operator=(const InprocBus&) = delete;

    /// Any thread. Publishes `header` (sender, destination, scope, type,
    /// correlation, hops, flags taken from it; for a forward, its
    /// generation) as put on the bus by `via`. Returns the sequence number
    /// given.
    Result<std::uint64_t, SendError> publish(Header header, std::span<const std::byte> payload,
                                             ModuleId via) override;
    /// The same, but leaves waking sleeping readers to a later wake_readers()
    /// call: a batch pays for one wake-up scan, not one per message.
    /// `stamped_ns`, if given, receives the timestamp the message got.
    Result<std::uint64_t, SendError> publish_deferred(Header header,
                                                      std::span<const std::byte> payload,
                                                      ModuleId via,
                                                      std::uint64_t* stamped_ns = nullptr);
    /// The owner's own message, routed by `generation` rather than the
    /// current one (a move's flushes travel by the old tree, docs/relocation.md).
    Result<std::uint64_t, SendError> publish_in_generation(Header header,
                                                           std::span<const std::byte> payload,
                                                           std::uint32_t generation);
    /// publish() that also tells the timestamp given (the owner's own events).
    Result<std::uint64_t, SendError> publish_stamped(Header header,
                                                     std::span<const std::byte> payload,
                                                     ModuleId via, std::uint64_t& stamped_ns);

    /// Before start: `monitor` journals this bus. The owner then never
    /// overwrites a message the monitor has not acknowledged: a publisher
    /// waits (the monitor itself gets `full`), at most `stall_ms` in a row,
    /// after which the bus stops waiting (a gap in the journal, logged) until
    /// the monitor catches up. With CommitMode::explicit_ readers see only
    /// acknowledged messages (durable visibility).
    void set_journal(ModuleId monitor, std::uint32_t stall_ms);
    /// The monitor stopped in order: nothing to wait for any more.
    void close_gate();
    void acknowledge(std::uint64_t seq, ModuleId by) override;
    /// The last seq the monitor acknowledged (0: no journal or none yet).
    std::uint64_t acknowledged() const { return m_acked.load(std::memory_order_acquire); }
    ModuleId journal_module() const { return m_gate_module; }
    /// Whether the journal has a message the ring no longer holds, or will
    /// never have it: false once the monitor passed `seq`, or while the bus
    /// goes on without a stalled (or stopped) monitor.
    bool journal_may_still_write(std::uint64_t seq) const {
        return seq > m_acked.load(std::memory_order_acquire) &&
               !m_gate_open.load(std::memory_order_acquire);
    }
    /// Wakes the readers that sleep (after publish_deferred calls).
    void wake_readers();

    // Reliable delivery (docs/delivery.md). On a reliable bus without a
    // journal the owner never overwrites a message a registered reader has
    // not read: a publish that would gets SendError::full (nobody waits
    // inside the bus), and the publisher tries again after the reader moved
    // on. A reader that holds its senders up for longer than the bus's
    // reader_deadline_ms is evicted: from then on the bus no longer waits
    // for it, and the listener is told (its parent fails it). On a journaled
    // bus the journal holds what a slow reader missed, so only the monitor
    // is waited for (set_journal).

    /// Any thread: `cursor` (the next seq the reader takes off the ring; it
    /// only grows) is instance `epoch` of `module` reading this bus. The
    /// word must stay valid until remove_reader(). A reader in another
    /// process writes it in shared memory: it is only a number to us.
    void add_reader(const std::atomic<std::uint64_t>* cursor, ModuleId module, std::uint64_t epoch);
    /// Any thread: the bus no longer waits for the reader of that word.
    void remove_reader(const std::atomic<std::uint64_t>* cursor);
    /// Before the system starts: `module` will read this bus from `from`;
    /// until it attaches its cursor (add_reader), the bus waits for it
    /// there, so that a sender started first cannot lap a reader not yet
    /// started. A placeholder past the deadline is dropped quietly.
    void hold_for(ModuleId module, std::uint64_t from);
    /// Once every module has started: drops the placeholders left.
    void release_holds();
    std::atomic<std::uint64_t>* attach_reader(std::atomic<std::uint64_t>& own, ModuleId module,
                                              std::uint64_t epoch, Gated gated) override {
        if (gated == Gated::yes) add_reader(&own, module, epoch);
        return &own;
    }
    void detach_reader(std::atomic<std::uint64_t>& own) override { remove_reader(&own); }
    /// Whether publishers wait for readers here (reliable, no journal).
    bool waits_for_readers() const { return m_reader_gate; }
    /// Any thread: waits until a reader moved on or `timeout_ns` passed
    /// (a publisher that got `full`).
    void wait_for_room(std::int64_t timeout_ns) override;
    /// In-process reader, after it moved its cursor: wakes publishers that
    /// wait for room, if any (one load otherwise).
    void reader_moved() override;
    /// Before start: who is told of evictions.
    void set_eviction_listener(EvictionListener* listener) { m_evictions = listener; }
    /// Readers evicted so far, and the time publishers were refused for
    /// want of room (ns, summed over refusals: a measure of back-pressure).
    std::uint64_t evicted() const { return m_evicted.load(std::memory_order_relaxed); }
    std::uint64_t pressure_ns() const { return m_pressure_ns.load(std::memory_order_relaxed); }
    std::uint32_t wait_limit_ms() const override { return m_settings.reader_deadline_ms; }
    /// Any thread: who to tell of handoff messages (the bus's uplink pump).
    void set_handoff_watcher(HandoffWatcher* watcher) {
        m_watcher.store(watcher, std::memory_order_release);
    }

    /// Any thread: a reader whose doorbell the bus rings, from now on. A
    /// reader in another process (`remote`) cannot count itself armed in our
    /// memory, so the bus looks at its bell on every publish. The bell's
    /// memory must outlive the bus. Error: the bus has k_max_subscribers.
    Result<void, std::string> subscribe(Doorbell doorbell, bool remote = false);
    /// Any thread: the bus stops ringing `doorbell` (a wake-up already under
    /// way may still reach it).
    void unsubscribe(Doorbell doorbell);
    static constexpr std::uint32_t k_max_subscribers = 1024;
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

    bool gate_allows(std::uint64_t seq) const;
    struct Eviction {
        ModuleId module;
        std::uint64_t epoch;
        std::uint64_t held_ms;
    };
    /// Under m_write: whether `seq` may be published without overwriting
    /// what a live reader has not read; evicts readers past their deadline.
    bool readers_allow(std::uint64_t seq, std::vector<Eviction>& evicted);
    void report(const std::vector<Eviction>& evicted);
    /// Wakes every publisher that waits for room.
    void wake_room();

  private:
    BusId m_id;
    std::string m_name;
    BusSettings m_settings;
    bool admits(const Topology& tree, const Header& header, ModuleId via) const;
    Result<std::uint64_t, SendError> publish_impl(Header header, std::span<const std::byte> payload,
                                                  ModuleId via, std::uint64_t* stamped_ns,
                                                  const std::uint32_t* generation);

    const Generations& m_generations;
    Logger& m_logger;
    platform::SharedRegion m_memory;
    BroadcastRing m_ring;
    std::mutex m_write;
    // Readers to wake: slots publishers scan without a lock. A slot points
    // at one of m_doorbells (never moved nor freed: a publisher may hold a
    // pointer it loaded just before the slot was cleared or reused).
    struct Subscribed {
        Doorbell bell;
        bool remote = false;
    };
    std::mutex m_subscribe;
    std::deque<Subscribed> m_doorbells;
    std::unique_ptr<std::atomic<const Subscribed*>[]> m_subscribers;
    std::atomic<std::uint32_t> m_subscriber_end{0};
    std::atomic<std::uint32_t> m_remote{0};
    alignas(64) std::atomic<std::uint32_t> m_armed{0};
    std::atomic<std::uint64_t> m_bytes{0};
    std::atomic<std::uint64_t> m_rejected{0};

    // Journal gate.
    ModuleId m_gate_module = k_no_module;
    std::uint64_t m_stall_ns = 0;
    alignas(64) std::atomic<std::uint64_t> m_acked{0};
    std::atomic<bool> m_gate_open{true};      // no monitor, closed in order, or stalled
    std::atomic<bool> m_gate_stalled{false};  // opened because the monitor stalled
    std::atomic<std::uint32_t> m_gate_word{0};
    std::atomic<std::uint32_t> m_gate_waiters{0};
    std::atomic<HandoffWatcher*> m_watcher{nullptr};

    // Reader gate (reliable delivery). Readers and m_room_until are
    // guarded by m_write; a reader's cursor is its own word.
    struct Reader {
        const std::atomic<std::uint64_t>* cursor = nullptr;  // null: a free entry
        ModuleId module = k_no_module;
        std::uint64_t epoch = 0;
        std::uint64_t holding_since_ns = 0;  // since it first refused a publisher (0: it does not)
        bool evicted = false;
        bool placeholder = false;  // hold_for: no cursor yet, held at `held_at`
        std::uint64_t held_at = 0;
        bool free() const { return cursor == nullptr && !placeholder; }
    };
    bool m_reader_gate = false;
    std::uint64_t m_deadline_ns = 0;
    std::vector<Reader> m_readers;
    std::uint64_t m_room_until = 0;  // seqs up to this overwrite nothing unread (0: look again)
    EvictionListener* m_evictions = nullptr;
    alignas(64) std::atomic<std::uint32_t> m_room_word{0};
    std::atomic<std::uint32_t> m_room_waiters{0};
    std::atomic<std::uint64_t> m_evicted{0};
    std::atomic<std::uint64_t> m_pressure_ns{0};
    std::atomic<std::uint64_t> m_refused_since{0};  // first refusal of the current episode
};

}  // namespace hmk::detail
