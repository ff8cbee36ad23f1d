// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hmk/runtime/log.hpp"
#include "hmk/runtime/module.hpp"
#include "hmk/runtime/system_spec.hpp"

namespace hmk {

enum class ModuleState : std::uint8_t { created, running, failed, stopped, restarting, recovering };
const char* to_string(ModuleState state);

/// Counters of one module, as its runner sees them.
struct ModuleStats {
    ModuleState state = ModuleState::created;
    std::uint64_t rx = 0;        ///< messages handed to the module's handler
    std::uint64_t tx = 0;        ///< messages the module sent
    std::uint64_t seen = 0;      ///< messages read off its bus(es), for it or not
    std::uint64_t fwd_up = 0;    ///< gateway: copies forwarded to the parent bus
    std::uint64_t fwd_down = 0;  ///< gateway: copies forwarded to the child bus
    std::uint64_t denied = 0;    ///< gateway: held back by its up policy or its on_forward
    std::uint64_t lost = 0;      ///< messages the bus overwrote before this module read them
    std::uint64_t invalid = 0;   ///< records that failed header validation
    std::uint64_t send_errors = 0;
    std::uint64_t restarts = 0;    ///< times its parent restarted it
    std::uint64_t epoch = 0;       ///< number of the running instance (1 for the first)
    std::uint64_t caught_up = 0;   ///< messages it read from the journal instead of the bus
    std::uint64_t suppressed = 0;  ///< outputs a recovering instance did not send again
    std::uint64_t snapshots = 0;   ///< snapshots it sent to its parent
    std::uint64_t heartbeat = 0;   ///< seq of the last heartbeat its runtime handled
    std::uint64_t cursor = 0;      ///< next seq it will read on its parent bus
    std::uint64_t read_ahead = 0;  ///< messages it read ahead of its handler while a send waited
    std::uint64_t waited_ns = 0;   ///< time its sends waited for room on a reliable bus
    std::int64_t pid = 0;          ///< process modules: the host's process id (0: none)
    std::uint8_t handoff = 0;      ///< a replica taking over: how far (0: it is the module)
};

struct BusStats {
    BusId id = k_no_module;
    std::string name;             ///< "Bus 0" or the owner's path
    std::uint64_t published = 0;  ///< messages published since the system started
    std::uint64_t bytes = 0;
    std::uint64_t rejected = 0;  ///< refused by the owner's checks
    std::uint32_t capacity = 0;
    std::uint64_t head = 0;  ///< last sequence number (a journaled bus continues its journal's)
    Delivery delivery = Delivery::reliable;
    std::uint64_t evicted = 0;      ///< readers evicted for holding their senders up too long
    std::uint64_t pressure_ns = 0;  ///< time its senders were held up for want of room
};

/// A received message with its own copy of the payload.
struct OwnedMessage {
    Header header;
    std::vector<std::byte> payload;
    std::string_view text() const {
        return {reinterpret_cast<const char*>(payload.data()), payload.size()};
    }
};

/// How a swap or a move went (docs/swap.md, docs/relocation.md).
struct HandoffReport {
    std::string what;              ///< one line: what happened
    std::uint64_t epoch = 0;       ///< the module's instance number now
    double ready_ms = 0;           ///< request to the replica ready to take over
    double takeover_us = 0;        ///< switch (or cut) to the replica live, as the parent saw it
    std::uint64_t switch_seq = 0;  ///< the bus seq of the switch (swap) or cut (move)
};

namespace detail {
class SystemImpl;
}

/// Where the programs and plugins that modules in their own processes need are.
struct RuntimeOptions {
    std::string host_program;  ///< the hmk-host executable
    std::string std_plugin;    ///< the plugin with the standard kinds, which every host loads

    /// hmk-host beside the running executable, plugins in ../lib (the build and install layout).
    static RuntimeOptions beside_executable();
};

/// A booted hmk system: the microkernel, its buses and every module, each
/// in-process module on a thread of its own. Created stopped; start() boots
/// it parents-first, stop() (or the destructor) shuts it down children-first.
class System {
  public:
    static Result<std::unique_ptr<System>, std::string> create(
        const SystemSpec& spec, const Registry& registry, Logger& logger,
        const RuntimeOptions& options = RuntimeOptions::beside_executable());
    ~System();
    System(const System&) = delete;
    System& operator=(const System&) = delete;

    /// Starts every module and waits until each has started or failed.
    /// Error: which modules failed to start (the system is stopped again).
    Result<void, std::string> start();
    void stop();

    /// Any thread. Sends `message` with operator authority as the module
    /// `from` (the root by default), exactly as if that module had sent it.
    /// Returns the correlation id used (one is made when message.correlation is 0).
    Result<std::uint64_t, SendError> inject(const Outgoing& message, ModuleId from = k_root_id);

    /// Any thread, as the operator: makes module `id` fail as if it had
    /// crashed. A process module is killed (SIGKILL); an in-process one fails
    /// before its next message. Its parent then handles the failure as it
    /// would any other. Error: no such module, or it is not running.
    Result<void, std::string> kill(ModuleId id);

    /// Any thread (one swap or move at a time; others wait their turn).
    /// Replaces the running instance of module `id` by one of kind `kind`,
    /// version `version` (0: the newest), without losing or repeating a
    /// message: the replica restores the instance's state, shadows it on its
    /// bus, and takes over at one sequence number (docs/swap.md). A replica
    /// that fails or does not catch up within `deadline` is dropped and the
    /// old instance keeps running (rollback): the error says why.
    Result<HandoffReport, std::string> swap(
        ModuleId id, const std::string& kind, std::uint32_t version = 0,
        std::chrono::milliseconds deadline = std::chrono::milliseconds(5000));

    /// Any thread (one swap or move at a time). Moves module `id`, with its
    /// subtree if it is a gateway, under gateway `to` (the root for Bus 0),
    /// in another process or back in the kernel's with `isolation`. It keeps
    /// its id; its path changes. Routing changes at one point of every bus's
    /// order: messages on their way to the old place are handled there, the
    /// old instance's state then goes to a replica at the new place, which
    /// takes over (docs/relocation.md). Nothing is lost or repeated. Error:
    /// the move is not possible (nothing changed), or it failed before the
    /// cut (rolled back).
    Result<HandoffReport, std::string> move(
        ModuleId id, ModuleId to, std::optional<Isolation> isolation = std::nullopt,
        std::chrono::milliseconds deadline = std::chrono::milliseconds(5000));

    /// Any thread. Waits for a message addressed to the root with the given
    /// correlation id (a reply to inject()); nullopt on timeout.
    std::optional<OwnedMessage> wait_for_root(std::uint64_t correlation,
                                              std::chrono::milliseconds timeout);

    const SystemSpec& spec() const;
    const Topology& topology() const;
    ModuleStats module_stats(ModuleId id) const;
    std::vector<BusStats> bus_stats() const;
    /// Any thread. The last `count` messages on the bus owned by `owner` (the
    /// root for Bus 0) that are still in its ring, oldest first; none if
    /// `owner` owns no bus.
    std::vector<OwnedMessage> bus_tail(ModuleId owner, std::size_t count) const;
    /// Set once the microkernel's own supervision gave up (a failure escalated
    /// to the root past its restart intensity): why. The modules are stopped.
    std::optional<std::string> failure() const;
    /// Waits until failure() is set, at most `timeout`; true if it is.
    bool wait_failure(std::chrono::milliseconds timeout);
    /// For each module in a process of its own: the isolation layers around it.
    std::vector<std::pair<std::string, std::vector<std::string>>> sandbox_report() const;
    /// Any thread. In-process instances left behind hung in a handler (a
    /// stop, restart, swap or move gave up on them). Their threads live as
    /// long as the process: a system with any keeps its own memory for good
    /// when destroyed, and whoever owns the Logger it was given must too.
    std::size_t abandoned() const;

  private:
    explicit System(std::unique_ptr<detail::SystemImpl> impl);
    std::unique_ptr<detail::SystemImpl> m_impl;
};

}  // namespace hmk
