// SPDX-License-Identifier: Apache-2.0
#include "hmk/platform/process.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/sched.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

extern char** environ;

namespace hmk::platform {
namespace {

constexpr int k_first_fd = 3;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool k_sanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool k_sanitized = true;
#else
constexpr bool k_sanitized = false;
#endif
#else
constexpr bool k_sanitized = false;
#endif
constexpr int k_parking_fd = 200;  // fds are moved up here first so dup2 never clobbers one
constexpr int k_lifeline_fd = k_parking_fd - 1;

// A pipe whose write end only this process holds (close-on-exec): a child
// that sees it hung up knows its parent process is gone.
int lifeline_read_end() {
    static const int fd = [] {
        int fds[2] = {-1, -1};
        if (pipe2(fds, O_CLOEXEC) != 0) return -1;
        return fds[0];  // the write end stays open, unused, for the life of the process
    }();
    return fd;
}

// Runs in the child between clone3 and execve. The parent may have many
// threads, so only raw system calls here: no allocation, no locks, no glibc
// wrappers that assume a thread list (setresuid would try to signal threads
// that exist only in the parent).
/// What a child in a user namespace of its own writes into its maps: the
/// parent's uid and gid, the only ones an unprivileged process may map (a
/// nested namespace, and file ownership, need its uid mapped).
struct IdMaps {
    bool wanted = false;
    char uid[48] = {};
    char gid[48] = {};
};

void write_own(const char* path, const char* text) {
    const long fd = syscall(SYS_openat, AT_FDCWD, path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return;
    syscall(SYS_write, fd, text, std::strlen(text));
    syscall(SYS_close, fd);
}

[[noreturn]] void child_main(const SpawnOptions& o, char* const* argv, bool as_root, int lifeline,
                             const IdMaps& maps) {
    // Right after the clone it holds every capability in its new user
    // namespace, so it maps itself (before the capabilities go below).
    if (maps.wanted) {
        write_own("/proc/self/setgroups", "deny");
        write_own("/proc/self/uid_map", maps.uid);
        write_own("/proc/self/gid_map", maps.gid);
    }
    const int n = static_cast<int>(o.fds.size());
    if (lifeline >= 0 && syscall(SYS_dup2, lifeline, k_lifeline_fd) < 0)
        syscall(SYS_exit_group, 124);
    for (int i = 0; i < n; ++i) {
        if (syscall(SYS_dup2, o.fds[static_cast<std::size_t>(i)], k_parking_fd + i) < 0)
            syscall(SYS_exit_group, 120);
    }
    for (int j = 0; j < 3; ++j) {
        if (o.stdio[j] >= 0 && syscall(SYS_dup2, o.stdio[j], k_parking_fd + n + j) < 0)
            syscall(SYS_exit_group, 120);
    }
    for (int j = 0; j < 3; ++j) {
        if (o.stdio[j] >= 0 && syscall(SYS_dup2, k_parking_fd + n + j, j) < 0)
            syscall(SYS_exit_group, 121);
    }
    for (int i = 0; i < n; ++i) {
        if (syscall(SYS_dup2, k_parking_fd + i, k_first_fd + i) < 0) syscall(SYS_exit_group, 121);
    }
    // Everything else goes: the child holds only stdio and what it was given
    // (and the lifeline, until it is checked below).
    syscall(SYS_close_range, k_first_fd + n, k_lifeline_fd - 1, 0);
    syscall(SYS_close_range, k_lifeline_fd + 1, ~0u, 0);
    if (o.limits.address_space != 0 && !k_sanitized) {
        const rlimit r{o.limits.address_space, o.limits.address_space};
        syscall(SYS_setrlimit, RLIMIT_AS, &r);
    }
    if (o.limits.open_files != 0) {
        const rlimit r{o.limits.open_files, o.limits.open_files};
        syscall(SYS_setrlimit, RLIMIT_NOFILE, &r);
    }
    const rlimit no_core{0, 0};
    syscall(SYS_setrlimit, RLIMIT_CORE, &no_core);
    // Mount events stay inside the child's mount namespace (if it has one).
    syscall(SYS_mount, nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr);
    // No capability can ever come back: not through the bounding set, not
    // as an ambient one (a capability the kernel does not know: EINVAL).
    for (unsigned long cap = 0; cap <= 63; ++cap) syscall(SYS_prctl, PR_CAPBSET_DROP, cap, 0, 0, 0);
    syscall(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (as_root && o.drop_privileges) {
        syscall(SYS_setgroups, 0, nullptr);
        if (syscall(SYS_setresgid, 65534, 65534, 65534) != 0) syscall(SYS_exit_group, 122);
        if (syscall(SYS_setresuid, 65534, 65534, 65534) != 0) syscall(SYS_exit_group, 123);
    }
    // And none is held now: permitted, effective and inheritable all empty
    // (execve would hand inheritable ones to a root program).
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct none[2] = {};
    if (syscall(SYS_capset, &header, none) != 0) syscall(SYS_exit_group, 126);
    // Die with the parent. Last, because a change of credentials clears it;
    // and had the parent died before this, its lifeline is hung up already.
    syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (lifeline >= 0) {
        pollfd p{k_lifeline_fd, POLLIN, 0};
        const timespec now{0, 0};
        if (syscall(SYS_ppoll, &p, 1, &now, nullptr, 0) != 0) syscall(SYS_exit_group, 125);
        syscall(SYS_close, k_lifeline_fd);
    }
    syscall(SYS_execve, o.program.c_str(), argv, environ);
    syscall(SYS_exit_group, 127);
    __builtin_unreachable();
}

long clone3_pidfd(std::uint64_t flags, int* pidfd) {
    clone_args args{};
    args.flags = flags | CLONE_PIDFD;
    args.pidfd = reinterpret_cast<std::uint64_t>(pidfd);
    args.exit_signal = SIGCHLD;
    return syscall(SYS_clone3, &args, sizeof(args));
}

}  // namespace

Result<Child, std::string> spawn(const SpawnOptions& o) {
    std::vector<char*> argv;
    for (const auto& a : o.argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const bool as_root = geteuid() == 0;

    struct Layer {
        std::uint64_t flag;
        const char* name;
    };
    std::vector<Layer> wanted;
    if (o.namespaces) {
        if (!as_root) wanted.push_back({CLONE_NEWUSER, "user namespace"});
        wanted.push_back({CLONE_NEWPID, "pid namespace"});
        wanted.push_back({CLONE_NEWNET, "net namespace"});
        wanted.push_back({CLONE_NEWIPC, "ipc namespace"});
        wanted.push_back({CLONE_NEWNS, "mount namespace"});
        wanted.push_back({CLONE_NEWUTS, "UTS namespace"});
        wanted.push_back({CLONE_NEWCGROUP, "cgroup namespace"});
        wanted.push_back({CLONE_NEWTIME, "time namespace"});
    }
    const int lifeline = lifeline_read_end();
    Child child;
    IdMaps maps;
    std::snprintf(maps.uid, sizeof(maps.uid), "%u %u 1", geteuid(), geteuid());
    std::snprintf(maps.gid, sizeof(maps.gid), "%u %u 1", getegid(), getegid());
    std::uint64_t flags = 0;
    for (const Layer& l : wanted) flags |= l.flag;
    int pidfd = -1;
    long pid = clone3_pidfd(flags, &pidfd);
    if (pid < 0 && flags != 0) {
        // Probe layer by layer which namespaces this machine refuses.
        flags = 0;
        for (const Layer& l : wanted) {
            int probe_fd = -1;
            const long p = clone3_pidfd(l.flag, &probe_fd);
            if (p == 0) syscall(SYS_exit_group, 0);
            if (p > 0) {
                flags |= l.flag;
                siginfo_t info{};
                waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(probe_fd), &info, WEXITED);
                close(probe_fd);
            } else {
                child.skipped.push_back(std::string(l.name) + ": " + std::strerror(errno));
            }
        }
        pid = clone3_pidfd(flags, &pidfd);
    }
    if (pid < 0) return Err{std::string("clone3: ") + std::strerror(errno)};
    if (pid == 0) {
        maps.wanted = (flags & CLONE_NEWUSER) != 0;
        child_main(o, argv.data(), as_root, lifeline, maps);
    }

    child.pid = static_cast<pid_t>(pid);
    if (k_sanitized && o.limits.address_space != 0) {
        child.skipped.push_back(
            "address-space limit: a sanitizer build reserves terabytes of shadow memory");
    }
    child.pidfd = UniqueFd(pidfd);
    child.layers.push_back("pidfd");
    child.layers.push_back("parent-death signal");
    if ((o.limits.address_space != 0 && !k_sanitized) || o.limits.open_files != 0)
        child.layers.push_back("rlimits");
    for (const Layer& l : wanted) {
        if ((flags & l.flag) != 0) child.layers.push_back(l.name);
    }
    child.layers.push_back("no capabilities");
    if (as_root && o.drop_privileges) child.layers.push_back("runs as nobody");
    if (as_root && !o.drop_privileges) child.layers.push_back("keeps uid 0, with no capability");
    return child;
}

std::string ExitStatus::describe() const {
    if (exited) return "exited with status " + std::to_string(code);
    const char* name = sigabbrev_np(code);
    std::string text =
        std::string("killed by SIG") + (name != nullptr ? name : std::to_string(code).c_str());
    if (code == SIGSYS) text += " (a forbidden system call)";
    return text;
}

std::optional<ExitStatus> try_reap(const UniqueFd& pidfd) {
    siginfo_t info{};
    if (waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd.get()), &info,
               WEXITED | WNOHANG) != 0) {
        return std::nullopt;
    }
    if (info.si_pid == 0) return std::nullopt;  // still running
    ExitStatus s;
    s.exited = info.si_code == CLD_EXITED;
    s.code = info.si_status;
    return s;
}

namespace {

// The parent of `pid` (0 if it is gone or a zombie), from /proc/PID/stat.
pid_t parent_pid(pid_t pid) {
    char path[64];
    std::snprintf(path, sizeof(path), "/proc/%d/stat", static_cast<int>(pid));
    FILE* f = std::fopen(path, "re");
    if (f == nullptr) return 0;
    char buf[1024];
    const std::size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
    std::fclose(f);
    buf[n] = '\0';
    const char* close = std::strrchr(buf, ')');
    if (close == nullptr) return 0;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(close + 1, " %c %d", &state, &ppid) != 2 || state == 'Z') return 0;
    return static_cast<pid_t>(ppid);
}

}  // namespace

pid_t find_descendant(pid_t ancestor, const std::vector<std::string>& argv) {
    DIR* proc = opendir("/proc");
    if (proc == nullptr) return 0;
    pid_t found = 0;
    while (const dirent* e = readdir(proc)) {
        char* end = nullptr;
        const long pid = std::strtol(e->d_name, &end, 10);
        if (end == e->d_name || *end != '\0' || pid <= 1) continue;
        char path[64];
        std::snprintf(path, sizeof(path), "/proc/%ld/cmdline", pid);
        FILE* f = std::fopen(path, "re");
        if (f == nullptr) continue;
        std::string text(4096, '\0');
        text.resize(std::fread(text.data(), 1, text.size(), f));
        std::fclose(f);
        std::size_t at = 0;
        bool match = true;
        for (const std::string& a : argv) {
            if (text.compare(at, a.size() + 1, a.c_str(), a.size() + 1) != 0) {
                match = false;
                break;
            }
            at += a.size() + 1;
        }
        if (!match) continue;
        pid_t up = static_cast<pid_t>(pid);
        for (int depth = 0; depth < 64 && up > 1; ++depth) {
            up = parent_pid(up);
            if (up == ancestor) break;
        }
        if (up == ancestor) {
            found = static_cast<pid_t>(pid);
            break;
        }
    }
    closedir(proc);
    return found;
}

void kill_child(const UniqueFd& pidfd) {
    syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0);
}

}  // namespace hmk::platform
