// SPDX-License-Identifier: Apache-2.0
#include "runner.hpp"

#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <exception>

#include "hmk/crc32c.hpp"
#include "hmk/detail/endian.hpp"
#include "hmk/platform/clock.hpp"
#include "hmk/platform/futex.hpp"
#include "hmk/snapshot_format.hpp"

namespace hmk::detail {
namespace {

// Idle rounds a runner polls (yielding the CPU each time) before it sleeps on
// its doorbell: catches the next message of a stream without a futex round
// trip, and gives the core away to any thread that has work meanwhile.
constexpr int k_idle_spins = 64;
// A counter only the runner's thread writes: a plain load and store (no locked
// read-modify-write on the message path); other threads read it with a load.
void bump(std::atomic<std::uint64_t>& counter, std::uint64_t by = 1) {
    counter.store(counter.load(std::memory_order_relaxed) + by, std::memory_order_release);
}

// Messages taken from one bus before the runner looks at its other bus and timers.
constexpr int k_batch = 64;
// A runner waiting for its journal to hand it a message looks again this often.
constexpr std::int64_t k_catch_up_poll_ns = 1'000'000;

}  // namespace

Runner::Runner(RunnerHost& host, const ModuleSpec* spec, const ModuleKind* kind,
               BusPort* parent_bus, InprocBus* child_bus, Doorbell bell, StartPlan plan,
               CatchUp* catch_up, CatchUp* child_catch_up)
    : m_host(host),
      m_id(spec != nullptr ? spec->id : k_root_id),
      m_path(spec != nullptr ? spec->path : "/"),
      m_config(spec != nullptr ? spec->config : ModuleConfig{}),
      m_kind(kind),
      m_gateway(child_bus != nullptr),
      m_eavesdrop(kind != nullptr && kind->eavesdrop == Eavesdrop::yes),
      m_journals(kind != nullptr && kind->journals == Journals::yes),
      m_journal_timers(spec != nullptr && spec->recovery == Recovery::journal),
      m_snapshot_every(spec != nullptr && spec->recovery == Recovery::journal ? spec->snapshot_every
                                                                              : 0),
      m_policy(spec != nullptr ? spec->bus.up : UpPolicy{}),
      m_parent(spec != nullptr
                   ? (plan.tree != nullptr ? *plan.tree : host.topology()).find(spec->id)->parent
                   : k_no_module),
      m_parent_bus(parent_bus),
      m_report_progress(host.wants_progress()),
      m_child_bus(child_bus),
      m_catch_up(catch_up),
      m_child_catch_up(child_catch_up),
      m_bell(bell),
      m_plan(std::move(plan)),
      m_epoch(m_plan.epoch),
      m_random(m_plan.seed) {
    std::size_t largest = 0;
    if (m_parent_bus != nullptr) {
        m_parent_cursor = m_plan.from_seq != 0 ? m_plan.from_seq : m_parent_bus->ring().head() + 1;
        largest = m_parent_bus->ring().max_message();
    }
    if (m_child_bus != nullptr) {
        m_child_cursor =
            m_plan.child_from_seq != 0 ? m_plan.child_from_seq : m_child_bus->ring().head() + 1;
        largest = std::max<std::size_t>(largest, m_child_bus->ring().max_message());
    }
    m_record.resize(largest);
    m_cursor.store(m_parent_cursor, std::memory_order_release);
    m_child_cursor_seen.store(m_child_cursor, std::memory_order_release);
    m_pull_record.resize(largest);
    m_suppress_left = m_plan.suppress;
    m_live_at = m_plan.live_at;
    m_live.store(m_live_at == 0 || m_parent_bus == nullptr || m_parent_cursor > m_live_at);
    m_plan.tree = nullptr;  // only its parent was needed
    if (m_plan.handoff != 0) {
        // A replica: nothing of its own until the old instance has retired.
        m_replica = true;
        m_handoff = m_plan.handoff;
        m_handoff_move = m_plan.handoff_move;
        m_min_generation = m_plan.min_generation;
        // The old instance's timers take the bus from the handoff on.
        m_journal_timers = m_journal_timers || !m_handoff_move;
        m_phase.store(HandoffPhase::awaiting_state);
        m_live.store(false);
        m_scan = m_parent_cursor;
    }
    attach_readers(m_replica ? Gated::no : Gated::yes);
}

Runner::~Runner() {
    if (m_abandoned.load()) return;
    request_stop();
    join();
    detach_readers();
}

void Runner::attach_readers(Gated gated) {
    if (m_parent_bus != nullptr) {
        m_ring_own[0].store(m_parent_cursor, std::memory_order_release);
        m_ring_pos[0] = m_parent_bus->attach_reader(m_ring_own[0], m_id, m_epoch, gated);
        ring_moved(0);
    }
    if (m_child_bus != nullptr) {
        m_ring_own[1].store(m_child_cursor, std::memory_order_release);
        m_ring_pos[1] = m_child_bus->attach_reader(m_ring_own[1], m_id, m_epoch, gated);
        ring_moved(1);
    }
}

void Runner::detach_readers() {
    if (m_parent_bus != nullptr) m_parent_bus->detach_reader(m_ring_own[0]);
    if (m_child_bus != nullptr) m_child_bus->detach_reader(m_ring_own[1]);
}

std::vector<RunnerHost::ManageSend> RunnerHost::manage(const Message& message) {
    if (message.header.is_reply()) return {};
    const TopologyNode* me = topology().find(message.header.destination);
    return {ManageSend{false, message.header.sender, message.header.correlation, true,
                       fmt::format("error {} manages no subtree of its own",
                                   me != nullptr ? me->path : "this module")}};
}

void Runner::start() {
    m_thread = std::thread([this] {
        if (m_cpu_share != nullptr) {
            if (auto added = m_cpu_share->add_thread(static_cast<pid_t>(::gettid())); !added) {
                m_host.logger().log(LogLevel::warn, m_path,
                                    "its CPU share is not held: " + added.error());
            }
        }
        run();
    });
}

void Runner::request_stop() {
    m_stop.store(true, std::memory_order_seq_cst);
    m_bell.word->fetch_add(1, std::memory_order_seq_cst);
    platform::futex_wake(*m_bell.word, 1, m_bell.scope);
}

void Runner::crash(std::string why) {
    if (m_crash.load()) return;
    m_crash_why = std::move(why);
    m_crash.store(true, std::memory_order_seq_cst);
    m_bell.word->fetch_add(1, std::memory_order_seq_cst);
    platform::futex_wake(*m_bell.word, 1, m_bell.scope);
}

bool Runner::join(std::chrono::milliseconds timeout) {
    if (!m_thread.joinable()) return true;
    if (timeout.count() >= 0) {
        std::unique_lock lock(m_finish_mutex);
        if (!m_finish_cv.wait_for(lock, timeout, [&] { return m_finished.load(); })) return false;
    }
    m_thread.join();
    return true;
}

void Runner::abandon() {
    m_abandoned.store(true);
    m_stop.store(true);
    // Its buses no longer wait for it (its thread, should it come back,
    // reads nothing more).
    detach_readers();
    if (m_thread.joinable()) m_thread.detach();
}

ModuleStats Runner::stats() const {
    ModuleStats s;
    s.state = m_state.load();
    if (s.state == ModuleState::running && !m_live.load(std::memory_order_acquire))
        s.state = ModuleState::recovering;
    s.rx = m_rx.load();
    s.tx = m_tx.load();
    s.seen = m_seen.load();
    s.fwd_up = m_fwd_up.load();
    s.fwd_down = m_fwd_down.load();
    s.denied = m_denied.load();
    s.lost = m_lost.load();
    s.invalid = m_invalid.load();
    s.send_errors = m_send_errors.load();
    s.epoch = m_epoch;
    s.caught_up = m_caught_up.load();
    s.suppressed = m_suppressed.load();
    s.snapshots = m_snapshots.load();
    s.heartbeat = m_heartbeat.load();
    s.cursor = m_cursor.load();
    s.handoff = static_cast<std::uint8_t>(m_phase.load(std::memory_order_acquire));
    s.read_ahead = m_pulled.load();
    s.waited_ns = m_waited_ns.load();
    return s;
}

void Runner::fail(const std::string& why) {
    log(LogLevel::error, why);
    m_state.store(ModuleState::failed);
}

StartResult Runner::start_module() {
    guarded("create", [&] {
        auto made = m_kind->create(*this);
        if (!made) {
            fail(fmt::format("cannot create module of kind '{}': {}", m_kind->name, made.error()));
            return;
        }
        m_module = std::move(made).value();
    });
    if (m_state.load() == ModuleState::failed) return StartResult::failed;
    m_state.store(ModuleState::running);
    if (m_replica) return StartResult::ok;  // its state comes from the old instance
    if (m_plan.restore) {
        if (auto r = restore(m_plan.body, m_plan.state_version); !r) {
            fail("cannot restore its snapshot: " + r.error());
            return StartResult::restore_failed;
        }
    } else {
        m_event_ns = m_plan.start_ns != 0 ? m_plan.start_ns : platform::monotonic_ns();
        guarded("on_start", [&] { m_module->on_start(); });
    }
    m_plan.body = {};
    if (m_state.load() != ModuleState::running) return StartResult::failed;
    if (m_live) go_live();
    return StartResult::ok;
}

Result<void, std::string> Runner::restore(std::span<const std::byte> body, std::uint32_t version) {
    std::span<const std::byte> state;
    const Envelope e = HMK_TRY(decode_body(body, state));
    Result<void, std::string> restored{};
    guarded("restore", [&] { restored = m_module->restore(state, version); });
    if (m_state.load() != ModuleState::running) return Err{std::string("restore() threw")};
    if (!restored) return restored;
    m_random.set_state(e.random);
    m_next_timer = e.next_timer;
    m_correlation = e.correlation;
    m_handled = e.handled;
    for (const TimerState& t : e.timers) {
        m_timers[t.id] = t;
        if (!t.in_flight) m_deadlines.emplace(t.deadline_ns, t.id);
    }
    return {};
}

void Runner::run() {
    const StartResult result = start_module();
    m_host.started(m_id, m_epoch, result);
    if (result == StartResult::ok) {
        int idle = 0;
        while (!m_stop.load(std::memory_order_relaxed) && m_state.load() == ModuleState::running) {
            if (m_crash.load(std::memory_order_acquire)) {
                fail(m_crash_why);
                break;
            }
            bool work = false;
            if (m_parent_bus != nullptr)
                work |= drain(*m_parent_bus, m_parent_cursor, Side::parent_bus);
            if (m_child_bus != nullptr)
                work |= drain(*m_child_bus, m_child_cursor, Side::child_bus);
            if (m_abandoned.load(std::memory_order_relaxed)) return;
            if (m_live) work |= fire_timers();
            if (work) {
                if (m_state.load(std::memory_order_relaxed) == ModuleState::running)
                    guarded("on_batch", [&] { m_module->on_batch(); });
                if (m_report_progress) m_host.progress(stats());
                idle = 0;
            } else if (++idle < k_idle_spins) {
                std::this_thread::yield();
            } else {
                sleep_until_work();
                idle = 0;
            }
        }
        if (m_abandoned.load()) return;
        // A journal stopped in order first takes in what is left on its bus,
        // so the journal holds the whole run.
        if (m_journals && m_parent_bus != nullptr && m_state.load() == ModuleState::running) {
            while (drain(*m_parent_bus, m_parent_cursor, Side::parent_bus)) {
            }
            guarded("on_batch", [&] { m_module->on_batch(); });
        }
        if (m_state.load() == ModuleState::running) {
            guarded("on_stop", [&] { m_module->on_stop(); });
            if (m_state.load() == ModuleState::running) m_state.store(ModuleState::stopped);
        }
        if (m_report_progress) m_host.progress(stats());
        // Done reading: nobody waits for its cursors any more.
        detach_readers();
        if (m_state.load() == ModuleState::failed)
            m_host.failed(m_id, m_epoch, "a handler failed (see above)");
    }
    {
        const std::lock_guard lock(m_finish_mutex);
        m_finished.store(true);
    }
    m_finish_cv.notify_all();
}

bool Runner::drain(BusPort& bus, std::uint64_t& cursor, Side side) {
    // A monitor reads what is published; everyone else only what its journal
    // has committed (the same, unless the bus waits for durability).
    const Visibility visibility =
        side == Side::parent_bus && m_journals ? Visibility::published : Visibility::committed;
    const int s = side == Side::parent_bus ? 0 : 1;
    if (m_replica) {
        // A replica looks ahead for the old instance's state or retirement,
        // and reads its child bus only once it is the module.
        const HandoffPhase phase = m_phase.load(std::memory_order_relaxed);
        if (phase == HandoffPhase::awaiting_state || phase == HandoffPhase::holding)
            return side == Side::parent_bus && scan(bus);
        if (side == Side::child_bus && phase != HandoffPhase::live) return false;
    }
    m_catch_up_pending[s] = false;
    int n = 0;
    auto handled = [&] {
        // Counted once fully handled (forwards included), so that "seen equals
        // published" means the module is done with everything on its buses.
        bump(m_seen);
        ++n;
        if (side == Side::parent_bus) {
            m_cursor.store(parent_next(), std::memory_order_release);
        } else {
            m_child_cursor_seen.store(child_next(), std::memory_order_release);
        }
    };
    while (n < k_batch && m_state.load(std::memory_order_relaxed) == ModuleState::running &&
           !m_abandoned.load(std::memory_order_relaxed) &&
           !m_crash.load(std::memory_order_relaxed) && !m_retired.load(std::memory_order_relaxed) &&
           (!m_replica || m_phase.load(std::memory_order_relaxed) == HandoffPhase::shadow ||
            m_phase.load(std::memory_order_relaxed) == HandoffPhase::live)) {
        if (!m_inbox[s].empty()) {
            // Read ahead while a send waited for room: it comes first.
            // (A pull while handling it appends; the front stays put.)
            Pulled& p = m_inbox[s].front();
            m_handling[s] = p.seq;
            handle(side, p.bytes);
            m_handling[s] = 0;
            m_spare.push_back(std::move(p.bytes));
            m_inbox[s].pop_front();
            handled();
            continue;
        }
        const Fetched f = fetch(bus, cursor, side, visibility);
        ring_moved(s);
        if (f.status == Fetched::Status::empty || f.status == Fetched::Status::pending) break;
        if (f.status == Fetched::Status::gap) {
            bump(m_lost, f.gap_last - f.gap_first + 1);
            // From the journal: what those messages did is lost for good (its
            // state, if it was recovering, is not what it was): loudly.
            log(f.from_journal ? LogLevel::error : LogLevel::warn,
                f.from_journal
                    ? fmt::format("seq {}..{} of bus {} are in neither the bus nor its journal: "
                                  "what they would have done is lost",
                                  f.gap_first, f.gap_last, bus.name())
                    : fmt::format("fell behind on bus {}: lost seq {}..{}", bus.name(), f.gap_first,
                                  f.gap_last));
            continue;
        }
        m_handling[s] = cursor - 1;
        handle(side, std::span<const std::byte>(m_record.data(), f.size));
        m_handling[s] = 0;
        handled();
    }
    // Publishers that wait for room may find some now.
    if (n > 0) bus.reader_moved();
    return n > 0;
}

bool Runner::wanted(std::span<const std::byte> record) const {
    // Whatever a gateway, an eavesdropper, an instance not yet live or one
    // in a handoff may act on is kept; others keep only what is theirs.
    if (m_gateway || m_eavesdrop || !m_live.load(std::memory_order_relaxed) || m_handoff != 0)
        return true;
    const auto header = decode_header(record, k_max_payload, Framing::exact);
    return !header || msg::is_runtime_type(header->type) || is_for(m_id, *header);
}

bool Runner::pull(Side side) {
    const int s = side == Side::parent_bus ? 0 : 1;
    BusPort* bus = s == 0 ? m_parent_bus : static_cast<BusPort*>(m_child_bus);
    if (bus == nullptr || m_catching_up[s] || m_replica) return true;
    std::uint64_t& cursor = s == 0 ? m_parent_cursor : m_child_cursor;
    const Visibility visibility =
        s == 0 && m_journals ? Visibility::published : Visibility::committed;
    // At most a ring's worth waits in the inbox: past that, the send fails
    // and the module must return from its handler to read on. A gateway,
    // which keeps every record to forward it, gets more room: a forward it
    // gives up on is lost (docs/delivery.md).
    const std::size_t limit = bus->ring().slot_count() * (m_gateway ? 16 : 1);
    for (;;) {
        std::uint64_t at = cursor;
        const ReadResult r = bus->ring().read(at, m_pull_record, visibility);
        if (r.status != ReadStatus::ok) break;  // nothing new, or lapped: drain() tells
        if (m_inbox[s].size() >= limit) {
            ring_moved(s);
            return false;  // more to read than room to keep it
        }
        cursor = at;
        const std::span<const std::byte> record(m_pull_record.data(), r.size);
        if (wanted(record)) {
            std::vector<std::byte> bytes;
            if (!m_spare.empty()) {
                bytes = std::move(m_spare.back());
                m_spare.pop_back();
            }
            bytes.assign(record.begin(), record.end());
            m_inbox[s].push_back(Pulled{r.seq, std::move(bytes)});
            bump(m_pulled);
        } else {
            // Nothing to do with it: handled as it is read.
            bump(m_seen);
            if (s == 0) ++m_read_since_snapshot;
        }
    }
    ring_moved(s);
    return true;
}

Result<std::uint64_t, SendError> Runner::put(BusPort& bus, const Header& header,
                                             std::span<const std::byte> payload, Pull pull_ok) {
    auto r = bus.publish(header, payload, m_id);
    // A monitor that is behind its own bus gets `full` from the journal
    // gate: it must read on, not wait for itself.
    if (r || r.error() != SendError::full || m_journals) return r;
    const std::uint64_t began = platform::monotonic_ns();
    const std::uint64_t limit = began + (std::uint64_t{bus.wait_limit_ms()} + 1000) * 1'000'000;
    std::int64_t nap = 20'000;
    while (!r && r.error() == SendError::full) {
        if (m_stop.load(std::memory_order_relaxed) || m_crash.load(std::memory_order_relaxed) ||
            m_abandoned.load(std::memory_order_relaxed)) {
            r = Err{SendError::stopped};
            break;
        }
        // Never wait for itself: what it has not read yet, it reads now. With
        // a ring's worth read ahead and more behind it, waiting on could wait
        // for itself: the send fails, and the module returns to read on.
        const bool kept_up =
            pull_ok == Pull::no || pull(&bus == m_parent_bus ? Side::parent_bus : Side::child_bus);
        r = bus.publish(header, payload, m_id);
        if (!kept_up && !r) break;
        if (r || r.error() != SendError::full) break;
        if (platform::monotonic_ns() >= limit) break;
        bus.wait_for_room(nap);
        nap = std::min<std::int64_t>(nap * 2, 1'000'000);
    }
    m_waited_ns.fetch_add(platform::monotonic_ns() - began, std::memory_order_relaxed);
    return r;
}

Runner::Fetched Runner::fetch(BusPort& bus, std::uint64_t& cursor, Side side,
                              Visibility visibility) {
    CatchUp* catch_up = side == Side::parent_bus ? m_catch_up : m_child_catch_up;
    const int s = side == Side::parent_bus ? 0 : 1;
    Fetched f;
    for (;;) {
        if (catch_up != nullptr && m_catching_up[s]) {
            if (cursor >= bus.ring().oldest()) {
                m_catching_up[s] = false;  // the ring has it again
                continue;
            }
            f.from_journal = true;
            std::uint64_t missing_last = 0;
            switch (catch_up->read(cursor, m_record, f.size, missing_last)) {
                case CatchUp::Status::pending:
                    m_catch_up_pending[s] = true;
                    f.status = Fetched::Status::pending;
                    return f;
                case CatchUp::Status::missing:
                    f.status = Fetched::Status::gap;
                    f.gap_first = cursor;
                    f.gap_last = std::max(missing_last, cursor);
                    cursor = f.gap_last + 1;
                    return f;
                case CatchUp::Status::ok:
                    ++cursor;
                    bump(m_caught_up);
                    f.status = Fetched::Status::record;
                    return f;
            }
        }
        const ReadResult r = bus.ring().read(cursor, m_record, visibility);
        if (r.status == ReadStatus::empty) return f;
        if (r.status == ReadStatus::lost) {
            if (catch_up != nullptr) {
                // Fell off the ring's window: the journal has the rest.
                cursor = r.lost_first;
                m_catching_up[s] = true;
                continue;
            }
            f.status = Fetched::Status::gap;
            f.gap_first = r.lost_first;
            f.gap_last = r.lost_last;
            return f;
        }
        f.status = Fetched::Status::record;
        f.size = r.size;
        return f;
    }
}

void Runner::handle(Side side, std::span<const std::byte> record) {
    const auto header = decode_header(record, k_max_payload, Framing::exact);
    if (!header) {
        bump(m_invalid);
        log(LogLevel::warn, fmt::format("dropped a bad record: {}", to_string(header.error())));
        return;
    }
    const Message message{*header, record.subspan(k_header_size)};
    // In a move, the old instance and its replica split the parent bus by
    // generation (docs/relocation.md): what is not ours, we neither take
    // nor forward.
    if (!mine(side, message.header)) return;
    m_event_ns = message.header.timestamp_ns;

    if (m_gateway) {
        const Forward f =
            route(m_host.tree_of(message.header.generation), m_id, side, message.header, m_policy);
        if (f.up) forward(Direction::up, message);
        if (f.down) forward(Direction::down, message);
        if (f.denied) bump(m_denied);
    }
    const bool reach_live = side == Side::parent_bus && !m_live &&
                            m_phase.load(std::memory_order_relaxed) == HandoffPhase::live &&
                            message.header.seq >= m_live_at;
    if (side == Side::parent_bus) ++m_read_since_snapshot;
    if (!runtime_message(side, message)) {
        const bool deliver =
            m_eavesdrop ? !is_own_forward(m_id, message.header) : is_for(m_id, message.header);
        if (deliver) {
            bump(m_rx);
            ++m_handled;
            ++m_since_snapshot;
            // Liveness is answered by the runtime, so it also proves the
            // module's thread is taking messages.
            if (message.header.type == msg::k_ping && !message.header.is_reply() &&
                message.header.destination == m_id) {
                Outgoing pong;
                pong.destination = message.header.sender;
                pong.type = msg::k_ping;
                pong.correlation = message.header.correlation;
                pong.flags = k_flag_reply;
                pong.payload = as_bytes("pong");
                (void)publish_on(m_parent_bus != nullptr ? m_parent_bus : m_child_bus, pong,
                                 Origin::runtime);
                // A kind that eavesdrops sees every message of its bus, this
                // one too (a monitor journals it).
                if (m_eavesdrop) guarded("on_message", [&] { m_module->on_message(message); });
            } else {
                guarded("on_message", [&] { m_module->on_message(message); });
            }
        }
    }
    if (reach_live && m_state.load(std::memory_order_relaxed) == ModuleState::running) go_live();
    maybe_snapshot();
}

bool Runner::runtime_message(Side side, const Message& message) {
    const Header& h = message.header;
    if (!msg::is_runtime_type(h.type)) return false;
    const bool from_parent =
        side == Side::parent_bus && h.sender == m_parent && h.via == m_parent && h.hops == 0;
    const bool to_me = h.destination == m_id && !is_own_forward(m_id, h) && !h.is_reply();
    switch (h.type) {
        case msg::k_stop:
            // During a replay, a stop in the journal was for an earlier instance.
            if (!to_me || !m_live) break;
            // Only the parent may stop a module. `via` is stamped by the bus
            // owner, which is the parent, so a copy with via == parent really
            // comes from it.
            if (m_parent != k_no_module && h.sender == m_parent && h.via == m_parent) {
                log(LogLevel::info, "stopping: asked by the parent");
                m_stop.store(true);
                return true;
            } else {
                bump(m_denied);
                const TopologyNode* from = m_host.topology().find(h.sender);
                log(LogLevel::warn,
                    fmt::format("refused 'stop' from {}: only the parent may stop this module",
                                from != nullptr ? from->path : fmt::format("#{}", h.sender)));
            }
            return true;
        case msg::k_heartbeat:
            if (from_parent) m_heartbeat.store(h.seq, std::memory_order_release);
            break;
        case msg::k_timer:
            if (side == Side::parent_bus && m_journal_timers && h.sender == m_id && h.via == m_id &&
                h.destination == m_id && h.hops == 0) {
                handle_timer_message(message);
            }
            break;
        case msg::k_snapshot_request:
            if (to_me && from_parent) m_snapshot_due = true;
            break;
        case msg::k_handoff:
            handoff_message(side, message);
            break;
        case msg::k_manage: {
            const bool request = to_me && from_parent && m_live;
            const bool answer = side == Side::child_bus && h.destination == m_id && h.is_reply() &&
                                h.hops == 0 && h.via == h.sender;
            if (!request && !answer) {
                if (to_me) bump(m_denied);
                break;
            }
            for (const RunnerHost::ManageSend& send : m_host.manage(message)) {
                Outgoing out;
                out.destination = send.destination;
                out.type = msg::k_manage;
                out.correlation = send.correlation;
                if (send.reply) out.flags = k_flag_reply;
                out.payload = as_bytes(send.text);
                (void)publish_on(send.down ? m_child_bus : m_parent_bus, out, Origin::runtime);
            }
            break;
        }
        default:
            break;
    }
    // Kinds that eavesdrop (monitors, taps) see the runtime's messages too.
    if (m_eavesdrop && !is_own_forward(m_id, h)) {
        bump(m_rx);
        guarded("on_message", [&] { m_module->on_message(message); });
    }
    return true;
}

void Runner::handle_timer_message(const Message& m) {
    if (m.payload.size() != 8) return;
    const TimerId id = detail::get_le<std::uint64_t>(m.payload.data(), 0);
    const auto it = m_timers.find(id);
    if (it == m_timers.end()) return;  // cancelled after it fired
    TimerState& t = it->second;
    if (t.period_ns != 0) {
        // The next one counts from when this one was on the bus, so a replay
        // schedules it exactly as the original did.
        t.deadline_ns = m.header.timestamp_ns + t.period_ns;
        t.in_flight = false;
        m_deadlines.emplace(t.deadline_ns, id);
    } else {
        m_timers.erase(it);
    }
    ++m_handled;
    ++m_since_snapshot;
    guarded("on_timer", [&] { m_module->on_timer(id); });
}

void Runner::forward(Direction direction, const Message& message) {
    BusPort* bus = direction == Direction::up ? m_parent_bus : static_cast<BusPort*>(m_child_bus);
    if (bus == nullptr) return;
    Header h = message.header;
    std::span<const std::byte> payload = message.payload;
    Verdict verdict = Verdict::forward;
    guarded("on_forward",
            [&] { verdict = m_module->on_forward(direction, message, m_translation); });
    if (verdict == Verdict::drop || m_state.load() != ModuleState::running) {
        bump(m_denied);
        return;
    }
    if (verdict == Verdict::translate) {
        h.type = m_translation.type;
        payload = m_translation.payload;
    }
    h.hops = static_cast<std::uint8_t>(h.hops + 1);
    h.payload_size = static_cast<std::uint32_t>(payload.size());
    if (auto r = put(*bus, h, payload, Pull::yes); !r) {
        m_send_errors.fetch_add(1, std::memory_order_relaxed);
        log(LogLevel::warn, fmt::format("cannot forward {} to bus {}: {}",
                                        direction == Direction::up ? "up" : "down", bus->name(),
                                        to_string(r.error())));
        return;
    }
    bump(direction == Direction::up ? m_fwd_up : m_fwd_down);
}

Result<void, SendError> Runner::publish_on(BusPort* bus, const Outgoing& message, Origin origin) {
    if (m_stop.load(std::memory_order_relaxed) || m_abandoned.load(std::memory_order_relaxed) ||
        m_retired.load(std::memory_order_relaxed))
        return Err{SendError::stopped};
    if (bus == nullptr) return Err{SendError::no_child_bus};
    if (m_replica) {
        // The old instance still speaks for the module: whatever this one
        // would say now, that one says (or has said).
        bump(m_suppressed);
        return {};
    }
    if (origin == Origin::module && msg::is_runtime_type(message.type)) {
        m_send_errors.fetch_add(1, std::memory_order_relaxed);
        return Err{SendError::rejected};
    }
    Header h = header_for(m_id, message);
    if (origin == Origin::operator_) {
        h.flags = static_cast<std::uint16_t>(h.flags | k_flag_operator);
    } else {
        h.flags = static_cast<std::uint16_t>(h.flags & ~k_flag_operator);
        // A recovering instance: what the old one sent is on the bus already
        // (even to a module that has since left the system).
        if (m_suppress_left > 0 && h.type != msg::k_timer && h.type != msg::k_snapshot &&
            h.type != msg::k_handoff && h.type != msg::k_manage) {
            --m_suppress_left;
            bump(m_suppressed);
            return {};
        }
    }
    if (message.destination != k_no_module &&
        m_host.topology().find(message.destination) == nullptr) {
        m_send_errors.fetch_add(1, std::memory_order_relaxed);
        return Err{SendError::unknown_destination};
    }
    // The operator's sends come from other threads: they wait, but do not read.
    auto r = put(*bus, h, message.payload, origin == Origin::operator_ ? Pull::no : Pull::yes);
    if (!r) {
        m_send_errors.fetch_add(1, std::memory_order_relaxed);
        return Err{r.error()};
    }
    m_tx.fetch_add(1, std::memory_order_relaxed);
    return {};
}

Result<void, SendError> Runner::send(const Outgoing& message) {
    // A gateway reaches its own descendants on its child bus: that is the one
    // path to them. The root has only its child bus.
    const bool below = m_child_bus != nullptr && message.destination != k_no_module &&
                       message.destination != m_id &&
                       m_host.topology().in_subtree(message.destination, m_id);
    BusPort* bus = (m_parent_bus == nullptr || below) ? m_child_bus : m_parent_bus;
    return publish_on(bus, message, Origin::module);
}

Result<void, SendError> Runner::send_child(const Outgoing& message) {
    if (m_child_bus == nullptr) return Err{SendError::no_child_bus};
    return publish_on(m_child_bus, message, Origin::module);
}

Result<void, SendError> Runner::send_as(const Outgoing& message) {
    const bool below = m_child_bus != nullptr && message.destination != k_no_module &&
                       message.destination != m_id &&
                       m_host.topology().in_subtree(message.destination, m_id);
    BusPort* bus = (m_parent_bus == nullptr || below) ? m_child_bus : m_parent_bus;
    return publish_on(bus, message, Origin::operator_);
}

std::uint64_t Runner::next_correlation() {
    // Unique across the system without asking anyone: the module id on top.
    m_correlation = (m_correlation + 1) & ((1ull << 40) - 1);
    return (std::uint64_t{m_id} << 40) | m_correlation;
}

void Runner::acknowledge(std::uint64_t seq) {
    if (m_journals && m_parent_bus != nullptr) m_parent_bus->acknowledge(seq, m_id);
}

TimerId Runner::set_timer(std::chrono::nanoseconds delay, TimerMode mode) {
    const auto ns = static_cast<std::uint64_t>(std::max<std::int64_t>(0, delay.count()));
    const TimerId id = m_next_timer++;
    TimerState t;
    t.id = id;
    t.period_ns = mode == TimerMode::periodic ? std::max<std::uint64_t>(ns, 1) : 0;
    t.delay_ns = ns;
    // Journaled timers count from the event being handled, so a replay sets
    // the same deadlines.
    t.deadline_ns = (m_journal_timers ? now_ns() : platform::monotonic_ns()) + ns;
    m_timers.emplace(id, t);
    m_deadlines.emplace(t.deadline_ns, id);
    return id;
}

void Runner::cancel_timer(TimerId id) {
    m_timers.erase(id);
}

bool Runner::fire_timers() {
    if (m_deadlines.empty()) return false;
    const std::uint64_t now = platform::monotonic_ns();
    bool fired = false;
    while (!m_deadlines.empty() && m_deadlines.begin()->first <= now &&
           m_state.load(std::memory_order_relaxed) == ModuleState::running) {
        const std::uint64_t deadline = m_deadlines.begin()->first;
        const TimerId id = m_deadlines.begin()->second;
        m_deadlines.erase(m_deadlines.begin());
        const auto it = m_timers.find(id);
        // Cancelled, rescheduled, or already on its way.
        if (it == m_timers.end() || it->second.deadline_ns != deadline || it->second.in_flight)
            continue;
        fired = true;
        if (m_journal_timers) {
            // Through the bus: on_timer runs when the message comes back, at
            // its place in the bus order (and so again, in order, in a replay).
            std::byte payload[8];
            detail::put_le<std::uint64_t>(payload, 0, id);
            Outgoing out;
            out.destination = m_id;
            out.type = msg::k_timer;
            out.payload = payload;
            if (publish_on(m_parent_bus, out, Origin::runtime)) {
                it->second.in_flight = true;
            } else {
                // The bus is full or waits for its journal: try again shortly.
                it->second.deadline_ns = now + 1'000'000;
                m_deadlines.emplace(it->second.deadline_ns, id);
                break;
            }
            continue;
        }
        if (it->second.period_ns != 0) {
            // Next deadline from the previous one, so a periodic timer keeps its rate.
            it->second.deadline_ns = std::max(deadline + it->second.period_ns, now);
            m_deadlines.emplace(it->second.deadline_ns, id);
        } else {
            m_timers.erase(it);
        }
        m_event_ns = now;
        ++m_handled;
        guarded("on_timer", [&] { m_module->on_timer(id); });
    }
    return fired;
}

void Runner::go_live() {
    const bool recovered = !m_live.load(std::memory_order_relaxed);
    m_live.store(true, std::memory_order_release);
    if (m_suppress_left > 0) {
        log(LogLevel::warn,
            fmt::format("replay diverged: the old instance sent {} more messages than this one "
                        "reproduced (the module is not deterministic?); going live anyway",
                        m_suppress_left));
        m_suppress_left = 0;
    }
    // Restored timers: one still marked in flight whose message never reached
    // the bus (its instance died first) fires again; deadlines from another
    // boot (another clock) are brought back within one delay from now.
    const std::uint64_t now = platform::monotonic_ns();
    m_deadlines.clear();
    for (auto& [id, t] : m_timers) {
        t.in_flight = false;
        t.deadline_ns = std::min(t.deadline_ns, now + t.delay_ns);
        m_deadlines.emplace(t.deadline_ns, id);
    }
    if (m_handoff != 0 && recovered) {
        log(LogLevel::info, fmt::format("took over: live from seq {}", m_live_at));
        // A module that moved starts its life on the new bus's journal with a snapshot.
        if (m_handoff_move && m_snapshot_every != 0) m_snapshot_due = true;
    } else if (recovered) {
        log(LogLevel::info,
            fmt::format("recovered: live from seq {} ({} messages from the journal, {} outputs "
                        "already on the bus not sent again)",
                        m_live_at, m_caught_up.load(), m_suppressed.load()));
    }
}

void Runner::maybe_snapshot() {
    if (!m_live || m_state.load(std::memory_order_relaxed) != ModuleState::running) return;
    // Every `snapshot_every` inputs; and every 4 times as many messages read
    // off the bus whatever they were: a snapshot of an unchanged state still
    // moves the point a recovery replays from.
    if (m_snapshot_due || (m_snapshot_every != 0 && m_since_snapshot >= m_snapshot_every) ||
        (m_snapshot_every != 0 && m_read_since_snapshot >= 4ull * m_snapshot_every))
        take_snapshot();
}

Envelope Runner::envelope() const {
    Envelope e;
    e.random = m_random.state();
    e.next_timer = m_next_timer;
    e.correlation = m_correlation;
    e.handled = m_handled;
    for (const auto& [id, t] : m_timers) e.timers.push_back(t);
    std::sort(e.timers.begin(), e.timers.end(),
              [](const TimerState& a, const TimerState& b) { return a.id < b.id; });
    return e;
}

void Runner::take_snapshot() {
    m_snapshot_due = false;
    m_since_snapshot = 0;
    m_read_since_snapshot = 0;
    if (m_parent_bus == nullptr) return;
    m_module_state.clear();
    bool has = false;
    guarded("snapshot", [&] { has = m_module->snapshot(m_module_state); });
    if (!has || m_state.load(std::memory_order_relaxed) != ModuleState::running) return;
    const std::vector<std::byte> body = encode_body(envelope(), m_module_state);
    if (body.size() > k_max_snapshot) {
        log(LogLevel::error, fmt::format("snapshot of {} bytes is over the limit of {}; not sent",
                                         body.size(), k_max_snapshot));
        return;
    }
    const std::uint32_t max_payload = m_parent_bus->ring().max_payload();
    if (max_payload < k_snapshot_chunk_header + 64) return;  // checked by the config
    const std::size_t chunk_max = max_payload - k_snapshot_chunk_header;
    SnapshotChunk c;
    c.input_seq = parent_next() - 1;
    c.snapshot_id = ++m_snapshot_id;
    c.total_size = static_cast<std::uint32_t>(body.size());
    c.body_crc = crc32c(body);
    c.state_version = m_kind->state_version;
    for (std::size_t offset = 0; offset < body.size(); offset += chunk_max) {
        const std::size_t n = std::min(chunk_max, body.size() - offset);
        c.offset = static_cast<std::uint32_t>(offset);
        m_chunk.resize(k_snapshot_chunk_header + n);
        encode_snapshot_chunk(
            c, static_cast<std::uint32_t>(n),
            std::span<std::byte, k_snapshot_chunk_header>(m_chunk.data(), k_snapshot_chunk_header));
        std::copy_n(body.begin() + static_cast<std::ptrdiff_t>(offset), n,
                    m_chunk.begin() + k_snapshot_chunk_header);
        Outgoing out;
        out.destination = m_parent;
        out.type = msg::k_snapshot;
        out.payload = m_chunk;
        if (auto r = publish_on(m_parent_bus, out, Origin::runtime); !r) {
            // The monitor drops an incomplete snapshot; try again a little later.
            log(LogLevel::warn,
                fmt::format("snapshot {} not sent whole: {}", c.snapshot_id, to_string(r.error())));
            m_since_snapshot = m_snapshot_every / 2;
            return;
        }
    }
    bump(m_snapshots);
}

std::uint64_t Runner::now_ns() {
    return m_event_ns != 0 ? m_event_ns : platform::monotonic_ns();
}

void Runner::log(LogLevel level, std::string_view text) {
    m_host.logger().log(level, m_path, text);
}

void Runner::sleep_until_work() {
    const std::uint32_t word = m_bell.word->load(std::memory_order_seq_cst);
    m_bell.armed->store(1, std::memory_order_seq_cst);
    if (m_parent_bus != nullptr) m_parent_bus->reader_armed();
    if (m_child_bus != nullptr) m_child_bus->reader_armed();
    // (reader_armed() is the RMW half of the handshake in InprocBus::publish.)

    const Visibility visibility = m_journals ? Visibility::published : Visibility::committed;
    bool pending = m_stop.load() || m_crash.load() || !m_inbox[0].empty() || !m_inbox[1].empty();
    // A replica that waits for the old instance looks ahead; it reads its
    // child bus only once it is the module.
    const HandoffPhase phase = m_phase.load(std::memory_order_relaxed);
    const bool looking_ahead =
        m_replica && (phase == HandoffPhase::awaiting_state || phase == HandoffPhase::holding);
    if (m_parent_bus != nullptr) {
        pending =
            pending || (m_catch_up_pending[0] ? m_catch_up->ready()
                                              : m_parent_bus->ring().available(visibility) >=
                                                    (looking_ahead ? m_scan : m_parent_cursor));
    }
    if (m_child_bus != nullptr && !(m_replica && phase != HandoffPhase::live)) {
        pending =
            pending || (m_catch_up_pending[1] ? m_child_catch_up->ready()
                                              : m_child_bus->ring().available() >= m_child_cursor);
    }
    if (!pending) {
        std::int64_t timeout = -1;
        if (m_live && !m_deadlines.empty()) {
            const std::uint64_t now = platform::monotonic_ns();
            const std::uint64_t next = m_deadlines.begin()->first;
            timeout = next > now ? static_cast<std::int64_t>(next - now) : 0;
        }
        if ((m_catch_up_pending[0] || m_catch_up_pending[1]) &&
            (timeout < 0 || timeout > k_catch_up_poll_ns))
            timeout = k_catch_up_poll_ns;
        if (timeout != 0) platform::futex_wait(*m_bell.word, word, timeout, m_bell.scope);
    }
    m_bell.armed->store(0, std::memory_order_seq_cst);
    if (m_parent_bus != nullptr) m_parent_bus->reader_disarmed();
    if (m_child_bus != nullptr) m_child_bus->reader_disarmed();
}

}  // namespace hmk::detail
