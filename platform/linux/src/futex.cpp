// SPDX-License-Identifier: Apache-2.0
#include "hmk/platform/futex.hpp"

#include <cerrno>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

namespace hmk::platform {
namespace {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t),
              "futex needs a plain 32-bit word");

const std::uint32_t* address_of(const std::atomic<std::uint32_t>& word) {
    return reinterpret_cast<const std::uint32_t*>(&word);
}

int op(int base, FutexScope scope) {
    return scope == FutexScope::process ? (base | FUTEX_PRIVATE_FLAG) : base;
}

}  // namespace

bool futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                std::int64_t timeout_ns, FutexScope scope) {
    timespec ts{};
    timespec* tsp = nullptr;
    if (timeout_ns >= 0) {
        ts.tv_sec = static_cast<time_t>(timeout_ns / 1'000'000'000);
        ts.tv_nsec = static_cast<long>(timeout_ns % 1'000'000'000);
        tsp = &ts;
    }
    const long rc =
        syscall(SYS_futex, address_of(word), op(FUTEX_WAIT, scope), expected, tsp, nullptr, 0);
    return !(rc == -1 && errno == ETIMEDOUT);
}

void futex_wake(const std::atomic<std::uint32_t>& word, int count, FutexScope scope) {
    syscall(SYS_futex, address_of(word), op(FUTEX_WAKE, scope), count, nullptr, nullptr, 0);
}

}  // namespace hmk::platform
