// SPDX-License-Identifier: Apache-2.0
#include "hmk/path.hpp"

namespace hmk {

const char* to_string(PathError error) {
    switch (error) {
        case PathError::empty:
            return "path is empty";
        case PathError::not_absolute:
            return "path must start with '/'";
        case PathError::empty_segment:
            return "path has an empty name (\"//\" or a trailing '/')";
        case PathError::bad_character:
            return "a module name may hold only A-Z a-z 0-9 _ . -";
        case PathError::dot_segment:
            return "'.' and '..' are not module names";
        case PathError::too_long:
            return "path longer than 255 characters";
        case PathError::name_too_long:
            return "module name longer than 63 characters";
    }
    return "bad path";
}

namespace {
bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
}
bool fail(PathError* why, PathError e) {
    if (why != nullptr) *why = e;
    return false;
}
}  // namespace

bool is_valid_path(std::string_view path, PathError* why) {
    if (path.empty()) return fail(why, PathError::empty);
    if (path.front() != '/') return fail(why, PathError::not_absolute);
    if (path.size() > k_max_path_length) return fail(why, PathError::too_long);
    if (path == "/") return true;
    std::size_t start = 1;
    while (start <= path.size()) {
        std::size_t end = path.find('/', start);
        if (end == std::string_view::npos) end = path.size();
        const std::string_view name = path.substr(start, end - start);
        if (name.empty()) return fail(why, PathError::empty_segment);
        if (name.size() > k_max_name_length) return fail(why, PathError::name_too_long);
        if (name == "." || name == "..") return fail(why, PathError::dot_segment);
        for (char c : name) {
            if (!is_name_char(c)) return fail(why, PathError::bad_character);
        }
        start = end + 1;
    }
    return true;
}

std::string_view parent_path(std::string_view path) {
    const std::size_t slash = path.rfind('/');
    if (slash == 0 || slash == std::string_view::npos) return "/";
    return path.substr(0, slash);
}

std::string_view base_name(std::string_view path) {
    const std::size_t slash = path.rfind('/');
    return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

}  // namespace hmk
