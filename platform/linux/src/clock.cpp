// SPDX-License-Identifier: Apache-2.0
#include "hmk/platform/clock.hpp"

#include <time.h>

namespace hmk::platform {

std::uint64_t monotonic_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

}  // namespace hmk::platform
