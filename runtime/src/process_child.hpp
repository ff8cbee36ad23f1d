// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "hmk/platform/process.hpp"
#include "hmk/platform/shm.hpp"
#include "hmk/runtime/system.hpp"
#include "hmk/uplink_ring.hpp"
#include "inproc_bus.hpp"
#include "runner.hpp"

namespace hmk::detail {

/// Where module hosts and plugins are found.
struct HostSetup {
    std::string host_program;          ///< the hmk-host executable
    std::vector<std::string> plugins;  ///< plugin files every host loads (the standard kinds first)
    const SystemSpec* system = nullptr;  ///< each host gets its own view of it (host_description)
};

/// Kinds a module host's registry knows for the modules it does not run:
/// placeholders with the right role, never instantiated.
inline constexpr const char* k_placeholder_gateway = "hmk.gateway";
inline constexpr const char* k_placeholder_leaf = "hmk.leaf";

/// The system description a module host gets: the whole tree (ids, paths,
/// roles, bus settings), but the kind and config of its own module only.
/// A sandboxed module learns nothing of its siblings' configuration.
std::string host_description(const SystemSpec& spec, ModuleId module);

/// A module in a process of its own, as its parent sees it.
struct ProcessChild {
    const ModuleSpec* spec = nullptr;
    platform::SharedRegion region;
    UplinkRing uplink;
    platform::UniqueFd event;  // the child signals it after writing, if we sleep
    platform::Child process;
    std::uint64_t start_seq = 1;
    std::uint64_t spawned_ns = 0;

    std::atomic<ModuleState> state{ModuleState::created};
    std::atomic<std::uint64_t> published{0};
    std::atomic<std::uint64_t> invalid{0};
    std::atomic<std::uint64_t> rejected{0};
    std::atomic<bool> stopping{false};  // we asked it to stop (set by stop(), read by the pump)
    std::string stop_reason;            // why we killed it, for the exit log line

    // Token buckets (messages and bytes), refilled by elapsed time.
    double message_tokens = 0;
    double byte_tokens = 0;
    std::uint64_t refilled_ns = 0;
    std::uint64_t throttled_since_ns = 0;  // 0: not throttled

    // Supervision (one_for_one).
    bool announced = false;                 // started() reported once, at the first start
    std::vector<std::uint64_t> restart_ns;  // recent restarts, for the intensity window
    std::uint64_t restart_at_ns = 0;        // when a scheduled restart is due
    std::atomic<std::uint64_t> restarts{0};
};

/// The owner's agent for the modules of one bus that live in other processes.
/// On its own thread it spawns them, then copies each child's uplink records
/// out, validates and publishes them on the bus within the child's quota, and
/// reports each child's exit the moment its pidfd says so. It never waits on
/// a child: a child that stalls, floods, scribbles or dies affects only itself.
class UplinkPump {
  public:
    UplinkPump(InprocBus& bus, RunnerHost& host, HostSetup setup, SupervisorSpec supervisor);
    ~UplinkPump();
    UplinkPump(const UplinkPump&) = delete;
    UplinkPump& operator=(const UplinkPump&) = delete;

    /// Before start(): prepares the child's shared memory and registers its bell.
    Result<void, std::string> add(const ModuleSpec& spec);
    /// Starts the pump thread, which spawns the children (they die with it).
    void start();
    /// Asks every child to stop (a 'stop' from the parent), waits for them a
    /// little, kills the rest, and ends the thread.
    void stop();

    bool owns(ModuleId id) const;
    /// The isolation layers around each running child: spawn-time ones and
    /// those its host reports having closed.
    std::vector<std::pair<std::string, std::vector<std::string>>> sandbox_report() const;
    ModuleStats stats(ModuleId id) const;
    InprocBus& bus() { return m_bus; }

  private:
    void run();
    void spawn(ProcessChild& child);
    bool drain(ProcessChild& child, std::uint64_t now);
    void check_start(ProcessChild& child, std::uint64_t now);
    void reap(ProcessChild& child);
    void supervise(ProcessChild& child, bool normal_exit, std::uint64_t now);
    void restart(ProcessChild& child);
    void stop_child(ProcessChild& child, const std::string& reason);
    void sleep(int timeout_ms);
    bool any_pending() const;
    bool limited_log(std::atomic<std::uint64_t>& counter);

    InprocBus& m_bus;
    RunnerHost& m_host;
    HostSetup m_setup;
    SupervisorSpec m_supervisor;
    std::atomic<bool> m_shutting_down{false};
    std::vector<std::unique_ptr<ProcessChild>> m_children;
    platform::UniqueFd m_epoll;
    platform::UniqueFd m_wake;  // stop() rings it
    std::atomic<bool> m_stop{false};
    std::atomic<bool> m_stopping_children{false};
    std::thread m_thread;
    std::vector<std::byte> m_record;
};

}  // namespace hmk::detail
