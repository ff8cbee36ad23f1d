// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include <fmt/core.h>

#include "hmk/handoff_format.hpp"
#include "hmk/platform/cpu.hpp"
#include "hmk/runtime/system.hpp"
#include "inproc_bus.hpp"
#include "runner_state.hpp"

namespace hmk::detail {

/// How a runner's start went.
enum class StartResult : std::uint8_t {
    ok,
    failed,          ///< the module could not be made, or on_start failed
    restore_failed,  ///< the module could not restore the snapshot it was given
};

/// Callbacks from a runner to the system that owns it.
class RunnerHost {
  public:
    virtual ~RunnerHost() = default;
    virtual Logger& logger() = 0;
    /// The system's tree now.
    virtual const Topology& topology() const = 0;
    /// The tree of routing generation `generation` (a message is routed by
    /// the one it carries). Default: there is only one.
    virtual const Topology& tree_of(std::uint32_t /*generation*/) const { return topology(); }
    /// The runner finished start-up (its module exists and on_start or
    /// restore ran) or failed. Called once per runner.
    virtual void started(ModuleId id, std::uint64_t epoch, StartResult result) = 0;
    /// The runner's module failed at run time (a handler threw): the runner
    /// stops taking messages. Any thread may then join it. Default: nothing.
    virtual void failed(ModuleId /*id*/, std::uint64_t /*epoch*/, const std::string& /*why*/) {}
    /// The runner handled a batch; `stats` are its counters now. Default: nothing.
    virtual void progress(const ModuleStats& /*stats*/) {}
    /// Whether progress() does anything (asked once: the runner skips building
    /// the counters on its message path otherwise).
    virtual bool wants_progress() const { return false; }

    /// What the runner sends for a management message (msg::k_manage).
    struct ManageSend {
        bool down = false;  ///< on its own bus (to a child); else up, on its parent's
        ModuleId destination = k_no_module;
        std::uint64_t correlation = 0;
        bool reply = false;
        std::string text;
    };
    /// A management request from this module's parent (`request`), or an
    /// answer to one it passed on to a child gateway (a reply addressed to
    /// it on its own bus): what to send for it. Default: a request gets an
    /// error (this module manages no subtree of its own), a reply nothing.
    virtual std::vector<ManageSend> manage(const Message& message);
};

/// Where a runner gets messages of its parent bus that the bus ring no
/// longer holds: the bus journal, read in-process, or a module host's feed
/// from its parent.
class CatchUp {
  public:
    virtual ~CatchUp() = default;
    enum class Status : std::uint8_t {
        ok,       ///< the message was copied out
        pending,  ///< not available yet; ask again after ready() or a wake-up
        missing,  ///< the journal lacks [seq, missing_last]
    };
    /// Copies the message `seq` of the parent bus into `out` (which holds a
    /// whole message) and sets `size`.
    virtual Status read(std::uint64_t seq, std::span<std::byte> out, std::uint32_t& size,
                        std::uint64_t& missing_last) = 0;
    /// Whether read() may now have something new (the runner sleeps otherwise).
    virtual bool ready() = 0;
};

/// How a runner starts its module (docs/recovery.md). The default is a
/// fresh start reading what is new on the buses.
struct StartPlan {
    std::uint64_t epoch = 1;
    std::uint64_t from_seq = 0;        ///< first parent-bus seq to handle (0: what is new)
    std::uint64_t child_from_seq = 0;  ///< gateways: first child-bus seq (0: what is new)
    bool restore = false;              ///< restore `body` instead of running on_start
    std::vector<std::byte> body;       ///< snapshot body (envelope + module state)
    std::uint32_t state_version = 0;   ///< of the state in `body`
    std::uint64_t suppress = 0;        ///< its first N outputs are already on the bus
    std::uint64_t live_at = 0;         ///< timers and snapshots wait until this seq is handled
    std::uint64_t seed = 0;            ///< of its randomness (unless restored)
    std::uint64_t start_ns = 0;        ///< now_ns() in on_start (0: the clock)

    // A replica taking over from the running instance (docs/swap.md,
    // docs/relocation.md): it gets its state from the old instance over
    // the bus and sends nothing until that one has retired.
    std::uint64_t handoff = 0;         ///< the handoff's id (0: an ordinary instance)
    bool handoff_move = false;         ///< a move: the state comes when the old one retires
    std::uint32_t min_generation = 0;  ///< a move: older parent-bus messages are not its
    const Topology* tree = nullptr;    ///< the tree it is made for (null: the current one)
};

/// How far a replica is in taking over (a normal instance is `live`).
enum class HandoffPhase : std::uint8_t {
    live = 0,        ///< it runs as the module
    awaiting_state,  ///< it waits for the old instance's state
    shadow,          ///< swap: restored, it handles what the old one handles, silently
    holding,         ///< it waits for the old instance to retire
};

/// Runs one module on a thread of its own: reads its bus(es), forwards for
/// gateways, hands messages to the module, fires its timers, takes its
/// snapshots, and during a recovery drops the outputs that are already on
/// the bus. It is the module's Env. One instance per module instance: a
/// restart makes a new runner.
class Runner final : public Env {
  public:
    /// `spec` is null for the root. The module is made by `kind` on the
    /// runner's thread. `bell` is where the runner sleeps; the bus(es) must
    /// ring it (the owner subscribed it). `catch_up` (may be null) serves
    /// parent-bus messages the ring no longer holds.
    /// `child_catch_up` does the same for a gateway's child bus.
    Runner(RunnerHost& host, const ModuleSpec* spec, const ModuleKind* kind, BusPort* parent_bus,
           InprocBus* child_bus, Doorbell bell, StartPlan plan = {}, CatchUp* catch_up = nullptr,
           CatchUp* child_catch_up = nullptr);
    ~Runner() override;
    Runner(const Runner&) = delete;
    Runner& operator=(const Runner&) = delete;

    /// Before start(): the thread runs under `share` (its module's CPU quota).
    void set_cpu_share(platform::CpuShare* share) { m_cpu_share = share; }
    void start();
    /// Runs the module on the calling thread until it stops or fails (a module host's main).
    void run();
    void request_stop();
    /// Any thread: the module fails before its next message, as if it had
    /// crashed (the operator's `kill`).
    void crash(std::string why);
    /// Waits until the thread ends, at most `timeout` (negative: no limit).
    /// False if it did not end (the module hangs in a handler).
    bool join(std::chrono::milliseconds timeout = std::chrono::milliseconds(-1));
    /// Gives up a runner whose thread hangs in module code: its thread is
    /// detached and, should it come back, it neither sends nor reads again.
    /// The runner object must then be kept alive for good.
    void abandon();
    ModuleStats stats() const;
    ModuleId module_id() const { return m_id; }
    std::uint64_t epoch() const { return m_epoch; }
    /// Where the runner would go on reading its buses (for a gateway restart).
    std::uint64_t parent_cursor() const { return m_cursor.load(std::memory_order_acquire); }
    std::uint64_t child_cursor() const {
        return m_child_cursor_seen.load(std::memory_order_acquire);
    }
    /// Seq of the last heartbeat handled (0: none).
    std::uint64_t heartbeat() const { return m_heartbeat.load(std::memory_order_acquire); }
    HandoffPhase phase() const { return m_phase.load(std::memory_order_acquire); }
    /// Whether it handed over to a replica and stopped.
    bool retired() const { return m_retired.load(std::memory_order_acquire); }

    // Env
    ModuleId id() const override { return m_id; }
    const std::string& path() const override { return m_path; }
    const ModuleConfig& config() const override { return m_config; }
    const Topology& topology() const override { return m_host.topology(); }
    Result<void, SendError> send(const Outgoing& message) override;
    Result<void, SendError> send_child(const Outgoing& message) override;
    TimerId set_timer(std::chrono::nanoseconds delay, TimerMode mode) override;
    void cancel_timer(TimerId id) override;
    std::uint64_t now_ns() override;
    std::uint64_t random() override { return m_random(); }
    std::uint64_t next_correlation() override;
    void acknowledge(std::uint64_t seq) override;
    void log(LogLevel level, std::string_view text) override;
    void print(std::string_view line) override { m_host.logger().print(line); }

    /// Any thread: publishes as this module with operator authority
    /// (k_flag_operator; not counted as the module's output).
    Result<void, SendError> send_as(const Outgoing& message);

  private:
    enum class Origin : std::uint8_t { module, runtime, operator_ };

    StartResult start_module();
    bool drain(BusPort& bus, std::uint64_t& cursor, Side side);
    void handle(Side side, std::span<const std::byte> record);
    bool runtime_message(Side side, const Message& message);
    void handle_timer_message(const Message& message);
    void forward(Direction direction, const Message& message);
    bool fire_timers();
    void go_live();
    void maybe_snapshot();
    void take_snapshot();
    void sleep_until_work();
    /// What fetch() found at a cursor.
    struct Fetched {
        enum class Status : std::uint8_t { record, empty, pending, gap } status = Status::empty;
        std::uint32_t size = 0;       ///< record: its size, in m_record
        bool from_journal = false;    ///< record or gap: while catching up from the journal
        std::uint64_t gap_first = 0;  ///< gap: seqs the reader will not get
        std::uint64_t gap_last = 0;
    };
    Fetched fetch(BusPort& bus, std::uint64_t& cursor, Side side, Visibility visibility);
    Result<void, SendError> publish_on(BusPort* bus, const Outgoing& message, Origin origin);
    /// Publishes on `bus`; while a reliable bus has no room, reads ahead
    /// of the handler into the inbox (`pull`: on the runner's thread only)
    /// and tries again, for at most about the bus's wait limit.
    enum class Pull : std::uint8_t { no, yes };
    Result<std::uint64_t, SendError> put(BusPort& bus, const Header& header,
                                         std::span<const std::byte> payload, Pull pull);
    /// Reads ahead on one side's bus ring: what the module or its runtime
    /// must see goes into the inbox, the rest is done with at once. False
    /// when the inbox is full and the ring has more.
    bool pull(Side side);
    bool wanted(std::span<const std::byte> record) const;
    /// Registers the cursors with the buses (or tells a module host's
    /// parent where they are); detach_readers() forgets them.
    void attach_readers(Gated gated);
    void detach_readers();
    void ring_moved(int side) {
        if (m_ring_pos[side] != nullptr)
            m_ring_pos[side]->store(side == 0 ? m_parent_cursor : m_child_cursor,
                                    std::memory_order_release);
    }
    /// The next seq of each bus the module has yet to handle.
    std::uint64_t parent_next() const {
        if (m_handling[0] != 0) return m_handling[0] + 1;
        return m_inbox[0].empty() ? m_parent_cursor : m_inbox[0].front().seq;
    }
    std::uint64_t child_next() const {
        if (m_handling[1] != 0) return m_handling[1] + 1;
        return m_inbox[1].empty() ? m_child_cursor : m_inbox[1].front().seq;
    }
    void fail(const std::string& why);
    template <typename F>
    void guarded(const char* what, F&& f);
    Envelope envelope() const;
    Result<void, std::string> restore(std::span<const std::byte> body, std::uint32_t version);

    // Handoffs (handoff.cpp).
    bool mine(Side side, const Header& header) const;
    void handoff_message(Side side, const Message& message);
    bool scan(BusPort& bus);
    void scanned(const Message& message);
    bool take_chunk(const Handoff& h, std::span<const std::byte> data);
    bool apply_handoff_state();
    void send_handoff_state(bool final_state);
    void retire(const char* why);
    void replica_live(std::uint64_t at_seq);
    Result<void, SendError> send_handoff(const Handoff& h, std::span<const std::byte> data = {});

    RunnerHost& m_host;
    ModuleId m_id;
    std::string m_path;
    ModuleConfig m_config;
    const ModuleKind* m_kind;
    bool m_gateway;
    bool m_eavesdrop;
    bool m_journals;        // a monitor: reads all published, acknowledges
    bool m_journal_timers;  // recovers from the journal: timers go through the bus
    std::uint32_t m_snapshot_every;
    UpPolicy m_policy;
    ModuleId m_parent;
    BusPort* m_parent_bus;
    bool m_report_progress;  // host.wants_progress(), asked once
    InprocBus* m_child_bus;
    CatchUp* m_catch_up;
    CatchUp* m_child_catch_up;
    std::unique_ptr<Module> m_module;
    std::thread m_thread;
    platform::CpuShare* m_cpu_share = nullptr;
    std::atomic<bool> m_stop{false};
    std::atomic<bool> m_abandoned{false};
    std::atomic<bool> m_crash{false};
    std::string m_crash_why;  // written before m_crash is set
    std::atomic<bool> m_finished{false};
    std::mutex m_finish_mutex;
    std::condition_variable m_finish_cv;
    Doorbell m_bell;
    StartPlan m_plan;
    std::uint64_t m_epoch;
    std::uint64_t m_parent_cursor = 1;
    std::uint64_t m_child_cursor = 1;
    std::atomic<std::uint64_t> m_cursor{0};             // m_parent_cursor, for other threads
    std::atomic<std::uint64_t> m_child_cursor_seen{0};  // m_child_cursor, likewise
    // Per side (parent bus, child bus): reading from the journal, and waiting for it.
    bool m_catching_up[2] = {false, false};
    bool m_catch_up_pending[2] = {false, false};
    std::vector<std::byte> m_record;
    // Reliable delivery: where it has read each bus ring to (its own words,
    // and the ones its buses look at), what it read ahead of its handler,
    // and the seq being handled on each side (0: none).
    std::atomic<std::uint64_t> m_ring_own[2] = {0, 0};
    std::atomic<std::uint64_t>* m_ring_pos[2] = {nullptr, nullptr};
    struct Pulled {
        std::uint64_t seq;
        std::vector<std::byte> bytes;
    };
    std::deque<Pulled> m_inbox[2];
    std::vector<std::vector<std::byte>> m_spare;  // buffers of handled inbox entries
    std::vector<std::byte> m_pull_record;
    std::uint64_t m_handling[2] = {0, 0};
    Translation m_translation;
    Xoshiro m_random;
    std::uint64_t m_correlation = 0;

    // The event being handled: its time is now_ns().
    std::uint64_t m_event_ns = 0;

    // Recovery: outputs to drop, and whether the instance is live yet.
    std::uint64_t m_suppress_left = 0;
    std::atomic<bool> m_live{true};  // written by the runner's thread, read by stats()
    std::uint64_t m_live_at = 0;

    // Snapshots.
    std::uint64_t m_since_snapshot = 0;       // inputs handled since the last snapshot
    std::uint64_t m_read_since_snapshot = 0;  // parent-bus messages read since then
    std::uint64_t m_snapshot_id = 0;
    bool m_snapshot_due = false;
    std::vector<std::byte> m_module_state;

    TimerId m_next_timer = 1;
    std::multimap<std::uint64_t, TimerId> m_deadlines;
    std::unordered_map<TimerId, TimerState> m_timers;

    std::atomic<ModuleState> m_state{ModuleState::created};
    std::atomic<std::uint64_t> m_rx{0}, m_tx{0}, m_seen{0}, m_fwd_up{0}, m_fwd_down{0}, m_denied{0},
        m_lost{0}, m_invalid{0}, m_send_errors{0}, m_caught_up{0}, m_suppressed{0}, m_snapshots{0},
        m_heartbeat{0}, m_pulled{0}, m_waited_ns{0};
    std::uint64_t m_handled = 0;  // inputs handed to the module (messages and timers)
    std::vector<std::byte> m_chunk;

    // Handoffs. A replica: its phase, the look-ahead cursor while it holds,
    // the state it assembles. The old instance: the handoff it serves and,
    // in a move, the generation from which messages are no longer its and
    // the flushes it has seen.
    std::atomic<HandoffPhase> m_phase{HandoffPhase::live};
    bool m_replica = false;
    std::uint64_t m_handoff = 0;
    bool m_handoff_move = false;
    std::uint32_t m_min_generation = 0;
    std::uint32_t m_retire_generation = UINT32_MAX;
    std::uint32_t m_payload_limit = 0;  // largest chunk payload a move's route takes
    std::uint64_t m_scan = 0;
    std::vector<std::byte> m_handoff_body;
    SnapshotChunk m_handoff_chunk;
    std::uint32_t m_handoff_have = 0;
    bool m_handoff_stateful = false;
    bool m_state_ready = false;
    std::uint64_t m_handoff_child_cursor = 0;
    // The flushes of move m_flush_id seen so far. The one from a moving
    // gateway's own child bus may come before the move_prepare on its parent
    // bus (two buses, no order between them): it is kept until then.
    std::uint64_t m_flush_id = 0;
    std::vector<BusId> m_flushes;
    std::uint32_t m_flush_total = 0;
    std::atomic<bool> m_retired{false};
};

template <typename F>
inline void Runner::guarded(const char* what, F&& f) {
    // A module that throws fails alone: its runner stops taking messages and
    // the bus, its siblings and its parent go on.
    try {
        f();
    } catch (const std::exception& e) {
        fail(fmt::format("module failed in {}: {}", what, e.what()));
    } catch (...) {
        fail(fmt::format("module failed in {}: unknown exception", what));
    }
}

}  // namespace hmk::detail
