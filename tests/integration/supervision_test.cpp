// SPDX-License-Identifier: Apache-2.0
// Supervision after Erlang/OTP (DESIGN.md section 7, docs/recovery.md):
// restart strategies, restart intensity and escalation to the parent,
// restart policies, in-process restarts and hang detection, on real systems
// with real processes.
#include <gtest/gtest.h>

#include <fmt/core.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include "recorder.hpp"
#include "temp_dir.hpp"

namespace hmk {
namespace {

using testing::eventually;
using testing::read_all;

struct Fixture {
    explicit Fixture(const std::string& toml)
        : log(std::tmpfile()), reg(testing::test_registry(book)) {
        b = testing::boot(toml, reg, log, LogLevel::info);
    }
    ~Fixture() {
        if (b) b->system->stop();
        std::fclose(log);
    }
    ModuleId id(const std::string& path) const { return b->id(path); }
    ModuleStats stats(const std::string& path) const { return b->system->module_stats(id(path)); }
    bool ping(const std::string& path) {
        Outgoing p;
        p.destination = id(path);
        p.type = msg::k_ping;
        auto corr = b->system->inject(p);
        return corr && b->system->wait_for_root(*corr, std::chrono::seconds(10)).has_value();
    }
    void poke(const std::string& path) {
        Outgoing m;
        m.destination = id(path);
        m.type = msg::k_data;
        ASSERT_TRUE(b->system->inject(m).has_value());
    }
    /// Waits until `path` runs again after `restarts` restarts.
    bool restarted(const std::string& path, std::uint64_t restarts) {
        return eventually([&] {
            const ModuleStats s = stats(path);
            return s.restarts == restarts && s.state == ModuleState::running;
        });
    }
    std::string text() { return read_all(log); }

    std::FILE* log;
    testing::RecordBook book;
    Registry reg;
    std::unique_ptr<testing::Booted> b;
};

std::string three_children(const std::string& strategy, int intensity = 5,
                           const std::string& b_mode = "crash") {
    return fmt::format(R"(
[system]
plugins = ["{}"]
[[module]]
path = "/g"
kind = "gateway"
restart = "permanent"
supervisor = {{ strategy = "{}", intensity = {}, period_ms = 60000, backoff_ms = 1 }}
[[module]]
path = "/g/a"
kind = "echo"
restart = "permanent"
[[module]]
path = "/g/b"
kind = "evil"
isolation = "process"
restart = "permanent"
config = {{ mode = "{}" }}
[[module]]
path = "/g/c"
kind = "echo"
isolation = "process"
restart = "permanent"
)",
                       HMK_TEST_PLUGIN, strategy, intensity, b_mode);
}

TEST(SupervisionTest, OneForOneRestartsOnlyTheFailedChild) {
    Fixture f(three_children("one_for_one"));
    for (std::uint64_t round = 1; round <= 2; ++round) {
        f.poke("/g/b");
        ASSERT_TRUE(f.restarted("/g/b", round)) << f.text();
        EXPECT_TRUE(f.ping("/g/b")) << "the restarted instance does not answer";
        EXPECT_EQ(f.stats("/g/b").epoch, round + 1);
    }
    for (const char* sibling : {"/g/a", "/g/c"}) {
        EXPECT_EQ(f.stats(sibling).restarts, 0u) << sibling;
        EXPECT_EQ(f.stats(sibling).epoch, 1u) << sibling;
        EXPECT_TRUE(f.ping(sibling)) << sibling;
    }
    EXPECT_NE(f.text().find("/g/b: restarting /g/b in 1 ms (one_for_one, restart 1 of at most 5"),
              std::string::npos)
        << f.text();
}

TEST(SupervisionTest, OneForAllRestartsEveryChild) {
    Fixture f(three_children("one_for_all"));
    f.poke("/g/b");
    for (const char* child : {"/g/a", "/g/b", "/g/c"}) {
        ASSERT_TRUE(f.restarted(child, 1)) << child << "\n" << f.text();
        EXPECT_EQ(f.stats(child).epoch, 2u) << child;
        EXPECT_TRUE(f.ping(child)) << child;
    }
    EXPECT_EQ(f.stats("/g").restarts, 0u);
    EXPECT_NE(f.text().find("restarting /g/a, /g/b, /g/c in 1 ms (one_for_all"), std::string::npos)
        << f.text();
}

TEST(SupervisionTest, RestForOneRestartsTheFailedChildAndThoseAfterIt) {
    Fixture f(three_children("rest_for_one"));
    f.poke("/g/b");
    ASSERT_TRUE(f.restarted("/g/b", 1)) << f.text();
    ASSERT_TRUE(f.restarted("/g/c", 1)) << f.text();
    EXPECT_EQ(f.stats("/g/a").restarts, 0u);
    EXPECT_EQ(f.stats("/g/a").epoch, 1u);
    for (const char* child : {"/g/a", "/g/b", "/g/c"}) EXPECT_TRUE(f.ping(child)) << child;
}

// Past its intensity a gateway fails itself; its parent (here the
// microkernel) restarts it, and with it its whole subtree.
TEST(SupervisionTest, PastTheIntensityTheGatewayFailsAndItsParentRestartsIt) {
    Fixture f(three_children("one_for_one", 2));
    for (std::uint64_t round = 1; round <= 2; ++round) {
        f.poke("/g/b");
        ASSERT_TRUE(f.restarted("/g/b", round)) << f.text();
    }
    f.poke("/g/b");  // the third failure within the period: /g gives up
    ASSERT_TRUE(f.restarted("/g", 1)) << f.text();
    for (const char* child : {"/g/a", "/g/b", "/g/c"}) {
        ASSERT_TRUE(eventually([&] { return f.stats(child).state == ModuleState::running; }))
            << child;
        EXPECT_TRUE(f.ping(child)) << child;
    }
    EXPECT_EQ(f.stats("/g/a").epoch, 2u);  // restarted with its parent
    EXPECT_EQ(f.stats("/g/b").epoch, 4u);  // 2 restarts of its own, then with its parent
    const std::string text = f.text();
    EXPECT_NE(text.find("/g: more than 2 restarts of its children within 60000 ms: it gives up"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("/: /g: restarting /g in"), std::string::npos) << text;
    EXPECT_FALSE(f.b->system->failure().has_value());
}

// When the failure reaches the microkernel past its own intensity, the
// system fails: containment ends at the root.
TEST(SupervisionTest, EscalationPastTheRootFailsTheSystem) {
    Fixture f(fmt::format(R"(
[system]
plugins = ["{}"]
[supervisor]
intensity = 0
[[module]]
path = "/g"
kind = "gateway"
restart = "permanent"
supervisor = {{ intensity = 0 }}
[[module]]
path = "/g/b"
kind = "evil"
isolation = "process"
restart = "permanent"
config = {{ mode = "crash" }}
[[module]]
path = "/h"
kind = "echo"
)",
                          HMK_TEST_PLUGIN));
    f.poke("/g/b");
    ASSERT_TRUE(f.b->system->wait_failure(std::chrono::seconds(20))) << f.text();
    EXPECT_NE(f.b->system->failure()->find("the microkernel gave up on its children"),
              std::string::npos)
        << *f.b->system->failure();
    EXPECT_NE(f.text().find("system failed:"), std::string::npos);
}

TEST(SupervisionTest, TemporaryAndTransientChildrenAreRestartedOnlyWhenTheyShouldBe) {
    Fixture f(fmt::format(R"(
[system]
plugins = ["{}"]
[[module]]
path = "/g"
kind = "gateway"
supervisor = {{ intensity = 10, backoff_ms = 1 }}
[[module]]
path = "/g/temp"
kind = "evil"
isolation = "process"
restart = "temporary"
config = {{ mode = "crash" }}
[[module]]
path = "/g/normal"
kind = "evil"
isolation = "process"
restart = "transient"
config = {{ mode = "exit0" }}
[[module]]
path = "/g/abnormal"
kind = "evil"
isolation = "process"
restart = "transient"
config = {{ mode = "exit" }}
)",
                          HMK_TEST_PLUGIN));
    f.poke("/g/temp");
    f.poke("/g/normal");
    f.poke("/g/abnormal");
    ASSERT_TRUE(f.restarted("/g/abnormal", 1)) << f.text();
    ASSERT_TRUE(eventually([&] { return f.stats("/g/temp").state == ModuleState::failed; }));
    ASSERT_TRUE(eventually([&] { return f.stats("/g/normal").state == ModuleState::failed; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // nothing more is scheduled
    EXPECT_EQ(f.stats("/g/temp").restarts, 0u);
    EXPECT_EQ(f.stats("/g/normal").restarts, 0u);
    const std::string text = f.text();
    EXPECT_NE(text.find("/g/temp: not restarted (restart = temporary)"), std::string::npos) << text;
    EXPECT_NE(text.find("/g/normal: not restarted (restart = transient, and it ended normally)"),
              std::string::npos)
        << text;
}

// In-process modules are supervised the same way: a handler that throws
// fails the module, and its parent starts a new instance on a new thread.
TEST(SupervisionTest, InprocModuleThatThrowsIsRestarted) {
    Fixture f(R"(
[[module]]
path = "/g"
kind = "gateway"
supervisor = { backoff_ms = 1 }
[[module]]
path = "/g/t"
kind = "thrower"
restart = "permanent"
[[module]]
path = "/g/e"
kind = "echo"
)");
    for (std::uint64_t round = 1; round <= 2; ++round) {
        f.poke("/g/t");
        ASSERT_TRUE(f.restarted("/g/t", round)) << f.text();
        EXPECT_TRUE(f.ping("/g/t"));
    }
    EXPECT_EQ(f.stats("/g/e").restarts, 0u);
    EXPECT_NE(f.text().find("/g/t: module failed in on_message: thrower was told to fail"),
              std::string::npos);
}

// The operator's kill: a process is killed, an in-process module fails; both
// come back under their parent's policy.
TEST(SupervisionTest, KilledModulesAreRestarted) {
    Fixture f(fmt::format(R"(
[system]
plugins = ["{}"]
[[module]]
path = "/g"
kind = "gateway"
supervisor = {{ backoff_ms = 1 }}
[[module]]
path = "/g/p"
kind = "echo"
isolation = "process"
restart = "permanent"
[[module]]
path = "/g/i"
kind = "echo"
restart = "permanent"
)",
                          HMK_TEST_PLUGIN));
    for (const char* path : {"/g/p", "/g/i"}) {
        ASSERT_TRUE(f.b->system->kill(f.id(path)).has_value());
        ASSERT_TRUE(f.restarted(path, 1)) << path << "\n" << f.text();
        EXPECT_TRUE(f.ping(path)) << path;
    }
    EXPECT_NE(f.text().find("killed by SIGKILL (stopped by its parent: killed by the operator)"),
              std::string::npos)
        << f.text();
    EXPECT_FALSE(f.b->system->kill(f.id("/")).has_value());
}

// A module stuck in a handler stops acknowledging its parent's heartbeats:
// its parent finds it hung and restarts it, process or in-process alike.
TEST(SupervisionTest, HungModulesAreDetectedByMissedHeartbeatsAndRestarted) {
    Fixture f(fmt::format(R"(
[system]
plugins = ["{}"]
[[module]]
path = "/g"
kind = "gateway"
supervisor = {{ heartbeat_ms = 30, heartbeat_misses = 3, backoff_ms = 1 }}
[[module]]
path = "/g/p"
kind = "evil"
isolation = "process"
restart = "permanent"
config = {{ mode = "hang" }}
[[module]]
path = "/g/i"
kind = "evil"
restart = "permanent"
config = {{ mode = "sleep" }}
[[module]]
path = "/g/ok"
kind = "echo"
restart = "permanent"
)",
                          HMK_TEST_PLUGIN));
    // Idle modules are not hung: they handle the heartbeats.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_EQ(f.stats("/g/p").restarts, 0u) << f.text();
    EXPECT_EQ(f.stats("/g/ok").restarts, 0u) << f.text();
    f.poke("/g/p");
    f.poke("/g/i");
    ASSERT_TRUE(f.restarted("/g/p", 1)) << f.text();
    ASSERT_TRUE(f.restarted("/g/i", 1)) << f.text();
    EXPECT_TRUE(f.ping("/g/p")) << f.text();
    EXPECT_TRUE(f.ping("/g/i")) << f.text();
    EXPECT_EQ(f.stats("/g/ok").restarts, 0u);
    EXPECT_GT(f.stats("/g/ok").heartbeat, 0u);
    const std::string text = f.text();
    EXPECT_NE(text.find("/g/p: missed 3 heartbeats of 30 ms: hung"), std::string::npos) << text;
    EXPECT_NE(text.find("/g/i: missed 3 heartbeats of 30 ms: hung"), std::string::npos) << text;
    EXPECT_NE(text.find("/g/i: does not stop"), std::string::npos) << text;
}

/// A system whose /g/slow, poked, stays in its handler until the test
/// releases it: stopped while in there, it is slow to leave, not hung for good.
struct Stall {
    explicit Stall(const std::string& supervisor, const std::string& siblings)
        : f(fmt::format(R"(
[system]
plugins = ["{}"]
[[module]]
path = "/g"
kind = "gateway"
supervisor = {{ {}, heartbeat_ms = 30, backoff_ms = 1, stop_grace_ms = 600000 }}
[[module]]
path = "/g/slow"
kind = "evil"
restart = "permanent"
config = {{ mode = "stall", release = "{}" }}
{})",
                        HMK_TEST_PLUGIN, supervisor, dir.file("release"), siblings)) {}
    void release() const { std::ofstream(dir.file("release")) << "go\n"; }

    testing::TempDir dir{"hmk-supervision"};
    Fixture f;
};

// An in-process module that is slow to leave its handler holds up its own
// restart, not its parent's supervision of the others: a sibling that fails
// meanwhile is restarted at once, and the slow one, once it leaves within its
// grace, is restarted, not abandoned.
TEST(SupervisionTest, AStoppingModuleSlowToLeaveItsHandlerDoesNotHoldUpItsSiblings) {
    Stall st(R"(strategy = "one_for_one")", R"(
[[module]]
path = "/g/t"
kind = "evil"
restart = "permanent"
config = { mode = "throw" }
[[module]]
path = "/g/ok"
kind = "echo"
restart = "permanent"
)");
    Fixture& f = st.f;
    f.poke("/g/slow");
    ASSERT_TRUE(eventually([&] {
        return f.text().find("/g/slow: missed 3 heartbeats") != std::string::npos;
    })) << f.text();
    // Found hung and asked to stop; it stays in its handler until released.
    f.poke("/g/t");
    ASSERT_TRUE(f.restarted("/g/t", 1)) << f.text();
    EXPECT_TRUE(f.ping("/g/t")) << f.text();
    EXPECT_TRUE(f.ping("/g/ok")) << f.text();
    EXPECT_EQ(f.stats("/g/slow").restarts, 0u) << f.text();
    EXPECT_NE(f.stats("/g/slow").state, ModuleState::running) << f.text();
    st.release();
    ASSERT_TRUE(f.restarted("/g/slow", 1)) << f.text();
    EXPECT_TRUE(f.ping("/g/slow")) << f.text();
    EXPECT_EQ(f.stats("/g/ok").restarts, 0u);
    EXPECT_EQ(f.text().find("does not stop"), std::string::npos) << f.text();
    EXPECT_EQ(f.b->system->abandoned(), 0u);
}

// Restarted together, children start in declaration order: with
// rest_for_one, the one after a slow child waits for it to leave its handler.
TEST(SupervisionTest, RestForOneWaitsForTheSlowChildBeforeStartingThoseAfterIt) {
    Stall st(R"(strategy = "rest_for_one")", R"(
[[module]]
path = "/g/after"
kind = "echo"
restart = "permanent"
)");
    Fixture& f = st.f;
    f.poke("/g/slow");
    ASSERT_TRUE(eventually([&] { return f.stats("/g/after").state == ModuleState::restarting; }))
        << f.text();
    EXPECT_TRUE(f.ping("/g")) << f.text();
    EXPECT_EQ(f.stats("/g/after").restarts, 0u) << f.text();
    st.release();
    ASSERT_TRUE(f.restarted("/g/slow", 1)) << f.text();
    ASSERT_TRUE(f.restarted("/g/after", 1)) << f.text();
    EXPECT_TRUE(f.ping("/g/after")) << f.text();
    const std::string text = f.text();
    const auto slow = text.find("/g/slow: restarted");
    const auto after = text.find("/g/after: restarted");
    ASSERT_NE(slow, std::string::npos) << text;
    ASSERT_NE(after, std::string::npos) << text;
    EXPECT_LT(slow, after) << text;
}

}  // namespace
}  // namespace hmk
