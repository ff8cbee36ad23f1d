// SPDX-License-Identifier: Apache-2.0
// Hostile modules in processes of their own (DESIGN.md sections 4-6): each
// attack must leave the kernel, the bus and the siblings running, say what
// happened in the log, and never let a forged or malformed record reach
// another module.
#include <gtest/gtest.h>

#include <fmt/core.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "recorder.hpp"
#include "temp_dir.hpp"

namespace hmk {
namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
// A sanitizer's own fault handler replaces the plain signal, and it needs an
// unlimited address space: check only that the attacker failed alone.
constexpr bool k_sanitized = true;
#else
constexpr bool k_sanitized = false;
#endif

constexpr int k_messages = 1500;

std::string system_for(const std::string& mode) {
    return fmt::format(R"(
[system]
plugins = ["{}"]
[[module]]
path = "/g"
kind = "recgw"
bus = {{ capacity = 8192 }}
[[module]]
path = "/g/src"
kind = "source"
config = {{ to = "/g/sink", count = {}, rate = 3000, delay_ms = 100 }}
[[module]]
path = "/g/sink"
kind = "sink"
[[module]]
path = "/g/rec"
kind = "rec"
[[module]]
path = "/g/evil"
kind = "evil"
isolation = "process"
config = {{ mode = "{}", victim = "/g/sink" }}
quota = {{ messages_per_s = 2000, grace_ms = 300, memory = 268435456 }}
)",
                       HMK_TEST_PLUGIN, k_messages, mode);
}

using testing::read_all;

struct Attack {
    const char* mode;
    ModuleState end_state;  ///< the attacker's state once the attack is handled
    const char* log;        ///< what the parent's log must say
    bool needs_plain_build = false;
    friend void PrintTo(const Attack& a, std::ostream* os) { *os << a.mode; }
};

class IsolationTest : public ::testing::TestWithParam<Attack> {};

TEST_P(IsolationTest, AttackIsContainedAndSiblingsKeepEveryMessageInOrder) {
    const Attack& attack = GetParam();
    if (attack.needs_plain_build && k_sanitized) GTEST_SKIP() << "needs the address-space limit";
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    std::FILE* log = std::tmpfile();
    ASSERT_NE(log, nullptr);
    auto b = testing::boot(system_for(attack.mode), reg, log, LogLevel::info);
    const ModuleId evil = b->id("/g/evil"), sink = b->id("/g/sink"), src = b->id("/g/src");
    ASSERT_EQ(b->system->module_stats(evil).state, ModuleState::running);

    Outgoing trigger;
    trigger.destination = evil;
    ASSERT_TRUE(b->system->inject(trigger).has_value());

    if (attack.end_state == ModuleState::failed) {
        EXPECT_TRUE(testing::eventually([&] {
            return b->system->module_stats(evil).state == ModuleState::failed;
        })) << read_all(log);
    }
    // The siblings get everything, whatever the attacker does.
    auto from_source = [&] {
        std::size_t n = 0;
        for (const auto& r : book.of(b->id("/g/rec"))) n += r.header.sender == src;
        return n;
    };
    ASSERT_TRUE(testing::eventually([&] { return from_source() == k_messages; }))
        << "the recorder got " << from_source() << " of the source's messages\n"
        << read_all(log);
    ASSERT_TRUE(
        testing::eventually([&] { return b->system->module_stats(sink).rx >= k_messages; }));
    EXPECT_EQ(b->system->module_stats(src).tx, static_cast<std::uint64_t>(k_messages));
    if (attack.end_state == ModuleState::running) {
        EXPECT_EQ(b->system->module_stats(evil).state, ModuleState::running);
    }
    b->system->stop();  // must end, even with a hung child
    const std::string text = read_all(log);
    std::fclose(log);
    if (!k_sanitized || attack.end_state == ModuleState::running) {
        EXPECT_NE(text.find(attack.log), std::string::npos) << "log lacks '" << attack.log << "':\n"
                                                            << text;
    }

    // What the recorder saw on the bus: one contiguous order, the source's
    // messages 1..N in order, nothing posing as someone else.
    std::uint64_t expected_seq = 0, next_from_source = 1;
    for (const testing::Record& r : book.of(b->id("/g/rec"))) {
        if (expected_seq == 0) expected_seq = r.header.seq;
        ASSERT_EQ(r.header.seq, expected_seq++) << "a gap in the bus order";
        ASSERT_FALSE(r.header.sender == sink) << "a message posing as the victim reached the bus";
        ASSERT_FALSE(r.header.via == evil && r.header.sender != evil)
            << "the attacker spoke for someone else";
        if (r.header.sender == src) {
            ASSERT_EQ(r.header.correlation, next_from_source++) << "source messages out of order";
        }
    }
    EXPECT_EQ(next_from_source, static_cast<std::uint64_t>(k_messages + 1));
    EXPECT_EQ(b->system->module_stats(b->id("/g")).state, ModuleState::stopped);
}

INSTANTIATE_TEST_SUITE_P(
    EveryAttack, IsolationTest,
    ::testing::Values(
        Attack{"crash", ModuleState::failed, "killed by SIGSEGV"},
        // The host is pid 1 of its pid namespace, and pid 1 ignores signals it
        // sends itself: glibc's abort() then ends on a faulting instruction.
        Attack{"abort", ModuleState::failed, "killed by SIGSEGV"},
        Attack{"exit", ModuleState::failed, "exited with status 3"},
        Attack{"throw", ModuleState::failed, "exited with status 1"},
        Attack{"hang", ModuleState::running, "still running when the system stopped"},
        Attack{"flood", ModuleState::failed, "over its quota of 2000 messages/s"},
        Attack{"forge_sender", ModuleState::running, "refused a message claiming sender"},
        Attack{"forge_forward", ModuleState::running, "refused a message claiming sender"},
        Attack{"garbage", ModuleState::running, "dropped a malformed message"},
        Attack{"huge_length", ModuleState::failed, "broke its uplink ring"},
        Attack{"scribble", ModuleState::failed, "broke its uplink ring"},
        Attack{"write_bus", ModuleState::failed, "killed by SIGSEGV"},
        Attack{"syscall_open", ModuleState::failed, "killed by SIGSYS (a forbidden system call)"},
        Attack{"syscall_socket", ModuleState::failed, "killed by SIGSYS (a forbidden system call)"},
        Attack{"syscall_fork", ModuleState::failed, "killed by SIGSYS (a forbidden system call)"},
        Attack{"syscall_execve", ModuleState::failed, "killed by SIGSYS (a forbidden system call)"},
        Attack{"syscall_ptrace", ModuleState::failed, "killed by SIGSYS (a forbidden system call)"},
        Attack{"alloc", ModuleState::failed, "exited with status 1", true}),
    [](const auto& p) { return std::string(p.param.mode); });

// Its stdout and stderr are a pipe to its parent, which logs what comes
// out as the module's own, printable, within a budget: nothing reaches the
// operator's terminal, and nothing speaks for another module.
TEST(IsolationTest, ASandboxedModuleCannotWriteToTheOperatorsTerminal) {
    std::FILE* out = std::tmpfile();
    std::FILE* err = std::tmpfile();
    ASSERT_TRUE(out != nullptr && err != nullptr);
    std::fflush(stdout);
    std::fflush(stderr);
    const int saved_out = ::dup(1), saved_err = ::dup(2);
    ::dup2(::fileno(out), 1);
    ::dup2(::fileno(err), 2);
    std::string text;
    {
        testing::RecordBook book;
        Registry reg = testing::test_registry(book);
        std::FILE* log = std::tmpfile();
        auto b = testing::boot(system_for("stdio"), reg, log, LogLevel::info);
        Outgoing trigger;
        trigger.destination = b->id("/g/evil");
        (void)b->system->inject(trigger);
        (void)testing::eventually(
            [&] { return read_all(log).find("EVIL-STDIO") != std::string::npos; });
        b->system->stop();
        text = read_all(log);
        std::fclose(log);
    }
    std::fflush(stdout);
    std::fflush(stderr);
    ::dup2(saved_out, 1);
    ::dup2(saved_err, 2);
    ::close(saved_out);
    ::close(saved_err);
    const std::string terminal = read_all(out) + read_all(err);
    std::fclose(out);
    std::fclose(err);
    EXPECT_EQ(terminal.find("EVIL"), std::string::npos) << terminal.substr(0, 500);
    EXPECT_EQ(terminal.find("xxxxxxxx"), std::string::npos) << terminal.substr(0, 500);
    EXPECT_EQ(terminal.find("forged"), std::string::npos) << terminal.substr(0, 500);
    // In its parent's log: as its own, with the escapes made harmless.
    EXPECT_NE(text.find("/g/evil: output: ?[2J?]0;pwned?EVIL-STDIO"), std::string::npos)
        << text.substr(0, 4000);
    EXPECT_EQ(text.find('\x1b'), std::string::npos);
    EXPECT_NE(text.find("/g/evil: /g/victim: forged by evil"), std::string::npos)
        << text.substr(0, 4000);
    EXPECT_EQ(text.find("ERROR /g/victim"), std::string::npos) << text.substr(0, 4000);
    // 4 MB in a burst: most of it dropped, and said so.
    EXPECT_NE(text.find("bytes) of its output dropped"), std::string::npos)
        << text.substr(text.size() > 4000 ? text.size() - 4000 : 0);
    EXPECT_LT(text.size(), 2u << 20);
}

// The host of a sandboxed module holds no capability and can get none,
// and has namespaces of its own (pid, net, ipc, mount, UTS, cgroup, time).
TEST(IsolationTest, ASandboxedHostHasNoCapabilitiesAndNamespacesOfItsOwn) {
    if (::geteuid() != 0) GTEST_SKIP() << "reads another user's /proc entries";
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    auto b = testing::boot(R"(
[[module]]
path = "/g"
kind = "gateway"
[[module]]
path = "/g/sink"
kind = "sink"
isolation = "process"
)",
                           reg);
    const std::int64_t pid = b->system->module_stats(b->id("/g/sink")).pid;
    ASSERT_GT(pid, 0);
    std::ifstream status(fmt::format("/proc/{}/status", pid));
    std::string line;
    int caps = 0;
    while (std::getline(status, line)) {
        if (line.rfind("Cap", 0) != 0) continue;
        ++caps;
        EXPECT_NE(line.find("0000000000000000"), std::string::npos) << line;
    }
    EXPECT_EQ(caps, 5);  // CapInh, CapPrm, CapEff, CapBnd, CapAmb
    for (const char* ns : {"pid", "net", "ipc", "mnt", "uts", "cgroup", "time"}) {
        std::error_code e1, e2;
        const auto mine = std::filesystem::read_symlink(fmt::format("/proc/self/ns/{}", ns), e1);
        const auto its = std::filesystem::read_symlink(fmt::format("/proc/{}/ns/{}", pid, ns), e2);
        ASSERT_FALSE(e1 || e2) << ns;
        EXPECT_NE(mine, its) << ns << " namespace shared";
    }
}

// Lifecycle control is the parent's alone (DESIGN.md section 4).
TEST(IsolationTest, OnlyTheParentMayStopAModule) {
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    std::FILE* log = std::tmpfile();
    auto b = testing::boot(R"(
[[module]]
path = "/g"
kind = "gateway"
[[module]]
path = "/g/a"
kind = "echo"
isolation = "process"
[[module]]
path = "/g/b"
kind = "echo"
)",
                           reg, log, LogLevel::info);
    const ModuleId a = b->id("/g/a"), sibling = b->id("/g/b");
    Outgoing stop;
    stop.destination = a;
    stop.type = msg::k_stop;
    ASSERT_TRUE(b->system->inject(stop, sibling).has_value());    // a sibling: refused
    ASSERT_TRUE(b->system->inject(stop, k_root_id).has_value());  // the grandparent: refused too
    Outgoing ping;
    ping.destination = a;
    ping.type = msg::k_ping;
    auto corr = b->system->inject(ping);
    ASSERT_TRUE(corr.has_value());
    auto pong = b->system->wait_for_root(*corr, std::chrono::seconds(10));
    ASSERT_TRUE(pong.has_value()) << "the module stopped on a stop from someone else";
    EXPECT_EQ(pong->text(), "pong");
    EXPECT_EQ(b->system->module_stats(a).state, ModuleState::running);
    // Its parent's stop (on shutdown) is obeyed: it exits cleanly.
    b->system->stop();
    EXPECT_EQ(b->system->module_stats(a).state, ModuleState::stopped);
    const std::string text = read_all(log);
    std::fclose(log);
    EXPECT_NE(text.find("/g/a: stopped"), std::string::npos) << text;
}

// Grants (docs/isolation.md): a sandboxed module opens what it is granted
// and nothing else; one without grants cannot open a file at all.
TEST(IsolationTest, AModuleOpensItsGrantsAndNothingElse) {
    testing::TempDir dir("hmk-grants");
    const std::string mine = dir.path + "/mine.dat", theirs = dir.path + "/theirs.dat";
    for (const auto& f : {mine, theirs}) std::ofstream(f) << "0123456789";
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    std::FILE* log = std::tmpfile();
    auto b = testing::boot(fmt::format(R"(
[system]
plugins = ["{plugin}"]
[[module]]
path = "/g"
kind = "gateway"
[[module]]
path = "/g/granted"
kind = "evil"
isolation = "process"
config = {{ mode = "files", file = "{mine}", other = "{theirs}" }}
grants = [{{ file = "mine.dat", write = true }}]
[[module]]
path = "/g/plain"
kind = "evil"
isolation = "process"
config = {{ mode = "files", file = "{mine}", other = "{theirs}" }}
)",
                                       fmt::arg("plugin", HMK_TEST_PLUGIN), fmt::arg("mine", mine),
                                       fmt::arg("theirs", theirs)),
                           reg, log, LogLevel::info, dir.path + "/system.toml");
    Outgoing ask;
    ask.destination = b->id("/g/granted");
    auto corr = b->system->inject(ask);
    ASSERT_TRUE(corr.has_value());
    auto answer = b->system->wait_for_root(*corr, std::chrono::seconds(10));
    ASSERT_TRUE(answer.has_value()) << read_all(log);
    EXPECT_EQ(answer->text(),
              mine + ": wrote and read back; " + theirs + ": open refused (Permission denied)");
    std::string written;
    std::getline(std::ifstream(mine), written, '\0');
    EXPECT_EQ(written, "granted");

    // Without a grant, opening the very same file is a forbidden system call.
    ask.destination = b->id("/g/plain");
    ASSERT_TRUE(b->system->inject(ask).has_value());
    EXPECT_TRUE(testing::eventually(
        [&] { return b->system->module_stats(b->id("/g/plain")).state == ModuleState::failed; }));
    EXPECT_EQ(b->system->module_stats(b->id("/g/granted")).state, ModuleState::running);
    b->system->stop();
    const std::string text = read_all(log);
    std::fclose(log);
    EXPECT_NE(text.find("/g/plain: failed: process"), std::string::npos) << text;
    EXPECT_NE(text.find("killed by SIGSYS"), std::string::npos) << text;
}

// A grant its host cannot honour (the file went away after the check) is
// the module's failure alone, named in the log; the rest boots and runs.
TEST(IsolationTest, AGrantThatCannotBeOpenedFailsItsModuleOnly) {
    testing::TempDir dir("hmk-grants");
    const std::string gone = dir.path + "/gone.dat";
    std::ofstream(gone) << "x";
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    const std::string toml =
        fmt::format(R"(
[system]
plugins = ["{plugin}"]
[[module]]
path = "/g"
kind = "gateway"
[[module]]
path = "/g/granted"
kind = "evil"
isolation = "process"
config = {{ mode = "files", file = "{gone}" }}
grants = [{{ file = "gone.dat" }}]
[[module]]
path = "/g/echo"
kind = "echo"
isolation = "process"
)",
                    fmt::arg("plugin", HMK_TEST_PLUGIN), fmt::arg("gone", gone));
    auto spec = parse_system(toml, dir.path + "/system.toml", reg);
    ASSERT_TRUE(spec.has_value()) << spec.error().to_string();
    std::filesystem::remove(gone);
    std::FILE* log = std::tmpfile();
    Logger logger(log, LogLevel::info);
    auto sys = System::create(*spec, reg, logger);
    ASSERT_TRUE(sys.has_value()) << sys.error();
    const auto started = (*sys)->start();
    ASSERT_TRUE(started.has_value()) << started.error();
    EXPECT_TRUE(testing::eventually([&] {
        return (*sys)->module_stats(spec->topology.find("/g/granted")->id).state ==
               ModuleState::failed;
    }));
    Outgoing ping;
    ping.destination = spec->topology.find("/g/echo")->id;
    ping.type = msg::k_ping;
    auto corr = (*sys)->inject(ping);
    ASSERT_TRUE(corr.has_value());
    EXPECT_TRUE((*sys)->wait_for_root(*corr, std::chrono::seconds(10)).has_value());
    EXPECT_FALSE((*sys)->failure().has_value());
    (*sys)->stop();
    const std::string text = read_all(log);
    std::fclose(log);
    EXPECT_NE(text.find("/g/granted: module host: grant " + gone + ": No such file or directory"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("/g/granted: could not start (see above): the system boots without it"),
              std::string::npos)
        << text;
}

// CPU time of process `pid` so far (user + system), seconds.
double cpu_seconds(std::int64_t pid) {
    std::ifstream in(fmt::format("/proc/{}/stat", pid));
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::istringstream fields(text.substr(text.rfind(')') + 2));
    std::string f;
    double ticks = 0;
    for (int i = 3; i <= 15 && fields >> f; ++i) {
        if (i == 14 || i == 15) ticks += std::stod(f);
    }
    return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// A parent holds its children's share of the processor (quota.cpu): a
// child that spins gets its share and no more, in a process of its own or
// on a thread of its parent's; its busy sibling keeps the rest.
TEST(IsolationTest, ASpinningChildGetsItsCpuShareAndNoMore) {
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    std::FILE* log = std::tmpfile();
    auto b = testing::boot(fmt::format(R"(
[system]
plugins = ["{}"]
[[module]]
path = "/g"
kind = "gateway"
supervisor = {{ stop_grace_ms = 100 }}
[[module]]
path = "/g/spin"
kind = "evil"
isolation = "process"
config = {{ mode = "hang" }}
quota = {{ cpu = 0.25 }}
[[module]]
path = "/g/busy"
kind = "evil"
isolation = "process"
config = {{ mode = "hang" }}
[[module]]
path = "/g/thread"
kind = "evil"
config = {{ mode = "hang" }}
quota = {{ cpu = 0.25 }}
)",
                                       HMK_TEST_PLUGIN),
                           reg, log, LogLevel::info);
    std::string held;
    for (const auto& [path, layers] : b->system->sandbox_report()) {
        for (const auto& l : layers) {
            if (path == "/g/spin" && l.rfind("cpu: ", 0) == 0) held = l;
        }
    }
    ASSERT_FALSE(held.empty()) << "no cpu layer for /g/spin";
    if (held.find("weight") != std::string::npos) {
        b->system->stop();
        GTEST_SKIP() << "no cgroup to hold a CPU share on this machine: " << held;
    }
    const std::int64_t spin = b->system->module_stats(b->id("/g/spin")).pid;
    const std::int64_t busy = b->system->module_stats(b->id("/g/busy")).pid;
    for (const char* path : {"/g/spin", "/g/busy", "/g/thread"}) {
        Outgoing go;
        go.destination = b->id(path);
        ASSERT_TRUE(b->system->inject(go).has_value());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const auto t0 = std::chrono::steady_clock::now();
    const double spin0 = cpu_seconds(spin), busy0 = cpu_seconds(busy);
    std::this_thread::sleep_for(std::chrono::seconds(2));
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double spin_cores = (cpu_seconds(spin) - spin0) / wall;
    const double busy_cores = (cpu_seconds(busy) - busy0) / wall;
    std::printf("spinning child capped at 0.25: %.3f cores; its busy sibling: %.3f cores\n",
                spin_cores, busy_cores);
    // The ceiling is the kernel's: it holds whatever else the machine does
    // (a clock tick of slack either side of the window).
    EXPECT_LE(spin_cores, 0.25 * 1.2 + 0.02 / wall) << held;
    EXPECT_GT(spin_cores, 0.0);
    // Loosely (a shared machine): the sibling without a ceiling got more.
    EXPECT_GT(busy_cores, spin_cores);
    // The thread's share is a cgroup of its own, and it was held back.
    std::ifstream stat(
        fmt::format("/sys/fs/cgroup/cpu/hmk.{}/t{}/cpu.stat", ::getpid(), b->id("/g/thread")));
    std::string key;
    std::uint64_t value = 0, throttled = 0;
    bool v1 = false;
    while (stat >> key >> value) {
        if (key == "nr_throttled") throttled = value, v1 = true;
    }
    if (v1) {
        EXPECT_GT(throttled, 0u) << "the in-process child's thread was never held back";
    }
    b->system->stop();
    std::fclose(log);
}

}  // namespace
}  // namespace hmk
