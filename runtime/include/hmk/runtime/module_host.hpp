// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hmk {

/// What a parent tells the module host it starts (see UplinkPump::spawn).
/// File descriptors 3 to 7 carry the rest: the bus ring (mapped read-only),
/// the module's uplink region, the eventfd that wakes the parent's pump, the
/// system description, and the journal feed (read-only); fd 8 the snapshot
/// to restore, if there is one.
struct HostOptions {
    std::string module;                ///< path of the module to run
    std::vector<std::string> plugins;  ///< shared objects with module kinds
    std::uint64_t from_seq = 1;        ///< first sequence number to read on the bus
    std::uint64_t text_size = 0;       ///< bytes of the system description
    std::string log_level = "info";
    // The start plan (docs/recovery.md).
    std::uint64_t epoch = 1;
    std::uint64_t seed = 0;
    std::uint64_t suppress = 0;       ///< its first N messages are on the bus already
    std::uint64_t live_at = 0;        ///< timers and snapshots resume after this seq
    std::uint64_t start_ns = 0;       ///< the time on_start sees
    std::uint64_t snapshot_size = 0;  ///< bytes of the snapshot on fd 8 (0: none)
    std::uint32_t state_version = 0;
    // A replica taking over from the running instance (docs/swap.md).
    std::uint64_t handoff = 0;         ///< the handoff's id (0: an ordinary instance)
    bool handoff_move = false;         ///< a move: the state comes when the old one retires
    std::uint32_t min_generation = 0;  ///< a move: older parent-bus messages are not its
};

inline constexpr int k_host_fd_bus = 3;
inline constexpr int k_host_fd_uplink = 4;
inline constexpr int k_host_fd_event = 5;
inline constexpr int k_host_fd_system = 6;
inline constexpr int k_host_fd_feed = 7;
inline constexpr int k_host_fd_snapshot = 8;

/// Exit status of a module host whose module could not restore its snapshot.
inline constexpr int k_exit_restore_failed = 4;

/// The module host: loads the plugins, finds its module in the system
/// description, maps the bus read-only and its uplink, closes the sandbox
/// (Landlock, no_new_privs, seccomp) and only then creates and runs the
/// module until its parent stops it. Returns the process exit status:
/// 0 stopped in order, 1 the module failed, 2 bad set-up, 4 it could not
/// restore its snapshot (k_exit_restore_failed).
int run_module_host(const HostOptions& options);

}  // namespace hmk
