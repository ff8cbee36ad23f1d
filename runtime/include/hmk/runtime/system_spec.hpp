// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hmk/routing.hpp"
#include "hmk/runtime/module_config.hpp"
#include "hmk/topology.hpp"

namespace hmk {

/// Where something was written: file, 1-based line and column.
struct SourceLocation {
    std::string file;
    std::uint32_t line = 0;
    std::uint32_t column = 0;
};

/// How a module is isolated from its parent (DESIGN.md section 5).
enum class Isolation : std::uint8_t { inproc, process };
const char* to_string(Isolation isolation);

/// What a bus promises its readers (DESIGN.md section 2.3, docs/delivery.md).
enum class Delivery : std::uint8_t {
    reliable,     ///< nothing is lost: senders wait for the slowest reader, up to its deadline
    best_effort,  ///< senders never wait: a reader that falls a ring behind is told what it lost
};
const char* to_string(Delivery delivery);

/// The most shared memory all of a system's bus rings may take together
/// (checked with the system description: docs/system-toml.md).
inline constexpr std::uint64_t k_max_bus_ring_bytes = std::uint64_t{4} << 30;

/// Settings of the bus a gateway owns.
struct BusSpec {
    std::uint32_t capacity = 4096;     ///< messages the broadcast ring holds (power of two)
    std::uint32_t max_payload = 4096;  ///< bytes per message payload
    UpPolicy up;                       ///< what children may send out of the bus
    Delivery delivery = Delivery::reliable;
    /// Reliable buses: how long a reader may hold its senders up (a whole
    /// ring behind) before its parent evicts it.
    std::uint32_t reader_deadline_ms = 5000;
};

/// What a parent allows a child in another process (DESIGN.md section 4).
struct QuotaSpec {
    double messages_per_s = 200000;  ///< token bucket rate (burst: one second's worth)
    double bytes_per_s = 64.0 * 1024 * 1024;
    std::uint32_t uplink_slots = 1024;  ///< messages the child may have queued upward
    std::uint64_t memory = 1ull << 30;  ///< address space, bytes
    std::uint32_t open_files = 64;
    std::uint32_t grace_ms = 1000;  ///< over quota this long without a break: stopped
    /// Share of the processor, in cores (0.25: a quarter of one); 0: no
    /// limit. Held by a cgroup where one can be made, else by a lower
    /// scheduling weight (docs/isolation.md, "CPU").
    double cpu = 0;
};

/// Whether a parent restarts a failed child (after Erlang/OTP).
enum class RestartPolicy : std::uint8_t {
    permanent,  ///< always
    transient,  ///< only after an abnormal end (a crash, a kill, a non-zero exit, a hang)
    temporary,  ///< never (the default)
};
const char* to_string(RestartPolicy policy);

/// Which children a gateway restarts when one fails (after Erlang/OTP).
enum class Strategy : std::uint8_t {
    one_for_one,   ///< the failed child only
    one_for_all,   ///< every child
    rest_for_one,  ///< the failed child and those declared after it
};
const char* to_string(Strategy strategy);

/// How a new instance of a module gets its state back.
enum class Recovery : std::uint8_t {
    none,     ///< it starts empty
    journal,  ///< latest snapshot + replay of the bus journal (docs/recovery.md)
};

/// How a gateway supervises its children (docs/recovery.md).
struct SupervisorSpec {
    Strategy strategy = Strategy::one_for_one;
    std::uint32_t intensity = 3;         ///< restarts allowed within period_ms (all children) ...
    std::uint32_t period_ms = 5000;      ///< ... past which the gateway itself fails
    std::uint32_t backoff_ms = 10;       ///< first delay; doubled for each recent restart
    std::uint32_t heartbeat_ms = 0;      ///< heartbeat period on its bus (0: no hang detection)
    std::uint32_t heartbeat_misses = 3;  ///< heartbeats a child may miss before it is hung
    std::uint32_t stop_grace_ms = 2000;  ///< an in-process child asked to stop may take this
                                         ///< long to leave its handler; then it is abandoned
};

/// A file or directory a sandboxed module may use (docs/system-toml.md,
/// docs/isolation.md): its host opens nothing else. Paths are absolute once
/// checked, and inside the system's directory.
struct Grant {
    enum class Type : std::uint8_t { file, dir };
    Type type = Type::file;
    std::string path;
    bool write = false;   ///< read and write (a directory: also make and remove entries)
    bool create = false;  ///< made (empty) when missing, before the module starts
    SourceLocation where;
};
const char* to_string(Grant::Type type);

struct ModuleSpec {
    std::string path;
    std::string kind;
    std::uint32_t version = 0;  ///< the kind's version (the newest, unless the file names one)
    ModuleId id = k_no_module;  ///< final id (assigned if not given)
    Isolation isolation = Isolation::inproc;
    ModuleConfig config;
    BusSpec bus;      ///< gateways only
    QuotaSpec quota;  ///< process modules only
    RestartPolicy restart = RestartPolicy::temporary;
    Recovery recovery = Recovery::none;  ///< leaves on a journaled bus
    std::uint32_t snapshot_every = 0;    ///< handled messages between snapshots (0: never)
    SupervisorSpec supervisor;           ///< gateways only: how it supervises its children
    std::vector<Grant> grants;           ///< process modules: the files they may use
    SourceLocation where;
};

/// A checked system description: every module's kind exists, its config
/// matches the kind's schema, and the tree holds the topology invariants.
struct SystemSpec {
    std::string name;
    std::string file;

    std::vector<std::string> plugins;  ///< plugin files, resolved to absolute paths
    BusSpec root_bus;                  ///< Bus 0
    SupervisorSpec root_supervisor;    ///< the microkernel's supervision of Level 1
    std::vector<ModuleSpec> modules;   ///< in declaration order, without the root
    std::vector<ModuleId> journals;    ///< modules of a journaling kind (at most one a bus)
    Topology topology;

    const ModuleSpec* module(ModuleId id) const;
    /// The module that journals `bus` (a kind with Journals::yes), or null.
    const ModuleSpec* journal_of(BusId bus) const;
};

}  // namespace hmk
