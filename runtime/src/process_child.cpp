// SPDX-License-Identifier: Apache-2.0
#include "process_child.hpp"

#include <fcntl.h>
#include <fmt/core.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>

#include <toml++/toml.h>
#include <sstream>

#include "hmk/detail/endian.hpp"
#include "hmk/platform/clock.hpp"
#include "hmk/runtime/module_host.hpp"

namespace hmk::detail {
namespace {

constexpr int k_batch = 256;                                   // records per child per round
constexpr std::uint64_t k_start_deadline_ns = 10'000'000'000;  // a host must be up within 10 s
constexpr std::uint64_t k_ms = 1'000'000;
constexpr int k_idle_spins = 0;  // idle rounds the pump polls before it sleeps (see run())
constexpr std::uint64_t k_retire_grace_ns = 2'000'000'000;  // to exit after handing over

enum EventKind : std::uint64_t { k_uplink = 0, k_exit = 1, k_wakeup = 2, k_output = 3 };

// A host's output: what it may write per second, in a burst, and per line.
constexpr double k_output_bytes_per_s = 256 << 10;
constexpr double k_output_burst = 1 << 20;
constexpr std::size_t k_output_line = 4096;

// Nothing a child writes reaches a terminal as a control sequence.
std::string printable(std::string_view text) {
    std::string out(text);
    for (char& ch : out) {
        const auto u = static_cast<unsigned char>(ch);
        if ((u < 0x20 && ch != '\t') || u == 0x7f) ch = '?';
    }
    return out;
}
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
                      {"max_payload", static_cast<std::int64_t>(b.max_payload)},
                      {"delivery", to_string(b.delivery)},
                      {"reader_deadline_ms", static_cast<std::int64_t>(b.reader_deadline_ms)}};
        if (with_policy)
            t.insert("up",
                     toml::table{
                         {"addressed", b.up.addressed}, {"up", b.up.up}, {"system", b.up.system}});
        return t;
    };
    toml::table root{{"system", toml::table{{"name", spec.name}}},
                     {"bus", bus_table(spec.root_bus, false)}};
    toml::array modules;
    // A gateway runs its whole subtree in its process: it learns the kinds
    // and configs of its descendants too, and nothing of anyone else's.
    for (const ModuleSpec& m : spec.modules) {
        const TopologyNode* n = spec.topology.find(m.id);
        toml::table t{{"path", m.path}, {"id", static_cast<std::int64_t>(m.id)}};
        if (spec.topology.in_subtree(m.id, module)) {
            t.insert("kind", m.kind);
            t.insert("version", static_cast<std::int64_t>(m.version));
            t.insert("isolation", m.id == module ? "process" : to_string(m.isolation));
            t.insert("restart", to_string(m.restart));
            if (n->is_gateway()) {
                const SupervisorSpec& v = m.supervisor;
                t.insert(
                    "supervisor",
                    toml::table{{"strategy", to_string(v.strategy)},
                                {"intensity", static_cast<std::int64_t>(v.intensity)},
                                {"period_ms", static_cast<std::int64_t>(v.period_ms)},
                                {"backoff_ms", static_cast<std::int64_t>(v.backoff_ms)},
                                {"heartbeat_ms", static_cast<std::int64_t>(v.heartbeat_ms)},
                                {"heartbeat_misses", static_cast<std::int64_t>(v.heartbeat_misses)},
                                {"stop_grace_ms", static_cast<std::int64_t>(v.stop_grace_ms)}});
            }
            if (m.isolation == Isolation::process || (!n->is_gateway() && m.quota.cpu > 0)) {
                const QuotaSpec& q = m.quota;
                toml::table quota{{"messages_per_s", q.messages_per_s},
                                  {"bytes_per_s", q.bytes_per_s},
                                  {"uplink_slots", static_cast<std::int64_t>(q.uplink_slots)},
                                  {"memory", static_cast<std::int64_t>(q.memory)},
                                  {"open_files", static_cast<std::int64_t>(q.open_files)},
                                  {"grace_ms", static_cast<std::int64_t>(q.grace_ms)}};
                if (q.cpu > 0) quota.insert("cpu", q.cpu);
                t.insert("quota", std::move(quota));
            }
            if (m.recovery == Recovery::journal) {
                t.insert("recover", "journal");
                t.insert("snapshot_every", static_cast<std::int64_t>(m.snapshot_every));
            }
            toml::table config;
            for (const auto& entry : m.config.values()) {
                std::visit([&](const auto& v) { config.insert(entry.first, v); }, entry.second);
            }
            t.insert("config", std::move(config));
            if (!m.grants.empty()) {
                toml::array grants;
                for (const Grant& g : m.grants) {
                    grants.push_back(toml::table{
                        {to_string(g.type), g.path}, {"write", g.write}, {"create", g.create}});
                }
                t.insert("grants", std::move(grants));
            }
        } else {
            const bool journals =
                std::find(spec.journals.begin(), spec.journals.end(), m.id) != spec.journals.end();
            t.insert("kind", n->is_gateway() ? k_placeholder_gateway
                             : journals      ? k_placeholder_journal
                                             : k_placeholder_leaf);
        }
        if (n->is_gateway()) t.insert("bus", bus_table(m.bus, true));
        modules.push_back(std::move(t));
    }
    root.insert("module", std::move(modules));
    std::ostringstream out;
    out << root;
    return out.str();
}

UplinkPump::UplinkPump(InprocBus& bus, PumpHost& host, HostSetup setup, BusJournal* journal)
    : m_bus(bus),
      m_host(host),
      m_setup(std::move(setup)),
      m_journal(journal),
      m_epoll(epoll_create1(EPOLL_CLOEXEC)),
      m_wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag(0, k_wakeup);
    epoll_ctl(m_epoll.get(), EPOLL_CTL_ADD, m_wake.get(), &ev);
    m_record.resize(m_bus.ring().max_message());
    m_bus.set_handoff_watcher(this);
}

UplinkPump::~UplinkPump() {
    stop();
    m_bus.set_handoff_watcher(nullptr);
}

Result<ProcessChild*, std::string> UplinkPump::make_seat(const ModuleSpec& spec) {
    auto child = std::make_unique<ProcessChild>();
    child->spec = &spec;
    const std::uint32_t slots = spec.quota.uplink_slots;
    const std::uint32_t max_payload = m_bus.settings().max_payload;
    child->region =
        HMK_TRY(platform::SharedRegion::create(("hmk-uplink-" + std::to_string(spec.id)).c_str(),
                                               UplinkRing::region_size(slots, max_payload)));
    HMK_TRY(child->region.seal_size());
    auto ring = UplinkRing::create(child->region.bytes(), slots, max_payload, Zeroed::yes);
    if (!ring) return Err{std::string("uplink ring: ") + to_string(ring.error())};
    child->uplink = *ring;
    // The feed carries whole bus messages as payloads, so it needs a header more.
    const std::uint32_t feed_payload = max_payload + static_cast<std::uint32_t>(k_header_size);
    child->feed_region = HMK_TRY(
        platform::SharedRegion::create(("hmk-feed-" + std::to_string(spec.id)).c_str(),
                                       BroadcastRing::region_size(k_feed_slots, feed_payload)));
    auto feed = BroadcastRing::create(child->feed_region.bytes(), k_feed_slots, feed_payload, 1,
                                      CommitMode::on_publish, Zeroed::yes);
    if (!feed) return Err{std::string("feed ring: ") + to_string(feed.error())};
    child->feed = *feed;
    // Only we write it; the child maps it read-only.
    HMK_TRY(child->feed_region.seal_writes());
    child->event = platform::UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!child->event.valid()) return Err{std::string("eventfd: ") + std::strerror(errno)};
    // The bus rings the child's bell, which lives in the child's own region.
    UplinkBells& bells = child->uplink.bells();
    HMK_TRY(m_bus.subscribe(
        Doorbell{&bells.child_word, &bells.child_armed, platform::FutexScope::shared}, true));
    const std::unique_lock lock(m_seats);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag(m_children.size(), k_uplink);
    epoll_ctl(m_epoll.get(), EPOLL_CTL_ADD, child->event.get(), &ev);
    m_children.push_back(std::move(child));
    return m_children.back().get();
}

Result<void, std::string> UplinkPump::add(const ModuleSpec& spec) {
    ProcessChild* seat = HMK_TRY(make_seat(spec));
    seat->system = &m_setup.generations->latest();
    return {};
}

void UplinkPump::start() {
    m_thread = std::thread([this] { run(); });
}

ProcessChild* UplinkPump::child(ModuleId id, ProcessChild::Role role) const {
    for (const auto& c : m_children) {
        if (c->role == role && c->spec != nullptr && c->spec->id == id) return c.get();
    }
    return nullptr;
}

bool UplinkPump::owns(ModuleId id) const {
    const std::shared_lock lock(m_seats);
    return child(id) != nullptr;
}

void UplinkPump::command(Command c) {
    {
        const std::lock_guard lock(m_commands_mutex);
        m_commands.push_back(std::move(c));
    }
    const std::uint64_t one = 1;
    (void)!write(m_wake.get(), &one, sizeof(one));
}

void UplinkPump::restart(ModuleId id, std::uint64_t epoch) {
    command(Command(Command::Op::restart, id, epoch));
}

void UplinkPump::kill(ModuleId id, const std::string& cause, std::uint64_t epoch) {
    command(Command(Command::Op::kill, id, epoch, cause));
}

void UplinkPump::start_replica(const ModuleSpec& spec, const SystemSpec& system, StartPlan plan) {
    Command c(Command::Op::replica, spec.id, plan.epoch);
    c.spec = &spec;
    c.system = &system;
    c.plan = std::move(plan);
    command(std::move(c));
}

void UplinkPump::drop_replica(ModuleId id) {
    command(Command(Command::Op::drop_replica, id, 0));
}

void UplinkPump::begin_handoff(ModuleId id, std::uint64_t handoff) {
    const std::shared_lock lock(m_seats);
    if (ProcessChild* c = child(id)) c->handing_over.store(handoff, std::memory_order_release);
}

ReplicaView UplinkPump::replica(ModuleId id) const {
    const std::shared_lock lock(m_seats);
    ReplicaView v;
    const ProcessChild* c = child(id, ProcessChild::Role::replica);
    if (c == nullptr) return v;
    v.exists = true;
    v.state = c->state.load();
    v.phase = static_cast<HandoffPhase>(c->uplink.progress().phase.load(std::memory_order_acquire));
    v.cursor = c->uplink.progress().cursor.load(std::memory_order_acquire);
    v.epoch = c->epoch.load();
    return v;
}

OldInstance UplinkPump::old_instance(ModuleId id, std::uint64_t epoch) const {
    const std::shared_lock lock(m_seats);
    for (const auto& c : m_children) {
        if (c->spec == nullptr || c->spec->id != id || c->epoch.load() != epoch) continue;
        if (c->role == ProcessChild::Role::replica) continue;
        if (c->handed_over.load()) return OldInstance::retired;
        if (c->role == ProcessChild::Role::primary && c->state.load() != ModuleState::failed &&
            c->state.load() != ModuleState::stopped)
            return OldInstance::running;
        return OldInstance::gone;
    }
    return OldInstance::gone;
}

void UplinkPump::forget(ModuleId id, std::uint64_t epoch) {
    command(Command(Command::Op::forget, id, epoch));
}

void UplinkPump::respec(ModuleId id, const ModuleSpec& spec, const SystemSpec& system) {
    // Done by the pump thread, which reads a seat's spec without a lock.
    Command c(Command::Op::respec, id, 0);
    c.spec = &spec;
    c.system = &system;
    command(std::move(c));
}

void UplinkPump::handoff_published(const Header& header, std::span<const std::byte> payload) {
    std::span<const std::byte> data;
    const auto d = decode_handoff(payload, data);
    if (!d || d->op != HandoffOp::retired) return;
    const std::shared_lock lock(m_seats);
    ProcessChild* c = child(header.destination, ProcessChild::Role::replica);
    if (c == nullptr || c->handoff != d->id) return;
    c->release.store(true, std::memory_order_release);
    const std::uint64_t one = 1;
    (void)!write(m_wake.get(), &one, sizeof(one));
}

void UplinkPump::promote(ProcessChild& replica) {
    const std::unique_lock lock(m_seats);
    ProcessChild* old = child(replica.spec->id);
    if (old != nullptr) {
        // It handed over (or died first): nothing it writes counts any more.
        old->role =
            old->process.pidfd.valid() ? ProcessChild::Role::retiring : ProcessChild::Role::free;
        old->stopping = true;
        old->handing_over.store(0);
        if (old->retired_ns == 0) old->retired_ns = platform::monotonic_ns();
    }
    if (old != nullptr) ungate(*old);
    replica.role = ProcessChild::Role::primary;
    gate(replica, replica.epoch.load());
    replica.handoff = 0;
    replica.release.store(false);
    replica.announced = true;
    m_host.logger().log(
        LogLevel::debug, replica.spec->path,
        fmt::format("the replica in process {} is the module now", replica.process.pid));
}

void UplinkPump::free_seat(ProcessChild& c) {
    const std::unique_lock lock(m_seats);
    c.role = ProcessChild::Role::free;
    c.handoff = 0;
    c.release.store(false);
    c.handing_over.store(0);
}

std::vector<std::pair<std::string, std::vector<std::string>>> UplinkPump::sandbox_report() const {
    std::vector<std::pair<std::string, std::vector<std::string>>> out;
    const std::shared_lock lock(m_seats);
    for (const auto& c : m_children) {
        if (c->role != ProcessChild::Role::primary) continue;
        std::vector<std::string> layers = c->process.layers;
        const std::uint32_t bits = c->uplink.stats().sandbox.load(std::memory_order_acquire);
        if ((bits & k_sandbox_landlock) != 0) {
            layers.emplace_back(c->spec->grants.empty() ? "landlock: no file access"
                                                        : "landlock: its grants only");
        }
        for (const Grant& g : c->spec->grants) {
            layers.push_back(fmt::format("grant: {} {} {}{}", g.write ? "read-write" : "read-only",
                                         to_string(g.type), g.path,
                                         g.create ? " (made when missing)" : ""));
        }
        if ((bits & k_sandbox_no_new_privs) != 0) layers.emplace_back("no_new_privs");
        if ((bits & k_sandbox_seccomp) != 0) layers.emplace_back("seccomp allowlist");
        layers.push_back(fmt::format("quota: {} msg/s, {} B/s, {} uplink slots, {} MiB, {} files",
                                     c->spec->quota.messages_per_s, c->spec->quota.bytes_per_s,
                                     c->spec->quota.uplink_slots, c->spec->quota.memory >> 20,
                                     c->spec->quota.open_files));
        if (c->spec->quota.cpu > 0) {
            const std::lock_guard cpu_lock(m_cpu_mutex);
            const auto it = m_cpu.find(c->spec->id);
            if (it != m_cpu.end()) layers.push_back("cpu: " + it->second->describe());
        }
        for (const auto& s : c->process.skipped) layers.push_back("SKIPPED " + s);
        out.emplace_back(c->spec->path, std::move(layers));
    }
    return out;
}

ModuleStats UplinkPump::stats(ModuleId id) const {
    ModuleStats s;
    const std::shared_lock lock(m_seats);
    const ProcessChild* c = child(id);
    if (c == nullptr) return s;
    // Counters of the parent's own (tx, invalid) are authoritative; the
    // rest is what the child says about itself.
    const UplinkStats& mine = c->uplink.stats();
    const UplinkProgress& progress = c->uplink.progress();
    s.state = c->state.load();
    if (s.state == ModuleState::running &&
        mine.state.load(std::memory_order_relaxed) ==
            static_cast<std::uint32_t>(ModuleState::recovering)) {
        s.state = ModuleState::recovering;
    }
    s.tx = c->published.load();
    s.invalid = c->invalid.load() + c->rejected.load();
    s.rx = mine.rx.load(std::memory_order_relaxed);
    s.seen = mine.seen.load(std::memory_order_relaxed);
    s.lost = mine.lost.load(std::memory_order_relaxed);
    s.send_errors = mine.send_errors.load(std::memory_order_relaxed);
    s.caught_up = mine.caught_up.load(std::memory_order_relaxed);
    s.suppressed = mine.suppressed.load(std::memory_order_relaxed);
    s.snapshots = mine.snapshots.load(std::memory_order_relaxed);
    s.heartbeat = progress.heartbeat.load(std::memory_order_relaxed);
    s.cursor = progress.cursor.load(std::memory_order_relaxed);
    s.handoff = static_cast<std::uint8_t>(progress.phase.load(std::memory_order_relaxed));
    s.epoch = c->epoch.load();
    s.pid = c->pid.load();
    return s;
}

void UplinkPump::spawn(ProcessChild& c, const StartPlan& plan) {
    const ModuleSpec& spec = *c.spec;
    auto fail = [&](const std::string& why) {
        m_host.logger().log(LogLevel::error, spec.path, "cannot start: " + why);
        c.state.store(ModuleState::failed);
        if (!c.announced) {
            c.announced = true;
            m_host.started(spec.id, c.epoch.load(), StartResult::failed);
        } else {
            if (m_journal != nullptr) {
                LifecycleEvent e;
                e.module = spec.id;
                e.kind = LifecycleKind::failed;
                e.epoch = c.epoch.load();
                (void)announce(m_bus, e, "cannot start: " + why);
            }
            m_host.child_failed(spec.id, c.epoch.load(), "cannot start: " + why, false, false);
        }
    };
    const std::string description = host_description(*c.system, spec.id);
    auto text =
        platform::SharedRegion::create("hmk-system", std::max<std::size_t>(1, description.size()));
    if (!text) return fail(text.error());
    std::memcpy(text->data(), description.data(), description.size());
    (void)text->seal_writes();
    // The snapshot to restore, if any, in a sealed region of its own.
    std::optional<platform::SharedRegion> snapshot;
    if (plan.restore) {
        auto region = platform::SharedRegion::create("hmk-snapshot",
                                                     std::max<std::size_t>(1, plan.body.size()));
        if (!region) return fail(region.error());
        if (!plan.body.empty()) std::memcpy(region->data(), plan.body.data(), plan.body.size());
        (void)region->seal_writes();
        snapshot = std::move(region).value();
    }

    // A replica reads the bus from when it is up (it must see what comes
    // after its start; what came before is in the state it gets). The bus
    // waits for a primary from where it starts; for a replica once it is one.
    const std::uint64_t from = plan.handoff != 0    ? 0
                               : plan.from_seq != 0 ? plan.from_seq
                                                    : m_bus.ring().head() + 1;
    c.uplink.progress().ring_cursor.store(from != 0 ? from : m_bus.ring().head() + 1,
                                          std::memory_order_release);
    if (plan.handoff == 0) gate(c, plan.epoch);

    platform::SpawnOptions o;
    o.program = m_setup.host_program;
    o.argv = {"hmk-host",
              "--module",
              spec.path,
              "--from-seq",
              std::to_string(from),
              "--text-size",
              std::to_string(description.size()),
              "--epoch",
              std::to_string(plan.epoch),
              "--seed",
              std::to_string(plan.seed)};
    if (plan.suppress != 0)
        o.argv.insert(o.argv.end(), {"--suppress", std::to_string(plan.suppress)});
    if (plan.live_at != 0) o.argv.insert(o.argv.end(), {"--live-at", std::to_string(plan.live_at)});
    if (plan.start_ns != 0)
        o.argv.insert(o.argv.end(), {"--start-ns", std::to_string(plan.start_ns)});
    if (plan.handoff != 0) {
        o.argv.insert(o.argv.end(), {"--handoff", std::to_string(plan.handoff)});
        if (plan.handoff_move) o.argv.emplace_back("--handoff-move");
        if (plan.min_generation != 0)
            o.argv.insert(o.argv.end(), {"--min-generation", std::to_string(plan.min_generation)});
    }
    if (snapshot) {
        o.argv.insert(o.argv.end(), {"--snapshot-size", std::to_string(plan.body.size()),
                                     "--state-version", std::to_string(plan.state_version)});
    }
    for (const auto& p : m_setup.plugins) {
        o.argv.push_back("--plugin");
        o.argv.push_back(p);
    }
    // The host logs as its parent does.
    std::string level = to_string(m_host.logger().threshold());
    std::transform(level.begin(), level.end(), level.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    o.argv.push_back("--log-level");
    o.argv.push_back(level);
    o.fds = {m_bus.region().fd(), c.region.fd(), c.event.get(), text->fd(), c.feed_region.fd()};
    if (snapshot) o.fds.push_back(snapshot->fd());
    o.limits.address_space = spec.quota.memory;
    o.limits.open_files = spec.quota.open_files;
    // A gateway holds a handful of descriptors for each child of its own.
    const TopologyNode* node = c.system->topology.find(spec.id);
    if (node != nullptr && node->is_gateway())
        o.limits.open_files = std::max<std::uint64_t>(o.limits.open_files, 4096);
    // A module with grants uses the system's own files: it keeps our uid
    // (still with no capability at all), and Landlock holds it to them.
    o.drop_privileges = spec.grants.empty();
    // Its stdout and stderr are a pipe to us, never the operator's terminal;
    // its stdin is empty.
    close_output(c);
    int out[2] = {-1, -1};
    if (::pipe2(out, O_CLOEXEC) != 0) return fail(std::string("pipe: ") + std::strerror(errno));
    platform::UniqueFd out_read(out[0]), out_write(out[1]);
    platform::UniqueFd null_in(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!null_in.valid()) return fail(std::string("/dev/null: ") + std::strerror(errno));
    (void)::fcntl(out_read.get(), F_SETFL, O_NONBLOCK);
    o.stdio[0] = null_in.get();
    o.stdio[1] = out_write.get();
    o.stdio[2] = out_write.get();
    auto child = platform::spawn(o);
    if (!child) return fail(child.error());
    c.output = std::move(out_read);
    c.output_tokens = k_output_burst;
    c.output_refilled_ns = platform::monotonic_ns();
    c.process = std::move(child).value();
    if (spec.quota.cpu > 0) {
        const std::lock_guard lock(m_cpu_mutex);
        auto& share = m_cpu[spec.id];
        if (!share) {
            share = platform::CpuShare::make("p" + std::to_string(spec.id), spec.quota.cpu);
            if (share->mechanism() == platform::CpuMechanism::weight) {
                m_host.logger().log(
                    LogLevel::warn, spec.path,
                    "its CPU share is held by scheduling weight only: " + share->fallback_reason());
            }
        }
        if (auto added = share->add_process(c.process.pid); !added) {
            m_host.logger().log(LogLevel::warn, spec.path,
                                "its CPU share is not held: " + added.error());
        }
    }
    c.pid.store(c.process.pid);
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
    ev.data.u64 = tag(index, k_output);
    epoll_ctl(m_epoll.get(), EPOLL_CTL_ADD, c.output.get(), &ev);
    std::string layers;
    for (const auto& l : c.process.layers) layers += (layers.empty() ? "" : ", ") + l;
    m_host.logger().log(
        LogLevel::debug, spec.path,
        fmt::format("spawned pid {} ({}); waiting for it to start", c.process.pid, layers));
    for (const auto& s : c.process.skipped) {
        m_host.logger().log(LogLevel::warn, spec.path, "isolation layer skipped: " + s);
    }
}

void UplinkPump::start_instance(ProcessChild& c, std::uint64_t epoch) {
    {
        const std::unique_lock lock(m_seats);
        c.system = &m_setup.generations->latest();
    }
    // The old process is gone and its uplink drained: the uplink is emptied
    // for the new one (the bus may be ringing its bells meanwhile, so no
    // reformatting), and the new one is planned and spawned.
    reset_seat(c, epoch);
    c.announced = !m_host.booting();
    const StartPlan plan = m_host.plan(*c.spec, epoch);
    spawn(c, plan);
}

void UplinkPump::reset_seat(ProcessChild& c, std::uint64_t epoch) {
    c.uplink.reset();
    drain_eventfd(c.event.get());
    c.message_tokens = c.spec->quota.messages_per_s;
    c.byte_tokens = c.spec->quota.bytes_per_s;
    c.throttled_since_ns = 0;
    c.stop_reason.clear();
    c.stopping = false;
    c.pending_epoch = 0;
    c.held.reset();
    c.last_request = 0;
    c.run = 0;
    c.run_start = 0;
    c.feed_next = 0;
    c.reader.reset();
    {
        // Readers pair a seat's epoch with its state under the seat lock: a
        // new instance never shows with the state its seat's last one left
        // (a swap took a failed replica's state for its new replica's).
        const std::unique_lock lock(m_seats);
        c.state.store(ModuleState::created);
        c.epoch.store(epoch);
    }
    c.fenced.store(0);
    c.retired_ns = 0;
    c.handed_over.store(false);
}

void UplinkPump::run_commands() {
    std::deque<Command> commands;
    {
        const std::lock_guard lock(m_commands_mutex);
        commands.swap(m_commands);
    }
    for (const Command& cmd : commands) {
        if (cmd.op == Command::Op::replica) {
            start_replica_now(cmd);
            continue;
        }
        if (cmd.op == Command::Op::respec) {
            const std::unique_lock lock(m_seats);
            for (auto& c : m_children) {
                if (c->spec == nullptr || c->spec->id != cmd.id ||
                    c->role == ProcessChild::Role::free)
                    continue;
                c->spec = cmd.spec;
                c->system = cmd.system;
            }
            continue;
        }
        if (cmd.op == Command::Op::forget) {
            for (auto& c : m_children) {
                if (c->spec == nullptr || c->spec->id != cmd.id || c->epoch.load() != cmd.epoch ||
                    c->role != ProcessChild::Role::primary)
                    continue;
                c->stopping = true;
                if (c->process.pidfd.valid()) {
                    const std::unique_lock lock(m_seats);
                    c->role = ProcessChild::Role::retiring;
                    c->retired_ns = platform::monotonic_ns();
                } else {
                    free_seat(*c);
                }
            }
            continue;
        }
        if (cmd.op == Command::Op::drop_replica) {
            ProcessChild* r = child(cmd.id, ProcessChild::Role::replica);
            if (r == nullptr) continue;
            r->stopping = true;
            if (r->process.pidfd.valid()) {
                stop_child(*r, "");
            } else {
                free_seat(*r);
            }
            continue;
        }
        ProcessChild* c = child(cmd.id);
        if (c == nullptr) continue;
        if (cmd.op == Command::Op::kill) {
            if (!c->process.pidfd.valid()) continue;
            if (cmd.epoch != 0 && cmd.epoch != c->epoch.load()) continue;  // gone already
            if (cmd.cause.empty()) {
                c->stopping = true;
                stop_child(*c, "");
            } else {
                stop_child(*c, cmd.cause);
            }
            continue;
        }
        // Restart: once the running instance (if any) is gone.
        if (c->process.pidfd.valid()) {
            c->stopping = true;
            c->pending_epoch = cmd.epoch;
            stop_child(*c, "");
        } else {
            start_instance(*c, cmd.epoch);
        }
    }
}

void UplinkPump::start_replica_now(const Command& cmd) {
    // A free seat of the right size, or a new one.
    ProcessChild* seat = nullptr;
    for (auto& c : m_children) {
        if (c->role == ProcessChild::Role::free && !c->process.pidfd.valid() &&
            c->uplink.slot_count() == cmd.spec->quota.uplink_slots) {
            seat = c.get();
            break;
        }
    }
    if (seat == nullptr) {
        auto made = make_seat(*cmd.spec);
        if (!made) {
            m_host.logger().log(LogLevel::error, cmd.spec->path,
                                "cannot prepare a process for its replica: " + made.error());
            m_host.child_failed(cmd.id, cmd.epoch, "its replica could not be prepared", false,
                                false);
            return;
        }
        seat = *made;
    }
    {
        const std::unique_lock lock(m_seats);
        seat->spec = cmd.spec;
        seat->system = cmd.system;
        seat->role = ProcessChild::Role::replica;
        seat->handoff = cmd.plan.handoff;
        seat->release.store(false);
        seat->handing_over.store(0);
    }
    reset_seat(*seat, cmd.epoch);
    seat->announced = true;  // its start is its handoff's business
    spawn(*seat, cmd.plan);
}

bool UplinkPump::handoff_record_ok(const ProcessChild& c, const Header& h,
                                   std::span<const std::byte> payload) const {
    // The runtime's own messages a module host may send: its journaled
    // timers (to itself), its snapshots (to its parent), a gateway's answers
    // to its parent's management requests and, while it hands over, its
    // state and its last word (to itself). Anything else of the
    // runtime's types is a forgery.
    switch (h.type) {
        case msg::k_timer:
            return h.destination == c.spec->id;
        case msg::k_snapshot:
            return h.destination == m_bus.id();
        case msg::k_manage:
            // A gateway's answer to its parent's request, and only that.
            return h.destination == m_bus.id() && h.is_reply() && h.hops == 0 &&
                   c.system->topology.find(c.spec->id) != nullptr &&
                   c.system->topology.find(c.spec->id)->is_gateway();
        case msg::k_handoff: {
            const std::uint64_t handoff = c.handing_over.load(std::memory_order_acquire);
            std::span<const std::byte> data;
            const auto d = decode_handoff(payload, data);
            return handoff != 0 && h.destination == c.spec->id && d && d->id == handoff &&
                   (d->op == HandoffOp::state || d->op == HandoffOp::retired);
        }
        default:
            return false;
    }
}

void UplinkPump::check_start(ProcessChild& c, std::uint64_t now) {
    if (c.state.load() != ModuleState::created || !c.process.pidfd.valid()) return;
    const std::uint32_t reported = c.uplink.stats().state.load(std::memory_order_acquire);
    if (reported == static_cast<std::uint32_t>(ModuleState::running) ||
        reported == static_cast<std::uint32_t>(ModuleState::recovering)) {
        c.state.store(ModuleState::running);
        m_host.logger().log(
            LogLevel::info, c.spec->path,
            fmt::format("running in process {} on bus {}", c.process.pid, m_bus.name()));
        if (!c.announced) m_host.started(c.spec->id, c.epoch.load(), StartResult::ok);
        c.announced = true;
    } else if (now > c.spawned_ns && now - c.spawned_ns > k_start_deadline_ns) {
        stop_child(c, "did not start within 10 s");
    }
}

void UplinkPump::stop_child(ProcessChild& c, const std::string& reason) {
    if (!c.process.pidfd.valid()) return;
    if (!reason.empty() && c.stop_reason.empty()) {
        c.stop_reason = reason;
        m_host.logger().log(LogLevel::warn, c.spec->path, "stopping it: " + reason);
    }
    platform::kill_child(c.process.pidfd);
}

void UplinkPump::relay_output(ProcessChild& c, bool to_end) {
    if (!c.output.valid()) return;
    char buf[16384];
    // A bounded share of the pump's time per wake-up, unless the host is gone.
    for (int round = 0; to_end || round < 16; ++round) {
        const ssize_t n = ::read(c.output.get(), buf, sizeof(buf));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
                if (!c.output_line.empty()) output_line(c, std::exchange(c.output_line, {}));
                close_output(c);
            }
            return;
        }
        std::string_view chunk(buf, static_cast<std::size_t>(n));
        while (!chunk.empty()) {
            const std::size_t nl = chunk.find('\n');
            const std::string_view part = chunk.substr(0, nl);
            const std::size_t room = k_output_line - std::min(k_output_line, c.output_line.size());
            c.output_line.append(part.substr(0, room));
            if (part.size() > room) c.output_dropped_bytes += part.size() - room;  // cut
            if (nl == std::string_view::npos) break;
            output_line(c, std::exchange(c.output_line, {}));
            chunk.remove_prefix(nl + 1);
        }
    }
}

void UplinkPump::output_line(ProcessChild& c, const std::string& line) {
    Logger& logger = m_host.logger();
    const std::string& path = c.spec->path;
    const std::uint64_t now = platform::monotonic_ns();
    c.output_tokens =
        std::min(k_output_burst, c.output_tokens + static_cast<double>(now - c.output_refilled_ns) *
                                                       k_output_bytes_per_s / 1e9);
    c.output_refilled_ns = now;
    const auto cost = static_cast<double>(line.size() + 1);
    if (c.output_tokens < cost) {
        ++c.output_dropped_lines;
        c.output_dropped_bytes += line.size() + 1;
        return;
    }
    c.output_tokens -= cost;
    if (c.output_dropped_lines != 0) {
        logger.log(LogLevel::warn, path,
                   fmt::format("{} lines ({} bytes) of its output dropped: it wrote more than {} "
                               "KiB/s",
                               c.output_dropped_lines, c.output_dropped_bytes,
                               static_cast<int>(k_output_bytes_per_s) >> 10));
        c.output_dropped_lines = c.output_dropped_bytes = 0;
    }
    // "L<level> SOURCE\tTEXT" and "P\tLINE" from its Logger (LogFormat::relay);
    // anything else the module wrote itself. Whatever it claims, it speaks
    // only for itself and its own subtree.
    auto each_line = [](std::string_view text, auto&& fn) {
        for (;;) {
            const std::size_t sep = text.find('\x1f');
            fn(printable(text.substr(0, sep)));
            if (sep == std::string_view::npos) return;
            text.remove_prefix(sep + 1);
        }
    };
    std::string_view v(line);
    if (v.size() >= 3 && v[0] == 'L' && v[1] >= '0' && v[1] <= '3' && v[2] == ' ' &&
        v.find('\t') != std::string_view::npos) {
        const auto level = static_cast<LogLevel>(v[1] - '0');
        const std::size_t tab = v.find('\t');
        const std::string source = printable(v.substr(3, tab - 3));
        const bool own = source == path || source.rfind(path + "/", 0) == 0;
        std::string text;
        each_line(v.substr(tab + 1),
                  [&](const std::string& l) { text += (text.empty() ? "" : "\n") + l; });
        logger.log(level, own ? source : path, own ? text : source + ": " + text);
    } else if (v.size() >= 2 && v[0] == 'P' && v[1] == '\t') {
        each_line(v.substr(2), [&](const std::string& l) { logger.print(l); });
    } else {
        logger.log(LogLevel::warn, path, "output: " + printable(v));
    }
}

void UplinkPump::close_output(ProcessChild& c) {
    if (!c.output.valid()) return;
    epoll_ctl(m_epoll.get(), EPOLL_CTL_DEL, c.output.get(), nullptr);
    c.output = platform::UniqueFd();
    if (c.output_dropped_lines != 0) {
        m_host.logger().log(LogLevel::warn, c.spec->path,
                            fmt::format("{} lines ({} bytes) of its output dropped",
                                        c.output_dropped_lines, c.output_dropped_bytes));
    }
    c.output_dropped_lines = c.output_dropped_bytes = 0;
    c.output_line.clear();
}

void UplinkPump::reap(ProcessChild& c) {
    if (!c.process.pidfd.valid()) return;
    const auto status = platform::try_reap(c.process.pidfd);
    if (!status) return;
    // What it wrote before it went comes first.
    relay_output(c, true);
    epoll_ctl(m_epoll.get(), EPOLL_CTL_DEL, c.process.pidfd.get(), nullptr);
    c.process.pidfd = platform::UniqueFd();
    // It reads no more: the bus must not wait for it (not even for what it
    // still has to say, published below).
    ungate(c);
    if (c.role != ProcessChild::Role::primary) {
        // A replica that went (dropped, or failed: its handoff's business),
        // or an old instance that retired: the seat is free again.
        const std::string text = fmt::format("process {} {}", c.process.pid, status->describe());
        c.state.store(ModuleState::stopped);
        if (c.role == ProcessChild::Role::replica && !c.stopping && !m_shutting_down.load()) {
            c.state.store(ModuleState::failed);
            m_host.logger().log(LogLevel::error, c.spec->path, "its replica failed: " + text);
            m_host.child_failed(c.spec->id, c.epoch.load(), "the replica " + text, false,
                                status->exited && status->code == k_exit_restore_failed);
        } else {
            m_host.logger().log(
                LogLevel::debug, c.spec->path,
                fmt::format(
                    "{} ended: {}",
                    c.role == ProcessChild::Role::retiring ? "the old instance" : "a replica",
                    text));
        }
        if (c.fenced.load() != 0) {
            m_host.logger().log(LogLevel::warn, c.spec->path,
                                fmt::format("the old instance wrote {} messages after it handed "
                                            "over: dropped",
                                            c.fenced.load()));
        }
        free_seat(c);
        return;
    }
    const bool was_starting = c.state.load() == ModuleState::created;
    // What it wrote before it ended was sent: it goes on the bus (a
    // recovery counts on it). Not so for a child killed for breaking rules.
    if (c.stop_reason.empty() && c.state.load() == ModuleState::running) {
        while (drain(c, platform::monotonic_ns(), true)) {
        }
    }
    const bool asked = c.stopping || m_shutting_down.load();
    const bool clean = asked && c.stop_reason.empty() && status->exited && status->code == 0;
    c.state.store(clean || (asked && c.stop_reason.empty()) ? ModuleState::stopped
                                                            : ModuleState::failed);
    std::string text = fmt::format("process {} {}", c.process.pid, status->describe());
    if (clean) {
        m_host.logger().log(LogLevel::info, c.spec->path, "stopped");
    } else if (asked && c.stop_reason.empty()) {
        m_host.logger().log(LogLevel::info, c.spec->path, "stopped by its parent (" + text + ")");
    } else {
        if (!c.stop_reason.empty()) text += " (stopped by its parent: " + c.stop_reason + ")";
        m_host.logger().log(LogLevel::error, c.spec->path, "failed: " + text);
    }
    const bool restore_failed =
        was_starting && status->exited && status->code == k_exit_restore_failed;
    if (was_starting && !c.announced) {
        c.announced = true;
        m_host.started(c.spec->id, c.epoch.load(),
                       restore_failed ? StartResult::restore_failed : StartResult::failed);
    } else if (!asked) {
        // Said on the bus at once (the parent's agent knows now); what to do
        // about it is the supervisor's call.
        if (m_journal != nullptr) {
            LifecycleEvent e;
            e.module = c.spec->id;
            e.kind = LifecycleKind::failed;
            e.epoch = c.epoch.load();
            (void)announce(m_bus, e, text);
        }
        m_host.child_failed(c.spec->id, c.epoch.load(), text,
                            status->exited && status->code == 0 && c.stop_reason.empty(),
                            restore_failed);
    }
    if (c.pending_epoch != 0 && !m_shutting_down.load()) start_instance(c, c.pending_epoch);
}

bool UplinkPump::limited_log(std::atomic<std::uint64_t>& counter) {
    // The first few of a kind, then one in a thousand: a hostile child must
    // not be able to flood the log either.
    const std::uint64_t n = counter.load();
    return n <= 5 || n % 1000 == 0;
}

bool UplinkPump::drain(ProcessChild& c, std::uint64_t now, bool ignore_quota) {
    if (c.role == ProcessChild::Role::retiring) {
        // It handed over: whatever it still writes is dropped (epoch fencing).
        int n = 0;
        for (; n < k_batch && c.uplink.pop(m_record).status == PopStatus::ok; ++n)
            c.fenced.fetch_add(1);
        return false;
    }
    // A replica's records wait until it is the module; a free seat has none.
    if (c.role != ProcessChild::Role::primary) return false;
    // A child being killed gets nothing more published; its exit is reaped from epoll.
    if (!ignore_quota &&
        (c.state.load() != ModuleState::running || !c.stop_reason.empty() || c.stopping))
        return false;
    const QuotaSpec& q = c.spec->quota;
    const double elapsed =
        now > c.refilled_ns ? static_cast<double>(now - c.refilled_ns) / 1e9 : 0.0;
    c.refilled_ns = now;
    c.message_tokens = std::min(q.messages_per_s, c.message_tokens + elapsed * q.messages_per_s);
    c.byte_tokens = std::min(q.bytes_per_s, c.byte_tokens + elapsed * q.bytes_per_s);

    int n = 0;
    if (c.held) {
        if (put(c, *c.held, c.held_payload) == Put::no_room) return false;
        c.held.reset();
        ++n;
    }
    for (; n < k_batch; ++n) {
        if (!ignore_quota && (c.message_tokens < 1 || c.byte_tokens < 0)) {
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
            return false;
        }
        const std::span<const std::byte> record(m_record.data(), r.size);
        auto header = decode_header(record, m_bus.settings().max_payload, Framing::exact);
        if (!header) {
            c.invalid.fetch_add(1);
            if (limited_log(c.invalid)) {
                m_host.logger().log(LogLevel::warn, c.spec->path,
                                    fmt::format("dropped a malformed message: {} (#{})",
                                                to_string(header.error()), c.invalid.load()));
            }
            continue;
        }
        // Only the runtime speaks with the operator's authority.
        header->flags = static_cast<std::uint16_t>(header->flags & ~k_flag_operator);
        if (msg::is_runtime_type(header->type) &&
            !handoff_record_ok(c, *header, record.subspan(k_header_size))) {
            c.rejected.fetch_add(1);
            if (limited_log(c.rejected)) {
                m_host.logger().log(
                    LogLevel::warn, c.spec->path,
                    fmt::format("refused a message of the runtime's type {:#x} (#{})", header->type,
                                c.rejected.load()));
            }
            continue;
        }
        const Put put_result = put(c, *header, record.subspan(k_header_size));
        if (put_result == Put::refused) continue;
        if (put_result == Put::no_room) {
            // The bus has a reader a whole ring behind: this record waits
            // here, the rest in the child's uplink, and the child waits.
            c.held = *header;
            c.held_payload.assign(record.begin() + k_header_size, record.end());
            break;
        }
        if (header->type == msg::k_handoff) {
            std::span<const std::byte> data;
            const auto d = decode_handoff(record.subspan(k_header_size), data);
            if (d && d->op == HandoffOp::retired) {
                // Its last word: from here on the replica speaks for the module.
                const std::unique_lock lock(m_seats);
                c.role = ProcessChild::Role::retiring;
                c.stopping = true;
                c.handing_over.store(0);
                c.handed_over.store(true);
                c.retired_ns = now;
                ++n;
                break;
            }
        }
    }
    c.throttled_since_ns = 0;
    if (n > 0) m_bus.wake_readers();  // one wake-up scan per batch
    return n > 0;
}

UplinkPump::Put UplinkPump::put(ProcessChild& c, const Header& header,
                                std::span<const std::byte> payload) {
    const auto published = m_bus.publish_deferred(header, payload, c.spec->id);
    if (!published && published.error() == SendError::full) return Put::no_room;
    if (!published) {
        c.rejected.fetch_add(1);
        if (limited_log(c.rejected)) {
            m_host.logger().log(
                LogLevel::warn, c.spec->path,
                fmt::format("refused a message claiming sender #{} hops {}: {} (#{})",
                            header.sender, header.hops, to_string(published.error()),
                            c.rejected.load()));
        }
        return Put::refused;
    }
    c.published.fetch_add(1, std::memory_order_relaxed);
    c.message_tokens -= 1;
    c.byte_tokens -= static_cast<double>(k_header_size + payload.size());
    return Put::published;
}

void UplinkPump::gate(ProcessChild& c, std::uint64_t epoch) {
    m_bus.add_reader(&c.uplink.progress().ring_cursor, c.spec->id, epoch);
    c.gated = true;
}

void UplinkPump::ungate(ProcessChild& c) {
    if (!c.gated) return;
    m_bus.remove_reader(&c.uplink.progress().ring_cursor);
    c.gated = false;
}

bool UplinkPump::feed(ProcessChild& c) {
    if (m_journal == nullptr || c.state.load() != ModuleState::running || !c.stop_reason.empty())
        return false;
    UplinkProgress& progress = c.uplink.progress();
    // The child's words are untrusted: they only steer what we read for it.
    const std::uint64_t run = progress.want_run.load(std::memory_order_acquire);
    const std::uint64_t want = progress.want_from.load(std::memory_order_acquire);
    if (want == 0 || want > m_bus.ring().head()) return false;
    if (want != c.last_request || run != c.run) {
        c.last_request = want;
        // A request the current run covers already (the child looked just
        // before we wrote) goes on with the run; anything else starts a new
        // one (a new position for the reader, which may mean a rescan), and
        // so does a new run the child asks for: it has gone past `want` in
        // the feed, and what we write next would not have it.
        const bool rewind = run != c.run;
        c.run = run;
        if (rewind || c.run_start == 0 || want < c.run_start || want > c.feed_next) {
            c.run_start = want;
            c.feed_next = want;
            if (!c.reader) c.reader.emplace(m_journal->dir(), m_journal->max_payload());
            c.reader->seek(want);
        }
    }
    BroadcastRing& feed = *c.feed;
    const std::uint64_t taken = progress.feed_read.load(std::memory_order_acquire);
    // Past the ring's oldest (with room to switch over) the child reads the bus itself.
    const std::uint64_t enough = m_bus.ring().oldest() + m_bus.ring().slot_count() / 2;
    int n = 0;
    while (n < k_batch && c.feed_next < enough &&
           feed.head() + 1 - std::min(taken, feed.head() + 1) < k_feed_slots) {
        JournalRecord r;
        // Asked before the read (see JournalCatchUp::read): after it, a
        // record the monitor wrote in between would count as lost.
        const bool may_still_write = m_bus.journal_may_still_write(c.feed_next);
        auto st = c.reader->next(r);
        if (st == JournalReader::Status::end) {
            // Not written yet: wait for it while the monitor may still write it.
            if (may_still_write) break;
            st = JournalReader::Status::missing;
        }
        Header h;
        h.correlation = c.run;
        if (st == JournalReader::Status::ok) {
            h.type = 0;
            (void)feed.publish(h, r.message);
            c.feed_next = r.header.seq + 1;
        } else {
            // Missing or damaged: tell the child which range it will not get.
            const std::uint64_t last =
                st == JournalReader::Status::missing && c.reader->missing_last() >= c.feed_next
                    ? c.reader->missing_last()
                    : c.feed_next;
            if (st == JournalReader::Status::damaged) {
                m_host.logger().log(LogLevel::error, c.spec->path,
                                    "journal damaged while feeding it: " + c.reader->problem());
            }
            std::byte gap[16];
            detail::put_le<std::uint64_t>(gap, 0, c.feed_next);
            detail::put_le<std::uint64_t>(gap, 8, last);
            h.type = msg::k_feed_gap;
            (void)feed.publish(h, gap);
            c.feed_next = last + 1;
            c.reader->seek(c.feed_next);
        }
        ++n;
    }
    if (n > 0) {
        UplinkBells& bells = c.uplink.bells();
        Doorbell{&bells.child_word, &bells.child_armed, platform::FutexScope::shared}.ring();
    }
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
            if (kind == k_output) relay_output(c, false);
            if (kind == k_exit) reap(c);
        }
    }
}

bool UplinkPump::any_pending() const {
    for (const auto& c : m_children) {
        if (c->role == ProcessChild::Role::replica && c->release.load()) return true;
        if (c->state.load() != ModuleState::running || !c->stop_reason.empty()) continue;
        if (c->role == ProcessChild::Role::replica) continue;  // its records wait
        if (c->throttled_since_ns == 0 && c->uplink.pending() > 0) return true;
        if (m_journal != nullptr) {
            const std::uint64_t want =
                c->uplink.progress().want_from.load(std::memory_order_acquire);
            const std::uint64_t run = c->uplink.progress().want_run.load(std::memory_order_acquire);
            if (want != 0 && (want != c->last_request || run != c->run)) return true;
        }
    }
    const std::lock_guard lock(const_cast<std::mutex&>(m_commands_mutex));
    return !m_commands.empty();
}

void UplinkPump::run() {
    for (auto& c : m_children) start_instance(*c, 1);
    int idle = 0;
    while (!m_stop.load()) {
        run_commands();
        const std::uint64_t now = platform::monotonic_ns();
        bool work = false;
        bool waiting = false;
        for (auto& c : m_children) {
            if (c->role == ProcessChild::Role::replica && c->release.load()) {
                promote(*c);
                work = true;
            }
            if (c->role == ProcessChild::Role::retiring && c->process.pidfd.valid() &&
                now > c->retired_ns + k_retire_grace_ns) {
                stop_child(*c, "did not exit after it handed over");
            }
            check_start(*c, now);
            work |= drain(*c, now);
            const bool fed = feed(*c);
            work |= fed;
            waiting |= c->state.load() == ModuleState::created || c->throttled_since_ns != 0 ||
                       c->held.has_value();
            // A child behind the ring waits for the journal to have more.
            waiting |= c->last_request != 0 && c->feed_next != 0 &&
                       c->feed_next < m_bus.ring().oldest() && !fed;
        }
        // Short sleeps while a child is starting, throttled or being fed
        // (there is a deadline to watch), otherwise until a child writes or exits.
        if (work) {
            idle = 0;
        } else if (++idle < k_idle_spins && !waiting) {
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

void UplinkPump::drop_all_replicas() {
    std::vector<ModuleId> ids;
    {
        const std::shared_lock lock(m_seats);
        for (const auto& c : m_children) {
            if (c->role == ProcessChild::Role::replica) ids.push_back(c->spec->id);
        }
    }
    for (ModuleId id : ids) drop_replica(id);
}

void UplinkPump::stop() {
    if (!m_thread.joinable()) return;
    m_shutting_down.store(true);
    // Replicas go at once (they take no 'stop': they are not the module).
    drop_all_replicas();
    // A 'stop' from the parent (the bus owner) to each child, then a little time.
    // (Roles change on the pump thread, under the seat lock.)
    const ModuleId owner = m_bus.id();
    std::vector<ModuleId> running;
    {
        const std::shared_lock lock(m_seats);
        for (const auto& c : m_children) {
            if (c->state.load() == ModuleState::running && c->role == ProcessChild::Role::primary)
                running.push_back(c->spec->id);
        }
    }
    for (const ModuleId id : running) {
        Header h;
        h.sender = owner;
        h.destination = id;
        h.type = msg::k_stop;
        (void)m_bus.publish(h, {}, owner);
    }
    auto any_up = [&] {
        const std::shared_lock lock(m_seats);
        return std::any_of(m_children.begin(), m_children.end(), [](const auto& c) {
            const ModuleState s = c->state.load();
            return c->role == ProcessChild::Role::primary &&
                   (s == ModuleState::running || s == ModuleState::created);
        });
    };
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (std::chrono::steady_clock::now() < deadline && any_up()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    m_stop.store(true);
    const std::uint64_t one = 1;
    (void)!write(m_wake.get(), &one, sizeof(one));
    m_thread.join();
}

}  // namespace hmk::detail
