// SPDX-License-Identifier: Apache-2.0
// Message types of the OS services, and FlatBuffers payloads checked on
// receipt (schemas/*.fbs, docs/services.md).
#pragma once

#include <flatbuffers/flatbuffers.h>

#include <cstdint>
#include <span>

namespace hmk::services {

/// Message types of the services (0x2000 and up: a service's own range).
inline constexpr std::uint32_t k_block_type = 0x2000;  ///< schemas/block.fbs
inline constexpr std::uint32_t k_fs_type = 0x2001;     ///< schemas/fs.fbs
inline constexpr std::uint32_t k_kv_type = 0x2002;     ///< schemas/kv.fbs
/// The shell service: a command line in, text out (docs/shell.md).
inline constexpr std::uint32_t k_shell_type = 0x2003;
inline constexpr std::uint32_t k_console_type = 0x2004;  ///< schemas/console.fbs
inline constexpr std::uint32_t k_clock_type = 0x2005;    ///< schemas/clock.fbs

/// The root table of `payload` if it verifies as a `T` (every offset and
/// length inside the buffer, bounded depth and table count), else nullptr.
/// A malformed buffer from another module is refused here, never read.
template <typename T>
const T* verified(std::span<const std::byte> payload) {
    if (payload.size() < sizeof(flatbuffers::uoffset_t) || payload.size() > (1u << 24))
        return nullptr;
    const auto* data = reinterpret_cast<const std::uint8_t*>(payload.data());
    flatbuffers::Verifier verifier(data, payload.size(), 16, 4096);
    if (!verifier.VerifyBuffer<T>(nullptr)) return nullptr;
    return flatbuffers::GetRoot<T>(data);
}

/// The bytes of a finished builder.
inline std::span<const std::byte> bytes_of(const flatbuffers::FlatBufferBuilder& b) {
    return {reinterpret_cast<const std::byte*>(b.GetBufferPointer()), b.GetSize()};
}

}  // namespace hmk::services
