// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <string>
#include <vector>

namespace hmk::platform {

/// What a sandbox step did: layers in force, and layers skipped with why.
struct SandboxReport {
    std::vector<std::string> active;
    std::vector<std::string> skipped;
};

/// Closes the sandbox of the calling process, which must be single-threaded
/// and done with set-up (shared memory mapped, plugin loaded): Landlock with
/// no file-system access at all, then NO_NEW_PRIVS, then a seccomp allowlist
/// (the system calls a module host needs for messages, timers and memory;
/// anything else kills the process with SIGSYS). Layers this kernel lacks
/// are skipped and reported. Irreversible.
SandboxReport close_sandbox();

}  // namespace hmk::platform
