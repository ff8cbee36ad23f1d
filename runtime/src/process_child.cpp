// SPDX-License-Identifier: Apache-2.0
#include "process_child.hpp"

#include <fmt/core.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include <toml++/toml.h>
#include <sstream>

#include "hmk/platform/clock.hpp"

namespace hmk::detail {
namespace {

constexpr int k_batch = 256;                                   // records per child per round
constexpr std::uint64_t k_start_deadline_ns = 10'000'000'000;  // a host must be up within 10 s
constexpr std::uint64_t k_ms = 1'000'000;
constexpr int k_idle_spins = 0;  // idle rounds the pump polls before it sleeps (see run())

enum EventKind : std::uint64_t { k_uplink = 0, k_exit = 1, k_wakeup = 2 };
std::uint64_t tag(std::size_t index, EventKind kind) {
    return (static_cast<std::uint64_t>(index) << 2) | kind;
}

void drain_eventfd(int fd) {
    std::uint64_t n = 0;
    while (read(fd, &n, sizeof(n)) == static_cast<ssize_t>(sizeof(n))) {
    }
}

}  // namespace

std::string host_description(const SystemSpec& spec, ModuleId module) {
    auto bus_table = [](const BusSpec& b, bool with_policy) {
        toml::table t{{"capacity", static_cast<std::int64_t>(b.capacity)},
                      {"max_payload", static_cast<std::int64_t>(b.max_payload)}};
        if (with_policy)
            t.insert("up",
                     toml::table{
                         {"addressed", b.up.addressed}, {"up", b.up.up}, {"system", b.up.system}});
        return t;
    };
    toml::table root{{"system", toml::table{{"name", spec.name}}},
                     {"bus", bus_table(spec.root_bus, false)}};
    toml::array modules;
    for (const ModuleSpec& m : spec.modules) {
        const TopologyNode* n = spec.topology.find(m.id);
        toml::table t{{"path", m.path}, {"id", static_cast<std::int64_t>(m.id)}};
        if (m.id == module) {
            t.insert("kind", m.kind);
            toml::table config;
            for (const auto& entry : m.config.values()) {
                std::visit([&](const auto& v) { config.insert(entry.first, v); }, entry.second);
            }
            t.insert("config", std::move(config));
        } else {
            t.insert("kind", n->is_gateway() ? k_placeholder_gateway : k_placeholder_leaf);
        }
        if (n->is_gateway()) t.insert("bus", bus_table(m.bus, true));
        modules.push_back(std::move(t));
    }
    root.insert("module", std::move(modules));
    std::ostringstream out;
    out << root;
    return out.str();
}

UplinkPump::UplinkPump(InprocBus& bus, RunnerHost& host, HostSetup setup, SupervisorSpec supervisor)
    : m_bus(bus),
      m_host(host),
      m_setup(std::move(setup)),
      m_supervisor(supervisor),
      m_epoll(epoll_create1(EPOLL_CLOEXEC)),
      m_wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag(0, k_wakeup);
    epoll_ctl(m_epoll.get(), EPOLL_CTL_ADD, m_wake.get(), &ev);
    m_record.resize(m_bus.ring().max_message());
}

UplinkPump::~UplinkPump() {
    stop();
}

Result<void, std::string> UplinkPump::add(const ModuleSpec& spec) {
    auto child = std::make_unique<ProcessChild>();
    child->spec = &spec;
    const std::uint32_t slots = spec.quota.uplink_slots;
    const std::uint32_t max_payload = m_bus.settings().max_payload;
    child->region =
        HMK_TRY(platform::SharedRegion::create(("hmk-uplink-" + std::to_string(spec.id)).c_str(),
                                               UplinkRing::region_size(slots, max_payload)));
    HMK_TRY(child->region.seal_size());
    auto ring = UplinkRing::create(child->region.bytes(), slots, max_payload);
    if (!ring) return Err{std::string("uplink ring: ") + to_string(ring.error())};
    child->uplink = *ring;
    child->event = platform::UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!child->event.valid()) return Err{std::string("eventfd: ") + std::strerror(errno)};
    // It reads from what is on the bus now (before the system runs), not from
    // when its process happens to come up, so it misses nothing meanwhile.
    child->start_seq = m_bus.ring().head() + 1;
    child->message_tokens = spec.quota.messages_per_s;
    child->byte_tokens = spec.quota.bytes_per_s;
    // The bus rings the child's bell, which lives in the child's own region.
    UplinkBells& bells = child->uplink.bells();
    m_bus.subscribe(Doorbell{&bells.child_word, &bells.child_armed, platform::FutexScope::shared},
                    true);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag(m_children.size(), k_uplink);
    epoll_ctl(m_epoll.get(), EPOLL_CTL_ADD, child->event.get(), &ev);
    m_children.push_back(std::move(child));
    return {};
}

void UplinkPump::start() {
    m_thread = std::thread([this] { run(); });
}

bool UplinkPump::owns(ModuleId id) const {
    return std::any_of(m_children.begin(), m_children.end(),
                       [&](const auto& c) { return c->spec->id == id; });
}

std::vector<std::pair<std::string, std::vector<std::string>>> UplinkPump::sandbox_report() const {
    std::vector<std::pair<std::string, std::vector<std::string>>> out;
    for (const auto& c : m_children) {
        std::vector<std::string> layers = c->process.layers;
        const std::uint32_t bits = c->uplink.stats().sandbox.load(std::memory_order_acquire);
        if ((bits & k_sandbox_landlock) != 0) layers.emplace_back("landlock: no file access");
        if ((bits & k_sandbox_no_new_privs) != 0) layers.emplace_back("no_new_privs");
        if ((bits & k_sandbox_seccomp) != 0) layers.emplace_back("seccomp allowlist");
        layers.push_back(fmt::format("quota: {} msg/s, {} B/s, {} uplink slots, {} MiB, {} files",
                                     c->spec->quota.messages_per_s, c->spec->quota.bytes_per_s,
                                     c->spec->quota.uplink_slots, c->spec->quota.memory >> 20,
                                     c->spec->quota.open_files));
        for (const auto& s : c->process.skipped) layers.push_back("SKIPPED " + s);
        out.emplace_back(c->spec->path, std::move(layers));
    }
    return out;
}

ModuleStats UplinkPump::stats(ModuleId id) const {
    ModuleStats s;
    for (const auto& c : m_children) {
        if (c->spec->id != id) continue;
        // Counters of the parent's own (tx, invalid) are authoritative; the
        // rest is what the child says about itself.
        const UplinkStats& mine = c->uplink.stats();
        s.state = c->state.load();
        s.tx = c->published.load();
        s.invalid = c->invalid.load() + c->rejected.load();
        s.rx = mine.rx.load(std::memory_order_relaxed);
        s.seen = mine.seen.load(std::memory_order_relaxed);
        s.lost = mine.lost.load(std::memory_order_relaxed);
        s.send_errors = mine.send_errors.load(std::memory_order_relaxed);
        s.restarts = c->restarts.load();
    }
    return s;
}

void UplinkPump::spawn(ProcessChild& c) {
    const ModuleSpec& spec = *c.spec;
    const std::string description = host_description(*m_setup.system, spec.id);
    auto text =
        platform::SharedRegion::create("hmk-system", std::max<std::size_t>(1, description.size()));
    if (!text) {
        m_host.logger().log(LogLevel::error, spec.path, "cannot start: " + text.error());
        c.state.store(ModuleState::failed);
        m_host.started(spec.id, false);
        return;
    }
    std::memcpy(text->data(), description.data(), description.size());
    (void)text->seal_writes();

    platform::SpawnOptions o;
    o.program = m_setup.host_program;
    o.argv = {"hmk-host",
              "--module",
              spec.path,
              "--from-seq",
              std::to_string(c.start_seq),
              "--text-size",
              std::to_string(description.size())};
    for (const auto& p : m_setup.plugins) {
        o.argv.push_back("--plugin");
        o.argv.push_back(p);
    }
    if (m_host.logger().enabled(LogLevel::debug)) {
        o.argv.push_back("--log-level");
        o.argv.push_back("debug");
    }
    o.fds = {m_bus.region().fd(), c.region.fd(), c.event.get(), text->fd()};
    o.limits.address_space = spec.quota.memory;
    o.limits.open_files = spec.quota.open_files;
    auto child = platform::spawn(o);
    if (!child) {
        m_host.logger().log(LogLevel::error, spec.path, "cannot start: " + child.error());
        c.state.store(ModuleState::failed);
        m_host.started(spec.id, false);
        return;
    }
    c.process = std::move(child).value();
    c.spawned_ns = platform::monotonic_ns();
    c.refilled_ns = c.spawned_ns;
    epoll_event ev{};
    ev.events = EPOLLIN;
    const auto index =
        static_cast<std::size_t>(std::find_if(m_children.begin(), m_children.end(),
                                              [&](const auto& p) { return p.get() == &c; }) -
                                 m_children.begin());
    ev.data.u64 = tag(index, k_exit);
    epoll_ctl(m_epoll.get(), EPOLL_CTL_ADD, c.process.pidfd.get(), &ev);
    std::string layers;
    for (const auto& l : c.process.layers) layers += (layers.empty() ? "" : ", ") + l;
    m_host.logger().log(
        LogLevel::debug, spec.path,
        fmt::format("spawned pid {} ({}); waiting for it to start", c.process.pid, layers));
    for (const auto& s : c.process.skipped) {
        m_host.logger().log(LogLevel::warn, spec.path, "isolation layer skipped: " + s);
    }
}

void UplinkPump::check_start(ProcessChild& c, std::uint64_t now) {
    if (c.state.load() != ModuleState::created || !c.process.pidfd.valid()) return;
    const std::uint32_t reported = c.uplink.stats().state.load(std::memory_order_acquire);
    if (reported == static_cast<std::uint32_t>(ModuleState::running)) {
        c.state.store(ModuleState::running);
        m_host.logger().log(
            LogLevel::info, c.spec->path,
            fmt::format("running in process {} on bus {}", c.process.pid, m_bus.name()));
        if (!c.announced) m_host.started(c.spec->id, true);
        c.announced = true;
    } else if (now > c.spawned_ns && now - c.spawned_ns > k_start_deadline_ns) {
        stop_child(c, "did not start within 10 s");
    }
}

void UplinkPump::stop_child(ProcessChild& c, const std::string& reason) {
    if (!c.process.pidfd.valid()) return;
    if (c.stop_reason.empty()) {
        c.stop_reason = reason;
        m_host.logger().log(LogLevel::warn, c.spec->path, "stopping it: " + reason);
    }
    platform::kill_child(c.process.pidfd);
}

void UplinkPump::reap(ProcessChild& c) {
    if (!c.process.pidfd.valid()) return;
    const auto status = platform::try_reap(c.process.pidfd);
    if (!status) return;
    epoll_ctl(m_epoll.get(), EPOLL_CTL_DEL, c.process.pidfd.get(), nullptr);
    c.process.pidfd = platform::UniqueFd();
    const bool was_starting = c.state.load() == ModuleState::created;
    const bool clean =
        c.stopping.load() && c.stop_reason.empty() && status->exited && status->code == 0;
    c.state.store(clean ? ModuleState::stopped : ModuleState::failed);
    if (clean) {
        m_host.logger().log(LogLevel::info, c.spec->path, "stopped");
    } else {
        std::string text = fmt::format("process {} {}", c.process.pid, status->describe());
        if (!c.stop_reason.empty()) text += " (stopped by its parent: " + c.stop_reason + ")";
        m_host.logger().log(LogLevel::error, c.spec->path, "failed: " + text);
    }
    if (was_starting && !c.announced) {
        m_host.started(c.spec->id, false);
        c.announced = true;
    }
    if (!clean) supervise(c, status->exited && status->code == 0, platform::monotonic_ns());
}

void UplinkPump::supervise(ProcessChild& c, bool normal_exit, std::uint64_t now) {
    const RestartPolicy policy = c.spec->restart;
    const bool wanted =
        policy == RestartPolicy::permanent || (policy == RestartPolicy::transient && !normal_exit);
    if (!wanted || c.stopping.load() || m_shutting_down.load()) return;
    // Intensity: at most `intensity` restarts within `period_ms`.
    const std::uint64_t period = std::uint64_t{m_supervisor.period_ms} * k_ms;
    std::erase_if(c.restart_ns, [&](std::uint64_t t) { return now - t > period; });
    if (c.restart_ns.size() >= m_supervisor.intensity) {
        m_host.logger().log(
            LogLevel::error, c.spec->path,
            fmt::format(
                "restart intensity exceeded ({} restarts within {} ms): its parent gives it up",
                c.restart_ns.size(), m_supervisor.period_ms));
        return;
    }
    // Exponential backoff over the recent restarts, capped at 10 s.
    const std::uint64_t delay_ms =
        std::min<std::uint64_t>(10'000, std::uint64_t{m_supervisor.backoff_ms}
                                            << std::min<std::size_t>(c.restart_ns.size(), 20));
    c.restart_ns.push_back(now);
    c.restart_at_ns = now + delay_ms * k_ms;
    c.state.store(ModuleState::restarting);
    m_host.logger().log(
        LogLevel::warn, c.spec->path,
        fmt::format("restarting in {} ms (restart {} of at most {} within {} ms)", delay_ms,
                    c.restart_ns.size(), m_supervisor.intensity, m_supervisor.period_ms));
}

void UplinkPump::restart(ProcessChild& c) {
    // The old process is gone: its uplink is emptied for the new one (the bus
    // may be ringing its bells meanwhile, so no reformatting). It reads the bus
    // from now on; what it missed meanwhile comes back with recovery from the
    // journal (a later step).
    c.uplink.reset();
    drain_eventfd(c.event.get());
    c.start_seq = m_bus.ring().head() + 1;
    c.message_tokens = c.spec->quota.messages_per_s;
    c.byte_tokens = c.spec->quota.bytes_per_s;
    c.throttled_since_ns = 0;
    c.stop_reason.clear();
    c.restart_at_ns = 0;
    c.restarts.fetch_add(1);
    c.state.store(ModuleState::created);
    spawn(c);
}

bool UplinkPump::limited_log(std::atomic<std::uint64_t>& counter) {
    // The first few of a kind, then one in a thousand: a hostile child must
    // not be able to flood the log either.
    const std::uint64_t n = counter.load();
    return n <= 5 || n % 1000 == 0;
}

bool UplinkPump::drain(ProcessChild& c, std::uint64_t now) {
    // A child being killed gets nothing more published; its exit is reaped from epoll.
    if (c.state.load() != ModuleState::running || !c.stop_reason.empty()) return false;
    const QuotaSpec& q = c.spec->quota;
    const double elapsed =
        now > c.refilled_ns ? static_cast<double>(now - c.refilled_ns) / 1e9 : 0.0;
    c.refilled_ns = now;
    c.message_tokens = std::min(q.messages_per_s, c.message_tokens + elapsed * q.messages_per_s);
    c.byte_tokens = std::min(q.bytes_per_s, c.byte_tokens + elapsed * q.bytes_per_s);

    int n = 0;
    for (; n < k_batch; ++n) {
        if (c.message_tokens < 1 || c.byte_tokens < 0) {
            // Over quota: stop taking its messages (its uplink fills and its
            // sends fail), and stop the child if that lasts.
            if (c.throttled_since_ns == 0) {
                c.throttled_since_ns = now;
                m_host.logger().log(
                    LogLevel::warn, c.spec->path,
                    fmt::format("throttled: over its quota of {} messages/s, {} bytes/s",
                                q.messages_per_s, q.bytes_per_s));
            } else if (now - c.throttled_since_ns > q.grace_ms * k_ms) {
                stop_child(c, fmt::format("over its quota of {} messages/s, {} bytes/s for {} ms",
                                          q.messages_per_s, q.bytes_per_s, q.grace_ms));
            }
            return n > 0;
        }
        const PopResult r = c.uplink.pop(m_record);
        if (r.status == PopStatus::empty) break;
        if (r.status == PopStatus::corrupt) {
            stop_child(c, "broke its uplink ring (cursor or record size out of bounds)");
            return true;
        }
        const std::span<const std::byte> record(m_record.data(), r.size);
        const auto header = decode_header(record, m_bus.settings().max_payload, Framing::exact);
        if (!header) {
            c.invalid.fetch_add(1);
            if (limited_log(c.invalid)) {
                m_host.logger().log(LogLevel::warn, c.spec->path,
                                    fmt::format("dropped a malformed message: {} (#{})",
                                                to_string(header.error()), c.invalid.load()));
            }
            continue;
        }
        const auto published =
            m_bus.publish_deferred(*header, record.subspan(k_header_size), c.spec->id);
        if (!published) {
            c.rejected.fetch_add(1);
            if (limited_log(c.rejected)) {
                m_host.logger().log(
                    LogLevel::warn, c.spec->path,
                    fmt::format("refused a message claiming sender #{} hops {}: {} (#{})",
                                header->sender, header->hops, to_string(published.error()),
                                c.rejected.load()));
            }
            continue;
        }
        c.published.fetch_add(1, std::memory_order_relaxed);
        c.message_tokens -= 1;
        c.byte_tokens -= static_cast<double>(r.size);
    }
    c.throttled_since_ns = 0;
    if (n > 0) m_bus.wake_readers();  // one wake-up scan per batch
    return n > 0;
}

void UplinkPump::sleep(int timeout_ms) {
    for (auto& c : m_children) c->uplink.bells().owner_armed.store(1, std::memory_order_seq_cst);
    const bool pending = any_pending();
    epoll_event events[16];
    // With work pending, still collect exits and wake-ups, without waiting.
    const int n = epoll_wait(m_epoll.get(), events, 16, pending ? 0 : timeout_ms);
    for (auto& c : m_children) c->uplink.bells().owner_armed.store(0, std::memory_order_seq_cst);
    for (int i = 0; i < n; ++i) {
        const std::uint64_t t = events[i].data.u64;
        const auto kind = static_cast<EventKind>(t & 3);
        const std::size_t index = static_cast<std::size_t>(t >> 2);
        if (kind == k_wakeup) {
            drain_eventfd(m_wake.get());
        } else if (index < m_children.size()) {
            ProcessChild& c = *m_children[index];
            if (kind == k_uplink) drain_eventfd(c.event.get());
            if (kind == k_exit) reap(c);
        }
    }
}

bool UplinkPump::any_pending() const {
    for (const auto& c : m_children) {
        if (c->state.load() == ModuleState::running && c->throttled_since_ns == 0 &&
            c->stop_reason.empty() && c->uplink.pending() > 0) {
            return true;
        }
    }
    return false;
}

void UplinkPump::run() {
    for (auto& c : m_children) spawn(*c);
    int idle = 0;
    while (!m_stop.load()) {
        const std::uint64_t now = platform::monotonic_ns();
        bool work = false;
        bool waiting = false;
        for (auto& c : m_children) {
            if (c->state.load() == ModuleState::restarting && now >= c->restart_at_ns &&
                !m_shutting_down.load()) {
                restart(*c);
                waiting = true;  // poll for its start handshake
                continue;        // spawned after `now` was taken: look at it next round
            }
            check_start(*c, now);
            work |= drain(*c, now);
            waiting |= c->state.load() == ModuleState::created ||
                       c->state.load() == ModuleState::restarting || c->throttled_since_ns != 0;
        }
        // Short sleeps while a child is starting or throttled (there is a
        // deadline to watch), otherwise until a child writes or exits.
        if (work) {
            idle = 0;
        } else if (++idle < k_idle_spins && !waiting) {
            // A short busy spin (a few microseconds) before sleeping: a steady
            // stream then costs no eventfd round trip per message. No
            // sched_yield: with few cores it would hand our core to nobody useful.
            for (int i = 0; i < 32; ++i) platform::cpu_relax();
        } else {
            sleep(waiting ? 1 : 200);
            idle = 0;
        }
    }
    // Whatever is still alive now is killed; the pidfds make sure we reap it.
    for (auto& c : m_children) {
        if (!c->process.pidfd.valid()) continue;
        stop_child(*c, "still running when the system stopped");
        siginfo_t info{};
        waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(c->process.pidfd.get()), &info,
               WEXITED | WNOWAIT);
        reap(*c);
    }
}

void UplinkPump::stop() {
    if (!m_thread.joinable()) return;
    m_shutting_down.store(true);
    // A 'stop' from the parent (the bus owner) to each child, then a little time.
    const ModuleId owner = m_bus.id();
    for (auto& c : m_children) {
        if (c->state.load() != ModuleState::running) continue;
        c->stopping.store(true);
        Header h;
        h.sender = owner;
        h.destination = c->spec->id;
        h.type = msg::k_stop;
        (void)m_bus.publish(h, {}, owner);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (std::chrono::steady_clock::now() < deadline &&
           std::any_of(m_children.begin(), m_children.end(), [](const auto& c) {
               const ModuleState s = c->state.load();
               return s == ModuleState::running || s == ModuleState::created;
           })) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    m_stop.store(true);
    const std::uint64_t one = 1;
    (void)!write(m_wake.get(), &one, sizeof(one));
    m_thread.join();
}

}  // namespace hmk::detail
