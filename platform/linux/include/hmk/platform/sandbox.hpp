// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <span>
#include <string>
#include <vector>

namespace hmk::platform {

/// What a sandbox step did: layers in force, and layers skipped with why.
struct SandboxReport {
    std::vector<std::string> active;
    std::vector<std::string> skipped;
};

/// A file or directory the sandboxed process may still use.
struct PathGrant {
    std::string path;  ///< absolute
    bool dir = false;
    bool write = false;   ///< read and write (a directory: make and remove entries too)
    bool create = false;  ///< made (an empty file, or the directory) if missing
};

/// Closes the sandbox of the calling process, which must be single-threaded
/// and done with set-up (shared memory mapped, plugin loaded): Landlock with
/// no file-system access but `grants`, then NO_NEW_PRIVS, then a seccomp
/// allowlist (the system calls a module host needs for messages, timers and
/// memory, and with grants those that open and use files; anything else
/// kills the process with SIGSYS). Layers this kernel lacks are skipped and
/// reported; without Landlock, grants are not honoured (no file system call
/// is allowed). Irreversible. A grant that cannot be opened (missing, a
/// symbolic link, not of its type, not creatable) closes nothing and
/// returns its reason in `error`.
struct SandboxResult {
    SandboxReport report;
    std::string error;
};
SandboxResult close_sandbox(std::span<const PathGrant> grants = {});

/// The sandbox of a gateway's own process, which starts its children: as
/// close_sandbox, and besides `grants` (its subtree's) it may read the
/// files it has mapped (its executable, libraries and plugins, which its
/// children load too) and execute `program` (the module host) and nothing
/// else; its seccomp allowlist adds what spawning, watching and feeding
/// children takes (clone3, execve, memfd, pidfd, epoll, eventfd, prctl,
/// setrlimit, namespaces). Threads it starts afterwards inherit it all.
SandboxResult close_gateway_sandbox(const std::string& program,
                                    std::span<const PathGrant> grants = {});

}  // namespace hmk::platform
