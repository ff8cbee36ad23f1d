// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "hmk/runtime/config.hpp"
#include "hmk/runtime/system.hpp"

namespace hmk {

/// One command of a script (docs/scripts.md), with the line it came from.
struct ScriptCommand {
    enum class Op : std::uint8_t {
        send,
        expect_reply,
        expect_reply_contains,
        expect_no_reply,
        expect_stat,
        expect_bus,
        expect_state,
        wait,
        stats,
        timeout,
        print,
        kill,
        snapshot,
    };
    Op op{};
    std::uint32_t line = 0;
    std::string path;  ///< send: destination ("" = broadcast); expect: module or bus
    std::string from;  ///< send: sending module ("" = the root)
    Scope scope = Scope::bus;
    std::uint32_t type = 0;
    std::string payload;       ///< send payload, expected reply text, or print text
    std::string key;           ///< expect stat/bus: counter name; expect state: state
    std::string comparison;    ///< == != < <= > >=
    std::uint64_t number = 0;  ///< expect: the value compared to; wait/timeout: ms
};

struct Script {
    std::string file;
    std::vector<ScriptCommand> commands;
};

/// Parses a script; errors name FILE:LINE:COL. Paths are checked against `topology`.
Result<Script, ConfigError> parse_script(std::string_view text, const std::string& file_name,
                                         const Topology& topology);
Result<Script, ConfigError> load_script_file(const std::string& path, const Topology& topology);

/// Runs `script` against a started system, printing what it does through `logger`.
/// Stops at the first failed expectation. Returns the number of failures (0 or 1).
int run_script(System& system, const Script& script, Logger& logger);

/// The module and bus counters as an aligned text table.
std::string format_stats(const System& system);

}  // namespace hmk
