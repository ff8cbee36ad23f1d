// SPDX-License-Identifier: Apache-2.0
// hmk shell (docs/shell.md).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace hmk::tools {

struct ShellOptions {
    std::string socket;                ///< the system's control socket
    std::string service;               ///< the shell service's path ("": found by kind)
    std::uint32_t timeout_ms = 10000;  ///< how long a command waits for its answer
    /// `journal verify|dump|stats|snapshots DIR [...]`: the words after
    /// `journal`; its exit status (hmk journal, run in this process).
    std::function<int(const std::vector<std::string>&)> journal;
};

/// Interactive on a terminal (readline, history in ~/.hmk_history); reads
/// commands from stdin otherwise. Exit 0, or 1 if a command failed (stdin).
int run_shell(const ShellOptions& o);

}  // namespace hmk::tools
