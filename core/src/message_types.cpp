// SPDX-License-Identifier: Apache-2.0
#include "hmk/message_types.hpp"

#include <array>
#include <charconv>

namespace hmk::msg {
namespace {
struct Named {
    std::string_view name;
    std::uint32_t type;
};
constexpr std::array<Named, 20> k_names{{
    {"ping", k_ping},
    {"stats", k_stats},
    {"reset", k_reset},
    {"start", k_start},
    {"stop", k_stop},
    {"heartbeat", k_heartbeat},
    {"timer", k_timer},
    {"snapshot", k_snapshot},
    {"snapshot-request", k_snapshot_request},
    {"lifecycle", k_lifecycle},
    {"feed-gap", k_feed_gap},
    {"handoff", k_handoff},
    {"manage", k_manage},
    {"data", k_data},
    // The OS services' protocols (docs/services.md).
    {"block", 0x2000},
    {"fs", 0x2001},
    {"kv", 0x2002},
    {"shell", 0x2003},
    {"console", 0x2004},
    {"clock", 0x2005},
}};
}  // namespace

std::optional<std::uint32_t> parse_type(std::string_view text) {
    for (const auto& n : k_names) {
        if (n.name == text) return n.type;
    }
    int base = 10;
    if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
        text.remove_prefix(2);
        base = 16;
    }
    std::uint32_t value = 0;
    const char* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, value, base);
    if (text.empty() || ec != std::errc{} || ptr != end) return std::nullopt;
    return value;
}

std::string_view type_name(std::uint32_t type) {
    for (const auto& n : k_names) {
        if (n.type == type) return n.name;
    }
    return {};
}

}  // namespace hmk::msg
