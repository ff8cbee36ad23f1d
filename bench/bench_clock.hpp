// SPDX-License-Identifier: Apache-2.0
// Clock helpers shared by the benchmark program and the benchmark plugin.
#pragma once

#include <time.h>

#include <cstdint>

namespace hmk::bench {

inline std::uint64_t now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

// Paced senders sleep (rather than spin) between sparse messages, so the
// pacing costs no core: on a small machine a spinning sender takes the core
// the path being measured needs.
inline void sleep_until(std::uint64_t deadline_ns) {
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(deadline_ns / 1'000'000'000u);
    ts.tv_nsec = static_cast<long>(deadline_ns % 1'000'000'000u);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) != 0) {
    }
}

/// Waits until `deadline_ns`, sleeping or spinning.
inline void wait_until(std::uint64_t deadline_ns, bool spin) {
    if (!spin) return sleep_until(deadline_ns);
    while (now_ns() < deadline_ns) {
    }
}

}  // namespace hmk::bench
