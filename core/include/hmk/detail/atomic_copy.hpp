// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace hmk::detail {

// Copies into and out of memory another thread or process may write at the
// same time, as 8-byte atomics: a racing reader gets torn data (which the
// ring's checks then discard), never undefined behaviour. Stores are
// releases and loads acquires, which is what a seqlock needs without
// standalone fences (ThreadSanitizer cannot see those). On x86-64 both are
// plain moves. `words` memory must be 8-byte aligned.

inline void store_words(std::uint64_t* dst, const std::byte* src, std::size_t bytes) {
    const std::size_t words = bytes / 8;
    for (std::size_t i = 0; i < words; ++i) {
        std::uint64_t w;
        std::memcpy(&w, src + 8 * i, 8);
        std::atomic_ref<std::uint64_t>(dst[i]).store(w, std::memory_order_release);
    }
    if (const std::size_t rest = bytes % 8; rest != 0) {
        std::uint64_t w = 0;
        std::memcpy(&w, src + 8 * words, rest);
        std::atomic_ref<std::uint64_t>(dst[words]).store(w, std::memory_order_release);
    }
}

inline void load_words(std::byte* dst, const std::uint64_t* src, std::size_t bytes) {
    const std::size_t words = bytes / 8;
    // atomic_ref needs a non-const object; the loads never write.
    auto* s = const_cast<std::uint64_t*>(src);
    for (std::size_t i = 0; i < words; ++i) {
        const std::uint64_t w =
            std::atomic_ref<std::uint64_t>(s[i]).load(std::memory_order_acquire);
        std::memcpy(dst + 8 * i, &w, 8);
    }
    if (const std::size_t rest = bytes % 8; rest != 0) {
        const std::uint64_t w =
            std::atomic_ref<std::uint64_t>(s[words]).load(std::memory_order_acquire);
        std::memcpy(dst + 8 * words, &w, rest);
    }
}

}  // namespace hmk::detail
