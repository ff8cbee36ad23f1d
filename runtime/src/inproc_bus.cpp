// SPDX-License-Identifier: Apache-2.0
#include "inproc_bus.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <new>

#include <fmt/core.h>

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
    auto ring = BroadcastRing::create(region.bytes(), s.slot_count, s.max_payload, s.first_seq,
                                      s.commit, Zeroed::yes);
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
                     const Generations& generations, Logger& logger)
    : m_id(id),
      m_name(std::move(name)),
      m_settings(settings),
      m_generations(generations),
      m_logger(logger),
      m_memory(make_region(id, settings)),
      m_ring(make_ring(m_memory, settings)),
      m_subscribers(new std::atomic<const Subscribed*>[k_max_subscribers]),
      m_reader_gate(settings.delivery == Delivery::reliable),
      m_deadline_ns(std::uint64_t{settings.reader_deadline_ms} * 1'000'000) {
    for (std::uint32_t i = 0; i < k_max_subscribers; ++i) m_subscribers[i].store(nullptr);
}

void InprocBus::add_reader(const std::atomic<std::uint64_t>* cursor, ModuleId module,
                           std::uint64_t epoch) {
    const std::lock_guard lock(m_write);
    Reader r;
    r.cursor = cursor;
    r.module = module;
    r.epoch = epoch;
    // Its cursor takes the place held for it at boot.
    for (Reader& e : m_readers) {
        if (e.placeholder && e.module == module) e = Reader{};
    }
    // The same word again (a replica that took over) is the same reader.
    auto free = std::find_if(m_readers.begin(), m_readers.end(),
                             [&](const Reader& e) { return e.cursor == cursor; });
    if (free == m_readers.end()) {
        free = std::find_if(m_readers.begin(), m_readers.end(),
                            [](const Reader& e) { return e.free(); });
    }
    if (free != m_readers.end()) {
        *free = r;
    } else {
        m_readers.push_back(r);
    }
    m_room_until = 0;  // it may start behind: look again
}

void InprocBus::remove_reader(const std::atomic<std::uint64_t>* cursor) {
    {
        const std::lock_guard lock(m_write);
        for (Reader& r : m_readers) {
            if (r.cursor == cursor) r = Reader{};
        }
    }
    wake_room();  // whoever waited for it need not any more
}

void InprocBus::hold_for(ModuleId module, std::uint64_t from) {
    const std::lock_guard lock(m_write);
    Reader r;
    r.module = module;
    r.placeholder = true;
    r.held_at = from;
    m_readers.push_back(r);
    m_room_until = 0;
}

void InprocBus::release_holds() {
    {
        const std::lock_guard lock(m_write);
        for (Reader& r : m_readers) {
            if (r.placeholder) r = Reader{};
        }
    }
    wake_room();
}

bool InprocBus::readers_allow(std::uint64_t seq, std::vector<Eviction>& evicted) {
    if (!m_reader_gate || seq <= m_room_until) return true;
    const std::uint32_t window = m_settings.slot_count;
    std::uint64_t lowest = UINT64_MAX;
    std::uint64_t now = 0;
    bool held = false;
    for (Reader& r : m_readers) {
        if (r.free() || r.evicted) continue;
        const std::uint64_t c =
            r.placeholder ? r.held_at : r.cursor->load(std::memory_order_acquire);
        // seq goes into the slot of seq - window: fine if the reader is past it.
        if (c + window > seq) {
            r.holding_since_ns = 0;
            lowest = std::min(lowest, c);
            continue;
        }
        if (now == 0) now = platform::monotonic_ns();
        if (r.holding_since_ns == 0) r.holding_since_ns = now;
        if (now - r.holding_since_ns < m_deadline_ns) {
            held = true;
            continue;
        }
        if (r.placeholder) {
            r = Reader{};  // it did not start in time: its start fails it
        } else {
            r.evicted = true;
            m_evicted.fetch_add(1, std::memory_order_relaxed);
            evicted.push_back(Eviction{r.module, r.epoch, (now - r.holding_since_ns) / 1'000'000});
        }
    }
    if (held) return false;
    m_room_until = (lowest == UINT64_MAX ? seq : lowest) + window - 1;
    return true;
}

void InprocBus::report(const std::vector<Eviction>& evicted) {
    for (const Eviction& e : evicted) {
        const std::string why =
            fmt::format("did not keep up with bus {} for {} ms (a whole ring behind): evicted",
                        m_name, e.held_ms);
        if (m_evictions != nullptr) {
            m_evictions->reader_evicted(m_id, e.module, e.epoch, why);
        } else {
            m_logger.log(LogLevel::error, fmt::format("#{}", e.module), why);
        }
    }
}

void InprocBus::wait_for_room(std::int64_t timeout_ns) {
    const std::uint32_t word = m_room_word.load(std::memory_order_seq_cst);
    m_room_waiters.fetch_add(1, std::memory_order_seq_cst);
    platform::futex_wait(m_room_word, word, timeout_ns);
    m_room_waiters.fetch_sub(1, std::memory_order_seq_cst);
}

void InprocBus::reader_moved() {
    if (m_room_waiters.load(std::memory_order_seq_cst) != 0) wake_room();
}

void InprocBus::wake_room() {
    m_room_word.fetch_add(1, std::memory_order_seq_cst);
    platform::futex_wake(m_room_word, INT32_MAX);
}

namespace {
bool same_bell(const Doorbell& a, const Doorbell& b) {
    return a.word == b.word && a.armed == b.armed && a.scope == b.scope;
}
}  // namespace

Result<void, std::string> InprocBus::subscribe(Doorbell doorbell, bool remote) {
    const std::lock_guard lock(m_subscribe);
    // The same bell again reuses its record: a pool of bells that come and
    // go does not grow the list.
    const Subscribed* record = nullptr;
    for (const Subscribed& d : m_doorbells) {
        if (same_bell(d.bell, doorbell) && d.remote == remote) record = &d;
    }
    if (record == nullptr) record = &m_doorbells.emplace_back(Subscribed{doorbell, remote});
    const std::uint32_t end = m_subscriber_end.load(std::memory_order_relaxed);
    std::uint32_t slot = end;
    for (std::uint32_t i = 0; i < end; ++i) {
        if (m_subscribers[i].load(std::memory_order_relaxed) == nullptr) {
            slot = i;
            break;
        }
    }
    if (slot == k_max_subscribers)
        return Err{fmt::format("bus {} has {} readers already", m_name, k_max_subscribers)};
    if (remote) m_remote.fetch_add(1, std::memory_order_acq_rel);
    m_subscribers[slot].store(record, std::memory_order_release);
    if (slot == end) m_subscriber_end.store(end + 1, std::memory_order_release);
    return {};
}

void InprocBus::unsubscribe(Doorbell doorbell) {
    const std::lock_guard lock(m_subscribe);
    const std::uint32_t end = m_subscriber_end.load(std::memory_order_relaxed);
    for (std::uint32_t i = 0; i < end; ++i) {
        const Subscribed* d = m_subscribers[i].load(std::memory_order_relaxed);
        if (d != nullptr && same_bell(d->bell, doorbell)) {
            m_subscribers[i].store(nullptr, std::memory_order_release);
            if (d->remote) m_remote.fetch_sub(1, std::memory_order_acq_rel);
            return;
        }
    }
}

Result<std::uint64_t, SendError> InprocBus::publish(Header header,
                                                    std::span<const std::byte> payload,
                                                    ModuleId via) {
    auto seq = publish_deferred(header, payload, via);
    if (seq) wake_readers();
    return seq;
}

Result<std::uint64_t, SendError> InprocBus::publish_stamped(Header header,
                                                            std::span<const std::byte> payload,
                                                            ModuleId via,
                                                            std::uint64_t& stamped_ns) {
    auto seq = publish_deferred(header, payload, via, &stamped_ns);
    if (seq) wake_readers();
    return seq;
}

void InprocBus::set_journal(ModuleId monitor, std::uint32_t stall_ms) {
    m_gate_module = monitor;
    m_stall_ns = std::uint64_t{stall_ms} * 1'000'000;
    m_acked.store(m_ring.head(), std::memory_order_release);
    m_gate_open.store(false);
    // A reader that falls behind catches up from the journal instead.
    m_reader_gate = false;
}

void InprocBus::close_gate() {
    m_gate_open.store(true);
    if (m_settings.commit == CommitMode::explicit_) {
        const std::lock_guard lock(m_write);
        m_ring.commit(m_ring.head());
    }
    m_gate_word.fetch_add(1, std::memory_order_seq_cst);
    platform::futex_wake(m_gate_word, INT32_MAX);
    wake_armed();
}

bool InprocBus::gate_allows(std::uint64_t seq) const {
    // seq may overwrite seq - slot_count: the monitor must have that one.
    return m_gate_open.load(std::memory_order_relaxed) ||
           seq <= m_acked.load(std::memory_order_acquire) + m_settings.slot_count;
}

void InprocBus::acknowledge(std::uint64_t seq, ModuleId by) {
    if (by != m_gate_module || m_gate_module == k_no_module) return;
    if (seq <= m_acked.load(std::memory_order_relaxed)) return;
    m_acked.store(seq, std::memory_order_release);
    if (m_gate_stalled.load(std::memory_order_relaxed) &&
        seq + m_settings.slot_count / 2 >= m_ring.head()) {
        // The monitor is back within the window: journal and bus agree again.
        m_gate_stalled.store(false);
        m_gate_open.store(false);
        m_logger.log(LogLevel::warn, m_name, "its journal caught up: the bus waits for it again");
    }
    if (m_settings.commit == CommitMode::explicit_ && !m_gate_stalled.load()) {
        // Only the monitor's thread commits (one writer of the commit point).
        m_ring.commit(seq);
        wake_readers();
    }
    // Always bumped (one RMW per acknowledged batch), so a publisher that
    // read the word before this and sleeps after it returns at once.
    m_gate_word.fetch_add(1, std::memory_order_seq_cst);
    if (m_gate_waiters.load(std::memory_order_seq_cst) != 0)
        platform::futex_wake(m_gate_word, INT32_MAX);
}

Result<std::uint64_t, SendError> InprocBus::publish_deferred(Header header,
                                                             std::span<const std::byte> payload,
                                                             ModuleId via,
                                                             std::uint64_t* stamped_ns) {
    return publish_impl(header, payload, via, stamped_ns, nullptr);
}

Result<std::uint64_t, SendError> InprocBus::publish_in_generation(
    Header header, std::span<const std::byte> payload, std::uint32_t generation) {
    header.sender = m_id;
    header.hops = 0;
    auto seq = publish_impl(header, payload, m_id, nullptr, &generation);
    if (seq) wake_readers();
    return seq;
}

Result<std::uint64_t, SendError> InprocBus::publish_impl(Header header,
                                                         std::span<const std::byte> payload,
                                                         ModuleId via, std::uint64_t* stamped_ns,
                                                         const std::uint32_t* generation) {
    if (payload.size() > m_settings.max_payload) return Err{SendError::payload_too_large};
    // The owner's checks (see admits()), under the tree of the message's
    // generation, the current one, or the one a move drains.
    const std::uint32_t current = m_generations.current();
    const std::uint32_t draining = m_generations.draining();
    const bool ok = header.hops <= k_max_hops &&
                    (admits(m_generations.topology(header.hops == 0 ? current : header.generation),
                            header, via) ||
                     (header.hops > 0 && admits(m_generations.topology(current), header, via)) ||
                     (draining != Generations::k_none &&
                      admits(m_generations.topology(draining), header, via)));
    if (!ok) {
        m_rejected.fetch_add(1, std::memory_order_relaxed);
        return Err{SendError::rejected};
    }
    header.bus = m_id;
    header.via = via;
    std::uint64_t seq = 0;
    std::uint64_t waited_since = 0;
    std::vector<Eviction> evicted;
    for (;;) {
        const std::uint32_t word = m_gate_word.load(std::memory_order_seq_cst);
        bool refused = false;
        {
            const std::lock_guard lock(m_write);
            const bool journal_has_room = gate_allows(m_ring.head() + 1);
            if (journal_has_room && !readers_allow(m_ring.head() + 1, evicted)) {
                refused = true;
            } else if (journal_has_room) {
                header.timestamp_ns = platform::monotonic_ns();
                // Under the lock: a message published after a move made a
                // new generation current is of the new one (docs/relocation.md).
                if (generation != nullptr) {
                    header.generation = *generation;
                } else if (header.hops == 0) {
                    header.generation = m_generations.current();
                }
                if (stamped_ns != nullptr) *stamped_ns = header.timestamp_ns;
                // Size was checked above against the same limit the ring was made with.
                seq = m_ring.publish(header, payload).value();
                if (m_settings.commit == CommitMode::explicit_ && m_gate_open.load())
                    m_ring.commit(seq);
                break;
            }
        }
        if (!evicted.empty()) {
            report(evicted);
            evicted.clear();
            continue;  // the bus no longer waits for them
        }
        if (refused) {
            // A reader is a whole ring behind: the publisher tries again
            // later (it never waits in here, so the owner never waits).
            std::uint64_t since = 0;
            (void)m_refused_since.compare_exchange_strong(since, platform::monotonic_ns());
            return Err{SendError::full};
        }
        // The journal is a whole ring behind. The monitor itself must not wait
        // for itself; anyone else waits for it, but not for ever.
        if (via == m_gate_module) return Err{SendError::full};
        const std::uint64_t now = platform::monotonic_ns();
        if (waited_since == 0) waited_since = now;
        if (now - waited_since >= m_stall_ns) {
            if (!m_gate_stalled.exchange(true)) {
                m_logger.log(LogLevel::error, m_name,
                             fmt::format("its journal has not kept up for {} ms: the bus goes on "
                                         "without waiting, and the journal will have a gap",
                                         m_stall_ns / 1'000'000));
            }
            m_gate_open.store(true);
            continue;
        }
        m_gate_waiters.fetch_add(1, std::memory_order_seq_cst);
        platform::futex_wait(m_gate_word, word,
                             static_cast<std::int64_t>(std::min<std::uint64_t>(
                                 m_stall_ns - (now - waited_since), 10'000'000)));
        m_gate_waiters.fetch_sub(1, std::memory_order_seq_cst);
    }
    if (!evicted.empty()) report(evicted);
    m_bytes.fetch_add(k_header_size + payload.size(), std::memory_order_relaxed);
    if (std::uint64_t since = m_refused_since.load(std::memory_order_relaxed);
        since != 0 && m_refused_since.compare_exchange_strong(since, 0)) {
        // A spell of back-pressure ended with this message.
        m_pressure_ns.fetch_add(platform::monotonic_ns() - since, std::memory_order_relaxed);
    }
    if (header.type == msg::k_handoff) {
        if (HandoffWatcher* w = m_watcher.load(std::memory_order_acquire)) {
            header.seq = seq;
            w->handoff_published(header, payload);
        }
    }
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

bool InprocBus::admits(const Topology& tree, const Header& header, ModuleId via) const {
    // The module putting the message here must be attached to this bus, and
    // may speak only for itself or, if it is a gateway that forwards up, for
    // modules of its own subtree; the owner may forward anything down.
    const TopologyNode* v = tree.find(via);
    const bool attached = v != nullptr && (v->id == m_id || v->parent == m_id);
    return attached &&
           ((header.sender == via && (header.hops == 0 || v->is_gateway())) ||
            (header.hops > 0 && v->is_gateway() && tree.in_subtree(header.sender, via)) ||
            (via == m_id && header.hops > 0));
}

void InprocBus::wake_readers() {
    if (m_armed.fetch_add(0, std::memory_order_acq_rel) != 0 ||
        m_remote.load(std::memory_order_seq_cst) != 0)
        wake_armed();
}

void InprocBus::wake_armed() {
    const std::uint32_t end = m_subscriber_end.load(std::memory_order_acquire);
    for (std::uint32_t i = 0; i < end; ++i) {
        const Subscribed* d = m_subscribers[i].load(std::memory_order_acquire);
        if (d != nullptr) d->bell.ring();
    }
}

}  // namespace hmk::detail
