// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace hmk {

inline constexpr std::size_t k_max_path_length = 255;
inline constexpr std::size_t k_max_name_length = 63;

enum class PathError : std::uint8_t {
    empty = 1,
    not_absolute,   ///< does not start with '/'
    empty_segment,  ///< "//" or a trailing '/'
    bad_character,  ///< a name may hold [A-Za-z0-9_.-] only
    dot_segment,    ///< "." and ".." are not names
    too_long,
    name_too_long,
};
const char* to_string(PathError error);

/// Checks that `path` is a module path: "/" or "/name/name...".
/// (Kept allocation-free so that core stays freestanding.)
bool is_valid_path(std::string_view path, PathError* why = nullptr);

/// The parent path of a valid non-root path ("/a/b" -> "/a", "/a" -> "/").
std::string_view parent_path(std::string_view path);

/// The last segment of a valid path ("/a/b" -> "b", "/" -> "").
std::string_view base_name(std::string_view path);

}  // namespace hmk
