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
    HandoffJob& j = *m_job;
    auto refuse = [&](std::string why) {
        j.result.set_value(Err{std::move(why)});
        m_job.reset();
    };
    ModuleSlot* s = slot(j.id);
    if (s == nullptr || s->spec == nullptr) return refuse("no such module (or the microkernel)");
    const std::string& path = s->spec->path;
    if (s->is_monitor)
        return refuse(path + " journals its bus: a journal is not swapped (restart it instead)");
    if (s->child_bus != nullptr)
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
    plan.from_seq = s->parent_bus->ring().head() + 1;
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
    j.runner->start();
    m_logger.log(LogLevel::info, path,
                 fmt::format("swap {}: starting a replica of kind '{}' version {} (instance {})",
                             j.handoff, kind->name, kind->version, j.epoch));
}

void SystemImpl::rollback_job(const std::string& why) {
    HandoffJob& j = *m_job;
    ModuleSlot& s = *j.slot;
    if (s.process) {
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
    give_back_bell(j.bell, s.parent_bus, nullptr);
    j.bell = nullptr;
    m_logger.log(
        LogLevel::warn, s.spec->path,
        fmt::format("swap {} rolled back: {}; the running instance goes on", j.handoff, why));
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
            return rollback_job(fmt::format(
                "the replica was not ready within {} ms (it is at seq {}, the bus at {})",
                j.deadline.count(), st.cursor - 1, s.parent_bus->ring().head()));
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
        const std::unique_lock lock(m_instances);
        s.retiring->abandon();
        s.abandoned.push_back(std::move(s.retiring));
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
