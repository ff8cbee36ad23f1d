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
/// Lifecycle: stop in order. Obeyed only when it comes from the module's parent.
inline constexpr std::uint32_t k_stop = 0x0010;
inline constexpr std::uint32_t k_user_base = 0x1000;
inline constexpr std::uint32_t k_data = 0x1000;  ///< opaque application data

/// Parses a type as a name ("data", "ping", ...) or a number (decimal or 0x hex).
std::optional<std::uint32_t> parse_type(std::string_view text);
/// The name of a well-known type, or an empty view.
std::string_view type_name(std::uint32_t type);

}  // namespace hmk::msg
