// SPDX-License-Identifier: Apache-2.0
#include "hmk/platform/sandbox.hpp"

#include <linux/landlock.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

// Debian 12's kernel headers know Landlock ABI 2; the bits are stable kernel ABI.
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif

namespace hmk::platform {
namespace {

int landlock_abi() {
    const long abi =
        syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
    return abi < 0 ? -static_cast<int>(errno) : static_cast<int>(abi);
}

// Every file-system right the given Landlock ABI knows.
std::uint64_t fs_rights(int abi) {
    std::uint64_t rights = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1;  // ABI 1: bits 0..12
    if (abi >= 2) rights |= LANDLOCK_ACCESS_FS_REFER;
    if (abi >= 3) rights |= LANDLOCK_ACCESS_FS_TRUNCATE;
    return rights;
}

// What a grant allows, in the rights this ABI knows (a file takes file rights only).
std::uint64_t grant_rights(const PathGrant& g, int abi) {
    std::uint64_t r = LANDLOCK_ACCESS_FS_READ_FILE;
    if (g.write) {
        r |= LANDLOCK_ACCESS_FS_WRITE_FILE;
        if (abi >= 3) r |= LANDLOCK_ACCESS_FS_TRUNCATE;
    }
    if (g.dir) {
        r |= LANDLOCK_ACCESS_FS_READ_DIR;
        if (g.write) {
            r |= LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
                 LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG;
            if (abi >= 2) r |= LANDLOCK_ACCESS_FS_REFER;
        }
    }
    return r;
}

class Fd {
  public:
    explicit Fd(int fd = -1) : m_fd(fd) {}
    Fd(Fd&& o) noexcept : m_fd(o.m_fd) { o.m_fd = -1; }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    Fd& operator=(Fd&&) = delete;
    ~Fd() {
        if (m_fd >= 0) close(m_fd);
    }
    int get() const { return m_fd; }

  private:
    int m_fd;
};

// Opens (O_PATH) what a grant names, making it first if it may. Never
// follows a symbolic link in the last component.
std::string open_grant(const PathGrant& g, std::vector<Fd>& out) {
    struct stat st {};
    if (lstat(g.path.c_str(), &st) != 0) {
        if (errno != ENOENT || !g.create) return "grant " + g.path + ": " + std::strerror(errno);
        if (g.dir) {
            std::error_code ec;
            std::filesystem::create_directories(g.path, ec);
            if (ec) return "grant " + g.path + ": cannot make the directory: " + ec.message();
        } else {
            std::error_code ec;
            std::filesystem::create_directories(std::filesystem::path(g.path).parent_path(), ec);
            const int fd = open(g.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
            if (fd < 0 && errno != EEXIST)
                return "grant " + g.path + ": cannot make the file: " + std::strerror(errno);
            if (fd >= 0) close(fd);
        }
    }
    Fd fd(open(g.path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (fd.get() < 0 || fstat(fd.get(), &st) != 0)
        return "grant " + g.path + ": " + std::strerror(errno);
    if (S_ISLNK(st.st_mode)) return "grant " + g.path + ": a symbolic link (refused)";
    if (g.dir && !S_ISDIR(st.st_mode)) return "grant " + g.path + ": not a directory";
    if (!g.dir && !S_ISREG(st.st_mode)) return "grant " + g.path + ": not a regular file";
    out.push_back(std::move(fd));
    return {};
}

std::string apply_landlock(int abi, std::span<const PathGrant> grants, const std::vector<Fd>& fds) {
    landlock_ruleset_attr attr{};
    attr.handled_access_fs = fs_rights(abi);
    const long fd = syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0);
    if (fd < 0) return std::string("landlock_create_ruleset: ") + std::strerror(errno);
    // No rules but the grants: nothing under any other path is reachable.
    for (std::size_t i = 0; i < grants.size(); ++i) {
        landlock_path_beneath_attr rule{};
        rule.allowed_access = grant_rights(grants[i], abi);
        rule.parent_fd = fds[i].get();
        if (syscall(SYS_landlock_add_rule, fd, LANDLOCK_RULE_PATH_BENEATH, &rule, 0) != 0) {
            const int err = errno;
            close(static_cast<int>(fd));
            return "landlock_add_rule " + grants[i].path + ": " + std::strerror(err);
        }
    }
    const long rc = syscall(SYS_landlock_restrict_self, fd, 0);
    const int err = errno;
    close(static_cast<int>(fd));
    if (rc != 0) return std::string("landlock_restrict_self: ") + std::strerror(err);
    return {};
}

std::string apply_seccomp(bool files) {
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
    if (ctx == nullptr) return "seccomp_init failed";
    // Messages (futex, eventfd writes), time, memory, and dying.
    const int allowed[] = {
        SCMP_SYS(read),
        SCMP_SYS(write),
        SCMP_SYS(writev),
        SCMP_SYS(close),
        SCMP_SYS(futex),
        SCMP_SYS(brk),
        SCMP_SYS(munmap),
        SCMP_SYS(madvise),
        SCMP_SYS(mremap),
        SCMP_SYS(clock_gettime),
        SCMP_SYS(clock_nanosleep),
        SCMP_SYS(nanosleep),
        SCMP_SYS(sched_yield),
        SCMP_SYS(getpid),
        SCMP_SYS(gettid),
        SCMP_SYS(tgkill),
        SCMP_SYS(rt_sigreturn),
        SCMP_SYS(rt_sigprocmask),
        SCMP_SYS(rt_sigaction),
        SCMP_SYS(restart_syscall),
        SCMP_SYS(exit),
        SCMP_SYS(exit_group),
        SCMP_SYS(getrandom),
        SCMP_SYS(fstat),
        SCMP_SYS(newfstatat),
        SCMP_SYS(lseek),
        SCMP_SYS(epoll_wait),
        SCMP_SYS(ppoll),
        // A pipe reaches nothing outside the process; sanitizers use one to
        // probe memory, and an alternate signal stack to report faults.
        SCMP_SYS(pipe2),
        SCMP_SYS(sigaltstack),
    };
    // With grants (and Landlock holding them): opening and using files.
    const int file_calls[] = {
        SCMP_SYS(openat),     SCMP_SYS(open),       SCMP_SYS(pread64),  SCMP_SYS(pwrite64),
        SCMP_SYS(preadv),     SCMP_SYS(pwritev),    SCMP_SYS(fsync),    SCMP_SYS(fdatasync),
        SCMP_SYS(ftruncate),  SCMP_SYS(fallocate),  SCMP_SYS(statx),    SCMP_SYS(getdents64),
        SCMP_SYS(mkdir),      SCMP_SYS(mkdirat),    SCMP_SYS(unlink),   SCMP_SYS(unlinkat),
        SCMP_SYS(rmdir),      SCMP_SYS(rename),     SCMP_SYS(renameat), SCMP_SYS(renameat2),
        SCMP_SYS(fcntl),      SCMP_SYS(flock),      SCMP_SYS(fstatfs),  SCMP_SYS(access),
        SCMP_SYS(faccessat),  SCMP_SYS(faccessat2), SCMP_SYS(stat),     SCMP_SYS(lstat),
        SCMP_SYS(readlinkat), SCMP_SYS(readlink),
    };
    int rc = 0;
    for (int nr : allowed) rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
    if (files) {
        for (int nr : file_calls) rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
    }
    // Memory may be mapped and protected, but never made executable.
    // (libseccomp's SCMP_A* macros are C compound literals: spelled out here.)
    const scmp_arg_cmp no_exec[] = {{2, SCMP_CMP_MASKED_EQ, PROT_EXEC, 0}};
    const scmp_arg_cmp tcgets[] = {{1, SCMP_CMP_EQ, TCGETS, 0}};
    rc |= seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1, no_exec);
    rc |= seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1, no_exec);
    // stdio asks whether stderr is a terminal.
    rc |= seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1, tcgets);
    if (rc != 0) {
        seccomp_release(ctx);
        return "seccomp_rule_add failed";
    }
    rc = seccomp_load(ctx);
    seccomp_release(ctx);
    if (rc != 0) return std::string("seccomp_load: ") + std::strerror(-rc);
    return {};
}

}  // namespace

SandboxResult close_sandbox(std::span<const PathGrant> grants) {
    SandboxResult result;
    std::vector<Fd> fds;
    for (const PathGrant& g : grants) {
        if (std::string err = open_grant(g, fds); !err.empty()) {
            result.error = std::move(err);
            return result;
        }
    }
    SandboxReport& r = result.report;
    // NO_NEW_PRIVS first: Landlock and an unprivileged seccomp filter need it.
    const bool nnp = prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0;
    const int abi = landlock_abi();
    bool landlocked = false;
    if (abi < 0) {
        r.skipped.push_back(std::string("landlock: not offered by this kernel (") +
                            std::strerror(-abi) + ")");
    } else if (const std::string err = apply_landlock(abi, grants, fds); !err.empty()) {
        r.skipped.push_back("landlock: " + err);
    } else {
        landlocked = true;
        r.active.push_back(grants.empty()
                               ? "landlock (no file access, ABI " + std::to_string(abi) + ")"
                               : "landlock (its " + std::to_string(grants.size()) +
                                     (grants.size() == 1 ? " grant" : " grants") + " only, ABI " +
                                     std::to_string(abi) + ")");
    }
    if (!grants.empty() && !landlocked)
        r.skipped.push_back("file access: its grants need Landlock, so no file can be opened");
    fds.clear();
    if (nnp) {
        r.active.push_back("no_new_privs");
    } else {
        r.skipped.push_back(std::string("no_new_privs: ") + std::strerror(errno));
    }
    if (const std::string err = apply_seccomp(landlocked && !grants.empty()); !err.empty()) {
        r.skipped.push_back("seccomp: " + err);
    } else {
        r.active.push_back("seccomp allowlist");
    }
    return result;
}

}  // namespace hmk::platform
