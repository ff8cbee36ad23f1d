// SPDX-License-Identifier: Apache-2.0
// The hierarchy made real (docs/isolation.md, "Gateways in processes of
// their own"): a sandboxed gateway owns its bus in its own process and
// manages its children there, so the process tree mirrors the module tree,
// and its subtree lives and dies with it.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <fmt/core.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "recorder.hpp"

namespace hmk {
namespace {

constexpr const char* k_chain = R"(
[supervisor]
intensity = 10
[[module]]
path = "/a"
kind = "gateway"
isolation = "process"
restart = "permanent"
supervisor = { intensity = 10 }
[[module]]
path = "/a/echo"
kind = "echo"
[[module]]
path = "/a/b"
kind = "gateway"
isolation = "process"
restart = "permanent"
supervisor = { intensity = 10 }
[[module]]
path = "/a/b/echo"
kind = "echo"
isolation = "process"
restart = "permanent"
[[module]]
path = "/a/b/c"
kind = "gateway"
isolation = "process"
restart = "permanent"
[[module]]
path = "/a/b/c/echo"
kind = "echo"
isolation = "process"
restart = "permanent"
[[module]]
path = "/side"
kind = "echo"
)";

/// A module host on this machine: its pid, its parent's, and whether it is
/// still a live process (not a zombie).
struct HostProcess {
    pid_t pid = 0;
    pid_t ppid = 0;
};

// A /proc file whole, or empty: plain read(), since a process may end
// while it is read (ESRCH), which a stream would throw for.
std::string read_proc(const std::string& path) {
    std::string out;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return out;
    char buf[4096];
    for (ssize_t n; (n = ::read(fd, buf, sizeof(buf))) > 0;)
        out.append(buf, static_cast<std::size_t>(n));
    ::close(fd);
    return out;
}

/// The pids under /proc now (entries may vanish while they are looked at).
std::vector<pid_t> all_pids() {
    std::vector<pid_t> out;
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator("/proc", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
        out.push_back(static_cast<pid_t>(std::stol(name)));
    }
    return out;
}

pid_t parent_of(pid_t pid) {
    const std::string text = read_proc(fmt::format("/proc/{}/stat", pid));
    const auto close = text.rfind(')');
    if (close == std::string::npos) return 0;
    std::istringstream rest(text.substr(close + 2));
    std::string state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    return state == "Z" ? 0 : ppid;
}

bool descends_from(pid_t pid, pid_t ancestor) {
    for (int depth = 0; pid > 1 && depth < 64; ++depth) {
        pid = parent_of(pid);
        if (pid == ancestor) return true;
    }
    return false;
}

/// The module hosts below this test process, by module path (from /proc:
/// what runs, whatever the system says of itself).
std::map<std::string, HostProcess> hosts() {
    std::map<std::string, HostProcess> out;
    for (const pid_t pid : all_pids()) {
        std::istringstream in(read_proc(fmt::format("/proc/{}/cmdline", pid)));
        std::vector<std::string> args;
        for (std::string a; std::getline(in, a, '\0');) args.push_back(a);
        if (args.size() < 3 || args[0] != "hmk-host" || args[1] != "--module") continue;
        const pid_t ppid = parent_of(pid);
        if (ppid == 0 || !descends_from(pid, ::getpid())) continue;
        out[args[2]] = HostProcess{pid, ppid};
    }
    return out;
}

bool alive(pid_t pid) {
    return parent_of(pid) != 0;
}

class HierarchyTest : public ::testing::Test {
  protected:
    testing::RecordBook book;
    Registry registry = testing::test_registry(book);
    std::FILE* log = std::tmpfile();
    std::unique_ptr<testing::Booted> b;

    ~HierarchyTest() override {
        b.reset();
        std::fclose(log);
    }
    bool answers(const std::string& path,
                 std::chrono::milliseconds wait = std::chrono::seconds(5)) {
        Outgoing ping;
        ping.destination = b->id(path);
        ping.type = msg::k_ping;
        auto corr = b->system->inject(ping);
        if (!corr) return false;
        auto pong = b->system->wait_for_root(*corr, wait);
        return pong.has_value() && pong->text() == "pong";
    }
};

TEST_F(HierarchyTest, TheProcessTreeMirrorsTheModuleTreeAndASubtreeDiesAndComesBackWhole) {
    b = testing::boot(k_chain, registry, log, LogLevel::info);
    for (const char* p : {"/a/echo", "/a/b/echo", "/a/b/c/echo", "/side"})
        ASSERT_TRUE(answers(p)) << p << "\n" << testing::read_all(log);

    // Every sandboxed module's process is its parent module's child.
    auto before = hosts();
    ASSERT_EQ(before.size(), 5u) << testing::read_all(log);
    EXPECT_EQ(before["/a"].ppid, ::getpid());
    EXPECT_EQ(before["/a/b"].ppid, before["/a"].pid);
    EXPECT_EQ(before["/a/b/echo"].ppid, before["/a/b"].pid);
    EXPECT_EQ(before["/a/b/c"].ppid, before["/a/b"].pid);
    EXPECT_EQ(before["/a/b/c/echo"].ppid, before["/a/b/c"].pid);

    // Operations travel the tree, owner to owner: the stats of a module
    // three sandboxed gateways down, with its pid as this process sees it,
    // and a kill that its own gateway carries out.
    const ModuleStats deep = b->system->module_stats(b->id("/a/b/c/echo"));
    EXPECT_EQ(deep.state, ModuleState::running);
    EXPECT_EQ(deep.pid, before["/a/b/c/echo"].pid);
    EXPECT_GE(deep.rx, 1u);
    ASSERT_TRUE(b->system->kill(b->id("/a/b/c/echo")).has_value());
    EXPECT_TRUE(testing::eventually([&] {
        const auto now = hosts();
        return now.count("/a/b/c/echo") != 0 &&
               now.at("/a/b/c/echo").pid != before["/a/b/c/echo"].pid;
    }));
    EXPECT_TRUE(testing::eventually(
        [&] { return answers("/a/b/c/echo", std::chrono::milliseconds(500)); }));
    EXPECT_EQ(hosts()["/a/b/c"].pid, before["/a/b/c"].pid) << "its gateway should not restart";
    EXPECT_GE(b->system->module_stats(b->id("/a/b/c/echo")).restarts, 1u);
    // Only a gateway's parent may ask it: the same request from a sibling
    // of /a is refused, and nothing is killed.
    const std::uint64_t restarts = b->system->module_stats(b->id("/a/b/c/echo")).restarts;
    const std::string forged = fmt::format("kill {}", b->id("/a/b/c/echo"));
    Outgoing manage;
    manage.destination = b->id("/a");
    manage.type = msg::k_manage;
    manage.payload = as_bytes(forged);
    auto corr = b->system->inject(manage, b->id("/side"));
    ASSERT_TRUE(corr.has_value());
    EXPECT_FALSE(b->system->wait_for_root(*corr, std::chrono::milliseconds(300)).has_value());
    EXPECT_EQ(b->system->module_stats(b->id("/a/b/c/echo")).restarts, restarts);
    before = hosts();

    // SIGKILL the middle gateway: nothing below it survives it.
    ASSERT_EQ(::kill(before["/a/b"].pid, SIGKILL), 0);
    for (const char* p : {"/a/b/echo", "/a/b/c", "/a/b/c/echo"}) {
        const pid_t old = before[p].pid;
        EXPECT_TRUE(testing::eventually([&] { return !alive(old); })) << p << " outlived /a/b";
    }
    // The rest of the system never stopped answering.
    EXPECT_TRUE(answers("/side"));
    EXPECT_TRUE(answers("/a/echo"));
    // Its parent restarts it, and the subtree comes back and answers.
    EXPECT_TRUE(testing::eventually([&] {
        return answers("/a/b/c/echo", std::chrono::milliseconds(500));
    })) << testing::read_all(log);
    EXPECT_TRUE(answers("/a/b/echo"));
    auto after = hosts();
    ASSERT_EQ(after.size(), 5u);
    EXPECT_EQ(after["/a"].pid, before["/a"].pid);
    EXPECT_NE(after["/a/b"].pid, before["/a/b"].pid);
    EXPECT_EQ(after["/a/b"].ppid, after["/a"].pid);
    EXPECT_EQ(after["/a/b/c/echo"].ppid, after["/a/b/c"].pid);

    // Stopped in order, nothing is left behind.
    b->system->stop();
    EXPECT_TRUE(testing::eventually([&] { return hosts().empty(); }));
    const std::string text = testing::read_all(log);
    EXPECT_NE(text.find("/a/b: failed: process"), std::string::npos) << text;
    EXPECT_NE(text.find("killed by SIGKILL"), std::string::npos) << text;
}

// More messages than a sandboxed gateway's bus holds climb through it, flat
// out, and every one arrives: its own bus waits for nobody that is not
// there (a boot hold kept for the gateway's own instance, which attached
// before its children started, once wedged this at one ring's worth).
TEST_F(HierarchyTest, AFloodThroughASandboxedGatewayArrivesWhole) {
    constexpr int k_count = 5000;
    b = testing::boot(fmt::format(R"(
[bus]
capacity = 256
[[module]]
path = "/g"
kind = "gateway"
isolation = "process"
bus = {{ capacity = 256 }}
[[module]]
path = "/g/src"
kind = "source"
isolation = "process"
config = {{ to = "/sink", count = {}, rate = 0, delay_ms = 50 }}
[[module]]
path = "/sink"
kind = "sink"
)",
                                  k_count),
                      registry, log, LogLevel::info);
    EXPECT_TRUE(testing::eventually([&] {
        return b->system->module_stats(b->id("/sink")).rx >= static_cast<std::uint64_t>(k_count);
    })) << "the sink got "
        << b->system->module_stats(b->id("/sink")).rx << "\n"
        << testing::read_all(log);
    EXPECT_EQ(b->system->module_stats(b->id("/sink")).lost, 0u);
}

// A child never outlives its parent, whatever kills the parent: SIGKILL of
// the top gateway takes the whole subtree.
TEST_F(HierarchyTest, KillingTheTopGatewayLeavesNoProcessOfItsSubtree) {
    b = testing::boot(k_chain, registry, log, LogLevel::info);
    ASSERT_TRUE(answers("/a/b/c/echo")) << testing::read_all(log);
    auto before = hosts();
    ASSERT_EQ(before.size(), 5u);
    ASSERT_EQ(::kill(before["/a"].pid, SIGKILL), 0);
    for (const auto& [path, host] : before) {
        if (path == "/a") continue;
        const pid_t old = host.pid;
        EXPECT_TRUE(testing::eventually([&] { return !alive(old); })) << path << " outlived /a";
    }
    EXPECT_TRUE(answers("/side"));
    EXPECT_TRUE(testing::eventually([&] {
        return answers("/a/b/c/echo", std::chrono::milliseconds(500));
    })) << testing::read_all(log);
}

// Every process below `pid` (the forked ones too, not only module hosts).
std::vector<pid_t> descendants(pid_t pid) {
    std::vector<pid_t> out;
    for (const pid_t p : all_pids()) {
        if (parent_of(p) != 0 && descends_from(p, pid)) out.push_back(p);
    }
    return out;
}

struct Attack {
    const char* mode;
    const char* log;  ///< what the parent's log must say ("" for nothing)
    bool fails;       ///< the gateway ends (and its parent restarts it)
    friend void PrintTo(const Attack& a, std::ostream* os) { *os << a.mode; }
};

class HostileGatewayTest : public HierarchyTest, public ::testing::WithParamInterface<Attack> {};

// A hostile gateway (in a process of its own, with a sandboxed child)
// attacks: its parent and its siblings go on, nothing it forges reaches its
// parent's bus, and its parent restarts it with its subtree.
TEST_P(HostileGatewayTest, ItsParentAndSiblingsGoOnAndItComesBack) {
    const Attack& attack = GetParam();
    constexpr int k_messages = 1500;
    b = testing::boot(fmt::format(R"(
[system]
plugins = ["{plugin}"]
[[module]]
path = "/g"
kind = "recgw"
bus = {{ capacity = 8192 }}
supervisor = {{ intensity = 10 }}
[[module]]
path = "/g/evil"
kind = "evilgw"
isolation = "process"
restart = "permanent"
config = {{ mode = "{mode}", victim = "/g/sink" }}
quota = {{ messages_per_s = 2000, grace_ms = 300 }}
[[module]]
path = "/g/evil/echo"
kind = "echo"
isolation = "process"
restart = "permanent"
[[module]]
path = "/g/src"
kind = "source"
config = {{ to = "/g/sink", count = {count}, rate = 3000, delay_ms = 100 }}
[[module]]
path = "/g/sink"
kind = "sink"
[[module]]
path = "/g/rec"
kind = "rec"
[[module]]
path = "/side"
kind = "echo"
)",
                                  fmt::arg("plugin", HMK_TEST_PLUGIN),
                                  fmt::arg("mode", attack.mode), fmt::arg("count", k_messages)),
                      registry, log, LogLevel::info);
    const ModuleId evil = b->id("/g/evil"), sink = b->id("/g/sink"), src = b->id("/g/src");
    ASSERT_TRUE(answers("/g/evil/echo")) << testing::read_all(log);
    const pid_t first = hosts()["/g/evil"].pid;
    ASSERT_GT(first, 0);

    Outgoing trigger;
    trigger.destination = evil;
    auto corr = b->system->inject(trigger);
    ASSERT_TRUE(corr.has_value());
    std::vector<pid_t> forked;
    if (std::string(attack.mode) == "fork") {
        ASSERT_TRUE(b->system->wait_for_root(*corr, std::chrono::seconds(5)).has_value());
        for (pid_t p : descendants(first)) {
            if (p != hosts()["/g/evil/echo"].pid) forked.push_back(p);
        }
        EXPECT_EQ(forked.size(), 3u) << "the forks did not happen";
    }
    EXPECT_TRUE(answers("/side"));
    if (std::string(attack.mode) == "stop_forwarding") {
        EXPECT_FALSE(answers("/g/evil/echo", std::chrono::milliseconds(300)));
    }
    if (attack.log[0] != '\0') {
        EXPECT_TRUE(testing::eventually([&] {
            return testing::read_all(log).find(attack.log) != std::string::npos;
        })) << "log lacks '"
            << attack.log << "':\n"
            << testing::read_all(log);
    }
    if (!attack.fails) {
        // Its parent stops it (an operator's kill): it comes back whole.
        ASSERT_TRUE(b->system->kill(evil).has_value());
    }
    EXPECT_TRUE(testing::eventually([&] {
        const pid_t now = hosts()["/g/evil"].pid;
        return now != 0 && now != first;
    })) << testing::read_all(log);
    for (pid_t p : forked) {
        EXPECT_TRUE(testing::eventually([&] { return !alive(p); }))
            << "a fork outlived its gateway";
    }
    EXPECT_TRUE(testing::eventually([&] {
        return answers("/g/evil/echo", std::chrono::milliseconds(500));
    })) << testing::read_all(log);
    EXPECT_GE(b->system->module_stats(evil).restarts, 1u);

    // The siblings got everything, in order; nothing forged reached /g.
    auto from_source = [&] {
        std::size_t n = 0;
        for (const auto& r : book.of(b->id("/g/rec"))) n += r.header.sender == src;
        return n;
    };
    ASSERT_TRUE(testing::eventually([&] { return from_source() == k_messages; }))
        << "the recorder got " << from_source() << "\n"
        << testing::read_all(log);
    std::uint64_t expected_seq = 0, next_from_source = 1;
    for (const testing::Record& r : book.of(b->id("/g/rec"))) {
        if (expected_seq == 0) expected_seq = r.header.seq;
        ASSERT_EQ(r.header.seq, expected_seq++) << "a gap in the bus order";
        ASSERT_FALSE(r.header.sender == sink) << "a message posing as the victim reached the bus";
        ASSERT_FALSE(r.header.via == evil &&
                     (r.header.sender == k_root_id || r.header.sender == sink))
            << "the gateway spoke for someone outside its subtree";
        if (r.header.sender == src) {
            ASSERT_EQ(r.header.correlation, next_from_source++);
        }
    }
    b->system->stop();
}

INSTANTIATE_TEST_SUITE_P(
    EveryAttack, HostileGatewayTest,
    ::testing::Values(Attack{"crash", "/g/evil: failed: process", true},
                      Attack{"flood", "over its quota of 2000 messages/s", true},
                      Attack{"forge_sender", "refused a message claiming sender", false},
                      Attack{"stop_forwarding", "", false},
                      Attack{"scribble", "broke its uplink ring", true}, Attack{"fork", "", false}),
    [](const auto& p) { return std::string(p.param.mode); });

}  // namespace
}  // namespace hmk
