// SPDX-License-Identifier: Apache-2.0
#include "hmk/runtime/system.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>

#include <unistd.h>

#include "process_child.hpp"
#include "runner.hpp"

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
        case ModuleState::stopped:
            return "stopped";
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

const ModuleSpec* SystemSpec::module(ModuleId id) const {
    const auto it = std::find_if(modules.begin(), modules.end(),
                                 [&](const ModuleSpec& m) { return m.id == id; });
    return it == modules.end() ? nullptr : &*it;
}

namespace detail {

/// Mailbox of messages addressed to the root, for operators waiting on replies.
class RootMailbox {
  public:
    void put(const Message& m) {
        {
            const std::lock_guard lock(m_mutex);
            m_messages.push_back(
                OwnedMessage{m.header, std::vector<std::byte>(m.payload.begin(), m.payload.end())});
            // Bounded: a flood of messages to the root must not grow memory without end.
            if (m_messages.size() > k_capacity) m_messages.pop_front();
        }
        m_cv.notify_all();
    }

    std::optional<OwnedMessage> wait(std::uint64_t correlation, std::chrono::milliseconds timeout) {
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

  private:
    static constexpr std::size_t k_capacity = 4096;
    std::mutex m_mutex;
    std::condition_variable m_cv;
    std::deque<OwnedMessage> m_messages;
};

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

class SystemImpl final : public RunnerHost {
  public:
    SystemImpl(const SystemSpec& spec, const Registry& registry, Logger& logger,
               const RuntimeOptions& options)
        : m_spec(spec), m_registry(registry), m_logger(logger) {
        m_host_setup.host_program = options.host_program;
        m_host_setup.plugins.push_back(options.std_plugin);
        for (const auto& p : spec.plugins) m_host_setup.plugins.push_back(p);
        m_host_setup.system = &m_spec;
        m_kernel_kind.name = "microkernel";
        m_kernel_kind.role = Role::gateway;
        m_kernel_kind.create = [this](Env& env) -> Result<std::unique_ptr<Module>, std::string> {
            return std::unique_ptr<Module>(std::make_unique<Microkernel>(env, m_mailbox));
        };
    }

    Result<void, std::string> build() {
        const Topology& topo = m_spec.topology;
        auto bus_settings = [](const BusSpec& b) {
            return BusSettings{b.capacity, b.max_payload, b.up};
        };
        m_buses.emplace(k_root_id, std::make_unique<InprocBus>(
                                       k_root_id, "Bus 0", bus_settings(m_spec.root_bus), topo));
        for (const ModuleSpec& m : m_spec.modules) {
            const TopologyNode* n = topo.find(m.id);
            if (n != nullptr && n->is_gateway()) {
                m_buses.emplace(
                    m.id, std::make_unique<InprocBus>(m.id, m.path, bus_settings(m.bus), topo));
            }
        }
        for (const TopologyNode& n : topo.nodes()) {
            InprocBus* child = n.is_gateway() ? m_buses.at(n.id).get() : nullptr;
            if (n.id == k_root_id) {
                m_runners.push_back(
                    std::make_unique<Runner>(*this, nullptr, &m_kernel_kind, nullptr, child));
                continue;
            }
            const ModuleSpec* spec = m_spec.module(n.id);
            const ModuleKind* kind = spec != nullptr ? m_registry.find(spec->kind) : nullptr;
            if (kind == nullptr) {
                return Err{fmt::format("{}: no module kind '{}'", n.path, spec ? spec->kind : "?")};
            }
            if (spec->isolation == Isolation::process) {
                // Its parent bus's pump starts and serves it (see UplinkPump).
                InprocBus& bus = *m_buses.at(n.parent);
                auto& pump = m_pumps[n.parent];
                if (!pump) {
                    const ModuleSpec* owner = m_spec.module(n.parent);
                    pump = std::make_unique<UplinkPump>(
                        bus, *this, m_host_setup,
                        owner != nullptr ? owner->supervisor : m_spec.root_supervisor);
                }
                if (auto added = pump->add(*spec); !added) {
                    return Err{
                        fmt::format("{}: cannot prepare its process: {}", n.path, added.error())};
                }
                ++m_process_modules;
                continue;
            }
            m_runners.push_back(
                std::make_unique<Runner>(*this, spec, kind, m_buses.at(n.parent).get(), child));
        }
        return {};
    }

    Result<void, std::string> start() {
        // Parents before children: a child relies on its parent, never the reverse.
        for (auto& r : m_runners) r->start();
        for (auto& [bus, pump] : m_pumps) pump->start();
        std::unique_lock lock(m_start_mutex);
        m_start_cv.wait(lock, [&] { return m_started == m_runners.size() + m_process_modules; });
        if (!m_start_failures.empty()) {
            lock.unlock();
            stop();
            std::string list;
            for (ModuleId id : m_start_failures) {
                list += (list.empty() ? "" : ", ") + m_spec.topology.find(id)->path;
            }
            return Err{"modules failed to start: " + list};
        }
        m_logger.log(
            LogLevel::info, "hmk",
            fmt::format("system '{}' up: {} modules ({} in processes of their own), {} buses",
                        m_spec.name, m_runners.size() + m_process_modules, m_process_modules,
                        m_buses.size()));
        return {};
    }

    void stop() {
        // Children before parents, so a parent outlives everything that relies on
        // it. Process modules are leaves: they go first.
        for (auto& [bus, pump] : m_pumps) pump->stop();
        for (auto it = m_runners.rbegin(); it != m_runners.rend(); ++it) {
            (*it)->request_stop();
            (*it)->join();
        }
    }

    UplinkPump* pump_of(ModuleId id) const {
        for (const auto& [bus, pump] : m_pumps) {
            if (pump->owns(id)) return pump.get();
        }
        return nullptr;
    }

    Runner* runner(ModuleId id) const {
        for (const auto& r : m_runners) {
            if (r->module_id() == id) return r.get();
        }
        return nullptr;
    }

    // RunnerHost
    Logger& logger() override { return m_logger; }
    const Topology& topology() const override { return m_spec.topology; }
    std::uint64_t next_correlation() override { return m_correlation.fetch_add(1) + 1; }
    void started(ModuleId id, bool ok) override {
        {
            const std::lock_guard lock(m_start_mutex);
            ++m_started;
            if (!ok) m_start_failures.push_back(id);
        }
        m_start_cv.notify_all();
    }

    SystemSpec m_spec;
    const Registry& m_registry;
    Logger& m_logger;
    std::map<BusId, std::unique_ptr<InprocBus>> m_buses;
    RootMailbox m_mailbox;
    HostSetup m_host_setup;
    // Declared after the buses and mailbox they use, so destroyed (joined) first.
    std::map<BusId, std::unique_ptr<UplinkPump>> m_pumps;
    std::size_t m_process_modules = 0;
    std::vector<std::unique_ptr<Runner>> m_runners;  // preorder
    ModuleKind m_kernel_kind;
    std::atomic<std::uint64_t> m_correlation{0};
    std::mutex m_start_mutex;
    std::condition_variable m_start_cv;
    std::size_t m_started = 0;
    std::vector<ModuleId> m_start_failures;
};

}  // namespace detail
}  // namespace hmk

namespace hmk {

System::System(std::unique_ptr<detail::SystemImpl> impl) : m_impl(std::move(impl)) {}
System::~System() {
    stop();
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
    Outgoing out = message;
    if (out.correlation == 0) out.correlation = m_impl->next_correlation();
    if (detail::Runner* r = m_impl->runner(from)) {
        if (auto sent = r->send_as(out); !sent) return Err{sent.error()};
        return out.correlation;
    }
    // A module in another process: its bus owner publishes on its behalf,
    // through the same checks as the module's own messages.
    detail::UplinkPump* pump = m_impl->pump_of(from);
    if (pump == nullptr) return Err{SendError::unknown_destination};
    if (auto sent = pump->bus().publish(header_for(from, out), out.payload, from); !sent) {
        return Err{sent.error()};
    }
    return out.correlation;
}

std::optional<OwnedMessage> System::wait_for_root(std::uint64_t correlation,
                                                  std::chrono::milliseconds timeout) {
    return m_impl->m_mailbox.wait(correlation, timeout);
}

const SystemSpec& System::spec() const {
    return m_impl->m_spec;
}
const Topology& System::topology() const {
    return m_impl->m_spec.topology;
}

ModuleStats System::module_stats(ModuleId id) const {
    if (const detail::Runner* r = m_impl->runner(id)) return r->stats();
    if (const detail::UplinkPump* p = m_impl->pump_of(id)) return p->stats(id);
    return ModuleStats{};
}

std::vector<std::pair<std::string, std::vector<std::string>>> System::sandbox_report() const {
    std::vector<std::pair<std::string, std::vector<std::string>>> out;
    for (const auto& [bus, pump] : m_impl->m_pumps) {
        for (auto& entry : pump->sandbox_report()) out.push_back(std::move(entry));
    }
    return out;
}

std::vector<BusStats> System::bus_stats() const {
    std::vector<BusStats> out;
    for (const auto& n : m_impl->m_spec.topology.nodes()) {
        const auto it = m_impl->m_buses.find(n.id);
        if (it == m_impl->m_buses.end()) continue;
        const detail::InprocBus& b = *it->second;
        out.push_back(BusStats{b.id(), b.name(), b.ring().head(), b.bytes(), b.rejected(),
                               b.ring().slot_count()});
    }
    return out;
}

}  // namespace hmk
