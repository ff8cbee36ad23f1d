// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstddef>

namespace hmk::detail {

// Little-endian stores and loads of unsigned integers at a byte offset, the
// same on every platform (compilers turn them into single moves on LE CPUs).

template <typename T>
void put_le(std::byte* out, std::size_t offset, T value) {
    for (std::size_t i = 0; i < sizeof(T); ++i)
        out[offset + i] = static_cast<std::byte>((value >> (8 * i)) & 0xFF);
}

template <typename T>
T get_le(const std::byte* in, std::size_t offset) {
    T value = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) {
        value = static_cast<T>(value | static_cast<T>(static_cast<T>(in[offset + i]) << (8 * i)));
    }
    return value;
}

}  // namespace hmk::detail
