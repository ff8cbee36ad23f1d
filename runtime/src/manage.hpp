// SPDX-License-Identifier: Apache-2.0
// The text of management messages (msg::k_manage), owner to owner down the
// tree: "kill ID", "stats ID"; answers "ok", "error REASON" and
// "stats KEY=VALUE ...".
#pragma once

#include <charconv>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

#include "hmk/runtime/system.hpp"

namespace hmk::detail {

struct ManageRequest {
    enum class Op : std::uint8_t { kill, stats };
    Op op = Op::stats;
    ModuleId id = k_no_module;
};

inline std::string manage_text(ManageRequest::Op op, ModuleId id) {
    return std::string(op == ManageRequest::Op::kill ? "kill " : "stats ") + std::to_string(id);
}

inline std::optional<ManageRequest> parse_manage(std::string_view text) {
    ManageRequest r;
    std::string_view rest;
    if (text.rfind("kill ", 0) == 0) {
        r.op = ManageRequest::Op::kill;
        rest = text.substr(5);
    } else if (text.rfind("stats ", 0) == 0) {
        r.op = ManageRequest::Op::stats;
        rest = text.substr(6);
    } else {
        return std::nullopt;
    }
    const auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), r.id);
    if (ec != std::errc{} || end != rest.data() + rest.size()) return std::nullopt;
    return r;
}

/// The counters of a module, as "stats state=1 rx=... pid=...".
inline std::string encode_stats(const ModuleStats& s) {
    std::ostringstream out;
    out << "stats state=" << static_cast<unsigned>(s.state) << " rx=" << s.rx << " tx=" << s.tx
        << " seen=" << s.seen << " fwd_up=" << s.fwd_up << " fwd_down=" << s.fwd_down
        << " denied=" << s.denied << " lost=" << s.lost << " invalid=" << s.invalid
        << " send_errors=" << s.send_errors << " restarts=" << s.restarts << " epoch=" << s.epoch
        << " caught_up=" << s.caught_up << " suppressed=" << s.suppressed
        << " snapshots=" << s.snapshots << " heartbeat=" << s.heartbeat << " cursor=" << s.cursor
        << " read_ahead=" << s.read_ahead << " waited_ns=" << s.waited_ns << " pid=" << s.pid
        << " handoff=" << static_cast<unsigned>(s.handoff);
    return out.str();
}

inline std::optional<ModuleStats> decode_stats(std::string_view text) {
    if (text.rfind("stats ", 0) != 0) return std::nullopt;
    ModuleStats s;
    std::istringstream in{std::string(text.substr(6))};
    std::string field;
    while (in >> field) {
        const auto eq = field.find('=');
        if (eq == std::string::npos) return std::nullopt;
        const std::string key = field.substr(0, eq);
        std::int64_t v = 0;
        const char* b = field.data() + eq + 1;
        const auto [end, ec] = std::from_chars(b, field.data() + field.size(), v);
        if (ec != std::errc{} || v < 0) return std::nullopt;
        const auto u = static_cast<std::uint64_t>(v);
        if (key == "state") {
            if (v > static_cast<std::int64_t>(ModuleState::recovering)) return std::nullopt;
            s.state = static_cast<ModuleState>(v);
        } else if (key == "rx")
            s.rx = u;
        else if (key == "tx")
            s.tx = u;
        else if (key == "seen")
            s.seen = u;
        else if (key == "fwd_up")
            s.fwd_up = u;
        else if (key == "fwd_down")
            s.fwd_down = u;
        else if (key == "denied")
            s.denied = u;
        else if (key == "lost")
            s.lost = u;
        else if (key == "invalid")
            s.invalid = u;
        else if (key == "send_errors")
            s.send_errors = u;
        else if (key == "restarts")
            s.restarts = u;
        else if (key == "epoch")
            s.epoch = u;
        else if (key == "caught_up")
            s.caught_up = u;
        else if (key == "suppressed")
            s.suppressed = u;
        else if (key == "snapshots")
            s.snapshots = u;
        else if (key == "heartbeat")
            s.heartbeat = u;
        else if (key == "cursor")
            s.cursor = u;
        else if (key == "read_ahead")
            s.read_ahead = u;
        else if (key == "waited_ns")
            s.waited_ns = u;
        else if (key == "pid")
            s.pid = v;
        else if (key == "handoff")
            s.handoff = static_cast<std::uint8_t>(v & 0xff);
    }
    return s;
}

}  // namespace hmk::detail
