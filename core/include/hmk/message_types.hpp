// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace hmk::msg {

/// Message types. 0x0000-0x0FFF are hmk's own; 0x1000 and up belong to
/// services and applications.
inline constexpr std::uint32_t k_ping = 0x0001;   ///< any module answers "pong"
inline constexpr std::uint32_t k_stats = 0x0002;  ///< the module answers with its counters
inline constexpr std::uint32_t k_reset = 0x0003;  ///< the module resets its counters
inline constexpr std::uint32_t k_start = 0x0004;  ///< start work (source: begin sending)

/// 0x0010-0x00FF: the runtime's control messages. Only the runtime sends
/// them (a module's Env::send refuses them) and they never reach a module's
/// on_message, except for kinds that eavesdrop (monitors, taps).
inline constexpr std::uint32_t k_runtime_first = 0x0010;
inline constexpr std::uint32_t k_runtime_last = 0x00FF;
/// Lifecycle: stop in order. Obeyed only when it comes from the module's parent.
inline constexpr std::uint32_t k_stop = 0x0010;
/// Parent to its bus: are you alive? Each child's runtime notes the newest it
/// handled; a child that stops noting them is hung (docs/recovery.md).
inline constexpr std::uint32_t k_heartbeat = 0x0011;
/// A module to itself: one of its timers fired (modules that recover from the
/// journal take timers through the bus, so a replay sees them in order).
/// Payload: the timer id, u64 little-endian.
inline constexpr std::uint32_t k_timer = 0x0012;
/// A module to its parent: one chunk of a snapshot of its state
/// (snapshot_format.hpp). The bus's monitor stores complete snapshots.
inline constexpr std::uint32_t k_snapshot = 0x0013;
/// Parent to a module: take a snapshot now.
inline constexpr std::uint32_t k_snapshot_request = 0x0014;
/// Parent to its bus: a child started, failed, is restarted ... (LifecycleEvent).
inline constexpr std::uint32_t k_lifecycle = 0x0015;
/// Parent to a child, on its journal feed only: the journal lacks a range.
/// Payload: first and last seq, u64 little-endian each.
inline constexpr std::uint32_t k_feed_gap = 0x0016;
/// A swap or a move under way: how a running instance hands over to its
/// replica (handoff_format.hpp; docs/swap.md, docs/relocation.md).
inline constexpr std::uint32_t k_handoff = 0x0017;
/// A parent's request to a gateway that manages its subtree in a process of
/// its own ("kill ID", "stats ID"), and its answer (docs/isolation.md): how
/// an operation travels the tree, owner to owner. Only from the parent.
inline constexpr std::uint32_t k_manage = 0x0018;

inline constexpr std::uint32_t k_user_base = 0x1000;
inline constexpr std::uint32_t k_data = 0x1000;  ///< opaque application data

/// True for the runtime's own control types.
constexpr bool is_runtime_type(std::uint32_t type) {
    return type >= k_runtime_first && type <= k_runtime_last;
}

/// Parses a type as a name ("data", "ping", ...) or a number (decimal or 0x hex).
std::optional<std::uint32_t> parse_type(std::string_view text);
/// The name of a well-known type, or an empty view.
std::string_view type_name(std::uint32_t type);

}  // namespace hmk::msg
