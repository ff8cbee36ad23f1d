// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "hmk/runtime/config.hpp"
#include "hmk/runtime/system.hpp"

namespace hmk {

/// One command of a script (docs/scripts.md), with the line it came from.
struct ScriptCommand {
    enum class Op : std::uint8_t {
        send,
        call,
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
        tree,
        swap,
        move,
        tap,
    };
    Op op{};
    std::uint32_t line = 0;
    std::string path;  ///< send: destination ("" = broadcast); expect: module or bus
    std::string from;  ///< send: sending module ("" = the root)
    Scope scope = Scope::bus;
    std::uint32_t type = 0;
    std::string payload;        ///< send payload, expected reply text, or print text
    std::string key;            ///< expect stat/bus: counter name; expect state: state
    std::string comparison;     ///< == != < <= > >=
    std::uint64_t number = 0;   ///< expect: the value compared to; wait/timeout: ms;
                                ///< swap: the deadline, ms
    std::string kind;           ///< swap: the replica's kind
    std::uint32_t version = 0;  ///< swap: its version (0: the newest)
    std::string to;             ///< move: the new parent
    std::string isolation;      ///< move: "inproc", "process", or "" (the same)
};

struct Script {
    std::string file;
    std::vector<ScriptCommand> commands;
};

/// Parses a script; errors name FILE:LINE:COL. Paths are checked against `topology`.
Result<Script, ConfigError> parse_script(std::string_view text, const std::string& file_name,
                                         const Topology& topology);
Result<Script, ConfigError> load_script_file(const std::string& path, const Topology& topology);

/// What one command did.
struct CommandOutcome {
    bool ok = true;
    std::string text;    ///< what it did (a log line), or why it failed
    std::string output;  ///< what it prints (stats, tree, print), if anything
};

/// Runs script commands against a started system, one at a time, and keeps
/// what carries from one to the next: the timeout of expectations and the
/// last request sent (for `expect reply`). Scripts and the control
/// endpoint (docs/control.md) both run their commands through one.
class CommandSession {
  public:
    explicit CommandSession(System& system) : m_system(system) {}
    CommandOutcome run(const ScriptCommand& command);
    /// Any thread: a command waiting now (or later) gives up at once.
    void cancel();

  private:
    template <typename F>
    bool poll(F&& holds);
    bool sleep(std::chrono::milliseconds duration);

    System& m_system;
    std::chrono::milliseconds m_timeout{2000};
    std::uint64_t m_last_correlation = 0;
    std::string m_last_send;
    std::mutex m_mutex;
    std::condition_variable m_cv;
    std::atomic<bool> m_cancelled{false};
};

/// Runs `script` against a started system, printing what it does through `logger`.
/// Stops at the first failed expectation. Returns the number of failures (0 or 1).
int run_script(System& system, const Script& script, Logger& logger);

/// The module and bus counters as an aligned text table.
std::string format_stats(const System& system);

/// The running tree: each module with its kind, isolation, state, instance
/// number, restarts and process id.
std::string format_tree(const System& system);

}  // namespace hmk
