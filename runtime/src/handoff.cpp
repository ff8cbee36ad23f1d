// SPDX-License-Identifier: Apache-2.0
// The runner's side of a hot swap or a move (docs/swap.md,
// docs/relocation.md): the old instance hands its state over the bus and
// retires at one point of the bus order; the replica restores that state,
// and speaks only once the old instance has said its last word.
#include <fmt/core.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "hmk/crc32c.hpp"
#include "hmk/platform/clock.hpp"
#include "hmk/snapshot_format.hpp"
#include "runner.hpp"
#include "runner_state.hpp"

namespace hmk::detail {

bool Runner::mine(Side side, const Header& h) const {
    // Only parent-bus messages are split: a moving gateway's child bus stays
    // where it is, and is read by one instance at a time.
    return side != Side::parent_bus ||
           (h.generation >= m_min_generation && h.generation < m_retire_generation);
}

void Runner::handoff_message(Side side, const Message& m) {
    const Header& h = m.header;
    if (h.destination != m_id || h.is_reply()) return;
    std::span<const std::byte> data;
    const auto d = decode_handoff(m.payload, data);
    if (!d) {
        log(LogLevel::warn, fmt::format("dropped a bad handoff message: {}", to_string(d.error())));
        return;
    }
    // `via` is stamped by the bus owner, the parent: a copy with via ==
    // parent and no hops really comes from it.
    const bool from_parent =
        side == Side::parent_bus && h.sender == m_parent && h.via == m_parent && h.hops == 0;
    if (m_replica) {
        // In shadow, the switch is where the replica stops taking messages
        // and waits for the old instance to retire.
        if (d->op == HandoffOp::switch_over && from_parent && d->id == m_handoff &&
            m_phase.load() == HandoffPhase::shadow) {
            m_scan = h.seq + 1;
            m_phase.store(HandoffPhase::holding, std::memory_order_release);
        }
        return;
    }
    // A recovering instance replays handoffs that are over.
    if (!m_live.load(std::memory_order_relaxed)) return;
    switch (d->op) {
        case HandoffOp::swap_prepare:
            if (!from_parent) return;
            m_handoff = d->id;
            m_handoff_move = false;
            // From here on its timers take the bus, so that the replica sees
            // them at the same point of the bus order.
            m_journal_timers = true;
            send_handoff_state(false);
            return;
        case HandoffOp::switch_over:
            if (from_parent && d->id == m_handoff && !m_handoff_move) retire("swapped");
            return;
        case HandoffOp::move_prepare:
            if (!from_parent) return;
            m_handoff = d->id;
            m_handoff_move = true;
            m_retire_generation = d->generation;
            m_payload_limit = d->payload_limit;
            if (m_flush_id != d->id) {
                m_flush_id = d->id;
                m_flushes.clear();
                m_flush_total = 0;
            }
            return;
        case HandoffOp::flush: {
            // Sent by each bus owner itself, routed by the old tree: when all
            // are in, nothing routed to our old place is still on its way.
            const TopologyNode* owner = m_host.tree_of(h.generation).find(d->bus);
            if (h.sender != d->bus || owner == nullptr || !owner->is_gateway()) return;
            if (d->id != m_flush_id) {
                m_flush_id = d->id;
                m_flushes.clear();
            }
            if (std::find(m_flushes.begin(), m_flushes.end(), d->bus) == m_flushes.end())
                m_flushes.push_back(d->bus);
            m_flush_total = d->buses;
            if (m_handoff_move && d->id == m_handoff && m_flushes.size() >= m_flush_total) {
                send_handoff_state(true);
                retire("moved");
            }
            return;
        }
        case HandoffOp::retire_now:
            if (!from_parent || !m_handoff_move || d->id != m_handoff) return;
            log(LogLevel::warn,
                fmt::format("retiring before every bus flushed ({} of {}, in from {}): a message "
                            "still on its way to the old place will not be handled",
                            m_flushes.size(), m_flush_total, fmt::join(m_flushes, " ")));
            send_handoff_state(true);
            retire("moved");
            return;
        default:
            return;
    }
}

Result<void, SendError> Runner::send_handoff(const Handoff& h, std::span<const std::byte> data) {
    std::byte fixed[k_handoff_max_fixed];
    const std::size_t n = encode_handoff(h, static_cast<std::uint32_t>(data.size()),
                                         std::span<std::byte, k_handoff_max_fixed>(fixed));
    m_chunk.assign(fixed, fixed + n);
    m_chunk.insert(m_chunk.end(), data.begin(), data.end());
    Outgoing out;
    out.destination = m_id;
    out.type = msg::k_handoff;
    out.payload = m_chunk;
    return publish_on(m_parent_bus, out, Origin::runtime);
}

void Runner::send_handoff_state(bool final_state) {
    m_module_state.clear();
    bool stateful = false;
    guarded("snapshot", [&] { stateful = m_module->snapshot(m_module_state); });
    if (m_state.load() != ModuleState::running) return;
    if (!stateful) m_module_state.clear();
    const std::vector<std::byte> body = encode_body(envelope(), m_module_state);
    // A move's chunks travel through other buses: the smallest on the way decides.
    std::uint32_t limit = m_parent_bus->ring().max_payload();
    if (final_state && m_payload_limit != 0) limit = std::min(limit, m_payload_limit);
    const std::size_t chunk_max = limit - k_handoff_header - k_snapshot_chunk_header;
    Handoff h;
    h.op = HandoffOp::state;
    h.flags = stateful ? k_handoff_has_state : 0;
    h.id = m_handoff;
    h.chunk.input_seq = parent_next() - 1;
    h.chunk.snapshot_id = m_handoff;
    h.chunk.total_size = static_cast<std::uint32_t>(body.size());
    h.chunk.body_crc = crc32c(body);
    h.chunk.state_version = m_kind->state_version;
    for (std::size_t offset = 0; offset < body.size(); offset += chunk_max) {
        const std::size_t n = std::min(chunk_max, body.size() - offset);
        h.chunk.offset = static_cast<std::uint32_t>(offset);
        if (auto r = send_handoff(h, std::span<const std::byte>(body).subspan(offset, n)); !r) {
            // The replica then never gets it whole and is dropped (a swap is
            // rolled back; a move's replica starts without state).
            log(LogLevel::error,
                fmt::format("could not send its state to its replica: {}", to_string(r.error())));
            return;
        }
    }
    log(LogLevel::debug,
        fmt::format("sent its state ({} bytes, {} messages) for handoff {}", body.size(),
                    (body.size() + chunk_max - 1) / chunk_max, m_handoff));
}

void Runner::retire(const char* why) {
    Handoff h;
    h.op = HandoffOp::retired;
    h.id = m_handoff;
    h.parent_cursor = parent_next();
    h.child_cursor = m_child_bus != nullptr ? child_next() : 0;
    if (auto r = send_handoff(h); !r) {
        log(LogLevel::error,
            fmt::format("could not tell its replica it retired: {}", to_string(r.error())));
    }
    // From here on it sends nothing and takes nothing: the replica is the module.
    m_retired.store(true, std::memory_order_release);
    m_stop.store(true);
    log(LogLevel::info, fmt::format("{}: handed over to its replica at seq {} of bus {}", why,
                                    parent_next() - 1, m_parent_bus->name()));
}

bool Runner::scan(BusPort& bus) {
    // Like drain(), from the journal where the ring has moved on: a replica
    // slow to start on a busy bus still finds the old instance's words.
    m_catch_up_pending[0] = false;
    int n = 0;
    while (n < 256 && m_state.load(std::memory_order_relaxed) == ModuleState::running &&
           !m_crash.load(std::memory_order_relaxed)) {
        const HandoffPhase phase = m_phase.load(std::memory_order_relaxed);
        if (phase != HandoffPhase::awaiting_state && phase != HandoffPhase::holding) break;
        const Fetched f = fetch(bus, m_scan, Side::parent_bus, Visibility::committed);
        if (f.status == Fetched::Status::empty || f.status == Fetched::Status::pending) break;
        ++n;
        if (f.status == Fetched::Status::gap) {
            // The state or the retirement may be in what it cannot read.
            fail(fmt::format("fell behind bus {} while taking over (seq {}..{} {})", bus.name(),
                             f.gap_first, f.gap_last,
                             f.from_journal ? "in neither the bus nor its journal"
                                            : "overwritten, and no journal"));
            break;
        }
        const std::span<const std::byte> record(m_record.data(), f.size);
        const auto header = decode_header(record, k_max_payload, Framing::exact);
        if (!header || header->type != msg::k_handoff || header->destination != m_id) continue;
        scanned(Message{*header, record.subspan(k_header_size)});
    }
    return n > 0;
}

void Runner::scanned(const Message& m) {
    const Header& h = m.header;
    std::span<const std::byte> data;
    const auto d = decode_handoff(m.payload, data);
    if (!d || d->id != m_handoff) return;
    // Its own sends are held back: anything from the module is the old instance's.
    if (h.sender != m_id) return;
    if (d->op == HandoffOp::state && !m_state_ready) {
        if (!take_chunk(*d, data)) return;
        m_state_ready = true;
        if (m_handoff_move) return;  // applied when the old instance retires
        if (!apply_handoff_state()) return;
        // The state includes everything up to the snapshot: shadow from there.
        m_parent_cursor = std::max(m_parent_cursor, m_handoff_chunk.input_seq + 1);
        m_cursor.store(m_parent_cursor, std::memory_order_release);
        m_phase.store(HandoffPhase::shadow, std::memory_order_release);
        log(LogLevel::debug,
            fmt::format("restored the running instance's state (seq {}): shadowing it",
                        m_handoff_chunk.input_seq));
        return;
    }
    if (d->op != HandoffOp::retired) return;
    if (m_handoff_move) {
        if (!m_state_ready) {
            // It crashed or hung before it could hand its state over (the
            // parent said its last word for it): as after any crash, what it
            // had is lost, and the module goes on from a fresh start.
            log(LogLevel::warn,
                "the old instance retired without handing its whole state over: going on "
                "from a fresh state");
        } else if (!apply_handoff_state()) {
            return;
        }
        // A gateway goes on with its child bus where the old instance stopped.
        if (m_child_bus != nullptr && d->child_cursor != 0) {
            m_child_cursor = d->child_cursor;
            m_child_cursor_seen.store(m_child_cursor, std::memory_order_release);
        }
    } else if (m_phase.load() != HandoffPhase::holding) {
        return;
    }
    replica_live(h.seq);
}

bool Runner::take_chunk(const Handoff& d, std::span<const std::byte> data) {
    const SnapshotChunk& c = d.chunk;
    if (c.offset == 0) {
        m_handoff_chunk = c;
        m_handoff_body.assign(c.total_size, std::byte{0});
        m_handoff_have = 0;
        m_handoff_stateful = (d.flags & k_handoff_has_state) != 0;
    }
    if (c.total_size != m_handoff_chunk.total_size || c.offset != m_handoff_have ||
        c.body_crc != m_handoff_chunk.body_crc || m_handoff_body.size() != c.total_size) {
        m_handoff_have = 0;  // out of order: wait for a chunk at offset 0 again
        return false;
    }
    std::copy(data.begin(), data.end(),
              m_handoff_body.begin() + static_cast<std::ptrdiff_t>(c.offset));
    m_handoff_have += static_cast<std::uint32_t>(data.size());
    if (m_handoff_have != c.total_size) return false;
    if (crc32c(m_handoff_body) != c.body_crc) {
        fail("the old instance's state arrived damaged (CRC mismatch)");
        return false;
    }
    return true;
}

bool Runner::apply_handoff_state() {
    if (m_handoff_stateful) {
        if (auto r = restore(m_handoff_body, m_handoff_chunk.state_version); !r) {
            if (m_state.load() == ModuleState::running)
                fail("cannot restore the old instance's state: " + r.error());
            return false;
        }
    } else {
        // A kind without snapshots keeps no state: a fresh start, keeping
        // only the correlation counter (no request id is used twice).
        std::span<const std::byte> state;
        if (auto e = decode_body(m_handoff_body, state)) m_correlation = e->correlation;
        m_event_ns = platform::monotonic_ns();
        guarded("on_start", [&] { m_module->on_start(); });
    }
    m_handoff_body = {};
    return m_state.load() == ModuleState::running;
}

void Runner::replica_live(std::uint64_t at_seq) {
    // From the old instance's last word on, this one is the module: it
    // speaks, and its timers and snapshots start once it has handled up to
    // that word (the old one's last timer messages come before it).
    m_replica = false;
    m_live_at = at_seq;
    m_phase.store(HandoffPhase::live, std::memory_order_release);
    // Its buses wait for it from now on, as for any instance.
    attach_readers(Gated::yes);
    if (m_parent_cursor > at_seq) go_live();
}

}  // namespace hmk::detail
