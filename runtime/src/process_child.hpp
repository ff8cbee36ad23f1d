// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "bus_journal.hpp"
#include "generations.hpp"
#include "hmk/platform/cpu.hpp"
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

/// A module in a process of its own, as its parent sees it: a *seat* (the
/// shared memory, bells and wake-ups of one module host) and the host in
/// it. A module has one seat, and a second one while a replica takes over
/// (docs/swap.md); a seat whose host is gone is reused.
struct ProcessChild {
    enum class Role : std::uint8_t {
        primary,   ///< the module's instance
        replica,   ///< taking over: its records wait until it is the module
        retiring,  ///< it handed over: whatever it still writes is dropped
        free,      ///< no host; ready for another replica
    };
    const ModuleSpec* spec = nullptr;
    const SystemSpec* system = nullptr;          ///< the version of the system its host is told
    Role role = Role::primary;                   ///< written under the pump's seat lock
    std::uint64_t handoff = 0;                   ///< a replica: its handoff
    std::atomic<std::uint64_t> handing_over{0};  ///< a primary: the handoff it may hand state to
    std::atomic<bool> release{false};            ///< a replica: its old instance retired
    std::atomic<std::uint64_t> fenced{0};        ///< records dropped after it retired
    std::uint64_t retired_ns = 0;                ///< when it handed over (it must exit soon)
    std::atomic<bool> handed_over{false};        ///< its last word went out
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
    std::uint64_t run = 0;           // the child's want_run we are serving
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

    // Reliable delivery: whether the bus waits for this child's ring_cursor,
    // and a record it could not publish yet for want of room (checked and
    // stamped already; it goes before anything else of this child's).
    bool gated = false;
    std::optional<Header> held;
    std::vector<std::byte> held_payload;

    // What its host writes to stdout and stderr (a pipe we read): logged
    // as its own, within a budget of bytes (docs/isolation.md).
    platform::UniqueFd output;
    std::string output_line;  // a line not yet ended
    double output_tokens = 0;
    std::uint64_t output_refilled_ns = 0;
    std::uint64_t output_dropped_lines = 0;
    std::uint64_t output_dropped_bytes = 0;

    // Token buckets (messages and bytes), refilled by elapsed time.
    double message_tokens = 0;
    double byte_tokens = 0;
    std::uint64_t refilled_ns = 0;
    std::uint64_t throttled_since_ns = 0;  // 0: not throttled
};

/// Where an old instance is after a handoff began.
enum class OldInstance : std::uint8_t { running, retired, gone };

/// What the parent sees of a replica taking over in a module host.
struct ReplicaView {
    bool exists = false;
    ModuleState state = ModuleState::created;  ///< running once its host is up
    HandoffPhase phase = HandoffPhase::awaiting_state;
    std::uint64_t cursor = 0;  ///< the next bus seq it will handle
    std::uint64_t epoch = 0;
    bool promoted = false;  ///< it is the module's instance now
};

/// The owner's agent for the modules of one bus that live in other processes.
/// On its own thread it spawns them (each with a start plan: fresh, or a
/// recovery), then copies each child's uplink records out, validates and
/// publishes them on the bus within the child's quota, serves its journal
/// feed, and reports each child's exit the moment its pidfd says so. It
/// never waits on a child: a child that stalls, floods, scribbles or dies
/// affects only itself. What to do about a failure is its supervisor's call.
class UplinkPump final : public HandoffWatcher {
  public:
    UplinkPump(InprocBus& bus, PumpHost& host, HostSetup setup, BusJournal* journal);
    ~UplinkPump() override;
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

    /// Any thread: starts a replica of `spec` (as `system` describes it)
    /// with `plan` (plan.handoff set) in a seat of its own.
    void start_replica(const ModuleSpec& spec, const SystemSpec& system, StartPlan plan);
    /// Any thread: kills the replica of `id` (no failure report).
    void drop_replica(ModuleId id);
    /// Any thread: the running instance of `id` may send its state and its
    /// last word for handoff `handoff` (a module host may send the
    /// runtime's handoff messages only then).
    void begin_handoff(ModuleId id, std::uint64_t handoff);
    ReplicaView replica(ModuleId id) const;
    /// Any thread: instance `epoch` of `id` runs, has handed over, or ended without.
    OldInstance old_instance(ModuleId id, std::uint64_t epoch) const;
    /// Any thread: instance `epoch` of `id` is no longer the module here (it
    /// moved): its seat is freed, its process (if still there) stopped.
    void forget(ModuleId id, std::uint64_t epoch);
    /// Any thread: module `id` has a new description (its subtree moved).
    void respec(ModuleId id, const ModuleSpec& spec, const SystemSpec& system);
    // HandoffWatcher: the old instance's last word frees the replica's records.
    void handoff_published(const Header& header, std::span<const std::byte> payload) override;

    bool owns(ModuleId id) const;
    /// The isolation layers around each running child: spawn-time ones and
    /// those its host reports having closed.
    std::vector<std::pair<std::string, std::vector<std::string>>> sandbox_report() const;
    ModuleStats stats(ModuleId id) const;
    InprocBus& bus() { return m_bus; }

  private:
    struct Command {
        enum class Op : std::uint8_t { restart, kill, replica, drop_replica, forget, respec };
        Command(Op o, ModuleId i, std::uint64_t e, std::string c = {})
            : op(o), id(i), epoch(e), cause(std::move(c)) {}
        Op op;
        ModuleId id;
        std::uint64_t epoch;
        std::string cause;
        const ModuleSpec* spec = nullptr;    // replica
        const SystemSpec* system = nullptr;  // replica
        StartPlan plan;                      // replica
    };

    /// The module's instance (`role` primary) or its replica.
    ProcessChild* child(ModuleId id, ProcessChild::Role role = ProcessChild::Role::primary) const;
    Result<ProcessChild*, std::string> make_seat(const ModuleSpec& spec);
    void command(Command c);
    void promote(ProcessChild& replica);
    void start_replica_now(const Command& cmd);
    void reset_seat(ProcessChild& c, std::uint64_t epoch);
    void drop_all_replicas();
    void free_seat(ProcessChild& c);
    bool handoff_record_ok(const ProcessChild& c, const Header& h,
                           std::span<const std::byte> payload) const;
    void run();
    void run_commands();
    void start_instance(ProcessChild& child, std::uint64_t epoch);
    void spawn(ProcessChild& child, const StartPlan& plan);
    bool drain(ProcessChild& child, std::uint64_t now, bool ignore_quota = false);
    /// The bus waits for this child's reading from now on (`epoch`), or no longer.
    void gate(ProcessChild& child, std::uint64_t epoch);
    void ungate(ProcessChild& child);
    /// Publishes a checked record of the child's; false if the bus had no room.
    enum class Put : std::uint8_t { published, refused, no_room };
    Put put(ProcessChild& child, const Header& header, std::span<const std::byte> payload);
    bool feed(ProcessChild& child);
    void check_start(ProcessChild& child, std::uint64_t now);
    void reap(ProcessChild& child);
    /// Reads what its host wrote (all of it, if `to_end`: it has exited)
    /// and logs it line by line; closes the pipe at its end.
    void relay_output(ProcessChild& child, bool to_end);
    void output_line(ProcessChild& child, const std::string& line);
    void close_output(ProcessChild& child);
    void stop_child(ProcessChild& child, const std::string& reason);
    void sleep(int timeout_ms);
    bool any_pending() const;
    bool limited_log(std::atomic<std::uint64_t>& counter);

    InprocBus& m_bus;
    PumpHost& m_host;
    HostSetup m_setup;
    BusJournal* m_journal;
    std::atomic<bool> m_shutting_down{false};
    // Seats: appended by the pump thread (under the unique lock, as are role,
    // spec and system changes), read by others under the shared lock. Never
    // removed: their index tags their epoll events.
    mutable std::shared_mutex m_seats;
    // CPU shares of children with a `cpu` quota, by module (a replica shares
    // its module's); made at their first spawn.
    mutable std::mutex m_cpu_mutex;
    std::map<ModuleId, std::unique_ptr<platform::CpuShare>> m_cpu;
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
