// SPDX-License-Identifier: Apache-2.0
// The hierarchy made real (docs/isolation.md, "Gateways in processes of
// their own"): a sandboxed gateway owns its bus in its own process and
// manages its children there, so the process tree mirrors the module tree,
// and its subtree lives and dies with it.
#include <gtest/gtest.h>

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

pid_t parent_of(pid_t pid) {
    std::ifstream in(fmt::format("/proc/{}/stat", pid));
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
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
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
        const std::string name = entry.path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        const auto pid = static_cast<pid_t>(std::stol(name));
        std::ifstream in(entry.path() / "cmdline");
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
    return std::filesystem::exists(fmt::format("/proc/{}", pid)) && parent_of(pid) != 0;
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

    // The root manages only its own children: an operation on a module
    // inside /a's process is refused with the reason, and changes nothing.
    const auto refused = b->system->kill(b->id("/a/b/echo"));
    ASSERT_FALSE(refused.has_value());
    EXPECT_NE(refused.error().find("/a/b/echo is in the subtree of /a, which manages it in a "
                                   "process of its own"),
              std::string::npos)
        << refused.error();
    EXPECT_TRUE(answers("/a/b/echo"));

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

}  // namespace
}  // namespace hmk
