// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "hmk/platform/shm.hpp"
#include "hmk/result.hpp"

namespace hmk::platform {

/// Resource limits applied to a child before it runs (0 = leave as is).
struct ChildLimits {
    std::uint64_t address_space = 0;  ///< RLIMIT_AS, bytes
    std::uint64_t open_files = 0;     ///< RLIMIT_NOFILE
};

struct SpawnOptions {
    std::string program;            ///< absolute path of the executable
    std::vector<std::string> argv;  ///< argv[0] first
    std::vector<int> fds;           ///< handed to the child as fds 3, 4, 5, ... in order
    int stdio[3] = {-1, -1, -1};    ///< the child's stdin, stdout, stderr (-1: ours)
    ChildLimits limits;
    /// Try new pid, net, ipc, mount, UTS, cgroup and time (and user, if not
    /// root) namespaces.
    bool namespaces = true;
    bool drop_privileges = true;  ///< if root: run the child as nobody (65534)
};

/// A started child. The pidfd reports its exit (readable) and signals it
/// without pid reuse races.
struct Child {
    pid_t pid = -1;
    UniqueFd pidfd;
    std::vector<std::string> layers;   ///< isolation layers in force, e.g. "pid namespace"
    std::vector<std::string> skipped;  ///< layers this machine refused, with the reason
};

/// Starts `options.program` in a new process (clone3 with CLONE_PIDFD): it
/// dies with the calling thread (PR_SET_PDEATHSIG), gets the limits, the
/// namespaces this machine allows (each refused one is reported in `skipped`,
/// not fatal), no other fds than stdio and `fds`, an empty capability
/// bounding set, and, when we are root, nobody's uid.
/// Must be called from a thread that outlives the child.
Result<Child, std::string> spawn(const SpawnOptions& options);

/// Exit of a child, decoded: "exited with status 3", "killed by SIGSEGV".
struct ExitStatus {
    bool exited = false;  ///< normal exit (else: killed by a signal)
    int code = 0;         ///< exit status or signal number
    std::string describe() const;
};

/// Reaps the child behind `pidfd` if it has ended; nullopt while it runs.
std::optional<ExitStatus> try_reap(const UniqueFd& pidfd);
/// Sends SIGKILL through the pidfd.
void kill_child(const UniqueFd& pidfd);

/// A live process below `ancestor` (its child, grandchild, ...) whose
/// command line begins with `argv`, as this process's /proc shows it
/// (nested pid namespaces included): its pid here, or 0.
pid_t find_descendant(pid_t ancestor, const std::vector<std::string>& argv);

}  // namespace hmk::platform
