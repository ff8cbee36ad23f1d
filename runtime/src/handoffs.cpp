// SPDX-License-Identifier: Apache-2.0
// Hot swaps, carried out by the supervision thread on the parent's behalf
// (docs/swap.md): a replica of the new kind restores the running
// instance's state, shadows it, and takes over at one sequence number of
// the bus.
#include <fmt/core.h>

#include <random>

#include "hmk/platform/clock.hpp"
#include "hmk/runtime/config.hpp"
#include "system_impl.hpp"

namespace hmk::detail {
namespace {

constexpr std::uint64_t k_ms = 1'000'000;
// A replica that stays this close to the bus head for a while keeps up:
// the switch can go out. (Just restored, a replica is close to the head
// whatever its speed: it must show it stays there.)
constexpr std::uint64_t k_caught_up = 128;
constexpr std::uint64_t k_ready_window_ns = 20 * k_ms;
// How long the old instance may take to retire after the switch before it
// counts as hung (it is then left behind and the replica goes on).
constexpr std::uint64_t k_retire_grace_ns = 2000 * k_ms;

std::uint64_t seed() {
    std::random_device device;
    return (std::uint64_t{device()} << 32) | device();
}

double ms_between(std::uint64_t from, std::uint64_t to) {
    return to > from ? static_cast<double>(to - from) / 1e6 : 0.0;
}

}  // namespace

Result<HandoffReport, std::string> SystemImpl::swap(ModuleId id, const std::string& kind,
                                                    std::uint32_t version,
                                                    std::chrono::milliseconds deadline) {
    auto job = std::make_unique<HandoffJob>();
    job->id = id;
    job->kind_name = kind;
    job->version = version;
    job->deadline = deadline;
    return submit(std::move(job));
}

Result<HandoffReport, std::string> SystemImpl::move(ModuleId id, ModuleId to,
                                                    std::optional<Isolation> isolation,
                                                    std::chrono::milliseconds deadline) {
    auto job = std::make_unique<HandoffJob>();
    job->kind_of = HandoffJob::Kind::move;
    job->id = id;
    job->to = to;
    job->isolation = isolation;
    job->deadline = deadline;
    return submit(std::move(job));
}

Result<HandoffReport, std::string> SystemImpl::submit(std::unique_ptr<HandoffJob> job) {
    job->requested_ns = platform::monotonic_ns();
    auto done = job->result.get_future();
    {
        const std::lock_guard lock(m_sup_mutex);
        if (m_sup_stop || !m_booted.load()) return Err{std::string("the system is not running")};
        m_job_queue.push_back(std::move(job));
    }
    m_sup_cv.notify_all();
    return done.get();
}

Bell* SystemImpl::take_bell() {
    if (!m_free_bells.empty()) {
        Bell* b = m_free_bells.back();
        m_free_bells.pop_back();
        return b;
    }
    return &m_bells.emplace_back();
}

void SystemImpl::give_back_bell(Bell* bell, InprocBus* parent_bus, InprocBus* child_bus) {
    if (bell == nullptr) return;
    if (parent_bus != nullptr) parent_bus->unsubscribe(bell->doorbell());
    if (child_bus != nullptr) child_bus->unsubscribe(bell->doorbell());
    m_free_bells.push_back(bell);
}

void SystemImpl::publish_handoff(ModuleSlot& slot, const Handoff& h) {
    std::byte payload[k_handoff_max_fixed];
    const std::size_t n = encode_handoff(h, 0, std::span<std::byte, k_handoff_max_fixed>(payload));
    Header header;
    header.sender = slot.parent_bus->id();
    header.destination = slot.id;
    header.type = msg::k_handoff;
    const auto seq = slot.parent_bus->publish(header, std::span<const std::byte>(payload, n),
                                              slot.parent_bus->id());
    if (seq && h.op == HandoffOp::switch_over) m_job->switch_seq = *seq;
    if (!seq) {
        m_logger.log(LogLevel::error, slot.spec->path,
                     fmt::format("cannot publish the {} of handoff {}: {}", to_string(h.op), h.id,
                                 to_string(seq.error())));
    }
}

void SystemImpl::begin_job() {
    if (m_job->kind_of == HandoffJob::Kind::move) return begin_move();
    HandoffJob& j = *m_job;
    auto refuse = [&](std::string why) {
        j.result.set_value(Err{std::move(why)});
        m_job.reset();
    };
    ModuleSlot* s = slot(j.id);
    if (const std::string why = out_of_reach(j.id); !why.empty()) return refuse(why);
    if (s == nullptr || s->spec == nullptr) return refuse("no such module (or the microkernel)");
    const std::string& path = s->spec->path;
    if (s->is_monitor)
        return refuse(path + " journals its bus: a journal is not swapped (restart it instead)");
    if (s->child_bus != nullptr || spec().topology.find(j.id)->is_gateway())
        return refuse(path + " is a gateway: a gateway is not swapped (move or restart it)");
    if (s->state.load() != ModuleState::running || s->restart_pending)
        return refuse(fmt::format("{} is {}", path, to_string(s->state.load())));
    const ModuleStats now_stats = module_stats(j.id);
    if (now_stats.state != ModuleState::running)
        return refuse(
            fmt::format("{} is {}: a swap needs it running", path, to_string(now_stats.state)));
    const ModuleKind* kind = m_registry.find(j.kind_name, j.version);
    if (kind == nullptr) {
        const auto versions = m_registry.versions(j.kind_name);
        if (versions.empty()) return refuse(fmt::format("no module kind '{}'", j.kind_name));
        std::string list;
        for (auto v : versions) list += (list.empty() ? "" : ", ") + std::to_string(v);
        return refuse(
            fmt::format("kind '{}' has no version {} (it has {})", j.kind_name, j.version, list));
    }
    if (kind->role != Role::leaf || kind->journals == Journals::yes) {
        return refuse(fmt::format("kind '{}' is a {}: {} is an ordinary leaf", j.kind_name,
                                  kind->role == Role::gateway ? "gateway" : "journal", path));
    }
    auto config = carry_config(s->spec->config, *kind);
    if (!config) return refuse(path + ": " + config.error());
    SystemSpec next = spec();
    for (ModuleSpec& m : next.modules) {
        if (m.id != j.id) continue;
        m.kind = kind->name;
        m.version = kind->version;
        m.config = std::move(config).value();
    }
    auto g = m_generations.add(std::move(next));
    if (!g) return refuse(g.error());
    j.generation = *g;
    j.spec = m_generations.spec(*g).module(j.id);
    j.kind = kind;
    j.slot = s;
    j.handoff = ++m_next_handoff;
    j.epoch = ++s->last_epoch;
    j.deadline_ns =
        platform::monotonic_ns() + static_cast<std::uint64_t>(j.deadline.count()) * k_ms;
    // The replica reads the bus from now: the state it will get is taken later.
    StartPlan plan;
    plan.epoch = j.epoch;
    plan.handoff = j.handoff;
    plan.from_seq = 0;  // from where the bus is when it starts
    plan.seed = seed();
    if (s->process) {
        s->pump->start_replica(*j.spec, m_generations.spec(*g), std::move(plan));
        m_logger.log(LogLevel::info, path,
                     fmt::format("swap {}: starting a replica of kind '{}' version {} in a "
                                 "process (instance {})",
                                 j.handoff, kind->name, kind->version, j.epoch));
        return;
    }
    j.bell = take_bell();
    if (auto subscribed = s->parent_bus->subscribe(j.bell->doorbell()); !subscribed) {
        give_back_bell(j.bell, nullptr, nullptr);
        j.bell = nullptr;
        return refuse(subscribed.error());
    }
    if (s->journal != nullptr) {
        j.catch_up = std::make_unique<JournalCatchUp>(*s->journal, *s->parent_bus, m_logger, path);
    }
    j.runner = std::make_unique<Runner>(*this, j.spec, kind, s->parent_bus, nullptr,
                                        j.bell->doorbell(), std::move(plan), j.catch_up.get());
    j.runner->set_cpu_share(s->cpu.get());
    j.runner->start();
    m_logger.log(LogLevel::info, path,
                 fmt::format("swap {}: starting a replica of kind '{}' version {} (instance {})",
                             j.handoff, kind->name, kind->version, j.epoch));
}

void SystemImpl::rollback_job(const std::string& why) {
    HandoffJob& j = *m_job;
    ModuleSlot& s = *j.slot;
    if (s.process && j.kind_of == HandoffJob::Kind::swap) {
        s.pump->drop_replica(s.id);
        s.pump->begin_handoff(s.id, 0);
    }
    if (j.runner != nullptr) {
        j.runner->request_stop();
        if (!j.runner->join(std::chrono::milliseconds(2000))) {
            j.runner->abandon();
            s.abandoned.push_back(std::move(j.runner));
        }
        j.runner.reset();
    }
    if (j.kind_of == HandoffJob::Kind::move) {
        give_back_bell(j.bell, j.bus, s.child_bus);
    } else {
        give_back_bell(j.bell, s.parent_bus, nullptr);
    }
    j.bell = nullptr;
    if (j.kind_of == HandoffJob::Kind::move && j.process && j.pump != nullptr)
        j.pump->drop_replica(s.id);
    m_logger.log(
        LogLevel::warn, s.spec->path,
        fmt::format("{} {} rolled back: {}; the running instance goes on",
                    j.kind_of == HandoffJob::Kind::move ? "move" : "swap", j.handoff, why));
    j.result.set_value(
        Err{fmt::format("rolled back: {}; {} keeps running as before", why, s.spec->path)});
    m_job.reset();
}

void SystemImpl::finish_job() {
    HandoffJob& j = *m_job;
    ModuleSlot& s = *j.slot;
    std::unique_ptr<Runner> old;
    {
        const std::unique_lock lock(m_instances);
        old = std::move(s.retiring);
    }
    old.reset();  // it has ended: this joins its thread
    // j.bell now holds the old instance's bell (swapped at the switch).
    give_back_bell(j.bell, s.parent_bus, nullptr);
    j.bell = nullptr;
    j.catch_up.reset();
    const std::uint64_t live_ns = platform::monotonic_ns();
    HandoffReport r;
    r.epoch = j.epoch;
    r.switch_seq = j.switch_seq;
    r.ready_ms = ms_between(j.requested_ns, j.ready_ns);
    r.takeover_us = ms_between(j.switch_ns, live_ns) * 1000;
    r.what = fmt::format(
        "swapped {} to kind '{}' version {} (instance {}): switched at seq {} of bus {}; the "
        "replica was ready {:.1f} ms after the request",
        s.spec->path, j.kind->name, j.kind->version, j.epoch, j.switch_seq, s.parent_bus->name(),
        r.ready_ms);
    m_logger.log(LogLevel::info, s.spec->path, r.what);
    j.result.set_value(std::move(r));
    m_job.reset();
}

void SystemImpl::publish_retired_for(ModuleSlot& s) {
    // The old instance ended without retiring (it failed first): the parent
    // says its last word for it, so the replica goes on (what it did not
    // send is lost, as in any crash).
    if (m_job->retired_for) return;
    m_job->retired_for = true;
    Handoff h;
    h.op = HandoffOp::retired;
    h.id = m_job->handoff;
    Header header;
    header.sender = s.id;
    header.destination = s.id;
    header.type = msg::k_handoff;
    std::byte payload[k_handoff_max_fixed];
    const std::size_t n = encode_handoff(h, 0, std::span<std::byte, k_handoff_max_fixed>(payload));
    (void)s.parent_bus->publish(header, std::span<const std::byte>(payload, n), s.id);
    m_logger.log(LogLevel::warn, s.spec->path,
                 "the old instance ended before it retired: the replica takes over");
}

void SystemImpl::advance_job() {
    if (m_job->kind_of == HandoffJob::Kind::move) return advance_move();
    HandoffJob& j = *m_job;
    ModuleSlot& s = *j.slot;
    const std::uint64_t now = platform::monotonic_ns();
    if (j.step != HandoffJob::Step::switching) {
        // Where the replica is: its runner's counters, or what its host says.
        ModuleStats st;
        HandoffPhase phase = HandoffPhase::awaiting_state;
        if (s.process) {
            const ReplicaView v = s.pump->replica(j.id);
            st.state = v.exists && v.epoch == j.epoch ? v.state : ModuleState::created;
            st.cursor = v.cursor;
            phase = v.phase;
        } else {
            st = j.runner->stats();
            phase = j.runner->phase();
        }
        if (st.state == ModuleState::failed || st.state == ModuleState::stopped)
            return rollback_job("the replica failed (see the log)");
        if (now > j.deadline_ns) {
            // (Until it has the state, its cursor is where it began to look.)
            const std::uint64_t head = s.parent_bus->ring().head();
            std::string where = fmt::format("it is at seq {}, the bus at {}", st.cursor - 1, head);
            if (st.state == ModuleState::created) {
                where = "it has not started yet";
            } else if (phase == HandoffPhase::awaiting_state) {
                where = fmt::format(
                    "it has not found the old instance's state yet; the bus is at {}", head);
            }
            return rollback_job(fmt::format("the replica was not ready within {} ms ({})",
                                            j.deadline.count(), where));
        }
        switch (j.step) {
            case HandoffJob::Step::starting:
                // (A replica counts as recovering until it is live.)
                if (st.state != ModuleState::recovering && st.state != ModuleState::running) return;
                if (s.process) s.pump->begin_handoff(j.id, j.handoff);
                {
                    Handoff h;
                    h.op = HandoffOp::swap_prepare;
                    h.id = j.handoff;
                    publish_handoff(s, h);
                }
                j.step = HandoffJob::Step::preparing;
                return;
            case HandoffJob::Step::preparing:
                if (phase != HandoffPhase::shadow) return;
                j.step = HandoffJob::Step::shadowing;
                return;
            case HandoffJob::Step::shadowing: {
                if (st.cursor + k_caught_up <= s.parent_bus->ring().head() + 1) {
                    j.close_since_ns = 0;
                    return;
                }
                if (j.close_since_ns == 0) j.close_since_ns = now;
                if (now - j.close_since_ns < k_ready_window_ns) return;
                j.ready_ns = now;
                Handoff h;
                h.op = HandoffOp::switch_over;
                h.id = j.handoff;
                publish_handoff(s, h);
                j.switch_ns = platform::monotonic_ns();
                // The point of no return: from here the replica is the module
                // (a failure of it is handled like any other).
                {
                    const std::unique_lock lock(m_instances);
                    if (!s.process) {
                        s.retiring = std::move(s.runner);
                        s.runner = std::move(j.runner);
                        std::swap(s.bell, j.bell);
                        std::swap(s.catch_up, j.catch_up);
                    }
                    s.kind = j.kind;
                    s.spec = j.spec;
                }
                s.epoch.store(j.epoch);
                s.started_ns = j.switch_ns;
                s.hb_cursor = 0;
                m_generations.make_current(j.generation);
                j.step = HandoffJob::Step::switching;
                return;
            }
            case HandoffJob::Step::switching:
                return;
        }
        return;
    }
    // Switching: the old instance retires at the switch, the replica goes
    // live at its last word.
    if (s.process) {
        // The pump hands the module over to the replica's process when the
        // old one's last word is on the bus.
        const ModuleStats st = s.pump->stats(j.id);
        if (st.epoch == j.epoch) {
            if (st.handoff == static_cast<std::uint8_t>(HandoffPhase::live)) finish_job();
            return;
        }
        if (st.state == ModuleState::failed || st.state == ModuleState::stopped) {
            publish_retired_for(s);
        } else if (now > j.switch_ns + k_retire_grace_ns) {
            s.pump->kill(j.id, "did not retire after the switch", st.epoch);
        }
        return;
    }
    const bool old_done = s.retiring == nullptr || s.retiring->join(std::chrono::milliseconds(0));
    if (!old_done && now > j.switch_ns + k_retire_grace_ns) {
        m_logger.log(LogLevel::error, s.spec->path,
                     "the old instance did not retire (hung in a handler?): left behind");
        {
            const std::unique_lock lock(m_instances);
            s.retiring->abandon();
            s.abandoned.push_back(std::move(s.retiring));
        }
        publish_retired_for(s);  // or the replica waits for it forever
    }
    if (s.retiring != nullptr && !old_done) return;
    if (s.runner == nullptr || s.runner->phase() != HandoffPhase::live) {
        if (s.retiring != nullptr && !s.retiring->retired()) {
            publish_retired_for(s);
            const std::unique_lock lock(m_instances);
            s.retiring.reset();
        }
        return;
    }
    finish_job();
}

}  // namespace hmk::detail

// --- Moves (docs/relocation.md) ---------------------------------------------

namespace hmk::detail {

UplinkPump* SystemImpl::pump_of(InprocBus& bus) {
    const auto it = m_pumps.find(bus.id());
    if (it != m_pumps.end()) return it->second.get();
    // The bus's first module in a process: it gets a pump now.
    const auto j = m_journals.find(bus.id());
    auto pump = std::make_unique<UplinkPump>(bus, *this, m_host_setup,
                                             j != m_journals.end() ? j->second.get() : nullptr);
    UplinkPump* p = pump.get();
    {
        const std::unique_lock lock(m_instances);
        m_pumps.emplace(bus.id(), std::move(pump));
    }
    p->start();
    return p;
}

void SystemImpl::begin_move() {
    HandoffJob& j = *m_job;
    auto refuse = [&](std::string why) {
        j.result.set_value(Err{std::move(why)});
        m_job.reset();
    };
    ModuleSlot* s = slot(j.id);
    ModuleSlot* to = slot(j.to);
    if (const std::string why = out_of_reach(j.id); !why.empty()) return refuse(why);
    if (const std::string why = out_of_reach(j.to); !why.empty()) return refuse(why);
    if (s == nullptr || s->spec == nullptr) return refuse("no such module (or the microkernel)");
    const std::string& path = s->spec->path;
    if (s->child_bus == nullptr && spec().topology.find(j.id)->is_gateway()) {
        return refuse(path +
                      " is a gateway in a process of its own: it moves with its whole "
                      "subtree, which is not available yet");
    }
    if (to != nullptr && to->child_bus == nullptr && spec().topology.find(j.to)->is_gateway()) {
        return refuse(to->spec->path +
                      " manages its subtree in a process of its own: moving a "
                      "module into it is not available yet");
    }
    if (to == nullptr || to->child_bus == nullptr)
        return refuse("the new place must be a gateway (or / for Bus 0)");
    if (s->is_monitor)
        return refuse(path + " journals its bus: a journal stays with its bus (move its gateway)");
    if (s->state.load() != ModuleState::running || s->restart_pending)
        return refuse(fmt::format("{} is {}", path, to_string(s->state.load())));
    if (module_stats(j.id).state != ModuleState::running)
        return refuse(fmt::format("{} is {}: a move needs it running", path,
                                  to_string(module_stats(j.id).state)));
    const Isolation isolation = j.isolation.value_or(s->spec->isolation);
    // A move to the gateway it is attached to changes only its isolation.
    const bool in_place = spec().topology.find(j.id)->parent == j.to;
    if (in_place && isolation == s->spec->isolation) {
        return refuse(fmt::format("{} is attached to {} already, {}", path,
                                  to->spec != nullptr ? to->spec->path : "/",
                                  to_string(isolation)));
    }
    auto tree = in_place ? Result<Topology, std::string>(spec().topology)
                         : spec().topology.moved(j.id, j.to);
    if (!tree) return refuse("cannot move " + path + ": " + tree.error());
    if (s->child_bus != nullptr && isolation == Isolation::process)
        return refuse(path + " is a gateway: it runs in its parent's process");
    const auto journal = m_journals.find(j.to);
    if (s->spec->recovery == Recovery::journal && journal == m_journals.end()) {
        return refuse(fmt::format("{} recovers from its bus's journal, and the bus of {} has none",
                                  path, to->spec != nullptr ? to->spec->path : "/"));
    }
    SystemSpec next = spec();
    next.topology = std::move(tree).value();
    for (ModuleSpec& m : next.modules) {
        m.path = next.topology.find(m.id)->path;
        if (m.id == j.id) m.isolation = isolation;
    }
    auto g = m_generations.add(std::move(next));
    if (!g) return refuse(g.error());
    const SystemSpec& version = m_generations.spec(*g);
    j.generation = *g;
    j.old_generation = m_generations.current();
    j.spec = version.module(j.id);
    j.kind = s->kind;
    j.slot = s;
    j.handoff = ++m_next_handoff;
    j.epoch = ++s->last_epoch;
    j.deadline_ns =
        platform::monotonic_ns() + static_cast<std::uint64_t>(j.deadline.count()) * k_ms;
    j.process = isolation == Isolation::process;
    j.bus = to->child_bus;
    j.journal = journal != m_journals.end() ? journal->second.get() : nullptr;
    j.old_bus = s->parent_bus;
    j.old_pump = s->process ? s->pump : nullptr;
    j.old_epoch = s->epoch.load();

    // The replica waits at its new place for the old instance's state.
    StartPlan plan;
    plan.epoch = j.epoch;
    plan.handoff = j.handoff;
    plan.handoff_move = true;
    plan.min_generation = j.generation;
    plan.tree = &version.topology;
    plan.seed = seed();
    if (j.process) {
        j.pump = pump_of(*j.bus);
        plan.tree = nullptr;  // its host is told the new tree
        j.pump->start_replica(*j.spec, version, std::move(plan));
    } else {
        j.bell = take_bell();
        auto subscribed = j.bus->subscribe(j.bell->doorbell());
        if (subscribed && s->child_bus != nullptr)
            subscribed = s->child_bus->subscribe(j.bell->doorbell());
        if (!subscribed) {
            give_back_bell(j.bell, j.bus, s->child_bus);
            j.bell = nullptr;
            return refuse(subscribed.error());
        }
        if (j.journal != nullptr) {
            j.catch_up =
                std::make_unique<JournalCatchUp>(*j.journal, *j.bus, m_logger, j.spec->path);
        }
        j.runner =
            std::make_unique<Runner>(*this, j.spec, j.kind, j.bus, s->child_bus, j.bell->doorbell(),
                                     std::move(plan), j.catch_up.get(), s->child_catch_up.get());
        if (s->cpu == nullptr && j.spec->quota.cpu > 0) {
            s->cpu = platform::CpuShare::make("t" + std::to_string(j.spec->id), j.spec->quota.cpu);
        }
        j.runner->set_cpu_share(s->cpu.get());
        j.runner->start();
    }
    m_logger.log(
        LogLevel::info, path,
        fmt::format("move {}: starting a replica at {} on bus {} ({}, instance {})", j.handoff,
                    j.spec->path, j.bus->name(), to_string(isolation), j.epoch));
}

void SystemImpl::cut_move() {
    HandoffJob& j = *m_job;
    ModuleSlot& s = *j.slot;
    // The largest state chunk every bus takes (the state travels the tree).
    std::uint32_t limit = UINT32_MAX;
    for (const auto& [id, bus] : m_buses) limit = std::min(limit, bus->settings().max_payload);
    if (j.old_pump != nullptr) j.old_pump->begin_handoff(s.id, j.handoff);
    // 1. The old instance learns which generation is no longer its: before
    //    any message of it can reach its bus.
    Handoff prepare;
    prepare.op = HandoffOp::move_prepare;
    prepare.id = j.handoff;
    prepare.generation = j.generation;
    prepare.payload_limit = limit;
    publish_handoff(s, prepare);
    // 2. The cut: new messages take the new tree; the old place stays valid
    //    for the old instance until it has retired.
    m_generations.set_draining(j.old_generation);
    m_generations.make_current(j.generation);
    j.switch_ns = platform::monotonic_ns();
    // 3. Every bus owner sends a flush after whatever of the old generation
    //    it carries, by the old tree: once all are in, nothing is still on
    //    its way to the old place.
    const auto buses = static_cast<std::uint32_t>(m_buses.size());
    for (const auto& [id, bus] : m_buses) {
        Handoff f;
        f.op = HandoffOp::flush;
        f.id = j.handoff;
        f.bus = id;
        f.buses = buses;
        std::byte payload[k_handoff_max_fixed];
        const std::size_t n =
            encode_handoff(f, 0, std::span<std::byte, k_handoff_max_fixed>(payload));
        Header h;
        h.destination = s.id;
        h.type = msg::k_handoff;
        const auto seq =
            bus->publish_in_generation(h, std::span<const std::byte>(payload, n), j.old_generation);
        if (id == j.old_bus->id() && seq) j.switch_seq = *seq;
        if (!seq) {
            m_logger.log(LogLevel::error, s.spec->path,
                         fmt::format("cannot publish the flush on bus {}: {}", bus->name(),
                                     to_string(seq.error())));
        }
    }
    // 4. From here on the module is at its new place: its replica is its
    //    instance, supervised by its new parent.
    Supervisor* old_sup = s.parent_sup;
    Supervisor* new_sup = m_supervisors.at(j.to).get();
    const SystemSpec& version = m_generations.spec(j.generation);
    {
        const std::unique_lock lock(m_instances);
        old_sup->children.erase(std::find(old_sup->children.begin(), old_sup->children.end(), &s));
        new_sup->children.push_back(&s);
        s.parent_sup = new_sup;
        s.parent_bus = j.bus;
        s.journal = j.journal;
        if (!s.process) {
            s.retiring = std::move(s.runner);
            std::swap(s.bell, j.bell);  // j.bell: the old instance's, to give back later
            std::swap(s.catch_up, j.catch_up);
        }
        if (j.process) {
            s.pump = j.pump;
        } else {
            s.runner = std::move(j.runner);
            if (s.process) {
                s.bell = j.bell;  // the replica's (the old one, in a process, had none)
                j.bell = nullptr;
                s.catch_up = std::move(j.catch_up);
            }
            s.pump = nullptr;
        }
        s.process = j.process;
        s.spec = j.spec;
        // A gateway takes its subtree along: new paths.
        for (auto& other : m_slots) {
            if (other.get() != &s && other->spec != nullptr &&
                version.topology.in_subtree(other->id, s.id)) {
                other->spec = version.module(other->id);
                if (other->process) other->pump->respec(other->id, *other->spec, version);
            }
        }
    }
    s.epoch.store(j.epoch);
    s.started_ns = j.switch_ns;
    s.hb_cursor = 0;
    j.step = HandoffJob::Step::switching;
    m_logger.log(LogLevel::debug, s.spec->path,
                 fmt::format("move {}: cut at generation {}, {} flushes out", j.handoff,
                             j.generation, buses));
}

void SystemImpl::advance_move() {
    HandoffJob& j = *m_job;
    ModuleSlot& s = *j.slot;
    const std::uint64_t now = platform::monotonic_ns();
    if (j.step == HandoffJob::Step::starting) {
        ModuleStats st;
        if (j.process) {
            const ReplicaView v = j.pump->replica(j.id);
            st.state = v.exists && v.epoch == j.epoch ? v.state : ModuleState::created;
        } else {
            st = j.runner->stats();
        }
        if (st.state == ModuleState::failed || st.state == ModuleState::stopped)
            return rollback_job("the replica failed to start (see the log)");
        if (now > j.deadline_ns)
            return rollback_job(
                fmt::format("the replica did not start within {} ms", j.deadline.count()));
        if (st.state != ModuleState::recovering && st.state != ModuleState::running) return;
        j.ready_ns = now;
        return cut_move();
    }
    // After the cut: the old instance retires once every flush is in, and
    // the replica takes over at its last word.
    bool old_done = false;
    bool old_retired = false;
    if (j.old_pump != nullptr) {
        const OldInstance o = j.old_pump->old_instance(s.id, j.old_epoch);
        old_done = o != OldInstance::running;
        old_retired = o == OldInstance::retired;
    } else {
        old_done = s.retiring == nullptr || s.retiring->join(std::chrono::milliseconds(0));
        old_retired = s.retiring == nullptr || s.retiring->retired();
    }
    bool live = false;
    if (j.process) {
        const ModuleStats st = j.pump->stats(j.id);
        live = st.epoch == j.epoch && st.handoff == static_cast<std::uint8_t>(HandoffPhase::live);
    } else {
        live = s.runner != nullptr && s.runner->phase() == HandoffPhase::live;
    }
    if (old_done && live) return finish_move();
    if (old_done && !old_retired && !j.retired_for) {
        // It ended before it could hand its state over: the replica starts
        // without it (a crash while moving).
        publish_retired_for(s);
        const std::unique_lock lock(m_instances);
        s.retiring.reset();
        return;
    }
    if (!old_done && now > j.switch_ns + static_cast<std::uint64_t>(j.deadline.count()) * k_ms) {
        if (!j.retire_now_sent) {
            // A flush is stuck (a gateway hangs?): the old instance goes now.
            j.retire_now_sent = true;
            Handoff h;
            h.op = HandoffOp::retire_now;
            h.id = j.handoff;
            Header header;
            header.destination = s.id;
            header.type = msg::k_handoff;
            std::byte payload[k_handoff_max_fixed];
            const std::size_t n =
                encode_handoff(h, 0, std::span<std::byte, k_handoff_max_fixed>(payload));
            // In the old generation: the old instance reads nothing newer.
            (void)j.old_bus->publish_in_generation(header, std::span<const std::byte>(payload, n),
                                                   j.old_generation);
            m_logger.log(LogLevel::warn, s.spec->path,
                         fmt::format("move {}: not every flush came back within {} ms: the old "
                                     "instance retires now",
                                     j.handoff, j.deadline.count()));
        } else if (!j.left_behind &&
                   now > j.switch_ns + 2 * static_cast<std::uint64_t>(j.deadline.count()) * k_ms) {
            j.left_behind = true;
            m_logger.log(LogLevel::error, s.spec->path,
                         "the old instance does not retire (hung?): stopped");
            if (j.old_pump != nullptr) {
                j.old_pump->kill(s.id, "did not retire after a move", 0);
            } else if (s.retiring != nullptr) {
                {
                    const std::unique_lock lock(m_instances);
                    s.retiring->abandon();
                    s.abandoned.push_back(std::move(s.retiring));
                }
                publish_retired_for(s);  // or the replica waits for it forever
            }
        }
    }
}

void SystemImpl::finish_move() {
    HandoffJob& j = *m_job;
    ModuleSlot& s = *j.slot;
    std::unique_ptr<Runner> old;
    {
        const std::unique_lock lock(m_instances);
        old = std::move(s.retiring);
    }
    old.reset();
    if (j.old_pump != nullptr) j.old_pump->forget(s.id, j.old_epoch);
    give_back_bell(j.bell, j.old_bus, s.child_bus);
    j.bell = nullptr;
    j.catch_up.reset();
    m_generations.set_draining(Generations::k_none);
    const std::uint64_t live_ns = platform::monotonic_ns();
    HandoffReport r;
    r.epoch = j.epoch;
    r.switch_seq = j.switch_seq;
    r.ready_ms = ms_between(j.requested_ns, j.ready_ns);
    r.takeover_us = ms_between(j.switch_ns, live_ns) * 1000;
    r.what = fmt::format(
        "moved to {} on bus {} ({}, instance {}), id {} unchanged; taken over "
        "{:.0f} us after the cut",
        s.spec->path, j.bus->name(), to_string(s.spec->isolation), j.epoch, s.id, r.takeover_us);
    m_logger.log(LogLevel::info, s.spec->path, r.what);
    j.result.set_value(std::move(r));
    m_job.reset();
}

}  // namespace hmk::detail
