// SPDX-License-Identifier: Apache-2.0
#include "runner.hpp"

#include <fmt/core.h>

#include <exception>

#include "hmk/platform/clock.hpp"
#include "hmk/platform/futex.hpp"

namespace hmk::detail {
namespace {

// Idle rounds a runner polls (yielding the CPU each time) before it sleeps on
// its doorbell: catches the next message of a stream without a futex round
// trip, and gives the core away to any thread that has work meanwhile.
constexpr int k_idle_spins = 64;
// A counter only the runner's thread writes: a plain load and store (no locked
// read-modify-write on the message path); other threads read it with a load.
void bump(std::atomic<std::uint64_t>& counter) {
    counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

// Messages taken from one bus before the runner looks at its other bus and timers.
constexpr int k_batch = 64;

}  // namespace

Runner::Runner(RunnerHost& host, const ModuleSpec* spec, const ModuleKind* kind,
               BusPort* parent_bus, InprocBus* child_bus, std::optional<Doorbell> bell)
    : m_host(host),
      m_id(spec != nullptr ? spec->id : k_root_id),
      m_path(spec != nullptr ? spec->path : "/"),
      m_config(spec != nullptr ? spec->config : ModuleConfig{}),
      m_kind(kind),
      m_gateway(child_bus != nullptr),
      m_eavesdrop(kind != nullptr && kind->eavesdrop == Eavesdrop::yes),
      m_policy(spec != nullptr ? spec->bus.up : UpPolicy{}),
      m_parent(spec != nullptr ? host.topology().find(spec->id)->parent : k_no_module),
      m_parent_bus(parent_bus),
      m_report_progress(host.wants_progress()),
      m_child_bus(child_bus),
      m_bell(bell.value_or(Doorbell{&m_bell_word, &m_bell_armed, platform::FutexScope::process})),
      m_random(0x9E3779B97F4A7C15ull ^ m_id) {
    std::size_t largest = 0;
    if (m_parent_bus != nullptr) {
        // A local parent bus rings us; a remote one (module host) rings the
        // bell in our uplink region, which its owner subscribed already.
        if (auto* local = dynamic_cast<InprocBus*>(m_parent_bus)) local->subscribe(m_bell);
        m_parent_cursor = m_parent_bus->ring().head() + 1;
        largest = m_parent_bus->ring().max_message();
    }
    if (m_child_bus != nullptr) {
        m_child_bus->subscribe(m_bell);
        m_child_cursor = m_child_bus->ring().head() + 1;
        largest = std::max<std::size_t>(largest, m_child_bus->ring().max_message());
    }
    m_record.resize(largest);
}

Runner::~Runner() {
    request_stop();
    join();
}

void Runner::start() {
    m_thread = std::thread([this] { run(); });
}

void Runner::request_stop() {
    m_stop.store(true, std::memory_order_seq_cst);
    m_bell.word->fetch_add(1, std::memory_order_seq_cst);
    platform::futex_wake(*m_bell.word, 1, m_bell.scope);
}

void Runner::join() {
    if (m_thread.joinable()) m_thread.join();
}

ModuleStats Runner::stats() const {
    ModuleStats s;
    s.state = m_state.load();
    s.rx = m_rx.load();
    s.tx = m_tx.load();
    s.seen = m_seen.load();
    s.fwd_up = m_fwd_up.load();
    s.fwd_down = m_fwd_down.load();
    s.denied = m_denied.load();
    s.lost = m_lost.load();
    s.invalid = m_invalid.load();
    s.send_errors = m_send_errors.load();
    return s;
}

template <typename F>
void Runner::guarded(const char* what, F&& f) {
    // A module that throws fails alone: its runner stops taking messages and
    // the bus, its siblings and its parent go on.
    try {
        f();
    } catch (const std::exception& e) {
        log(LogLevel::error, fmt::format("module failed in {}: {}", what, e.what()));
        m_state.store(ModuleState::failed);
    } catch (...) {
        log(LogLevel::error, fmt::format("module failed in {}: unknown exception", what));
        m_state.store(ModuleState::failed);
    }
}

void Runner::run() {
    {
        guarded("create", [&] {
            auto made = m_kind->create(*this);
            if (!made) {
                log(LogLevel::error, fmt::format("cannot create module of kind '{}': {}",
                                                 m_kind->name, made.error()));
                m_state.store(ModuleState::failed);
                return;
            }
            m_module = std::move(made).value();
        });
    }
    if (m_state.load() != ModuleState::failed) {
        m_state.store(ModuleState::running);
        guarded("on_start", [&] { m_module->on_start(); });
    }
    const bool ok = m_state.load() == ModuleState::running;
    m_host.started(m_id, ok);
    if (!ok) return;

    int idle = 0;
    while (!m_stop.load(std::memory_order_relaxed) && m_state.load() == ModuleState::running) {
        bool work = false;
        if (m_parent_bus != nullptr)
            work |= drain(*m_parent_bus, m_parent_cursor, Side::parent_bus);
        if (m_child_bus != nullptr) work |= drain(*m_child_bus, m_child_cursor, Side::child_bus);
        work |= fire_timers();
        if (work) {
            if (m_report_progress) m_host.progress(stats());
            idle = 0;
        } else if (++idle < k_idle_spins) {
            std::this_thread::yield();
        } else {
            sleep_until_work();
            idle = 0;
        }
    }
    if (m_state.load() == ModuleState::running) {
        guarded("on_stop", [&] { m_module->on_stop(); });
        if (m_state.load() == ModuleState::running) m_state.store(ModuleState::stopped);
    }
}

bool Runner::drain(BusPort& bus, std::uint64_t& cursor, Side side) {
    int n = 0;
    for (; n < k_batch && m_state.load(std::memory_order_relaxed) == ModuleState::running; ++n) {
        const ReadResult r = bus.ring().read(cursor, m_record);
        if (r.status == ReadStatus::empty) break;
        if (r.status == ReadStatus::lost) {
            m_lost.store(m_lost.load(std::memory_order_relaxed) + (r.lost_last - r.lost_first + 1),
                         std::memory_order_release);
            log(LogLevel::warn, fmt::format("fell behind on bus {}: lost seq {}..{}", bus.name(),
                                            r.lost_first, r.lost_last));
            continue;
        }
        handle(side, std::span<const std::byte>(m_record.data(), r.size));
        // Counted once fully handled (forwards included), so that "seen equals
        // published" means the module is done with everything on its buses.
        bump(m_seen);
    }
    return n > 0;
}

void Runner::handle(Side side, std::span<const std::byte> record) {
    const auto header = decode_header(record, k_max_payload, Framing::exact);
    if (!header) {
        bump(m_invalid);
        log(LogLevel::warn, fmt::format("dropped a bad record: {}", to_string(header.error())));
        return;
    }
    const Message message{*header, record.subspan(k_header_size)};

    if (m_gateway) {
        const Forward f = route(m_host.topology(), m_id, side, message.header, m_policy);
        if (f.up) forward(Direction::up, message);
        if (f.down) forward(Direction::down, message);
        if (f.denied) bump(m_denied);
    }
    if (lifecycle(message)) return;
    const bool deliver =
        m_eavesdrop ? !is_own_forward(m_id, message.header) : is_for(m_id, message.header);
    if (!deliver) return;
    bump(m_rx);
    // Liveness is answered by the runtime, so it also proves the module's
    // thread is taking messages.
    if (message.header.type == msg::k_ping && !message.header.is_reply() &&
        message.header.destination == m_id) {
        (void)reply(message, as_bytes("pong"));
        return;
    }
    guarded("on_message", [&] { m_module->on_message(message); });
}

bool Runner::lifecycle(const Message& message) {
    const Header& h = message.header;
    if (h.type != msg::k_stop || h.destination != m_id || h.is_reply()) return false;
    // Only the parent may stop a module. `via` is stamped by the bus owner,
    // which is the parent, so a copy with via == parent really comes from it.
    if (m_parent != k_no_module && h.sender == m_parent && h.via == m_parent) {
        log(LogLevel::info, "stopping: asked by the parent");
        m_stop.store(true);
        return true;
    }
    bump(m_denied);
    const TopologyNode* from = m_host.topology().find(h.sender);
    log(LogLevel::warn, fmt::format("refused 'stop' from {}: only the parent may stop this module",
                                    from != nullptr ? from->path : fmt::format("#{}", h.sender)));
    return true;
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
    if (auto r = bus->publish(h, payload, m_id); !r) {
        m_send_errors.fetch_add(1, std::memory_order_relaxed);
        log(LogLevel::warn, fmt::format("cannot forward {} to bus {}: {}",
                                        direction == Direction::up ? "up" : "down", bus->name(),
                                        to_string(r.error())));
        return;
    }
    bump(direction == Direction::up ? m_fwd_up : m_fwd_down);
}

Result<void, SendError> Runner::publish_on(BusPort* bus, const Outgoing& out) {
    if (m_stop.load(std::memory_order_relaxed)) return Err{SendError::stopped};
    if (out.destination != k_no_module && m_host.topology().find(out.destination) == nullptr) {
        m_send_errors.fetch_add(1, std::memory_order_relaxed);
        return Err{SendError::unknown_destination};
    }
    auto r = bus->publish(header_for(m_id, out), out.payload, m_id);
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
    return publish_on(bus, message);
}

Result<void, SendError> Runner::send_child(const Outgoing& message) {
    if (m_child_bus == nullptr) return Err{SendError::no_child_bus};
    return publish_on(m_child_bus, message);
}

Result<void, SendError> Runner::send_as(const Outgoing& message) {
    return send(message);
}

TimerId Runner::set_timer(std::chrono::nanoseconds delay, TimerMode mode) {
    const auto ns = static_cast<std::uint64_t>(std::max<std::int64_t>(0, delay.count()));
    const TimerId id = m_next_timer++;
    m_timers.emplace(id, Timer{mode == TimerMode::periodic ? std::max<std::uint64_t>(ns, 1) : 0});
    m_deadlines.emplace(platform::monotonic_ns() + ns, id);
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
        if (it == m_timers.end()) continue;  // cancelled
        if (it->second.period_ns != 0) {
            // Next deadline from the previous one, so a periodic timer keeps its rate.
            m_deadlines.emplace(std::max(deadline + it->second.period_ns, now), id);
        } else {
            m_timers.erase(it);
        }
        fired = true;
        guarded("on_timer", [&] { m_module->on_timer(id); });
    }
    return fired;
}

std::uint64_t Runner::now_ns() {
    return platform::monotonic_ns();
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

    const bool pending =
        m_stop.load() ||
        (m_parent_bus != nullptr && m_parent_bus->ring().head() >= m_parent_cursor) ||
        (m_child_bus != nullptr && m_child_bus->ring().head() >= m_child_cursor);
    if (!pending) {
        std::int64_t timeout = -1;
        if (!m_deadlines.empty()) {
            const std::uint64_t now = platform::monotonic_ns();
            const std::uint64_t next = m_deadlines.begin()->first;
            timeout = next > now ? static_cast<std::int64_t>(next - now) : 0;
        }
        if (timeout != 0) platform::futex_wait(*m_bell.word, word, timeout, m_bell.scope);
    }
    m_bell.armed->store(0, std::memory_order_seq_cst);
    if (m_parent_bus != nullptr) m_parent_bus->reader_disarmed();
    if (m_child_bus != nullptr) m_child_bus->reader_disarmed();
}

}  // namespace hmk::detail
