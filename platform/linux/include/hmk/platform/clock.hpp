// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>

namespace hmk::platform {

/// Monotonic clock in nanoseconds (CLOCK_MONOTONIC); the kernel clock of a hosted system.
std::uint64_t monotonic_ns();

/// A hint to the CPU that the caller spins (x86 PAUSE, AArch64 YIELD).
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

}  // namespace hmk::platform
