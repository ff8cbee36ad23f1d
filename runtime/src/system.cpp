// SPDX-License-Identifier: Apache-2.0
#include "hmk/runtime/system.hpp"

#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif
#include <random>

#include "hmk/platform/clock.hpp"
#include "hmk/platform/process.hpp"
#include "manage.hpp"
#include "system_impl.hpp"

namespace hmk {

const char* to_string(ModuleState state) {
    switch (state) {
        case ModuleState::created:
            return "created";
        case ModuleState::running:
            return "running";
        case ModuleState::failed:
            return "failed";
        case ModuleState::restarting:
            return "restarting";
        case ModuleState::recovering:
            return "recovering";
        case ModuleState::stopped:
            return "stopped";
    }
    return "?";
}

const char* to_string(Delivery delivery) {
    switch (delivery) {
        case Delivery::reliable:
            return "reliable";
        case Delivery::best_effort:
            return "best_effort";
    }
    return "?";
}

const char* to_string(Isolation isolation) {
    switch (isolation) {
        case Isolation::inproc:
            return "inproc";
        case Isolation::process:
            return "process";
    }
    return "?";
}

const char* to_string(Grant::Type type) {
    return type == Grant::Type::file ? "file" : "dir";
}

const char* to_string(RestartPolicy policy) {
    switch (policy) {
        case RestartPolicy::permanent:
            return "permanent";
        case RestartPolicy::transient:
            return "transient";
        case RestartPolicy::temporary:
            return "temporary";
    }
    return "?";
}

const char* to_string(Strategy strategy) {
    switch (strategy) {
        case Strategy::one_for_one:
            return "one_for_one";
        case Strategy::one_for_all:
            return "one_for_all";
        case Strategy::rest_for_one:
            return "rest_for_one";
    }
    return "?";
}

const ModuleSpec* SystemSpec::module(ModuleId id) const {
    const auto it = std::find_if(modules.begin(), modules.end(),
                                 [&](const ModuleSpec& m) { return m.id == id; });
    return it == modules.end() ? nullptr : &*it;
}

const ModuleSpec* SystemSpec::journal_of(BusId bus) const {
    for (ModuleId id : journals) {
        const TopologyNode* n = topology.find(id);
        if (n != nullptr && n->parent == bus) return module(id);
    }
    return nullptr;
}

namespace detail {

void RootMailbox::put(const Message& m) {
    {
        const std::lock_guard lock(m_mutex);
        m_messages.push_back(
            OwnedMessage{m.header, std::vector<std::byte>(m.payload.begin(), m.payload.end())});
        // Bounded: a flood of messages to the root must not grow memory without end.
        if (m_messages.size() > k_capacity) m_messages.pop_front();
    }
    m_cv.notify_all();
}

std::optional<OwnedMessage> RootMailbox::wait(std::uint64_t correlation,
                                              std::chrono::milliseconds timeout) {
    std::unique_lock lock(m_mutex);
    std::optional<OwnedMessage> found;
    m_cv.wait_for(lock, timeout, [&] {
        const auto it = std::find_if(
            m_messages.begin(), m_messages.end(),
            [&](const OwnedMessage& o) { return o.header.correlation == correlation; });
        if (it == m_messages.end()) return false;
        found = std::move(*it);
        m_messages.erase(it);
        return true;
    });
    return found;
}

namespace {

/// The microkernel's own module: owns Bus 0 and hands messages addressed to
/// the root to the operator's mailbox.
class Microkernel final : public Module {
  public:
    Microkernel(Env& env, RootMailbox& mailbox) : m_env(env), m_mailbox(mailbox) {}
    void on_message(const Message& message) override {
        if (message.header.destination == m_env.id()) m_mailbox.put(message);
    }

  private:
    Env& m_env;
    RootMailbox& m_mailbox;
};

// Memory deliberately never freed (see ~SystemImpl): not a leak to report.
void keep_for_good(const void* object) {
#if defined(__SANITIZE_ADDRESS__)
    __lsan_ignore_object(object);
#else
    (void)object;
#endif
}

std::uint64_t entropy() {
    std::random_device device;
    return (std::uint64_t{device()} << 32) | device();
}

}  // namespace

SystemImpl::SystemImpl(const SystemSpec& spec, const Registry& registry, Logger& logger,
                       const RuntimeOptions& options, ModuleId top)
    : m_generations(spec), m_registry(registry), m_logger(logger), m_top(top) {
    // Operator requests must not reuse a correlation id of an earlier boot:
    // a recovering module may answer an old request again.
    m_correlation.store(entropy() >> 1);
    m_host_setup.host_program = options.host_program;
    m_host_setup.plugins.push_back(options.std_plugin);
    for (const auto& p : spec.plugins) m_host_setup.plugins.push_back(p);
    m_host_setup.generations = &m_generations;
    m_kernel_kind.name = "microkernel";
    m_kernel_kind.role = Role::gateway;
    m_kernel_kind.create = [this](Env& env) -> Result<std::unique_ptr<Module>, std::string> {
        return std::unique_ptr<Module>(std::make_unique<Microkernel>(env, m_mailbox));
    };
}

SystemImpl::~SystemImpl() {
    stop();
    // A runner abandoned in a hung handler may still touch its buses should
    // it ever return: they, and it, are kept for the life of the process.
    bool abandoned = false;
    for (const auto& s : m_slots) abandoned = abandoned || !s->abandoned.empty();
    if (abandoned) {
        for (auto& [id, bus] : m_buses) keep_for_good(bus.release());
        for (auto& s : m_slots) {
            for (auto& r : s->abandoned) keep_for_good(r.release());
        }
    }
}

bool SystemImpl::manages(ModuleId id) const {
    const SystemSpec& spec = m_generations.latest();
    const Topology& topo = spec.topology;
    if (id == m_top) return true;
    const TopologyNode* n = topo.find(id);
    if (n == nullptr || id == k_root_id) return false;
    for (ModuleId up = n->parent; up != m_top; up = topo.find(up)->parent) {
        if (up == k_root_id) return false;  // not below the top
        const ModuleSpec* gateway = spec.module(up);
        if (gateway != nullptr && gateway->isolation == Isolation::process) return false;
    }
    return true;
}

Result<void, std::string> SystemImpl::build() {
    const SystemSpec& m_spec = m_generations.spec(0);
    const Topology& topo = m_spec.topology;
    // A gateway in a process of its own owns its bus there: here it is a
    // child like a leaf, with no bus and no supervisor.
    auto owns_bus = [&](const TopologyNode& n) {
        if (!n.is_gateway() || !manages(n.id)) return false;
        if (n.id == m_top) return true;
        const ModuleSpec* m = m_spec.module(n.id);
        return m != nullptr && m->isolation != Isolation::process;
    };
    // Journals first: a journaled bus continues after its journal's last record.
    for (ModuleId id : m_spec.journals) {
        if (!manages(id)) continue;
        const ModuleSpec* monitor = m_spec.module(id);
        const BusId bus = topo.find(id)->parent;
        auto journal = std::make_unique<BusJournal>(*monitor, bus);
        if (auto opened = journal->open(m_logger); !opened) {
            return Err{
                fmt::format("{}: journal {}: {}", monitor->path, journal->dir(), opened.error())};
        }
        m_journals.emplace(bus, std::move(journal));
    }
    auto make_bus = [&](BusId id, const std::string& name, const BusSpec& b) {
        BusSettings s{b.capacity, b.max_payload, b.up};
        s.delivery = b.delivery;
        s.reader_deadline_ms = b.reader_deadline_ms;
        const auto j = m_journals.find(id);
        if (j != m_journals.end()) {
            s.first_seq = j->second->last_seq() + 1;
            if (j->second->durable()) s.commit = CommitMode::explicit_;
        }
        auto bus = std::make_unique<InprocBus>(id, name, s, m_generations, m_logger);
        bus->set_eviction_listener(this);
        if (j != m_journals.end()) {
            bus->set_journal(j->second->monitor(), j->second->stall_ms());
            j->second->set_max_payload(b.max_payload);
        }
        m_buses.emplace(id, std::move(bus));
    };
    if (m_top == k_root_id) make_bus(k_root_id, "Bus 0", m_spec.root_bus);
    for (const ModuleSpec& m : m_spec.modules) {
        const TopologyNode* n = topo.find(m.id);
        if (n != nullptr && owns_bus(*n)) make_bus(m.id, m.path, m.bus);
    }

    // Slots, in preorder (the top first), and a supervisor for every gateway.
    for (const TopologyNode& n : topo.nodes()) {
        if (!manages(n.id)) continue;
        auto s = std::make_unique<ModuleSlot>();
        s->id = n.id;
        if (n.id == k_root_id) {
            s->kind = &m_kernel_kind;
        } else if (n.id == m_top) {
            // A gateway hosted in its own process: its instance is the host's.
            s->spec = m_spec.module(n.id);
            s->kind = m_registry.find(s->spec->kind, s->spec->version);
            if (s->kind == nullptr)
                return Err{fmt::format("{}: no module kind '{}'", n.path, s->spec->kind)};
        } else {
            s->spec = m_spec.module(n.id);
            s->kind =
                s->spec != nullptr ? m_registry.find(s->spec->kind, s->spec->version) : nullptr;
            if (s->kind == nullptr) {
                return Err{
                    fmt::format("{}: no module kind '{}'", n.path, s->spec ? s->spec->kind : "?")};
            }
            s->parent_bus = m_buses.at(n.parent).get();
            const auto j = m_journals.find(n.parent);
            s->journal = j != m_journals.end() ? j->second.get() : nullptr;
            s->is_monitor = s->journal != nullptr && s->journal->monitor() == n.id;
            s->process = s->spec->isolation == Isolation::process;
            // Its in-process instances' threads run under it (a move into
            // the parent's process makes it then).
            if (s->spec->quota.cpu > 0 && !s->process)
                s->cpu = platform::CpuShare::make("t" + std::to_string(n.id), s->spec->quota.cpu);
        }
        if (owns_bus(n)) {
            s->child_bus = m_buses.at(n.id).get();
            auto sup = std::make_unique<Supervisor>();
            sup->owner = s.get();
            sup->bus = s->child_bus;
            const auto j = m_journals.find(n.id);
            sup->journal = j != m_journals.end() ? j->second.get() : nullptr;
            if (sup->journal != nullptr) {
                s->child_catch_up = std::make_unique<JournalCatchUp>(
                    *sup->journal, *s->child_bus, m_logger, n.id == k_root_id ? "/" : n.path);
            }
            sup->spec = n.id == k_root_id ? m_spec.root_supervisor : s->spec->supervisor;
            s->own_sup = sup.get();
            m_supervisors.emplace(n.id, std::move(sup));
        }
        m_slots.push_back(std::move(s));
    }
    for (auto& s : m_slots) {
        if (s->id == m_top) continue;
        Supervisor& sup = *m_supervisors.at(topo.find(s->id)->parent);
        s->parent_sup = &sup;
        sup.children.push_back(s.get());
        if (s->process) {
            auto& pump = m_pumps[topo.find(s->id)->parent];
            if (!pump) {
                pump =
                    std::make_unique<UplinkPump>(*s->parent_bus, *this, m_host_setup, s->journal);
            }
            if (auto added = pump->add(*s->spec); !added) {
                return Err{fmt::format("{}: cannot prepare its process: {}", s->spec->path,
                                       added.error())};
            }
            s->pump = pump.get();
            continue;
        }
        // An in-process module sleeps on its slot's bell, which its buses ring.
        const Doorbell bell = s->bell->doorbell();
        HMK_TRY(s->parent_bus->subscribe(bell));
        if (s->child_bus != nullptr) HMK_TRY(s->child_bus->subscribe(bell));
        if (s->journal != nullptr && !s->is_monitor) {
            s->catch_up = std::make_unique<JournalCatchUp>(*s->journal, *s->parent_bus, m_logger,
                                                           s->spec->path);
        }
    }
    // (A hosted top's instance subscribes its own bell: module_host.cpp.)
    ModuleSlot& root = *m_slots.front();
    if (m_top == k_root_id) HMK_TRY(root.child_bus->subscribe(root.bell->doorbell()));
    return {};
}

Result<void, std::string> SystemImpl::start() {
    // A hosted top is not started here: its host runs it once we are up.
    const bool hosted = m_top != k_root_id;
    m_expected = m_slots.size() - (hosted ? 1 : 0);
    m_sup_thread = std::thread([this] { supervise_loop(); });
    // Every module is planned (and, on a journaled bus, announced) before any
    // runs: each module's life in the journal then begins ahead of all traffic.
    for (auto& s : m_slots) {
        if (s->parent_bus == nullptr) continue;
        s->boot_plan =
            plan_start(*s->spec, *s->parent_bus, s->journal, 1, s->snapshot_at_most.load(),
                       entropy(), s->parent_bus->ring().first(), m_logger);
        s->restored_from.store(s->boot_plan->restore ? s->boot_plan->from_seq - 1 : 0);
    }
    // No sender started first may lap a reader not started yet: each bus
    // waits for each of its readers at its start until it is attached.
    for (auto& s : m_slots) {
        // (A hosted top's instance is attached to its bus already: made
        // before this owner starts, it reads from the bus's start.)
        if (s->spec == nullptr || (hosted && s->id == m_top)) continue;
        if (s->parent_bus != nullptr)
            s->parent_bus->hold_for(s->spec->id, s->parent_bus->ring().first());
        if (s->child_bus != nullptr)
            s->child_bus->hold_for(s->spec->id, s->child_bus->ring().first());
    }
    // Parents before children: a child relies on its parent, never the reverse.
    for (auto& s : m_slots) {
        if (!s->process && !(hosted && s->id == m_top)) start_instance(*s);
    }
    for (auto& s : m_slots) {
        if (s->process) {
            s->last_epoch = 1;
            s->epoch.store(1);
            s->state.store(ModuleState::running);
        }
    }
    for (auto& [bus, pump] : m_pumps) pump->start();
    std::unique_lock lock(m_start_mutex);
    for (int attempt = 0;; ++attempt) {
        m_start_cv.wait(lock, [&] { return m_started >= m_expected; });
        if (m_start_failures.empty()) break;
        // A module that could not restore its snapshot gets another instance
        // without that snapshot (an older one, or its whole history).
        const bool restores =
            std::all_of(m_start_failures.begin(), m_start_failures.end(),
                        [](const auto& f) { return f.second == StartResult::restore_failed; });
        if (restores && attempt < 8) {
            auto failures = std::move(m_start_failures);
            m_start_failures.clear();
            m_expected += failures.size();
            lock.unlock();
            for (const auto& [id, result] : failures) {
                ModuleSlot& s = *slot(id);
                const std::uint64_t seq = s.restored_from.load();
                s.snapshot_at_most.store(seq == 0 ? 0 : seq - 1);
                m_logger.log(LogLevel::warn, s.spec->path,
                             fmt::format("it could not restore its snapshot at seq {}: starting it "
                                         "again without it",
                                         seq));
                if (s.process) {
                    s.epoch.store(++s.last_epoch);
                    s.pump->restart(id, s.epoch.load());
                } else {
                    stop_instance(s, "could not restore its snapshot");
                    await_stopped(s);
                    start_instance(s);
                }
            }
            lock.lock();
            continue;
        }
        break;
    }
    // A module that could not come up does not keep the rest down: it is
    // its supervisor's, as a failure right after its start (its restart
    // policy, its parent's intensity; past that the failure escalates).
    std::vector<std::pair<ModuleId, StartResult>> failures = std::move(m_start_failures);
    m_start_failures.clear();
    lock.unlock();
    for (auto& [id, bus] : m_buses) bus->release_holds();
    m_booted.store(true);
    for (const auto& [id, result] : failures) {
        ModuleSlot& s = *slot(id);
        if (s.parent_sup == nullptr) {  // the top itself
            stop();
            return Err{std::string("the microkernel could not start")};
        }
        m_logger.log(LogLevel::error, s.spec->path,
                     "could not start (see above): the system boots without it; its parent "
                     "handles it as a failure");
        post(FailureEvent{id, s.epoch.load(), "could not start at boot", false,
                          result == StartResult::restore_failed});
    }
    std::size_t processes = 0;
    for (const auto& s : m_slots) processes += s->process ? 1u : 0u;
    const std::string what =
        hosted ? "subtree " + spec().topology.find(m_top)->path : "system '" + spec().name + "'";
    m_logger.log(
        LogLevel::info, hosted ? spec().topology.find(m_top)->path : "hmk",
        fmt::format(
            "{} up: {} modules ({} in processes of their own), {} buses"
            "{}",
            what, m_slots.size(), processes, m_buses.size(),
            m_journals.empty() ? std::string() : fmt::format(", {} journaled", m_journals.size())));
    return {};
}

void SystemImpl::stop() {
    if (m_stopped.exchange(true)) return;
    // No more restarts from here on.
    {
        const std::lock_guard lock(m_sup_mutex);
        m_sup_stop = true;
    }
    m_sup_cv.notify_all();
    if (m_sup_thread.joinable()) m_sup_thread.join();
    // A swap under way or waiting its turn ends here (its replica goes).
    if (m_job != nullptr) {
        if (m_job->step != HandoffJob::Step::switching) {
            rollback_job("the system stops");
        } else {
            m_job->result.set_value(Err{std::string("the system stopped during the switch")});
            m_job.reset();
        }
    }
    for (auto& job : m_job_queue) job->result.set_value(Err{std::string("the system stopped")});
    m_job_queue.clear();
    // Children before parents, so a parent outlives everything that relies on
    // it. Process modules are leaves: they go first. Journals go last, once
    // nothing publishes on their buses any more, and take in the rest first.
    for (auto& [bus, pump] : m_pumps) pump->stop();
    auto stop_runner = [&](ModuleSlot& s) {
        await_stopped(s);
        if (s.retiring != nullptr) {
            s.retiring->request_stop();
            if (s.retiring->join(std::chrono::seconds(2))) {
                s.retiring.reset();
            } else {
                s.retiring->abandon();
                s.abandoned.push_back(std::move(s.retiring));
            }
        }
        if (s.runner == nullptr) return;
        s.runner->request_stop();
        if (!s.runner->join(std::chrono::seconds(2))) {
            m_logger.log(LogLevel::error, s.spec != nullptr ? s.spec->path : "/",
                         "does not stop (hangs in a handler): abandoned");
            s.runner->abandon();
            s.abandoned.push_back(std::move(s.runner));
        }
    };
    for (auto it = m_slots.rbegin(); it != m_slots.rend(); ++it) {
        if (!(*it)->is_monitor) stop_runner(**it);
    }
    for (auto it = m_slots.rbegin(); it != m_slots.rend(); ++it) {
        if ((*it)->is_monitor) stop_runner(**it);
    }
    for (auto& [id, bus] : m_buses) {
        if (bus->journal_module() != k_no_module) bus->close_gate();
    }
    for (auto& [bus, journal] : m_journals) journal->unlock();
}

ModuleSlot* SystemImpl::slot(ModuleId id) const {
    for (const auto& s : m_slots) {
        if (s->id == id) return s.get();
    }
    return nullptr;
}

ModuleStats SystemImpl::module_stats(ModuleId id) const {
    const ModuleSlot* s = slot(id);
    if (const ModuleId gateway = reached_through(id); gateway != k_no_module) {
        // Asked of its manager, down the tree; its pid as this process sees it.
        auto text = const_cast<SystemImpl*>(this)->ask_through(
            id, manage_text(ManageRequest::Op::stats, id));
        if (!text) return ModuleStats{};
        auto stats = decode_stats(*text);
        if (!stats) return ModuleStats{};
        if (stats->pid != 0) {
            const ModuleSlot* g = slot(gateway);
            const std::int64_t top = g->pump != nullptr ? g->pump->stats(gateway).pid : 0;
            stats->pid = top > 0 ? platform::find_descendant(
                                       static_cast<pid_t>(top),
                                       {"hmk-host", "--module", spec().topology.find(id)->path})
                                 : 0;
        }
        return *stats;
    }
    if (s == nullptr) return ModuleStats{};
    ModuleStats out;
    {
        // (A move changes where the module runs: process, pump, runner.)
        const std::shared_lock lock(m_instances);
        if (s->process) {
            out = s->pump->stats(id);
        } else if (s->runner != nullptr) {
            out = s->runner->stats();
        }
    }
    out.restarts = s->restarts.load();
    const ModuleState supervised = s->state.load();
    if (supervised == ModuleState::restarting || supervised == ModuleState::stopped ||
        (supervised == ModuleState::failed && out.state != ModuleState::stopped)) {
        if (!(supervised == ModuleState::stopped && out.state == ModuleState::failed))
            out.state = supervised;
    }
    if (out.epoch == 0) out.epoch = s->epoch.load();
    return out;
}

Result<std::uint64_t, SendError> SystemImpl::inject(const Outgoing& message, ModuleId from) {
    Outgoing out = message;
    if (out.correlation == 0) out.correlation = next_correlation();
    ModuleSlot* s = slot(from);
    if (s == nullptr) return Err{SendError::unknown_destination};
    std::shared_lock lock(m_instances);
    if (!s->process) {
        if (s->runner == nullptr) return Err{SendError::stopped};
        if (auto sent = s->runner->send_as(out); !sent) return Err{sent.error()};
        return out.correlation;
    }
    // A module in another process: its bus owner publishes on its behalf,
    // through the same checks as the module's own messages.
    lock.unlock();  // (its pump stays; no instance is used)
    Header h = header_for(from, out);
    h.flags = static_cast<std::uint16_t>(h.flags | k_flag_operator);
    // The operator waits for room like any sender (not the pump: it never waits).
    InprocBus& bus = s->pump->bus();
    auto sent = bus.publish(h, out.payload, from);
    const std::uint64_t limit =
        platform::monotonic_ns() + (std::uint64_t{bus.wait_limit_ms()} + 1000) * 1'000'000;
    while (!sent && sent.error() == SendError::full && platform::monotonic_ns() < limit) {
        bus.wait_for_room(1'000'000);
        sent = bus.publish(h, out.payload, from);
    }
    if (!sent) return Err{sent.error()};
    return out.correlation;
}

ModuleId SystemImpl::reached_through(ModuleId id) const {
    const Topology& topo = spec().topology;
    const TopologyNode* n = topo.find(id);
    if (n == nullptr || manages(id)) return k_no_module;
    // The nearest ancestor we manage is a sandboxed gateway, our child:
    // the whole of its subtree is its own process's to manage.
    ModuleId gateway = n->parent;
    while (!manages(gateway)) gateway = topo.find(gateway)->parent;
    return gateway;
}

std::string SystemImpl::out_of_reach(ModuleId id) const {
    const ModuleId gateway = reached_through(id);
    if (gateway == k_no_module) return {};
    const std::string& g = spec().topology.find(gateway)->path;
    return fmt::format(
        "{} is in the subtree of {}, which manages it in a process of its own: this operation "
        "does not reach through a sandboxed gateway yet (killing {} restarts all of it)",
        spec().topology.find(id)->path, g, g);
}

Result<std::string, std::string> SystemImpl::ask_through(ModuleId id, const std::string& request) {
    const ModuleId gateway = reached_through(id);
    ModuleSlot* g = slot(gateway);
    if (g == nullptr || g->parent_bus == nullptr) return Err{std::string("no such module")};
    // From the gateway's parent (the owner of the bus it is on): the only
    // sender it takes such a request from.
    const ModuleId parent = spec().topology.find(gateway)->parent;
    Header h;
    h.sender = parent;
    h.destination = gateway;
    h.type = msg::k_manage;
    h.correlation = next_correlation();
    h.payload_size = static_cast<std::uint32_t>(request.size());
    InprocBus& bus = *g->parent_bus;
    const auto payload = as_bytes(request);
    auto sent = bus.publish(h, payload, parent);
    const std::uint64_t limit =
        platform::monotonic_ns() + (std::uint64_t{bus.wait_limit_ms()} + 1000) * 1'000'000;
    while (!sent && sent.error() == SendError::full && platform::monotonic_ns() < limit) {
        bus.wait_for_room(1'000'000);
        sent = bus.publish(h, payload, parent);
    }
    const std::string& path = spec().topology.find(gateway)->path;
    if (!sent) return Err{fmt::format("cannot ask {}: {}", path, to_string(sent.error()))};
    auto answer = m_mailbox.wait(h.correlation, std::chrono::seconds(3));
    if (!answer) return Err{fmt::format("{} did not answer within 3 s", path)};
    std::string text(reinterpret_cast<const char*>(answer->payload.data()), answer->payload.size());
    if (text.rfind("error ", 0) == 0) return Err{text.substr(6)};
    return text;
}

std::vector<RunnerHost::ManageSend> SystemImpl::manage(const Message& message) {
    if (!message.header.is_reply()) return RunnerHost::manage(message);
    m_mailbox.put(message);
    return {};
}

Result<void, std::string> SystemImpl::kill(ModuleId id) {
    ModuleSlot* s = slot(id);
    if (reached_through(id) != k_no_module) {
        // Its own manager kills it, asked down the tree.
        HMK_TRY(ask_through(id, manage_text(ManageRequest::Op::kill, id)));
        return {};
    }
    if (s == nullptr || s->spec == nullptr) return Err{std::string("no such module (or the root)")};
    if (s->state.load() != ModuleState::running)
        return Err{fmt::format("{} is {}", s->spec->path, to_string(s->state.load()))};
    const std::shared_lock lock(m_instances);
    if (s->process || s->runner != nullptr) {
        const ModuleStats st = s->process ? s->pump->stats(id) : s->runner->stats();
        if (st.state != ModuleState::running && st.state != ModuleState::recovering)
            return Err{fmt::format("{} is {}", s->spec->path, to_string(st.state))};
        // One kill per instance: one that is dying already looks up a moment
        // longer, and a second kill of it would do nothing.
        std::uint64_t last = s->killed_epoch.load();
        do {
            if (last == st.epoch)
                return Err{fmt::format("{} (instance {}) is being stopped already", s->spec->path,
                                       st.epoch)};
        } while (!s->killed_epoch.compare_exchange_weak(last, st.epoch));
        if (s->process) {
            s->pump->kill(id, "killed by the operator", st.epoch);
        } else {
            s->runner->crash("killed by the operator");
        }
        return {};
    }
    return Err{s->spec->path + " has no instance"};
}

std::optional<std::string> SystemImpl::failure() const {
    const std::lock_guard lock(m_failure_mutex);
    return m_failure;
}

bool SystemImpl::wait_failure(std::chrono::milliseconds timeout) {
    std::unique_lock lock(m_failure_mutex);
    return m_failure_cv.wait_for(lock, timeout, [&] { return m_failure.has_value(); });
}

void SystemImpl::started(ModuleId id, std::uint64_t epoch, StartResult result) {
    if (m_booted.load()) {
        // A new instance that could not come up is a failure like any other
        // (a replica's is its handoff's business: handle() tells them apart).
        if (result != StartResult::ok) {
            post(FailureEvent{id, epoch, "could not start", false,
                              result == StartResult::restore_failed});
        }
        return;
    }
    {
        const std::lock_guard lock(m_start_mutex);
        ++m_started;
        if (result != StartResult::ok) m_start_failures.emplace_back(id, result);
    }
    m_start_cv.notify_all();
}

void SystemImpl::failed(ModuleId id, std::uint64_t epoch, const std::string& why) {
    post(FailureEvent{id, epoch, why, false, false});
}

void SystemImpl::reader_evicted(BusId /*bus*/, ModuleId module, std::uint64_t epoch,
                                const std::string& why) {
    const ModuleSlot* s = slot(module);
    m_logger.log(LogLevel::error, s != nullptr && s->spec != nullptr ? s->spec->path : "/", why);
    // The root has no parent to fail it: the bus just no longer waits for it.
    if (s == nullptr || s->parent_sup == nullptr) return;
    post(FailureEvent{module, epoch, why, false, false});
}

void SystemImpl::child_failed(ModuleId id, std::uint64_t epoch, const std::string& why,
                              bool normal_exit, bool restore_failed) {
    post(FailureEvent{id, epoch, why, normal_exit, restore_failed, true});
}

StartPlan SystemImpl::plan(const ModuleSpec& spec, std::uint64_t epoch) {
    ModuleSlot* s = slot(spec.id);
    if (epoch == 1 && s->boot_plan) {
        StartPlan p = std::move(*s->boot_plan);
        s->boot_plan.reset();
        return p;
    }
    StartPlan p =
        plan_start(spec, *s->parent_bus, s->journal, epoch, s->snapshot_at_most.load(), entropy(),
                   m_booted.load() ? 0 : s->parent_bus->ring().first(), m_logger);
    s->restored_from.store(p.restore ? p.from_seq - 1 : 0);
    return p;
}

}  // namespace detail

System::System(std::unique_ptr<detail::SystemImpl> impl) : m_impl(std::move(impl)) {}
System::~System() {
    stop();
    // A runner abandoned in a hung handler still refers to the system (its
    // host): the whole of it is kept for the life of the process, so that
    // nothing it may touch is ever freed (ThreadSanitizer saw the host's
    // memory freed under such a thread).
    if (abandoned() != 0) detail::keep_for_good(m_impl.release());
}

RuntimeOptions RuntimeOptions::beside_executable() {
    RuntimeOptions o;
    char buf[4096];
    const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    std::string dir = ".";
    if (n > 0) {
        dir.assign(buf, static_cast<std::size_t>(n));
        dir = dir.substr(0, dir.rfind('/'));
    }
    o.host_program = dir + "/hmk-host";
    o.std_plugin = dir + "/../lib/libhmk-std.so";
    return o;
}

Result<std::unique_ptr<System>, std::string> System::create(const SystemSpec& spec,
                                                            const Registry& registry,
                                                            Logger& logger,
                                                            const RuntimeOptions& options) {
    auto impl = std::make_unique<detail::SystemImpl>(spec, registry, logger, options);
    if (auto built = impl->build(); !built) return Err{std::move(built).error()};
    return std::unique_ptr<System>(new System(std::move(impl)));
}

Result<void, std::string> System::start() {
    return m_impl->start();
}
void System::stop() {
    m_impl->stop();
}

Result<std::uint64_t, SendError> System::inject(const Outgoing& message, ModuleId from) {
    return m_impl->inject(message, from);
}

std::optional<OwnedMessage> System::wait_for_root(std::uint64_t correlation,
                                                  std::chrono::milliseconds timeout) {
    return m_impl->m_mailbox.wait(correlation, timeout);
}

const SystemSpec& System::spec() const {
    return m_impl->spec();
}
const Topology& System::topology() const {
    return m_impl->spec().topology;
}

ModuleStats System::module_stats(ModuleId id) const {
    return m_impl->module_stats(id);
}

std::optional<std::string> System::failure() const {
    return m_impl->failure();
}

Result<void, std::string> System::kill(ModuleId id) {
    return m_impl->kill(id);
}

Result<HandoffReport, std::string> System::move(ModuleId id, ModuleId to,
                                                std::optional<Isolation> isolation,
                                                std::chrono::milliseconds deadline) {
    return m_impl->move(id, to, isolation, deadline);
}

Result<HandoffReport, std::string> System::swap(ModuleId id, const std::string& kind,
                                                std::uint32_t version,
                                                std::chrono::milliseconds deadline) {
    return m_impl->swap(id, kind, version, deadline);
}

bool System::wait_failure(std::chrono::milliseconds timeout) {
    return m_impl->wait_failure(timeout);
}

std::vector<std::pair<std::string, std::vector<std::string>>> System::sandbox_report() const {
    std::vector<std::pair<std::string, std::vector<std::string>>> out;
    const std::shared_lock lock(m_impl->m_instances);  // a move may add a pump
    for (const auto& [bus, pump] : m_impl->m_pumps) {
        for (auto& entry : pump->sandbox_report()) out.push_back(std::move(entry));
    }
    // In the kernel's process, a module has the kernel's file access (its
    // grants mean nothing there: said so), and its CPU share if it has one.
    for (const auto& s : m_impl->m_slots) {
        if (s->spec == nullptr || s->process) continue;
        std::vector<std::string> layers;
        if (!s->spec->grants.empty()) {
            layers.push_back("none: it runs inproc, with the kernel's own file access (its " +
                             std::to_string(s->spec->grants.size()) +
                             " grants apply once it runs in a process)");
        }
        if (s->cpu != nullptr) layers.push_back("cpu (its thread): " + s->cpu->describe());
        if (!layers.empty()) out.emplace_back(s->spec->path, std::move(layers));
    }
    return out;
}

std::size_t System::abandoned() const {
    const std::shared_lock lock(m_impl->m_instances);
    std::size_t n = 0;
    for (const auto& s : m_impl->m_slots) n += s->abandoned.size();
    return n;
}

std::vector<OwnedMessage> System::bus_tail(ModuleId owner, std::size_t count) const {
    std::vector<OwnedMessage> out;
    const auto it = m_impl->m_buses.find(owner);
    if (it == m_impl->m_buses.end() || count == 0) return out;
    const BroadcastRing& ring = it->second->ring();
    const std::uint64_t head = ring.head();
    std::uint64_t cursor = head + 1 > count ? head + 1 - count : 0;
    cursor = std::max(cursor, ring.first());
    std::vector<std::byte> record(ring.max_message());
    while (cursor <= head) {
        const ReadResult r = ring.read(cursor, record);
        if (r.status == ReadStatus::lost) {
            cursor = r.lost_last + 1;  // overwritten meanwhile: the newer ones
            continue;
        }
        if (r.status != ReadStatus::ok) break;
        const auto header = decode_header(std::span<const std::byte>(record.data(), r.size),
                                          k_max_payload, Framing::exact);
        if (!header) continue;
        out.push_back(OwnedMessage{*header,
                                   {record.begin() + k_header_size,
                                    record.begin() + static_cast<std::ptrdiff_t>(r.size)}});
    }
    return out;
}

std::vector<BusStats> System::bus_stats() const {
    std::vector<BusStats> out;
    for (const auto& n : m_impl->spec().topology.nodes()) {
        const auto it = m_impl->m_buses.find(n.id);
        if (it == m_impl->m_buses.end()) continue;
        const detail::InprocBus& b = *it->second;
        // (Named after its owner's path now: a moved gateway takes its bus along.)
        const std::string name = n.id == k_root_id ? std::string("Bus 0") : n.path;
        out.push_back(BusStats{b.id(), name, b.ring().head() + 1 - b.ring().first(), b.bytes(),
                               b.rejected(), b.ring().slot_count(), b.ring().head(),
                               b.settings().delivery, b.evicted(), b.pressure_ns()});
    }
    return out;
}

}  // namespace hmk
