// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>

namespace hmk::platform {

/// Monotonic clock in nanoseconds (CLOCK_MONOTONIC); the kernel clock of a hosted system.
std::uint64_t monotonic_ns();

}  // namespace hmk::platform
