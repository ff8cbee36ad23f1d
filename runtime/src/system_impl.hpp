// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
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
#include "hmk/runtime/system.hpp"
#include "process_child.hpp"
#include "runner.hpp"

namespace hmk::detail {

/// Mailbox of messages addressed to the root, for operators waiting on replies.
class RootMailbox {
  public:
    void put(const Message& m);
    std::optional<OwnedMessage> wait(std::uint64_t correlation, std::chrono::milliseconds timeout);

  private:
    static constexpr std::size_t k_capacity = 4096;
    std::mutex m_mutex;
    std::condition_variable m_cv;
    std::deque<OwnedMessage> m_messages;
};

struct Supervisor;

/// Where an in-process instance sleeps: a futex word its buses ring.
struct Bell {
    std::atomic<std::uint32_t> word{0};
    std::atomic<std::uint32_t> armed{0};
    Doorbell doorbell() { return Doorbell{&word, &armed, platform::FutexScope::process}; }
};

/// One module of the system, across all its instances: where it sits, how
/// it runs, and what its supervisor knows of it. Built once; instances come
/// and go.
struct ModuleSlot {
    ModuleId id = k_no_module;
    const ModuleSpec* spec = nullptr;  ///< null for the root
    const ModuleKind* kind = nullptr;
    InprocBus* parent_bus = nullptr;   ///< null for the root
    InprocBus* child_bus = nullptr;    ///< gateways
    BusJournal* journal = nullptr;     ///< of its parent bus, if journaled
    UplinkPump* pump = nullptr;        ///< process modules: their parent bus's pump
    Supervisor* parent_sup = nullptr;  ///< null for the root
    Supervisor* own_sup = nullptr;     ///< gateways
    bool process = false;
    bool is_monitor = false;  ///< journals its parent bus
    /// In-process instances with a `cpu` quota: the share their threads run under.
    std::unique_ptr<platform::CpuShare> cpu;

    // The in-process instance. Replaced by the supervision thread under the
    // system's instance lock; read by others under its shared lock.
    std::unique_ptr<Runner> runner;
    std::unique_ptr<JournalCatchUp> catch_up;        // from its parent bus's journal
    std::unique_ptr<JournalCatchUp> child_catch_up;  // gateways: from their own bus's journal
    Bell own_bell;
    Bell* bell = &own_bell;                          // the running in-process instance's
    std::vector<std::unique_ptr<Runner>> abandoned;  // hung: kept alive for good
    /// In-process instances asked to stop that are still in a handler. The
    /// next instance waits for them to leave, or to be abandoned at their
    /// deadline; the supervision thread does not (supervision.cpp).
    struct Stopping {
        std::unique_ptr<Runner> runner;
        std::uint64_t deadline_ns = 0;
        std::string why;
    };
    std::vector<Stopping> stopping;
    std::unique_ptr<Runner> retiring;  // after a swap's switch: the old instance, until it retires

    // Supervision (written by the supervision thread; atomics read by others).
    std::atomic<std::uint64_t> epoch{0};
    std::uint64_t last_epoch = 0;  // the highest instance number given out
    std::atomic<std::uint64_t> restarts{0};
    /// The instance an operator kill was last sent to: a second kill of it
    /// (still dying, not yet seen to) would be a kill that does nothing.
    std::atomic<std::uint64_t> killed_epoch{0};
    /// running: the instance's own state counts; restarting, failed, stopped:
    /// the supervisor's.
    std::atomic<ModuleState> state{ModuleState::created};
    bool restart_pending = false;
    std::uint64_t restart_at_ns = 0;
    std::uint64_t started_ns = 0;     // of the current instance
    std::uint32_t backoff_level = 0;  // failures soon after a restart, in a row
    std::atomic<std::uint64_t> snapshot_at_most{UINT64_MAX};  // skip snapshots that failed
    std::atomic<std::uint64_t> restored_from{0};              // input seq of the last restore
    std::uint64_t resume_parent = 0;  // gateways: cursors of the last instance
    std::uint64_t resume_child = 0;
    std::uint64_t hb_cursor = 0;         // hang detection: input cursor at the last heartbeat
    std::uint64_t hb_epoch = 0;          // the instance hb_cursor is of
    std::uint64_t hb_since = 0;          // the heartbeat at which that instance was first seen
    std::optional<StartPlan> boot_plan;  // the first instance's, made before any module runs
};

/// A gateway's supervision of its children (the root's of Level 1):
/// policy and recent history. Used by the supervision thread only.
struct Supervisor {
    ModuleSlot* owner = nullptr;
    InprocBus* bus = nullptr;
    BusJournal* journal = nullptr;
    SupervisorSpec spec;
    std::vector<ModuleSlot*> children;   // declaration order
    std::deque<std::uint64_t> restarts;  // times of recent restarts
    std::uint64_t next_heartbeat_ns = 0;
    std::deque<std::uint64_t> beats;  // seqs of recent heartbeats
};

/// Something a supervisor must handle.
struct FailureEvent {
    ModuleId id = k_no_module;
    std::uint64_t epoch = 0;
    std::string why;
    bool normal_exit = false;
    bool restore_failed = false;  ///< it could not restore the snapshot it was given
    bool announced = false;       ///< its `failed` event is on the bus already
};

/// A swap or a move under way (docs/swap.md, docs/relocation.md), driven
/// by the supervision thread.
struct HandoffJob {
    enum class Kind : std::uint8_t { swap, move };
    enum class Step : std::uint8_t {
        starting,   ///< the replica is being made
        preparing,  ///< the old instance was asked for its state
        shadowing,  ///< the replica shadows the old instance
        switching,  ///< the switch is on the bus: the replica takes over
    };
    // The request.
    Kind kind_of = Kind::swap;
    ModuleId id = k_no_module;
    ModuleId to = k_no_module;           ///< move: the new parent
    std::optional<Isolation> isolation;  ///< move: the new isolation (default: the same)
    std::string kind_name;
    std::uint32_t version = 0;
    std::chrono::milliseconds deadline{5000};
    std::promise<Result<HandoffReport, std::string>> result;

    // Under way.
    Step step = Step::starting;
    ModuleSlot* slot = nullptr;
    std::uint64_t handoff = 0;
    std::uint32_t generation = 0;  ///< the system's version with the new kind
    const ModuleSpec* spec = nullptr;
    const ModuleKind* kind = nullptr;
    std::uint64_t epoch = 0;  ///< the replica's instance number
    std::unique_ptr<Runner> runner;
    Bell* bell = nullptr;
    std::unique_ptr<JournalCatchUp> catch_up;
    std::uint64_t requested_ns = 0, deadline_ns = 0, ready_ns = 0, switch_ns = 0;
    std::uint64_t switch_seq = 0;
    bool retired_for = false;          ///< the parent said the old instance's last word for it
    std::uint64_t close_since_ns = 0;  ///< since when the replica keeps close to the bus head
    // A move: where the replica runs, and what the old instance used.
    bool process = false;
    InprocBus* bus = nullptr;
    UplinkPump* pump = nullptr;
    BusJournal* journal = nullptr;
    std::uint32_t old_generation = 0;
    InprocBus* old_bus = nullptr;
    UplinkPump* old_pump = nullptr;  ///< the old instance's, if it ran in a process
    std::uint64_t old_epoch = 0;
    bool retire_now_sent = false;
    bool left_behind = false;  // hung past the retire_now: stopped
};

class SystemImpl final : public RunnerHost, public PumpHost, public EvictionListener {
  public:
    /// `top`: the module at the top of what this owner manages: the root
    /// (the microkernel, and Bus 0) in the system's own process, or a
    /// gateway in its own process (module_host.cpp), whose instance runs
    /// outside (the host's main thread) and whose children, bus and
    /// supervision are this owner's. Either way, the subtree of a gateway
    /// with a process of its own is that process's, not this one's.
    SystemImpl(const SystemSpec& spec, const Registry& registry, Logger& logger,
               const RuntimeOptions& options, ModuleId top = k_root_id);
    ~SystemImpl() override;

    Result<void, std::string> build();
    Result<void, std::string> start();
    void stop();

    ModuleSlot* slot(ModuleId id) const;
    /// Whether this owner manages module `id` (it is `top` or below it, and
    /// not below a gateway with a process of its own).
    bool manages(ModuleId id) const;
    /// Why an operation cannot reach `id` (it is managed by a sandboxed
    /// gateway's own process), or empty.
    std::string out_of_reach(ModuleId id) const;
    /// The gateway with a process of its own, one of ours, through which
    /// `id` is reached (k_no_module if we manage `id`, or it is unknown).
    ModuleId reached_through(ModuleId id) const;
    /// Asks that gateway for an operation on `id` (msg::k_manage) and
    /// waits for its answer ("ok", "stats ...", or an error).
    Result<std::string, std::string> ask_through(ModuleId id, const std::string& request);
    // RunnerHost: an answer to a management request, for whoever waits.
    std::vector<ManageSend> manage(const Message& message) override;
    /// The bus `top` owns (a hosted gateway's runner reads and forwards on it).
    InprocBus* top_bus() const { return m_slots.front()->child_bus; }
    ModuleStats module_stats(ModuleId id) const;
    Result<std::uint64_t, SendError> inject(const Outgoing& message, ModuleId from);
    Result<void, std::string> kill(ModuleId id);
    Result<HandoffReport, std::string> swap(ModuleId id, const std::string& kind,
                                            std::uint32_t version,
                                            std::chrono::milliseconds deadline);
    Result<HandoffReport, std::string> move(ModuleId id, ModuleId to,
                                            std::optional<Isolation> isolation,
                                            std::chrono::milliseconds deadline);
    std::optional<std::string> failure() const;
    bool wait_failure(std::chrono::milliseconds timeout);

    // RunnerHost
    Logger& logger() override { return m_logger; }
    const Topology& topology() const override { return m_generations.latest().topology; }
    const Topology& tree_of(std::uint32_t generation) const override {
        return m_generations.topology(generation);
    }
    /// The system's description now.
    const SystemSpec& spec() const { return m_generations.latest(); }
    void started(ModuleId id, std::uint64_t epoch, StartResult result) override;  // both hosts
    bool booting() const override { return !m_booted.load(); }
    void failed(ModuleId id, std::uint64_t epoch, const std::string& why) override;
    // PumpHost
    void child_failed(ModuleId id, std::uint64_t epoch, const std::string& why, bool normal_exit,
                      bool restore_failed) override;
    StartPlan plan(const ModuleSpec& spec, std::uint64_t epoch) override;
    // EvictionListener: the parent fails the reader, as it does a hung one.
    void reader_evicted(BusId bus, ModuleId module, std::uint64_t epoch,
                        const std::string& why) override;

    std::uint64_t next_correlation() { return (m_correlation.fetch_add(1) + 1); }

    Generations m_generations;
    const Registry& m_registry;
    Logger& m_logger;
    std::map<BusId, std::unique_ptr<BusJournal>> m_journals;
    std::map<BusId, std::unique_ptr<InprocBus>> m_buses;
    RootMailbox m_mailbox;
    // Bells of replicas, reused; before the slots, whose runners ring them.
    std::deque<Bell> m_bells;
    HostSetup m_host_setup;
    ModuleKind m_kernel_kind;
    // Declared after the buses and mailbox they use, so destroyed (joined) first.
    std::map<BusId, std::unique_ptr<UplinkPump>> m_pumps;
    std::vector<std::unique_ptr<ModuleSlot>> m_slots;  // preorder, the root first
    std::map<ModuleId, std::unique_ptr<Supervisor>> m_supervisors;
    mutable std::shared_mutex m_instances;  // guards ModuleSlot::runner

  private:
    // Supervision (supervision.cpp).
    void post(FailureEvent event);
    void supervise_loop();
    void handle(const FailureEvent& event);
    void handle_failure(ModuleSlot& slot, const std::string& why, bool normal_exit,
                        bool announced = false);
    void escalate(Supervisor& sup, const std::string& why);
    void start_instance(ModuleSlot& slot);
    void stop_instance(ModuleSlot& slot, const std::string& why);
    void run_due_restarts(std::uint64_t now);
    void heartbeats(std::uint64_t now);
    std::uint64_t next_due(std::uint64_t now) const;
    // Instances still leaving a handler: looked at without waiting (reap),
    // or waited for (await, for a start that cannot be put off, and stop).
    bool still_stopping(const ModuleSlot& slot) const;
    bool restart_held(const ModuleSlot& slot) const;
    void reap_stopping(std::uint64_t now);
    void await_stopped(ModuleSlot& slot);
    void abandon_stopping(ModuleSlot& slot, ModuleSlot::Stopping& st);
    void announce_event(ModuleSlot& slot, LifecycleKind kind, const std::string& why);
    void fail_system(const std::string& why);

    // Swaps (handoffs.cpp), on the supervision thread.
    Result<HandoffReport, std::string> submit(std::unique_ptr<HandoffJob> job);
    void begin_job();
    void begin_move();
    void advance_job();
    void advance_move();
    void cut_move();
    void finish_move();
    UplinkPump* pump_of(InprocBus& bus);
    void rollback_job(const std::string& why);
    void finish_job();
    void publish_handoff(ModuleSlot& slot, const Handoff& h);
    void publish_retired_for(ModuleSlot& slot);
    Bell* take_bell();
    void give_back_bell(Bell* bell, InprocBus* parent_bus, InprocBus* child_bus);

    std::atomic<std::uint64_t> m_correlation{0};
    ModuleId m_top = k_root_id;
    std::mutex m_start_mutex;
    std::condition_variable m_start_cv;
    std::size_t m_started = 0;
    std::size_t m_expected = 0;
    std::vector<std::pair<ModuleId, StartResult>> m_start_failures;
    std::atomic<bool> m_booted{false};
    std::atomic<bool> m_stopped{false};

    std::mutex m_sup_mutex;
    std::condition_variable m_sup_cv;
    std::deque<FailureEvent> m_events;
    std::deque<std::unique_ptr<HandoffJob>> m_job_queue;  // under m_sup_mutex
    std::unique_ptr<HandoffJob> m_job;                    // supervision thread only
    std::uint64_t m_next_handoff = 0;
    std::vector<Bell*> m_free_bells;
    bool m_sup_stop = false;
    std::thread m_sup_thread;
    mutable std::mutex m_failure_mutex;
    std::condition_variable m_failure_cv;
    std::optional<std::string> m_failure;
};

}  // namespace hmk::detail
