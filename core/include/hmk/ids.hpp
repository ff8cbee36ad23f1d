// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>

namespace hmk {

/// Stable numeric identity of a module. It is assigned when the system is
/// described and survives restart, swap and relocation. 0 means "no module".
using ModuleId = std::uint32_t;

/// A bus is named by the module that owns it: every gateway owns exactly one
/// child bus, so the owner's id identifies the bus. Bus 0 is owned by the root.
using BusId = ModuleId;

inline constexpr ModuleId k_no_module = 0;
/// The microkernel, root of every system.
inline constexpr ModuleId k_root_id = 1;
/// Largest id a system may use (ids travel as u32; the top range is reserved).
inline constexpr ModuleId k_max_module_id = 0x00FF'FFFF;

/// Broadcast scope of a message without a destination (DESIGN.md section 3).
enum class Scope : std::uint8_t {
    bus = 0,      ///< stays on the bus it was sent on (default)
    subtree = 1,  ///< the sender's bus and every bus below it
    up = 2,       ///< the sender's bus and every bus on the way to the root
    system = 3,   ///< every bus of the system, where policy permits
};
inline constexpr std::uint8_t k_max_scope = 3;

const char* to_string(Scope scope);

}  // namespace hmk
