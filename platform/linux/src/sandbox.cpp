// SPDX-License-Identifier: Apache-2.0
#include "hmk/platform/sandbox.hpp"

#include <linux/landlock.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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

std::string apply_landlock(int abi) {
    landlock_ruleset_attr attr{};
    attr.handled_access_fs = fs_rights(abi);
    const long fd = syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0);
    if (fd < 0) return std::string("landlock_create_ruleset: ") + std::strerror(errno);
    // No rules: nothing under any path is reachable.
    const long rc = syscall(SYS_landlock_restrict_self, fd, 0);
    const int err = errno;
    close(static_cast<int>(fd));
    if (rc != 0) return std::string("landlock_restrict_self: ") + std::strerror(err);
    return {};
}

std::string apply_seccomp() {
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
    int rc = 0;
    for (int nr : allowed) rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
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

SandboxReport close_sandbox() {
    SandboxReport r;
    // NO_NEW_PRIVS first: Landlock and an unprivileged seccomp filter need it.
    const bool nnp = prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0;
    const int abi = landlock_abi();
    if (abi < 0) {
        r.skipped.push_back(std::string("landlock: not offered by this kernel (") +
                            std::strerror(-abi) + ")");
    } else if (const std::string err = apply_landlock(abi); !err.empty()) {
        r.skipped.push_back("landlock: " + err);
    } else {
        r.active.push_back("landlock (no file access, ABI " + std::to_string(abi) + ")");
    }
    if (nnp) {
        r.active.push_back("no_new_privs");
    } else {
        r.skipped.push_back(std::string("no_new_privs: ") + std::strerror(errno));
    }
    if (const std::string err = apply_seccomp(); !err.empty()) {
        r.skipped.push_back("seccomp: " + err);
    } else {
        r.active.push_back("seccomp allowlist");
    }
    return r;
}

}  // namespace hmk::platform
