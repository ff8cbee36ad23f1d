// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bus_journal.hpp"
#include "generations.hpp"
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
    const Generations* generations = nullptr;  ///< the system's versions (host_description)
};

/// Kinds a module host's registry knows for the modules it does not run:
/// placeholders with the right role, never instantiated.
inline constexpr const char* k_placeholder_gateway = "hmk.gateway";
inline constexpr const char* k_placeholder_leaf = "hmk.leaf";
inline constexpr const char* k_placeholder_journal = "hmk.journal";

/// The system description a module host gets: the whole tree (ids, paths,
/// roles, bus settings), but the kind and config of its own module only.
/// A sandboxed module learns nothing of its siblings' configuration.
std::string host_description(const SystemSpec& spec, ModuleId module);

/// Slots of a child's journal feed (messages its parent reads from the bus
/// journal for it when it is behind the bus ring).
inline constexpr std::uint32_t k_feed_slots = 1024;

/// What an uplink pump needs from the system it serves.
class PumpHost {
  public:
    virtual ~PumpHost() = default;
    virtual Logger& logger() = 0;
    /// An instance of a child came up (or could not) while the system boots.
    virtual void started(ModuleId id, std::uint64_t epoch, StartResult result) = 0;
    /// Instance `epoch` of a child ended without its parent asking: a crash,
    /// an exit, or a kill for cause (quota, broken ring, hang, start timeout).
    /// `restore_failed`: it could not restore the snapshot it was given.
    virtual void child_failed(ModuleId id, std::uint64_t epoch, const std::string& why,
                              bool normal_exit, bool restore_failed) = 0;
    /// Plans instance `epoch` (pump thread; the previous instance is gone and
    /// its uplink drained).
    virtual StartPlan plan(const ModuleSpec& spec, std::uint64_t epoch) = 0;
    /// Whether the system is still booting (starts are then reported to started()).
    virtual bool booting() const = 0;
};

/// A module in a process of its own, as its parent sees it.
struct ProcessChild {
    const ModuleSpec* spec = nullptr;
    platform::SharedRegion region;
    UplinkRing uplink;
    platform::UniqueFd event;  // the child signals it after writing, if we sleep
    platform::Child process;
    std::uint64_t spawned_ns = 0;

    // The journal feed: a ring we write and the child maps read-only.
    platform::SharedRegion feed_region;
    std::optional<BroadcastRing> feed;
    std::optional<JournalReader> reader;
    std::uint64_t last_request = 0;  // the child's want_from we are serving
    std::uint64_t run_start = 0;     // first bus seq of what we are feeding now
    std::uint64_t feed_next = 0;     // next bus seq to put into the feed

    std::atomic<ModuleState> state{ModuleState::created};
    std::atomic<std::uint64_t> epoch{0};
    std::atomic<std::int64_t> pid{0};  // of the running host, for others to read
    std::atomic<std::uint64_t> published{0};
    std::atomic<std::uint64_t> invalid{0};
    std::atomic<std::uint64_t> rejected{0};
    bool stopping = false;            // the parent asked it to go: no failure report
    std::string stop_reason;          // killed for cause: reported as a failure
    std::uint64_t pending_epoch = 0;  // start this instance once the old one is gone
    bool announced = false;           // started() reported for the current instance

    // Token buckets (messages and bytes), refilled by elapsed time.
    double message_tokens = 0;
    double byte_tokens = 0;
    std::uint64_t refilled_ns = 0;
    std::uint64_t throttled_since_ns = 0;  // 0: not throttled
};

/// The owner's agent for the modules of one bus that live in other processes.
/// On its own thread it spawns them (each with a start plan: fresh, or a
/// recovery), then copies each child's uplink records out, validates and
/// publishes them on the bus within the child's quota, serves its journal
/// feed, and reports each child's exit the moment its pidfd says so. It
/// never waits on a child: a child that stalls, floods, scribbles or dies
/// affects only itself. What to do about a failure is its supervisor's call.
class UplinkPump {
  public:
    UplinkPump(InprocBus& bus, PumpHost& host, HostSetup setup, BusJournal* journal);
    ~UplinkPump();
    UplinkPump(const UplinkPump&) = delete;
    UplinkPump& operator=(const UplinkPump&) = delete;

    /// Before start(): prepares the child's shared memory and registers its bell.
    Result<void, std::string> add(const ModuleSpec& spec);
    /// Starts the pump thread, which spawns every child (instance 1).
    void start();
    /// Asks every child to stop (a 'stop' from the parent), waits for them a
    /// little, kills the rest, and ends the thread.
    void stop();

    /// Any thread: start instance `epoch` of `id`, after killing the running
    /// one (without a failure report).
    void restart(ModuleId id, std::uint64_t epoch);
    /// Any thread: kill `id`. With a `cause`, its end is reported as a
    /// failure (a hang); without, it is the parent's own decision. With an
    /// `epoch`, only that instance (a later one is left alone).
    void kill(ModuleId id, const std::string& cause, std::uint64_t epoch = 0);

    bool owns(ModuleId id) const;
    /// The isolation layers around each running child: spawn-time ones and
    /// those its host reports having closed.
    std::vector<std::pair<std::string, std::vector<std::string>>> sandbox_report() const;
    ModuleStats stats(ModuleId id) const;
    InprocBus& bus() { return m_bus; }

  private:
    struct Command {
        enum class Op : std::uint8_t { restart, kill } op;
        ModuleId id;
        std::uint64_t epoch;
        std::string cause;
    };

    ProcessChild* child(ModuleId id) const;
    void run();
    void run_commands();
    void start_instance(ProcessChild& child, std::uint64_t epoch);
    void spawn(ProcessChild& child, const StartPlan& plan);
    bool drain(ProcessChild& child, std::uint64_t now, bool ignore_quota = false);
    bool feed(ProcessChild& child);
    void check_start(ProcessChild& child, std::uint64_t now);
    void reap(ProcessChild& child);
    void stop_child(ProcessChild& child, const std::string& reason);
    void sleep(int timeout_ms);
    bool any_pending() const;
    bool limited_log(std::atomic<std::uint64_t>& counter);

    InprocBus& m_bus;
    PumpHost& m_host;
    HostSetup m_setup;
    BusJournal* m_journal;
    std::atomic<bool> m_shutting_down{false};
    std::vector<std::unique_ptr<ProcessChild>> m_children;
    platform::UniqueFd m_epoll;
    platform::UniqueFd m_wake;  // stop() and commands ring it
    std::atomic<bool> m_stop{false};
    std::thread m_thread;
    std::vector<std::byte> m_record;
    std::mutex m_commands_mutex;
    std::deque<Command> m_commands;
};

}  // namespace hmk::detail
