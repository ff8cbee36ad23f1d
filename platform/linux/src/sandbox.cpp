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
#include <link.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
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

/// One Landlock rule: what may be done at and beneath an opened path.
struct Rule {
    Fd fd;
    std::uint64_t rights = 0;
    std::string path;
};

std::string apply_landlock(int abi, const std::vector<Rule>& rules) {
    landlock_ruleset_attr attr{};
    attr.handled_access_fs = fs_rights(abi);
    const long fd = syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0);
    if (fd < 0) return std::string("landlock_create_ruleset: ") + std::strerror(errno);
    // No rules but these: nothing under any other path is reachable.
    for (const Rule& r : rules) {
        landlock_path_beneath_attr rule{};
        rule.allowed_access = r.rights;
        rule.parent_fd = r.fd.get();
        if (syscall(SYS_landlock_add_rule, fd, LANDLOCK_RULE_PATH_BENEATH, &rule, 0) != 0) {
            const int err = errno;
            close(static_cast<int>(fd));
            return "landlock_add_rule " + r.path + ": " + std::strerror(err);
        }
    }
    const long rc = syscall(SYS_landlock_restrict_self, fd, 0);
    const int err = errno;
    close(static_cast<int>(fd));
    if (rc != 0) return std::string("landlock_restrict_self: ") + std::strerror(err);
    return {};
}

enum class Profile : std::uint8_t { module, files, gateway };

std::string apply_seccomp(Profile profile) {
    const bool files = profile != Profile::module;
    const bool spawns = profile == Profile::gateway;
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
    // A gateway starts, watches and feeds its children (and what it allows,
    // a child's host may do before it closes its own, stricter, sandbox:
    // load its program and plugins, map them executable).
    const int spawn_calls[] = {
        SCMP_SYS(clone),
        SCMP_SYS(clone3),
        SCMP_SYS(execve),
        SCMP_SYS(execveat),
        SCMP_SYS(wait4),
        SCMP_SYS(waitid),
        SCMP_SYS(pidfd_open),
        SCMP_SYS(pidfd_send_signal),
        SCMP_SYS(memfd_create),
        SCMP_SYS(epoll_create1),
        SCMP_SYS(epoll_ctl),
        SCMP_SYS(epoll_pwait),
        SCMP_SYS(eventfd2),
        SCMP_SYS(poll),
        SCMP_SYS(dup),
        SCMP_SYS(dup2),
        SCMP_SYS(dup3),
        SCMP_SYS(close_range),
        SCMP_SYS(prctl),
        SCMP_SYS(setrlimit),
        SCMP_SYS(getrlimit),
        SCMP_SYS(prlimit64),
        SCMP_SYS(mount),
        SCMP_SYS(setgroups),
        SCMP_SYS(setresuid),
        SCMP_SYS(setresgid),
        SCMP_SYS(capget),
        SCMP_SYS(capset),
        SCMP_SYS(set_robust_list),
        SCMP_SYS(get_robust_list),
        SCMP_SYS(rseq),
        SCMP_SYS(set_tid_address),
        SCMP_SYS(arch_prctl),
        SCMP_SYS(sched_getaffinity),
        SCMP_SYS(getuid),
        SCMP_SYS(geteuid),
        SCMP_SYS(getgid),
        SCMP_SYS(getegid),
        SCMP_SYS(getppid),
        SCMP_SYS(getcwd),
        SCMP_SYS(uname),
        SCMP_SYS(sysinfo),
        SCMP_SYS(getpriority),
        SCMP_SYS(setpriority),
        SCMP_SYS(landlock_create_ruleset),
        SCMP_SYS(landlock_add_rule),
        SCMP_SYS(landlock_restrict_self),
        SCMP_SYS(seccomp),
        SCMP_SYS(statfs),
        // Sanitizer runtimes on a gateway's threads.
        SCMP_SYS(gettimeofday),
        SCMP_SYS(time),
    };
    int rc = 0;
    for (int nr : allowed) rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
    if (files) {
        for (int nr : file_calls) rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
    }
    if (spawns) {
        for (int nr : spawn_calls) rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
        // Its threads start after the filter, and inherit it; any already
        // there get it too.
        rc |= seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
    }
    // Memory may be mapped and protected, but never made executable.
    // (libseccomp's SCMP_A* macros are C compound literals: spelled out here.)
    const scmp_arg_cmp no_exec[] = {{2, SCMP_CMP_MASKED_EQ, PROT_EXEC, 0}};
    const scmp_arg_cmp tcgets[] = {{1, SCMP_CMP_EQ, TCGETS, 0}};
    // (A gateway's children load their program: the loader maps it executable.)
    rc |= seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), spawns ? 0 : 1, no_exec);
    rc |= seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), spawns ? 0 : 1, no_exec);
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

// The files of the shared objects this process has loaded (libraries,
// the loader, plugins), from the loader itself (no /proc needed: a child
// gateway's domain stacks on its parent's, which grants it no /proc read).
int add_object(dl_phdr_info* info, std::size_t /*size*/, void* data) {
    auto& out = *static_cast<std::vector<std::string>*>(data);
    if (info->dlpi_name != nullptr && info->dlpi_name[0] == '/') {
        std::string p(info->dlpi_name);
        if (std::find(out.begin(), out.end(), p) == out.end()) out.push_back(std::move(p));
    }
    return 0;
}

std::vector<std::string> loaded_files() {
    std::vector<std::string> out;
    dl_iterate_phdr(add_object, &out);
    return out;
}

SandboxResult close_with(std::span<const PathGrant> grants, const std::string* program) {
    SandboxResult result;
    std::vector<Fd> fds;
    for (const PathGrant& g : grants) {
        if (std::string err = open_grant(g, fds); !err.empty()) {
            result.error = std::move(err);
            return result;
        }
    }
    SandboxReport& r = result.report;
    const int abi = landlock_abi();
    std::vector<Rule> rules;
    for (std::size_t i = 0; i < grants.size(); ++i)
        rules.push_back({std::move(fds[i]), grant_rights(grants[i], abi), grants[i].path});
    if (program != nullptr) {
        // What it maps, and its children load, it may read; the module host
        // (and the loader that runs it) it may also execute. Nothing else.
        std::vector<std::string> files = loaded_files();
        files.push_back(*program);
        for (const char* extra : {"/etc/ld.so.cache", "/dev/null"}) files.emplace_back(extra);
        for (const std::string& f : files) {
            Fd fd(open(f.c_str(), O_PATH | O_CLOEXEC));
            struct stat st {};
            if (fd.get() < 0 || fstat(fd.get(), &st) != 0 ||
                !(S_ISREG(st.st_mode) || S_ISCHR(st.st_mode)))
                continue;
            const bool runs = f == *program || f.find("/ld-linux") != std::string::npos;
            std::uint64_t rights = LANDLOCK_ACCESS_FS_READ_FILE;
            if (runs) rights |= LANDLOCK_ACCESS_FS_EXECUTE;
            if (f == "/dev/null") rights |= LANDLOCK_ACCESS_FS_WRITE_FILE;
            rules.push_back({std::move(fd), rights, f});
        }
        // Each child maps the uid of its user namespace (/proc/self/uid_map)
        // under this domain too: written, never read (so nothing is learnt
        // of the host's processes).
        Fd proc(open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (proc.get() >= 0)
            rules.push_back({std::move(proc), LANDLOCK_ACCESS_FS_WRITE_FILE, "/proc"});
    }
    // NO_NEW_PRIVS first: Landlock and an unprivileged seccomp filter need it.
    const bool nnp = prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0;
    bool landlocked = false;
    if (abi < 0) {
        r.skipped.push_back(std::string("landlock: not offered by this kernel (") +
                            std::strerror(-abi) + ")");
    } else if (const std::string err = apply_landlock(abi, rules); !err.empty()) {
        r.skipped.push_back("landlock: " + err);
    } else {
        landlocked = true;
        if (program != nullptr) {
            r.active.push_back("landlock (its subtree's " + std::to_string(grants.size()) +
                               " grants; its program and libraries read-only; executes " +
                               *program + " only; ABI " + std::to_string(abi) + ")");
        } else {
            r.active.push_back(grants.empty()
                                   ? "landlock (no file access, ABI " + std::to_string(abi) + ")"
                                   : "landlock (its " + std::to_string(grants.size()) +
                                         (grants.size() == 1 ? " grant" : " grants") +
                                         " only, ABI " + std::to_string(abi) + ")");
        }
    }
    if ((!grants.empty() || program != nullptr) && !landlocked)
        r.skipped.push_back("file access: its grants need Landlock, so no file can be opened");
    rules.clear();
    if (nnp) {
        r.active.push_back("no_new_privs");
    } else {
        r.skipped.push_back(std::string("no_new_privs: ") + std::strerror(errno));
    }
    const Profile profile = program != nullptr              ? Profile::gateway
                            : landlocked && !grants.empty() ? Profile::files
                                                            : Profile::module;
    if (const std::string err = apply_seccomp(profile); !err.empty()) {
        r.skipped.push_back("seccomp: " + err);
    } else {
        r.active.push_back(profile == Profile::gateway ? "seccomp allowlist (a gateway's)"
                                                       : "seccomp allowlist");
    }
    return result;
}

}  // namespace

SandboxResult close_sandbox(std::span<const PathGrant> grants) {
    return close_with(grants, nullptr);
}

SandboxResult close_gateway_sandbox(const std::string& program, std::span<const PathGrant> grants) {
    return close_with(grants, &program);
}

}  // namespace hmk::platform
