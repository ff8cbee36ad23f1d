// SPDX-License-Identifier: Apache-2.0
#include "hmk/runtime/module_host.hpp"

#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <thread>
#include <tuple>
#include <vector>

#include "hmk/detail/endian.hpp"
#include "hmk/platform/clock.hpp"
#include "hmk/platform/futex.hpp"
#include "hmk/platform/sandbox.hpp"
#include "hmk/platform/shm.hpp"
#include "hmk/runtime/config.hpp"
#include "hmk/uplink_ring.hpp"
#include "manage.hpp"
#include "process_child.hpp"
#include "runner.hpp"
#include "system_impl.hpp"

namespace hmk {
namespace {

/// The parent bus as a module in its own process sees it: the owner's ring,
/// mapped read-only, and the module's uplink to the owner.
class RemoteBus final : public detail::BusPort {
  public:
    RemoteBus(BroadcastRing ring, UplinkRing uplink, int event_fd, std::string name,
              std::uint32_t wait_limit_ms)
        : m_ring(ring),
          m_uplink(uplink),
          m_event(event_fd),
          m_name(std::move(name)),
          m_wait_limit_ms(wait_limit_ms) {
        m_buffer.resize(m_uplink.max_message());
    }
    const BroadcastRing& ring() const override { return m_ring; }
    const std::string& name() const override { return m_name; }

    Result<std::uint64_t, SendError> publish(Header h, std::span<const std::byte> payload,
                                             ModuleId /*via*/) override {
        // The owner stamps and checks everything; we only frame the message.
        if (payload.size() > m_ring.max_payload()) return Err{SendError::payload_too_large};
        h.payload_size = static_cast<std::uint32_t>(payload.size());
        encode_header(h, std::span<std::byte, k_header_size>(m_buffer.data(), k_header_size));
        std::copy(payload.begin(), payload.end(), m_buffer.begin() + k_header_size);
        const std::span<const std::byte> record(m_buffer.data(), k_header_size + payload.size());
        if (!m_uplink.try_push(record)) {
            // The parent is behind, throttles us, or its bus has no room: the
            // runner reads on and tries again (wait_for_room).
            signal_owner();
            return Err{SendError::full};
        }
        signal_owner();
        return std::uint64_t{0};  // the sequence number is known once the owner publishes it
    }

    /// A child may wait for its parent, never the reverse: a short sleep,
    /// its owner woken first (it may be asleep with our records waiting).
    void wait_for_room(std::int64_t timeout_ns) override {
        signal_owner();
        ::usleep(static_cast<useconds_t>(std::max<std::int64_t>(timeout_ns / 1000, 1)));
    }
    /// The parent's pump takes our records once its bus has room: at the
    /// latest when the reader holding it up is evicted, at its deadline.
    std::uint32_t wait_limit_ms() const override { return m_wait_limit_ms; }
    /// The parent registered our place in its uplink region when it started us.
    std::atomic<std::uint64_t>* attach_reader(std::atomic<std::uint64_t>& /*own*/,
                                              ModuleId /*module*/, std::uint64_t /*epoch*/,
                                              detail::Gated /*gated*/) override {
        return &m_uplink.progress().ring_cursor;
    }

    /// Wakes the owner's pump, only if it sleeps: one write per burst.
    void signal_owner() {
        std::atomic<std::uint32_t>& armed = m_uplink.bells().owner_armed;
        if (armed.load(std::memory_order_seq_cst) != 0 &&
            armed.exchange(0, std::memory_order_seq_cst) != 0) {
            const std::uint64_t one = 1;
            (void)!write(m_event, &one, sizeof(one));
        }
    }

  private:
    BroadcastRing m_ring;
    UplinkRing m_uplink;
    int m_event;
    std::string m_name;
    std::uint32_t m_wait_limit_ms;
    std::vector<std::byte> m_buffer;
};

/// The journal feed as the module host reads it: messages of its parent bus
/// its parent read from the bus journal for it, in a ring it maps
/// read-only. It asks for a sequence number through its uplink region.
class FeedCatchUp final : public detail::CatchUp {
  public:
    FeedCatchUp(BroadcastRing feed, UplinkProgress& progress, RemoteBus& bus)
        : m_feed(feed),
          m_progress(progress),
          m_bus(bus),
          m_cursor(feed.head() + 1),
          m_run(progress.want_run.load(std::memory_order_relaxed)) {
        m_buffer.resize(m_feed.max_message());
        // The feed outlives instances: what an earlier one left in it is not ours.
        m_progress.feed_read.store(m_cursor, std::memory_order_release);
    }

    Status read(std::uint64_t seq, std::span<std::byte> out, std::uint32_t& size,
                std::uint64_t& missing_last) override {
        bool gone_past = false;
        while (!gone_past) {
            const ReadResult r = m_feed.read(m_cursor, m_buffer, Visibility::published);
            if (r.status == ReadStatus::lost) continue;
            if (r.status == ReadStatus::empty) break;
            m_progress.feed_read.store(m_cursor, std::memory_order_release);
            // Half of the feed is read: the parent refills it while we read
            // the other half (one wake-up of the parent per burst at most).
            if (m_feed.head() + 1 - m_cursor <= m_feed.slot_count() / 2) m_bus.signal_owner();
            const std::span<const std::byte> record(m_buffer.data(), r.size);
            const auto outer = decode_header(record, m_feed.max_payload(), Framing::exact);
            if (!outer || outer->correlation != m_run) continue;  // an earlier run
            const auto payload = record.subspan(k_header_size);
            if (outer->type == msg::k_feed_gap && payload.size() == 16) {
                const std::uint64_t first = detail::get_le<std::uint64_t>(payload.data(), 0);
                const std::uint64_t last = detail::get_le<std::uint64_t>(payload.data(), 8);
                if (first <= seq && seq <= last) {
                    missing_last = last;
                    return Status::missing;
                }
                gone_past = first > seq;
                continue;
            }
            const auto inner = decode_header(payload, k_max_payload, Framing::exact);
            if (!inner || inner->seq < seq) continue;  // before it: not needed again
            if (inner->seq > seq) {
                gone_past = true;
            } else if (payload.size() > out.size()) {
                missing_last = seq;  // larger than the bus allows: cannot be one of its messages
                return Status::missing;
            } else {
                std::copy(payload.begin(), payload.end(), out.begin());
                size = static_cast<std::uint32_t>(payload.size());
                return Status::ok;
            }
        }
        if (gone_past) {
            // The feed is past it (a replica looked ahead, then needs what
            // it passed): a new run, from it. What the parent writes of the
            // old one meanwhile is skipped by its run number.
            m_progress.want_from.store(seq, std::memory_order_release);
            m_progress.want_run.store(++m_run, std::memory_order_release);
            m_bus.signal_owner();
            return Status::pending;
        }
        // Ask the parent for it (again: a new request restarts its reading there).
        if (m_progress.want_from.load(std::memory_order_relaxed) != seq ||
            m_feed.head() < m_cursor) {
            m_progress.want_from.store(seq, std::memory_order_release);
            m_bus.signal_owner();
        }
        return Status::pending;
    }
    bool ready() override { return m_feed.head() >= m_cursor; }

  private:
    BroadcastRing m_feed;
    UplinkProgress& m_progress;
    RemoteBus& m_bus;
    std::uint64_t m_cursor;
    std::uint64_t m_run;  // the feed run it reads (UplinkProgress::want_run)
    std::vector<std::byte> m_buffer;
};

/// The runner's host inside a module host process.
class HostSide final : public detail::RunnerHost {
  public:
    HostSide(Logger& logger, const Topology& topology, UplinkStats& stats, UplinkProgress& progress)
        : m_logger(logger), m_topology(topology), m_stats(stats), m_progress(progress) {}
    Logger& logger() override { return m_logger; }
    const Topology& topology() const override { return m_topology; }
    /// A gateway's host: the owner of its subtree, which its parent's
    /// management requests are for.
    void set_owner(detail::SystemImpl* owner, ModuleId self) {
        m_owner = owner;
        m_self = self;
    }

    // Management requests from its parent (on the runner's thread): done by
    // its owner if it manages the module, else passed down to the child
    // gateway that does, whose answer goes back up with the parent's
    // correlation.
    std::vector<ManageSend> manage(const Message& m) override {
        if (m_owner == nullptr) return RunnerHost::manage(m);
        const Header& h = m.header;
        const std::string_view text(reinterpret_cast<const char*>(m.payload.data()),
                                    m.payload.size());
        if (h.is_reply()) {
            const auto it = m_passed_on.find(h.correlation);
            if (it == m_passed_on.end()) return {};
            const auto [sender, correlation] = it->second;
            m_passed_on.erase(it);
            return {ManageSend{false, sender, correlation, true, std::string(text)}};
        }
        auto answer = [&](std::string t) {
            return std::vector<ManageSend>{
                ManageSend{false, h.sender, h.correlation, true, std::move(t)}};
        };
        const auto request = detail::parse_manage(text);
        if (!request) return answer("error not a management request: " + std::string(text));
        const TopologyNode* target = m_topology.find(request->id);
        const std::string where = m_topology.find(m_self)->path;
        if (target == nullptr || request->id == m_self ||
            !m_topology.in_subtree(request->id, m_self))
            return answer(
                fmt::format("error module #{} is not in the subtree of {}", request->id, where));
        if (const ModuleId child = m_owner->reached_through(request->id); child != k_no_module) {
            const std::uint64_t correlation = m_owner->next_correlation();
            if (m_passed_on.size() >= 1024) m_passed_on.erase(m_passed_on.begin());
            m_passed_on.emplace(correlation, std::pair{h.sender, h.correlation});
            return {ManageSend{true, child, correlation, false, std::string(text)}};
        }
        if (request->op == detail::ManageRequest::Op::kill) {
            auto killed = m_owner->kill(request->id);
            return answer(killed ? std::string("ok") : "error " + killed.error());
        }
        return answer(detail::encode_stats(m_owner->module_stats(request->id)));
    }

    /// The runner it hosts (its state at start tells running from recovering).
    void set_runner(const detail::Runner* runner) { m_runner = runner; }
    void started(ModuleId /*id*/, std::uint64_t /*epoch*/, detail::StartResult result) override {
        m_result = result;
        // A recovering instance says so from the start: had it said running
        // first, its parent would see it up a moment before it is.
        ModuleState state = ModuleState::failed;
        if (result == detail::StartResult::ok) {
            state = m_runner != nullptr && m_runner->stats().state == ModuleState::recovering
                        ? ModuleState::recovering
                        : ModuleState::running;
        }
        m_stats.state.store(static_cast<std::uint32_t>(state), std::memory_order_release);
    }
    detail::StartResult result() const { return m_result; }
    bool wants_progress() const override { return true; }
    void progress(const ModuleStats& s) override {
        m_stats.rx.store(s.rx, std::memory_order_relaxed);
        m_stats.tx.store(s.tx, std::memory_order_relaxed);
        m_stats.seen.store(s.seen, std::memory_order_relaxed);
        m_stats.lost.store(s.lost, std::memory_order_relaxed);
        m_stats.invalid.store(s.invalid, std::memory_order_relaxed);
        m_stats.send_errors.store(s.send_errors, std::memory_order_relaxed);
        m_stats.caught_up.store(s.caught_up, std::memory_order_relaxed);
        m_stats.suppressed.store(s.suppressed, std::memory_order_relaxed);
        m_stats.snapshots.store(s.snapshots, std::memory_order_relaxed);
        m_progress.heartbeat.store(s.heartbeat, std::memory_order_relaxed);
        m_progress.phase.store(s.handoff, std::memory_order_relaxed);
        m_progress.cursor.store(s.cursor, std::memory_order_release);
        if (s.state == ModuleState::running || s.state == ModuleState::recovering) {
            m_stats.state.store(static_cast<std::uint32_t>(s.state), std::memory_order_release);
        }
    }

  private:
    Logger& m_logger;
    const Topology& m_topology;
    UplinkStats& m_stats;
    UplinkProgress& m_progress;
    detail::SystemImpl* m_owner = nullptr;
    ModuleId m_self = k_no_module;
    const detail::Runner* m_runner = nullptr;
    std::map<std::uint64_t, std::pair<ModuleId, std::uint64_t>> m_passed_on;
    detail::StartResult m_result = detail::StartResult::ok;
};

std::vector<std::byte> read_snapshot(std::uint64_t size) {
    std::vector<std::byte> body(static_cast<std::size_t>(size));
    std::size_t done = 0;
    while (done < body.size()) {
        const ssize_t n = pread(k_host_fd_snapshot, body.data() + done, body.size() - done,
                                static_cast<off_t>(done));
        if (n <= 0) break;
        done += static_cast<std::size_t>(n);
    }
    body.resize(done);
    return body;
}

std::string read_system_text(std::uint64_t size) {
    std::string text(static_cast<std::size_t>(size), '\0');
    std::size_t done = 0;
    while (done < text.size()) {
        // pread: the fd's file offset is shared with our siblings' copies.
        const ssize_t n = pread(k_host_fd_system, text.data() + done, text.size() - done,
                                static_cast<off_t>(done));
        if (n <= 0) break;
        done += static_cast<std::size_t>(n);
    }
    text.resize(done);
    return text;
}

void note_sandbox(Logger& logger, const std::string& module, const platform::SandboxReport& report,
                  UplinkRing& uplink) {
    std::string active;
    for (const auto& a : report.active) active += (active.empty() ? "" : ", ") + a;
    logger.log(LogLevel::debug, module, "sandbox: " + active);
    for (const auto& s : report.skipped)
        logger.log(LogLevel::warn, module, "sandbox layer skipped: " + s);
    std::uint32_t bits = 0;
    for (const auto& a : report.active) {
        if (a.rfind("landlock", 0) == 0) bits |= k_sandbox_landlock;
        if (a == "no_new_privs") bits |= k_sandbox_no_new_privs;
        if (a.rfind("seccomp allowlist", 0) == 0) bits |= k_sandbox_seccomp;
    }
    uplink.stats().sandbox.store(bits, std::memory_order_release);
}

/// A gateway in a process of its own: it owns its bus here and manages its
/// children as the system's own process manages Level 1 (the same owner,
/// SystemImpl, with this gateway at its top): in-process children on
/// threads of this process, sandboxed ones in processes that are this
/// process's children. Its own instance runs on this thread, forwarding
/// between its parent's bus (through the uplink) and its own.
int run_gateway(const HostOptions& o, Logger& logger, Registry& registry, SystemSpec& spec,
                const ModuleSpec& mine, const ModuleKind& kind, RemoteBus& bus, HostSide& side,
                detail::Doorbell bell, detail::StartPlan plan, detail::CatchUp* catch_up,
                UplinkRing& uplink) {
    auto fail = [&](const std::string& why) {
        logger.log(LogLevel::error, mine.path, "gateway host: " + why);
        return 2;
    };
    // Its children run the same host program with the same plugins.
    char self[4096];
    const ssize_t len = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (len <= 0) return fail("cannot tell its own program (/proc/self/exe)");
    RuntimeOptions runtime;
    runtime.host_program.assign(self, static_cast<std::size_t>(len));
    runtime.std_plugin = o.plugins.front();
    spec.plugins.assign(o.plugins.begin() + 1, o.plugins.end());
    detail::SystemImpl owner(spec, registry, logger, runtime, mine.id);
    if (auto built = owner.build(); !built) return fail(built.error());
    detail::InprocBus& own_bus = *owner.top_bus();
    if (auto subscribed = own_bus.subscribe(bell); !subscribed) return fail(subscribed.error());
    plan.child_from_seq = own_bus.ring().first();
    detail::Runner runner(side, &mine, &kind, &bus, &own_bus, bell, std::move(plan), catch_up);
    side.set_owner(&owner, mine.id);
    side.set_runner(&runner);

    // The sandbox closes before any thread or child exists: every one of
    // them inherits it. It may read what its subtree is granted.
    std::vector<platform::PathGrant> grants;
    for (const ModuleSpec& m : spec.modules) {
        if (!spec.topology.in_subtree(m.id, mine.id)) continue;
        for (const Grant& g : m.grants)
            grants.push_back({g.path, g.type == Grant::Type::dir, g.write, g.create});
    }
    const platform::SandboxResult closed =
        platform::close_gateway_sandbox(runtime.host_program, grants);
    if (!closed.error.empty()) return fail(closed.error);
    note_sandbox(logger, mine.path, closed.report, uplink);

    if (auto started = owner.start(); !started) return fail(started.error());
    // Its subtree failing past its supervision is its own failure: the
    // parent decides what then happens to the whole of it.
    std::atomic<bool> done{false};
    std::thread watch([&] {
        while (!done.load()) {
            if (owner.wait_failure(std::chrono::milliseconds(100))) {
                runner.crash("its subtree failed: " + owner.failure().value_or("?"));
                return;
            }
        }
    });
    runner.run();
    done.store(true);
    watch.join();
    owner.stop();
    const ModuleStats s = runner.stats();
    side.progress(s);
    uplink.stats().state.store(static_cast<std::uint32_t>(s.state), std::memory_order_release);
    return s.state == ModuleState::failed ? 1 : 0;
}

}  // namespace

int run_module_host(const HostOptions& o) {
    // Its parent reads what it writes and logs it as its own (docs/isolation.md).
    Logger logger(stderr, parse_log_level(o.log_level).value_or(LogLevel::info), LogFormat::relay);
    auto fail = [&](const std::string& why) {
        logger.log(LogLevel::error, o.module, "module host: " + why);
        return 2;
    };
    Registry registry;
    // The other modules of the system appear to us as placeholders of their role.
    for (const auto& [name, role, journals] :
         {std::tuple{detail::k_placeholder_gateway, Role::gateway, Journals::no},
          std::tuple{detail::k_placeholder_leaf, Role::leaf, Journals::no},
          std::tuple{detail::k_placeholder_journal, Role::leaf, Journals::yes}}) {
        ModuleKind k{name,
                     "placeholder",
                     role,
                     Eavesdrop::no,
                     {},
                     [](Env&) -> Result<std::unique_ptr<Module>, std::string> {
                         return Err{std::string("a placeholder kind is never run")};
                     }};
        k.journals = journals;
        registry.add(std::move(k));
    }
    for (const auto& p : o.plugins) {
        if (auto loaded = registry.load_plugin(p); !loaded) return fail(loaded.error());
    }
    auto spec = parse_system(read_system_text(o.text_size), "(system from parent)", registry,
                             Plugins::already_loaded);
    if (!spec) return fail(spec.error().to_string());
    const TopologyNode* node = spec->topology.find(o.module);
    const ModuleSpec* mine = node != nullptr ? spec->module(node->id) : nullptr;
    const ModuleKind* kind = mine != nullptr ? registry.find(mine->kind, mine->version) : nullptr;
    if (kind == nullptr)
        return fail("no module " + o.module + " of a known kind in the system description");

    auto bus_region =
        platform::SharedRegion::map(platform::UniqueFd(k_host_fd_bus), platform::Access::read_only);
    auto up_region = platform::SharedRegion::map(platform::UniqueFd(k_host_fd_uplink),
                                                 platform::Access::read_write);
    auto feed_region = platform::SharedRegion::map(platform::UniqueFd(k_host_fd_feed),
                                                   platform::Access::read_only);
    if (!bus_region || !up_region || !feed_region)
        return fail("cannot map the bus, the uplink or the feed");
    auto ring = BroadcastRing::attach(bus_region->bytes());
    auto uplink = UplinkRing::attach(up_region->bytes());
    auto feed = BroadcastRing::attach(feed_region->bytes());
    if (!ring || !uplink || !feed) return fail("the bus, uplink or feed region holds no ring");
    ::close(k_host_fd_system);

    detail::StartPlan plan;
    plan.epoch = o.epoch;
    plan.from_seq = o.from_seq;
    plan.seed = o.seed;
    plan.suppress = o.suppress;
    plan.live_at = o.live_at;
    plan.start_ns = o.start_ns;
    plan.handoff = o.handoff;
    plan.handoff_move = o.handoff_move;
    plan.min_generation = o.min_generation;
    if (o.snapshot_size != 0) {
        plan.restore = true;
        plan.body = read_snapshot(o.snapshot_size);
        plan.state_version = o.state_version;
        ::close(k_host_fd_snapshot);
        if (plan.body.size() != o.snapshot_size) return fail("cannot read the snapshot");
    }

    const TopologyNode* parent = spec->topology.find(node->parent);
    const BusSpec& parent_bus =
        parent->id == k_root_id ? spec->root_bus : spec->module(parent->id)->bus;
    RemoteBus bus(*ring, *uplink, k_host_fd_event, parent->id == k_root_id ? "Bus 0" : parent->path,
                  parent_bus.reader_deadline_ms);
    HostSide side(logger, spec->topology, uplink->stats(), uplink->progress());
    FeedCatchUp catch_up(*feed, uplink->progress(), bus);
    // Only a journaled bus has a feed behind it: on any other, a reader the
    // bus has lapped learns what it lost and reads on, instead of waiting
    // for a feed that never comes.
    const bool journaled = spec->journal_of(parent->id) != nullptr;
    UplinkBells& bells = uplink->bells();
    const detail::Doorbell bell{&bells.child_word, &bells.child_armed,
                                platform::FutexScope::shared};
    if (kind->role == Role::gateway) {
        return run_gateway(o, logger, registry, *spec, *mine, *kind, bus, side, bell,
                           std::move(plan), journaled ? &catch_up : nullptr, *uplink);
    }
    detail::Runner runner(side, mine, kind, &bus, nullptr, bell, std::move(plan),
                          journaled ? &catch_up : nullptr);
    side.set_runner(&runner);

    // Last step before module code runs: the sandbox closes, for good.
    logger.log(LogLevel::debug, o.module, "closing the sandbox");
    std::vector<platform::PathGrant> grants;
    for (const Grant& g : mine->grants)
        grants.push_back({g.path, g.type == Grant::Type::dir, g.write, g.create});
    const platform::SandboxResult closed = platform::close_sandbox(grants);
    if (!closed.error.empty()) return fail(closed.error);
    note_sandbox(logger, o.module, closed.report, *uplink);

    runner.run();
    const ModuleStats s = runner.stats();
    side.progress(s);
    uplink->stats().state.store(static_cast<std::uint32_t>(s.state), std::memory_order_release);
    if (side.result() == detail::StartResult::restore_failed) return k_exit_restore_failed;
    return s.state == ModuleState::failed ? 1 : 0;
}

}  // namespace hmk
