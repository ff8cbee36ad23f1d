// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hmk/header.hpp"
#include "hmk/message_types.hpp"
#include "hmk/result.hpp"
#include "hmk/runtime/log.hpp"
#include "hmk/runtime/module_config.hpp"
#include "hmk/topology.hpp"

namespace hmk {

/// A received message. The payload view is valid only during the handler call
/// that receives it: copy what you keep.
struct Message {
    Header header;
    std::span<const std::byte> payload;

    std::string_view text() const {
        return {reinterpret_cast<const char*>(payload.data()), payload.size()};
    }
};

/// A message to send. The runtime fills in everything the bus owner stamps.
struct Outgoing {
    ModuleId destination = k_no_module;  ///< k_no_module: broadcast within `scope`
    Scope scope = Scope::bus;
    std::uint32_t type = msg::k_data;
    std::uint64_t correlation = 0;
    std::uint16_t flags = 0;
    std::span<const std::byte> payload;
};

/// The header of `message` as sent by `sender`, before the bus owner stamps it.
Header header_for(ModuleId sender, const Outgoing& message);

/// Views text as payload bytes.
inline std::span<const std::byte> as_bytes(std::string_view text) {
    return {reinterpret_cast<const std::byte*>(text.data()), text.size()};
}

enum class SendError : std::uint8_t {
    payload_too_large = 1,  ///< over the bus's max_payload
    unknown_destination,    ///< no module with that id in the system
    no_child_bus,           ///< send_child() from a module that is not a gateway
    rejected,               ///< the bus owner refused it (forged sender, hop limit, a runtime type)
    stopped,                ///< the system is shutting down
    full,                   ///< no room for it: the parent is behind or throttles this module,
                            ///< or a reliable bus waits for a reader (the runtime waited up to
                            ///< about the bus's reader_deadline_ms, or this module's own inbox
                            ///< of what it read ahead is full: return from the handler and
                            ///< try again), or the bus waits for its journal
};
const char* to_string(SendError error);

using TimerId = std::uint64_t;
enum class TimerMode : std::uint8_t { once, periodic };

/// What a module may do. Every call is made from the module's own thread
/// (inside its constructor or a handler) unless stated otherwise.
class Env {
  public:
    virtual ~Env() = default;

    virtual ModuleId id() const = 0;
    virtual const std::string& path() const = 0;
    virtual const ModuleConfig& config() const = 0;
    /// The system's tree, to resolve paths to ids. Valid while the module lives.
    virtual const Topology& topology() const = 0;

    /// Sends on the module's parent bus (the root sends on Bus 0).
    virtual Result<void, SendError> send(const Outgoing& message) = 0;
    /// Gateways only: sends on the module's own child bus.
    virtual Result<void, SendError> send_child(const Outgoing& message) = 0;
    /// Answers `request`: addressed to its sender, same type and correlation id.
    Result<void, SendError> reply(const Message& request, std::span<const std::byte> payload,
                                  std::uint16_t extra_flags = 0);

    /// Calls the module's on_timer(id) after `delay`, once or every `delay`.
    /// A module that recovers from the journal gets its timers through its
    /// bus (a `timer` message to itself), so a replay fires them at the same
    /// point of the message order.
    virtual TimerId set_timer(std::chrono::nanoseconds delay, TimerMode mode) = 0;
    virtual void cancel_timer(TimerId id) = 0;

    /// Kernel clock, nanoseconds: the time of the event being handled (the
    /// bus timestamp of the message, of the timer's message, of the start).
    /// Modules take time only from here, so a replay gives them the same
    /// answers (DESIGN.md section 7).
    virtual std::uint64_t now_ns() = 0;
    /// Randomness, likewise only from here: a generator seeded by the parent
    /// (the seed is journaled) whose state goes into snapshots.
    virtual std::uint64_t random() = 0;
    /// A fresh correlation id for a request (unique per module; restored with its state).
    virtual std::uint64_t next_correlation() = 0;

    /// For a kind that journals its bus (a monitor): everything up to `seq`
    /// is safe in the journal. The bus owner keeps those messages in its
    /// window until then, and with durable visibility shows them to the
    /// other modules only from then on. No effect for other kinds.
    virtual void acknowledge(std::uint64_t /*seq*/) {}

    virtual void log(LogLevel level, std::string_view text) = 0;
    /// A line on the system console (stdout).
    virtual void print(std::string_view line) = 0;
};

/// Which way a gateway is about to forward a message.
enum class Direction : std::uint8_t { up, down };

/// A gateway's decision on a message the router would forward.
enum class Verdict : std::uint8_t {
    forward,    ///< pass it on unchanged
    translate,  ///< pass on `Translation::type` and `Translation::payload` instead
    drop,       ///< do not forward
};
struct Translation {
    std::uint32_t type = 0;
    std::vector<std::byte> payload;
};

/// A module: a self-contained unit that only sends and receives messages.
/// Construct with the Env it will use for its whole life (keep the reference).
/// Handlers run on one thread, one at a time; a handler that throws fails the
/// module (its parent decides what happens next) and never the bus.
class Module {
  public:
    virtual ~Module() = default;

    /// Runs once before the first message.
    virtual void on_start() {}
    /// Messages addressed to this module and broadcasts on its buses (every
    /// message of its buses for an eavesdropping kind).
    virtual void on_message(const Message& message) = 0;
    virtual void on_timer(TimerId /*id*/) {}
    /// Runs once when the module is stopped in order.
    virtual void on_stop() {}
    /// Runs after the runtime handed the module a batch of messages (at most
    /// 64) and before it looks for more or sleeps: a module that batches work
    /// (a journal) flushes here.
    virtual void on_batch() {}

    /// Stateful modules: write the whole state into `out` (empty on entry)
    /// and return true. Called between handlers, on the module's thread,
    /// every `snapshot_every` handled messages and when the parent asks.
    /// The runtime adds its own part (timers, randomness, counters) and sends
    /// it to the bus's monitor, which stores it for recovery. Default: the
    /// module keeps no snapshots (recovery then replays its whole history).
    virtual bool snapshot(std::vector<std::byte>& /*out*/) { return false; }
    /// Replaces the state with one snapshot() wrote, in the kind's state
    /// format `version` (ModuleKind::state_version of the instance that wrote
    /// it: a new version of a module upgrades an old state here). Runs
    /// instead of on_start. Error: the state cannot be read (the runtime then
    /// recovers without the snapshot).
    virtual Result<void, std::string> restore(std::span<const std::byte> /*state*/,
                                              std::uint32_t /*version*/) {
        return Err{std::string("this module kind keeps no snapshots")};
    }

    /// Gateways: called before the router forwards `message`. The default
    /// forwards everything unchanged.
    virtual Verdict on_forward(Direction /*direction*/, const Message& /*message*/,
                               Translation& /*out*/) {
        return Verdict::forward;
    }
};

enum class Eavesdrop : std::uint8_t { no, yes };
/// Whether a kind journals its parent bus into the directory of its `dir`
/// config key (a monitor). The bus then keeps messages until it acknowledges
/// them, and its parent recovers modules of the bus from that directory.
enum class Journals : std::uint8_t { no, yes };

/// A module kind: how to make one, what config it takes, whether it owns a bus.
struct ModuleKind {
    using Factory = std::function<Result<std::unique_ptr<Module>, std::string>(Env&)>;

    std::string name;
    std::string help;
    Role role = Role::leaf;
    Eavesdrop eavesdrop = Eavesdrop::no;
    std::vector<ConfigKey> config;
    Factory create;
    Journals journals = Journals::no;
    /// Format version of the state its snapshot() writes (see Module::restore).
    std::uint32_t state_version = 1;
    /// Version of the kind's code. A registry may hold several versions of
    /// a kind; a system file names one with `version = N` (default: the
    /// newest), and a hot swap may replace an instance by another version
    /// (docs/swap.md).
    std::uint32_t version = 1;
    /// What the config schema cannot say, checked with the system
    /// description (hmk check), so that a system that passes it boots:
    /// where the module `self` sits in the tree and with what config. An
    /// empty answer: fine; otherwise the reason, reported at its table.
    using Check = std::function<std::string(const Topology& topology, const TopologyNode& self,
                                            const ModuleConfig& config)>;
    Check check = nullptr;
};

/// Module kinds by name. Built once at start-up and passed where needed.
class Registry {
  public:
    /// Adds a kind; false if that name and version are taken. Kinds found
    /// stay valid while the registry lives.
    bool add(ModuleKind kind);
    /// The newest version of kind `name`.
    const ModuleKind* find(std::string_view name) const;
    /// Version `version` of kind `name` (0: the newest).
    const ModuleKind* find(std::string_view name, std::uint32_t version) const;
    /// The versions of kind `name`, oldest first.
    std::vector<std::uint32_t> versions(std::string_view name) const;
    /// Each kind's name, once, sorted.
    std::vector<std::string> names() const;

    /// Loads a plugin: a shared object whose `extern "C" void
    /// hmk_register_modules(hmk::Registry&)` adds its kinds. Loading the same
    /// file twice is a no-op. Error: why dlopen or the lookup failed.
    Result<void, std::string> load_plugin(const std::string& file);

    /// Adds kind `name` made by `T::create(Env&)`.
    template <typename T>
    bool add(std::string name, std::string help, Role role, std::vector<ConfigKey> config,
             Eavesdrop eavesdrop = Eavesdrop::no) {
        return add(ModuleKind{std::move(name), std::move(help), role, eavesdrop, std::move(config),
                              [](Env& env) { return T::create(env); }});
    }

  private:
    std::deque<ModuleKind> m_kinds;  // a deque: found kinds do not move
    std::vector<std::string> m_plugins;
};

/// The symbol a plugin exports (see Registry::load_plugin).
extern "C" using RegisterModulesFn = void(Registry&);
inline constexpr const char* k_register_symbol = "hmk_register_modules";

/// Adds hmk's standard kinds: gateway, echo, sink, source, tap, monitor, counter, prober.
void register_standard_modules(Registry& registry);

}  // namespace hmk
