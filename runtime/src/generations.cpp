// SPDX-License-Identifier: Apache-2.0
#include "generations.hpp"

#include <fmt/core.h>

namespace hmk::detail {

Generations::Generations(SystemSpec first) {
    (void)add(std::move(first));
}

Result<std::uint32_t, std::string> Generations::add(SystemSpec next) {
    const std::lock_guard lock(m_mutex);
    const std::uint32_t g = m_count.load(std::memory_order_relaxed);
    if (g == k_max) {
        return Err{
            fmt::format("the system has had {} versions, the most one run may have "
                        "(restart it to change it further)",
                        k_max)};
    }
    Chunk* chunk = m_chunks[g / k_chunk].load(std::memory_order_relaxed);
    if (chunk == nullptr) {
        chunk = &m_chunk_storage.emplace_back();
        m_chunks[g / k_chunk].store(chunk, std::memory_order_release);
    }
    (*chunk)[g % k_chunk] = &m_storage.emplace_back(std::move(next));
    m_count.store(g + 1, std::memory_order_release);
    return g;
}

}  // namespace hmk::detail
