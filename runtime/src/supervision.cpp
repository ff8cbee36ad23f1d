// SPDX-License-Identifier: Apache-2.0
// Supervision: each gateway's restart policy (after Erlang/OTP), carried out
// by one thread of the microkernel's process on the gateway's behalf
// (docs/recovery.md). Only this thread changes slots and supervisors once
// the system is up.
#include <fmt/core.h>

#include <algorithm>
#include <random>

#include "hmk/platform/clock.hpp"
#include "system_impl.hpp"

namespace hmk::detail {
namespace {

constexpr std::uint64_t k_ms = 1'000'000;
constexpr std::uint64_t k_max_backoff_ms = 10'000;
// How long an old instance retiring after a swap may take to stop.
constexpr std::chrono::milliseconds k_stop_grace{2000};
// How long the supervision thread waits for an in-process instance asked to
// stop; one still in a handler then is waited for without blocking the thread.
constexpr std::chrono::milliseconds k_quick_stop{5};
// How often it looks whether such an instance has left its handler.
constexpr std::uint64_t k_stop_poll_ns = 1'000'000;
// How often the supervision thread looks at a handoff under way.
constexpr std::uint64_t k_job_poll_ns = 200'000;

const std::string& path_of(const ModuleSlot& s) {
    static const std::string root = "/";
    return s.spec != nullptr ? s.spec->path : root;
}

std::uint64_t random_seed() {
    std::random_device device;
    return (std::uint64_t{device()} << 32) | device();
}

}  // namespace

void SystemImpl::post(FailureEvent event) {
    {
        const std::lock_guard lock(m_sup_mutex);
        m_events.push_back(std::move(event));
    }
    m_sup_cv.notify_all();
}

std::uint64_t SystemImpl::next_due(std::uint64_t now) const {
    std::uint64_t due = UINT64_MAX;
    for (const auto& s : m_slots) {
        if (!s->stopping.empty()) due = std::min(due, now + k_stop_poll_ns);
        if (s->restart_pending && !restart_held(*s)) due = std::min(due, s->restart_at_ns);
    }
    for (const auto& [id, sup] : m_supervisors) {
        if (sup->spec.heartbeat_ms != 0 && sup->owner->state.load() == ModuleState::running)
            due = std::min(due, sup->next_heartbeat_ns);
    }
    return due;
}

void SystemImpl::supervise_loop() {
    std::unique_lock lock(m_sup_mutex);
    while (!m_sup_stop) {
        const bool booted = m_booted.load();
        const std::uint64_t now = platform::monotonic_ns();
        std::uint64_t due = booted ? next_due(now) : UINT64_MAX;
        // A handoff under way is watched closely.
        if (m_job != nullptr) due = std::min(due, now + k_job_poll_ns);
        auto ready = [&] {
            return m_sup_stop || (m_booted.load() && (!m_events.empty() ||
                                                      (m_job == nullptr && !m_job_queue.empty())));
        };
        if (!ready() && due > now) {
            if (due == UINT64_MAX) {
                // Boot finishing is signalled through the same condition.
                m_sup_cv.wait_for(lock, std::chrono::milliseconds(booted ? 1000 : 5), ready);
            } else {
                m_sup_cv.wait_for(lock, std::chrono::nanoseconds(due - now), ready);
            }
        }
        if (m_sup_stop) break;
        if (!m_booted.load()) continue;
        std::deque<FailureEvent> events;
        events.swap(m_events);
        if (m_job == nullptr && !m_job_queue.empty()) {
            m_job = std::move(m_job_queue.front());
            m_job_queue.pop_front();
            lock.unlock();
            begin_job();
        } else {
            lock.unlock();
        }
        for (const FailureEvent& e : events) handle(e);
        const std::uint64_t t = platform::monotonic_ns();
        reap_stopping(t);
        run_due_restarts(t);
        heartbeats(t);
        if (m_job != nullptr) advance_job();
        lock.lock();
    }
}

void SystemImpl::announce_event(ModuleSlot& slot, LifecycleKind kind, const std::string& why) {
    if (slot.journal == nullptr || slot.parent_bus == nullptr) return;
    LifecycleEvent e;
    e.module = slot.id;
    e.kind = kind;
    e.epoch = slot.epoch.load();
    (void)announce(*slot.parent_bus, e, why);
}

void SystemImpl::handle(const FailureEvent& e) {
    ModuleSlot* s = slot(e.id);
    if (s == nullptr || s->parent_sup == nullptr) return;
    if (m_job != nullptr && m_job->slot == s && m_job->step != HandoffJob::Step::switching) {
        // The replica failing is its swap's business; the old instance
        // failing ends the swap, and is then handled like any failure.
        if (e.epoch == m_job->epoch) return rollback_job("the replica failed: " + e.why);
        if (e.epoch == s->epoch.load()) rollback_job("the running instance failed: " + e.why);
    }
    // An event about an instance that is gone already, or a module its
    // parent is stopping or restarting anyway.
    if (e.epoch != s->epoch.load() || s->state.load() != ModuleState::running) return;
    if (e.restore_failed && s->restored_from.load() != 0) {
        const std::uint64_t seq = s->restored_from.load();
        s->snapshot_at_most.store(seq - 1);
        m_logger.log(LogLevel::warn, path_of(*s),
                     fmt::format("it could not restore its snapshot at seq {}: the next instance "
                                 "recovers without it",
                                 seq));
    }
    handle_failure(*s, e.why, e.normal_exit, e.announced);
}

void SystemImpl::handle_failure(ModuleSlot& slot, const std::string& why, bool normal_exit,
                                bool announced) {
    Supervisor& sup = *slot.parent_sup;
    stop_instance(slot, why);
    slot.state.store(ModuleState::failed);
    if (!announced) announce_event(slot, LifecycleKind::failed, why);
    const RestartPolicy policy = slot.spec->restart;
    const bool wanted =
        policy == RestartPolicy::permanent || (policy == RestartPolicy::transient && !normal_exit);
    if (!wanted) {
        m_logger.log(LogLevel::warn, path_of(slot),
                     fmt::format("not restarted (restart = {}{})", to_string(policy),
                                 normal_exit ? ", and it ended normally" : ""));
        if (slot.is_monitor) slot.parent_bus->close_gate();
        return;
    }
    // Intensity: at most `intensity` restarts by this supervisor within `period_ms`.
    const std::uint64_t now = platform::monotonic_ns();
    const std::uint64_t period = std::uint64_t{sup.spec.period_ms} * k_ms;
    while (!sup.restarts.empty() && now - sup.restarts.front() > period) sup.restarts.pop_front();
    if (sup.restarts.size() >= sup.spec.intensity) {
        escalate(sup, fmt::format("{} failed: {}", path_of(slot), why));
        return;
    }
    sup.restarts.push_back(now);

    // Which children go with it.
    std::vector<ModuleSlot*> set;
    const auto at = std::find(sup.children.begin(), sup.children.end(), &slot);
    switch (sup.spec.strategy) {
        case Strategy::one_for_one:
            set.push_back(&slot);
            break;
        case Strategy::one_for_all:
            set = sup.children;
            break;
        case Strategy::rest_for_one:
            set.assign(at, sup.children.end());
            break;
    }
    for (auto it = set.rbegin(); it != set.rend(); ++it) {
        ModuleSlot& s = **it;
        if (&s == &slot || s.state.load() != ModuleState::running) continue;
        stop_instance(s, "restarted with " + path_of(slot));
        s.state.store(ModuleState::stopped);
    }
    // Backoff doubles while the child keeps failing soon after its restart,
    // and starts over once it ran for a while (10 of its current delays, 1 s at least).
    const auto backoff = [&](std::uint32_t level) {
        return std::min<std::uint64_t>(k_max_backoff_ms, std::uint64_t{sup.spec.backoff_ms}
                                                             << std::min<std::uint32_t>(level, 20));
    };
    const std::uint64_t ran_ms = (now - slot.started_ns) / k_ms;
    if (ran_ms > std::max<std::uint64_t>(1000, 10 * backoff(slot.backoff_level)))
        slot.backoff_level = 0;
    const std::uint64_t delay_ms = backoff(slot.backoff_level);
    slot.backoff_level = std::min<std::uint32_t>(slot.backoff_level + 1, 20);
    std::string names;
    for (ModuleSlot* s : set) {
        if (s != &slot && s->spec->restart == RestartPolicy::temporary) continue;
        s->restart_pending = true;
        s->restart_at_ns = now + delay_ms * k_ms;
        s->state.store(ModuleState::restarting);
        announce_event(*s, LifecycleKind::restarting, "after " + path_of(slot) + " failed");
        names += (names.empty() ? "" : ", ") + path_of(*s);
    }
    m_logger.log(
        LogLevel::warn, path_of(sup.owner != nullptr ? *sup.owner : slot),
        fmt::format("{}: restarting {} in {} ms ({}, restart {} of at most {} within {} ms)",
                    path_of(slot), names, delay_ms, to_string(sup.spec.strategy),
                    sup.restarts.size(), sup.spec.intensity, sup.spec.period_ms));
}

void SystemImpl::escalate(Supervisor& sup, const std::string& why) {
    ModuleSlot& owner = *sup.owner;
    m_logger.log(LogLevel::error, path_of(owner),
                 fmt::format("more than {} restarts of its children within {} ms: it gives up "
                             "and fails, its own parent decides ({})",
                             sup.spec.intensity, sup.spec.period_ms, why));
    for (auto it = sup.children.rbegin(); it != sup.children.rend(); ++it) {
        ModuleSlot& child = **it;
        if (child.state.load() == ModuleState::running) stop_instance(child, "its parent gave up");
        child.restart_pending = false;
        child.state.store(ModuleState::failed);
        announce_event(child, LifecycleKind::gave_up, why);
        if (child.is_monitor) child.parent_bus->close_gate();
    }
    sup.restarts.clear();
    if (owner.parent_sup == nullptr) {
        fail_system(fmt::format("the microkernel gave up on its children ({})", why));
        return;
    }
    if (owner.state.load() != ModuleState::running) return;
    handle_failure(owner, "its children failed too often: " + why, false);
}

void SystemImpl::fail_system(const std::string& why) {
    m_logger.log(LogLevel::error, "hmk", "system failed: " + why);
    {
        const std::lock_guard lock(m_failure_mutex);
        if (!m_failure) m_failure = why;
    }
    m_failure_cv.notify_all();
}

void SystemImpl::stop_instance(ModuleSlot& slot, const std::string& why) {
    Bell* retired_bell = nullptr;
    if (m_job != nullptr && m_job->slot == &slot) {
        if (m_job->step != HandoffJob::Step::switching) {
            rollback_job("its parent stopped it (" + why + ")");
        } else {
            m_job->result.set_value(
                Err{fmt::format("{} switched to its replica, which its parent then stopped ({})",
                                path_of(slot), why)});
            retired_bell = m_job->bell;  // the old instance's, once it has stopped
            m_job.reset();
        }
    }
    if (slot.retiring != nullptr) {
        std::unique_ptr<Runner> old;
        {
            const std::unique_lock lock(m_instances);
            old = std::move(slot.retiring);
        }
        old->request_stop();
        if (!old->join(k_stop_grace)) {
            old->abandon();
            slot.abandoned.push_back(std::move(old));
            retired_bell = nullptr;  // it may still sleep on it
        }
    }
    if (retired_bell != nullptr) give_back_bell(retired_bell, slot.parent_bus, nullptr);
    // A gateway's children go first: they rely on it.
    if (slot.own_sup != nullptr) {
        for (auto it = slot.own_sup->children.rbegin(); it != slot.own_sup->children.rend(); ++it) {
            ModuleSlot& child = **it;
            child.restart_pending = false;
            if (child.state.load() == ModuleState::running) {
                stop_instance(child, "its parent " + path_of(slot) + " stops");
                child.state.store(ModuleState::stopped);
            }
        }
    }
    if (slot.process) {
        slot.pump->kill(slot.id, "");
        return;
    }
    std::unique_ptr<Runner> old;
    {
        const std::unique_lock lock(m_instances);
        old = std::move(slot.runner);
    }
    if (old == nullptr) return;
    if (slot.child_bus != nullptr) {
        slot.resume_parent = old->parent_cursor();
        slot.resume_child = old->child_cursor();
    }
    old->request_stop();
    // Most instances leave their handler at once. One that does not is
    // waited for by its next instance (and a gateway's next instance waits
    // for its subtree's), not by this thread: its siblings, and the rest of
    // the system, are restarted meanwhile (reap_stopping).
    if (old->join(k_quick_stop)) return;
    const std::uint32_t grace_ms = slot.parent_sup != nullptr ? slot.parent_sup->spec.stop_grace_ms
                                                              : SupervisorSpec{}.stop_grace_ms;
    slot.stopping.push_back(
        {std::move(old), platform::monotonic_ns() + std::uint64_t{grace_ms} * k_ms, why});
}

bool SystemImpl::still_stopping(const ModuleSlot& slot) const {
    if (!slot.stopping.empty()) return true;
    if (slot.own_sup == nullptr) return false;
    return std::any_of(slot.own_sup->children.begin(), slot.own_sup->children.end(),
                       [&](const ModuleSlot* c) { return still_stopping(*c); });
}

bool SystemImpl::restart_held(const ModuleSlot& slot) const {
    if (still_stopping(slot)) return true;
    // Restarted together (one_for_all, rest_for_one): in declaration order,
    // so a child waits for an earlier sibling still leaving its handler.
    const Supervisor* sup = slot.parent_sup;
    if (sup == nullptr || sup->spec.strategy == Strategy::one_for_one) return false;
    for (const ModuleSlot* c : sup->children) {
        if (c == &slot) break;
        if (c->restart_pending && still_stopping(*c)) return true;
    }
    return false;
}

void SystemImpl::abandon_stopping(ModuleSlot& slot, ModuleSlot::Stopping& st) {
    m_logger.log(
        LogLevel::error, path_of(slot),
        fmt::format("does not stop ({}): it hangs in a handler; abandoned on its thread", st.why));
    st.runner->abandon();
    const std::unique_lock lock(m_instances);
    slot.abandoned.push_back(std::move(st.runner));
}

void SystemImpl::reap_stopping(std::uint64_t now) {
    for (auto& s : m_slots) {
        auto& list = s->stopping;
        for (auto it = list.begin(); it != list.end();) {
            if (it->runner->join(std::chrono::milliseconds(0))) {
                it = list.erase(it);
            } else if (now >= it->deadline_ns) {
                abandon_stopping(*s, *it);
                it = list.erase(it);
            } else {
                ++it;
            }
        }
    }
}

void SystemImpl::await_stopped(ModuleSlot& slot) {
    for (auto& st : slot.stopping) {
        const std::uint64_t now = platform::monotonic_ns();
        const std::uint64_t left_ms = st.deadline_ns > now ? (st.deadline_ns - now) / k_ms : 0;
        if (!st.runner->join(std::chrono::milliseconds(left_ms))) abandon_stopping(slot, st);
    }
    slot.stopping.clear();
}

void SystemImpl::start_instance(ModuleSlot& slot) {
    const std::uint64_t epoch = ++slot.last_epoch;
    if (slot.process) {
        slot.epoch.store(epoch);
        slot.state.store(ModuleState::running);
        slot.started_ns = platform::monotonic_ns();
        slot.pump->restart(slot.id, epoch);
        return;
    }
    StartPlan plan;
    plan.epoch = epoch;
    if (slot.boot_plan) {
        plan = std::move(*slot.boot_plan);
        slot.boot_plan.reset();
    } else if (slot.spec != nullptr) {
        plan = plan_start(*slot.spec, *slot.parent_bus, slot.journal, epoch,
                          slot.snapshot_at_most.load(), random_seed(),
                          m_booted.load() ? 0 : slot.parent_bus->ring().first(), m_logger);
        slot.restored_from.store(plan.restore ? plan.from_seq - 1 : 0);
    }
    if (!m_booted.load()) {
        // Every module of the first boot reads its buses from their start.
        if (slot.parent_bus != nullptr && plan.from_seq == 0)
            plan.from_seq = slot.parent_bus->ring().first();
        if (slot.child_bus != nullptr) plan.child_from_seq = slot.child_bus->ring().first();
    } else if (slot.child_bus != nullptr && epoch > 1) {
        // A gateway goes on where its last instance stopped: nothing that was
        // on its way through it is lost (a message it failed on is skipped).
        if (plan.from_seq == 0 && slot.parent_bus != nullptr) plan.from_seq = slot.resume_parent;
        plan.child_from_seq = slot.resume_child;
    }
    const Doorbell bell = slot.bell->doorbell();
    auto runner =
        std::make_unique<Runner>(*this, slot.spec, slot.kind, slot.parent_bus, slot.child_bus, bell,
                                 std::move(plan), slot.catch_up.get(), slot.child_catch_up.get());
    runner->set_cpu_share(slot.cpu.get());
    Runner* r = runner.get();
    {
        const std::unique_lock lock(m_instances);
        slot.runner = std::move(runner);
    }
    slot.epoch.store(epoch);
    slot.state.store(ModuleState::running);
    slot.started_ns = platform::monotonic_ns();
    r->start();
}

void SystemImpl::run_due_restarts(std::uint64_t now) {
    // Preorder: a gateway before its children, siblings in declaration order.
    for (auto& s : m_slots) {
        if (!s->restart_pending || s->restart_at_ns > now || restart_held(*s)) continue;
        s->restart_pending = false;
        s->restarts.fetch_add(1);
        if (s->own_sup != nullptr) s->own_sup->restarts.clear();
        start_instance(*s);
        m_logger.log(LogLevel::info, path_of(*s),
                     fmt::format("restarted (instance {})", s->epoch.load()));
        if (s->own_sup != nullptr) {
            // A restarted gateway starts its children again, in order.
            std::vector<ModuleSlot*> stack(s->own_sup->children.rbegin(),
                                           s->own_sup->children.rend());
            while (!stack.empty()) {
                ModuleSlot* c = stack.back();
                stack.pop_back();
                c->restart_pending = false;
                start_instance(*c);
                if (c->own_sup != nullptr) {
                    c->own_sup->restarts.clear();
                    stack.insert(stack.end(), c->own_sup->children.rbegin(),
                                 c->own_sup->children.rend());
                }
            }
        }
    }
}

void SystemImpl::heartbeats(std::uint64_t now) {
    for (auto& [id, sup_ptr] : m_supervisors) {
        Supervisor& sup = *sup_ptr;
        if (sup.spec.heartbeat_ms == 0 || sup.owner->state.load() != ModuleState::running) continue;
        const std::uint64_t period = std::uint64_t{sup.spec.heartbeat_ms} * k_ms;
        if (sup.next_heartbeat_ns == 0) {
            sup.next_heartbeat_ns = now + period;
            continue;
        }
        if (now < sup.next_heartbeat_ns) continue;
        sup.next_heartbeat_ns = std::max(sup.next_heartbeat_ns + period, now + period / 2);
        Header h;
        h.sender = sup.owner->id;
        h.type = msg::k_heartbeat;
        const auto seq = sup.bus->publish(h, {}, sup.owner->id);
        if (!seq) continue;
        sup.beats.push_back(*seq);
        const std::size_t misses = sup.spec.heartbeat_misses;
        while (sup.beats.size() > misses + 1) sup.beats.pop_front();
        if (sup.beats.size() <= misses) continue;
        const std::uint64_t due = sup.beats[sup.beats.size() - 1 - misses];
        const bool visible = sup.bus->ring().available() >= due;
        for (ModuleSlot* child : sup.children) {
            if (child->state.load() != ModuleState::running) continue;
            if (m_job != nullptr && m_job->slot == child) continue;  // two instances, briefly
            const ModuleStats st = module_stats(child->id);
            if (st.state != ModuleState::running && st.state != ModuleState::recovering) {
                child->hb_cursor = 0;
                continue;
            }
            if (st.epoch != child->hb_epoch) {
                // A new instance never saw the heartbeats before it: it is
                // judged on those from its first sight here on (a process
                // restarted late, after a slow stop of a sibling, was found
                // hung before it had read a thing).
                child->hb_epoch = st.epoch;
                child->hb_since = *seq;
                child->hb_cursor = st.cursor;
                continue;
            }
            // Hung: it has not handled a heartbeat `misses` periods old, and
            // it did not read a single message since the last one.
            const bool hung = visible && due >= child->hb_since && st.heartbeat < due &&
                              st.cursor <= due && st.cursor == child->hb_cursor;
            child->hb_cursor = st.cursor;
            if (!hung) continue;
            const std::string why =
                fmt::format("missed {} heartbeats of {} ms: hung (it stopped reading at seq {})",
                            misses, sup.spec.heartbeat_ms, st.cursor);
            m_logger.log(LogLevel::error, path_of(*child), why);
            child->hb_cursor = 0;
            if (child->process) {
                // Its exit comes back as a failure, with this reason.
                child->pump->kill(child->id, why, st.epoch);
            } else {
                handle_failure(*child, why, false);
            }
        }
    }
}

}  // namespace hmk::detail
