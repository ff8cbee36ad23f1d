// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>
#include <vector>

#include "hmk/runtime/system.hpp"
#include "inproc_bus.hpp"

namespace hmk::detail {

/// Callbacks from a runner to the system that owns it.
class RunnerHost {
  public:
    virtual ~RunnerHost() = default;
    virtual Logger& logger() = 0;
    virtual const Topology& topology() const = 0;
    virtual std::uint64_t next_correlation() = 0;
    /// The runner finished start-up (its module exists and on_start ran) or failed.
    virtual void started(ModuleId id, bool ok) = 0;
    /// The runner handled a batch; `stats` are its counters now. Default: nothing.
    virtual void progress(const ModuleStats& /*stats*/) {}
    /// Whether progress() does anything (asked once: the runner skips building
    /// the counters on its message path otherwise).
    virtual bool wants_progress() const { return false; }
};

/// Runs one in-process module on a thread of its own: reads its bus(es),
/// forwards for gateways, hands messages to the module, fires its timers.
/// It is the module's Env.
class Runner final : public Env {
  public:
    /// `spec` is null for the root. The module is made by `kind` on the runner's
    /// thread. `bell` is where the runner sleeps; by default its own memory
    /// (a module host passes the bell in its uplink region).
    Runner(RunnerHost& host, const ModuleSpec* spec, const ModuleKind* kind, BusPort* parent_bus,
           InprocBus* child_bus, std::optional<Doorbell> bell = std::nullopt);
    ~Runner() override;
    Runner(const Runner&) = delete;
    Runner& operator=(const Runner&) = delete;

    void start();
    /// Runs the module on the calling thread until it stops or fails (a module host's main).
    void run();
    void request_stop();
    void join();
    ModuleStats stats() const;
    ModuleId module_id() const { return m_id; }
    /// Before run(): the first sequence number to read on the parent bus
    /// (a module host starts where its parent spawned it).
    void set_parent_cursor(std::uint64_t seq) { m_parent_cursor = seq; }

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
    std::uint64_t next_correlation() override { return m_host.next_correlation(); }
    void log(LogLevel level, std::string_view text) override;
    void print(std::string_view line) override { m_host.logger().print(line); }

    /// Any thread: publishes as this module (operator injection).
    Result<void, SendError> send_as(const Outgoing& message);

  private:
    bool drain(BusPort& bus, std::uint64_t& cursor, Side side);
    bool lifecycle(const Message& message);
    void handle(Side side, std::span<const std::byte> record);
    void forward(Direction direction, const Message& message);
    bool fire_timers();
    void sleep_until_work();
    Result<void, SendError> publish_on(BusPort* bus, const Outgoing& message);
    template <typename F>
    void guarded(const char* what, F&& f);

    RunnerHost& m_host;
    ModuleId m_id;
    std::string m_path;
    ModuleConfig m_config;
    const ModuleKind* m_kind;
    bool m_gateway;
    bool m_eavesdrop;
    UpPolicy m_policy;
    ModuleId m_parent;
    BusPort* m_parent_bus;
    bool m_report_progress;  // host.wants_progress(), asked once
    InprocBus* m_child_bus;
    std::unique_ptr<Module> m_module;
    std::thread m_thread;
    std::atomic<bool> m_stop{false};
    std::atomic<std::uint32_t> m_bell_word{0};
    std::atomic<std::uint32_t> m_bell_armed{0};
    Doorbell m_bell;
    std::uint64_t m_parent_cursor = 1;
    std::uint64_t m_child_cursor = 1;
    std::vector<std::byte> m_record;
    Translation m_translation;
    std::mt19937_64 m_random;

    struct Timer {
        std::uint64_t period_ns;  // 0 = once
    };
    TimerId m_next_timer = 1;
    std::multimap<std::uint64_t, TimerId> m_deadlines;
    std::unordered_map<TimerId, Timer> m_timers;

    std::atomic<ModuleState> m_state{ModuleState::created};
    std::atomic<std::uint64_t> m_rx{0}, m_tx{0}, m_seen{0}, m_fwd_up{0}, m_fwd_down{0}, m_denied{0},
        m_lost{0}, m_invalid{0}, m_send_errors{0};
};

}  // namespace hmk::detail
