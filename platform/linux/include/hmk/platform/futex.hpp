// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <atomic>
#include <cstdint>

namespace hmk::platform {

enum class FutexScope : std::uint8_t {
    process,  ///< all waiters live in this process (FUTEX_PRIVATE_FLAG)
    shared,   ///< the word may be mapped into several processes
};

/// Sleeps while `*word == expected`, at most `timeout_ns` (negative: no limit).
/// Returns false on timeout. Spurious returns are possible; callers re-check.
bool futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                std::int64_t timeout_ns, FutexScope scope = FutexScope::process);

/// Wakes up to `count` waiters sleeping on `word`.
void futex_wake(const std::atomic<std::uint32_t>& word, int count,
                FutexScope scope = FutexScope::process);

}  // namespace hmk::platform
