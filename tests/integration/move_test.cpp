// SPDX-License-Identifier: Apache-2.0
// Relocation under load (docs/relocation.md): a prober sends 10k requests a
// second to a stateful module and checks every reply while the module, or a
// gateway above it, moves to another gateway and to the other isolation.
// The module keeps its id and its state; nothing is lost or repeated.
#include <fmt/core.h>
#include <gtest/gtest.h>

#include "load_check.hpp"
#include "tally_module.hpp"
#include "temp_dir.hpp"

namespace hmk {
namespace {

constexpr int k_rate = 10000;
constexpr int k_count = 8000;

/// /svc/sub/tally answers /svc/probe; /other and /other/deep are empty
/// gateways to move to; /logged's bus has a journal, which /logged/keeper
/// recovers from.
std::string system_toml(const std::string& isolation, const std::string& dir) {
    return fmt::format(R"(
[system]
name = "move-test"
plugins = ["{plugin}"]
# Bus 0 is on the way while the tally is under /other: a window of seconds
# there too (sanitizer builds run slowly).
[bus]
capacity = 32768
max_payload = 256
[[module]]
path = "/svc"
kind = "gateway"
bus = {{ capacity = 32768, max_payload = 256 }}
[[module]]
path = "/svc/sub"
kind = "gateway"
bus = {{ capacity = 32768, max_payload = 256 }}
[[module]]
path = "/svc/sub/tally"
kind = "tally"
version = 1
isolation = "{isolation}"
# Room for a second of replies should a sanitizer build stall the pump.
quota = {{ uplink_slots = 16384 }}
[[module]]
path = "/svc/sub/mark"
kind = "tally"
version = 1
[[module]]
path = "/svc/probe"
kind = "prober"
config = {{ to = "/svc/sub/tally", rate = {rate}.0, count = {count}, check_count = true, period_us = 200 }}
[[module]]
path = "/other"
kind = "gateway"
bus = {{ capacity = 32768, max_payload = 256 }}
[[module]]
path = "/other/deep"
kind = "gateway"
bus = {{ capacity = 32768, max_payload = 256 }}
[[module]]
path = "/other/mark"
kind = "tally"
version = 1
[[module]]
path = "/logged"
kind = "gateway"
bus = {{ capacity = 32768, max_payload = 256 }}
[[module]]
path = "/logged/monitor"
kind = "monitor"
config = {{ dir = "{dir}", fsync = "none" }}
[[module]]
path = "/logged/keeper"
kind = "tally"
version = 1
recover = "journal"
[[module]]
path = "/other/sleeper"
kind = "evil"
isolation = "{isolation}"
config = {{ mode = "sleep" }}
)",
                       fmt::arg("plugin", HMK_TEST_PLUGIN), fmt::arg("isolation", isolation),
                       fmt::arg("rate", k_rate), fmt::arg("count", k_count), fmt::arg("dir", dir));
}

class MoveTest : public ::testing::TestWithParam<const char*> {
  protected:
    testing::RecordBook book;
    Registry registry = make_registry();
    testing::TempDir m_dir{"hmk-move-test"};  // outlives the system that journals in it
    std::unique_ptr<testing::Booted> booted;
    ModuleId tally = k_no_module;
    ModuleId sub = k_no_module;
    ModuleId probe = k_no_module;

    Registry make_registry() {
        Registry r = testing::test_registry(book);
        testing::add_tally(r);
        return r;
    }
    void boot() {
        booted = testing::boot(system_toml(GetParam(), m_dir.path), registry);
        tally = booted->id("/svc/sub/tally");
        sub = booted->id("/svc/sub");
        probe = booted->id("/svc/probe");
    }
    Isolation other_isolation() const {
        return std::string(GetParam()) == "process" ? Isolation::inproc : Isolation::process;
    }
    System& system() { return *booted->system; }
    std::map<std::string, std::uint64_t> wait_replies(std::uint64_t n) {
        return testing::wait_replies(system(), probe, n);
    }
    std::string path_of(ModuleId id) { return system().topology().find(id)->path; }
    Result<HandoffReport, std::string> move(ModuleId id, const std::string& to,
                                            std::optional<Isolation> isolation = {}) {
        // A move needs the module running: a new instance in a process reports
        // itself a moment after it has taken over (slowly in sanitizer builds).
        (void)testing::eventually(
            [&] { return system().module_stats(id).state == ModuleState::running; });
        return system().move(id, booted->id(to), isolation);
    }
};

TEST_P(MoveTest, ALeafMovesAcrossLevelsAndToTheOtherIsolationAndBack) {
    boot();
    wait_replies(1000);
    const auto up = move(tally, "/other");
    ASSERT_TRUE(up.has_value()) << up.error();
    EXPECT_EQ(path_of(tally), "/other/tally");
    wait_replies(2500);
    const auto down = move(tally, "/other/deep", other_isolation());
    ASSERT_TRUE(down.has_value()) << down.error();
    EXPECT_EQ(path_of(tally), "/other/deep/tally");
    EXPECT_EQ(system().module_stats(tally).pid != 0, other_isolation() == Isolation::process);
    wait_replies(4000);
    const auto back = move(tally, "/svc/sub", Isolation::inproc);
    ASSERT_TRUE(back.has_value()) << back.error();
    EXPECT_EQ(path_of(tally), "/svc/sub/tally");

    testing::expect_nothing_lost(wait_replies(k_count), k_count);
    EXPECT_EQ(testing::ask_stats(system(), tally),
              fmt::format("total={} version=1 upgraded=0", k_count));
    const ModuleStats s = system().module_stats(tally);
    EXPECT_EQ(s.state, ModuleState::running);
    EXPECT_EQ(s.epoch, 4u);  // three instances after the first
    EXPECT_EQ(s.restarts, 0u);
    EXPECT_EQ(s.pid, 0);
}

TEST_P(MoveTest, InPlaceItChangesOnlyItsIsolation) {
    boot();
    wait_replies(1500);
    const auto there = move(tally, "/svc/sub", other_isolation());
    ASSERT_TRUE(there.has_value()) << there.error();
    EXPECT_EQ(system().module_stats(tally).pid != 0, other_isolation() == Isolation::process);
    wait_replies(4000);
    const Isolation first =
        std::string(GetParam()) == "process" ? Isolation::process : Isolation::inproc;
    const auto back = move(tally, "/svc/sub", first);
    ASSERT_TRUE(back.has_value()) << back.error();
    EXPECT_EQ(system().module_stats(tally).pid != 0, first == Isolation::process);
    EXPECT_EQ(path_of(tally), "/svc/sub/tally");
    testing::expect_nothing_lost(wait_replies(k_count), k_count);
}

TEST_P(MoveTest, AGatewayTakesItsChildrenAlong) {
    boot();
    wait_replies(1500);
    const ModuleId mark = booted->id("/svc/sub/mark");
    const ModuleStats before = system().module_stats(tally);
    const auto r = move(sub, "/other");
    ASSERT_TRUE(r.has_value()) << r.error();
    EXPECT_EQ(path_of(sub), "/other/sub");
    EXPECT_EQ(path_of(tally), "/other/sub/tally");
    EXPECT_EQ(path_of(mark), "/other/sub/mark");
    wait_replies(4000);
    const auto root = move(sub, "/");
    ASSERT_TRUE(root.has_value()) << root.error();
    EXPECT_EQ(path_of(tally), "/sub/tally");

    testing::expect_nothing_lost(wait_replies(k_count), k_count);
    // The children did not restart: their bus went along with the gateway.
    const ModuleStats after = system().module_stats(tally);
    EXPECT_EQ(after.epoch, before.epoch);
    EXPECT_EQ(after.pid, before.pid);
    EXPECT_EQ(system().module_stats(sub).epoch, 3u);
    // A sibling of the moved gateway's new place reaches its children by id.
    EXPECT_EQ(testing::ask_stats(system(), mark), "total=0 version=1 upgraded=0");
}

// The other way round: the gateway that moves holds the client, and it moves
// onto the bus of the module it sends to, and back. Its child bus stays, so
// the requests in flight at the cut went up through the old place, and the
// replies to them come back down through it: each is handled once.
TEST_P(MoveTest, AGatewayHoldingAClientMovesNextToItsServerAndBack) {
    booted = testing::boot(
        fmt::format(R"(
[system]
name = "move-client-test"
plugins = ["{plugin}"]
# Bus 0 is on the way until the move: a window of seconds there too.
[bus]
capacity = 32768
max_payload = 256
[[module]]
path = "/svc"
kind = "gateway"
bus = {{ capacity = 32768, max_payload = 256 }}
[[module]]
path = "/svc/tally"
kind = "tally"
version = 1
isolation = "{isolation}"
quota = {{ uplink_slots = 16384 }}
[[module]]
path = "/client"
kind = "gateway"
bus = {{ capacity = 32768, max_payload = 256 }}
[[module]]
path = "/client/probe"
kind = "prober"
config = {{ to = "/svc/tally", rate = {rate}.0, count = {count}, check_count = true, period_us = 200 }}
)",
                    fmt::arg("plugin", HMK_TEST_PLUGIN), fmt::arg("isolation", GetParam()),
                    fmt::arg("rate", k_rate), fmt::arg("count", k_count)),
        registry);
    probe = booted->id("/client/probe");
    const ModuleId client = booted->id("/client");
    wait_replies(1500);
    const auto there = move(client, "/svc");
    ASSERT_TRUE(there.has_value()) << there.error();
    EXPECT_EQ(path_of(probe), "/svc/client/probe");
    wait_replies(4000);
    const auto back = move(client, "/");
    ASSERT_TRUE(back.has_value()) << back.error();
    EXPECT_EQ(path_of(probe), "/client/probe");
    testing::expect_nothing_lost(wait_replies(k_count), k_count);
}

TEST_P(MoveTest, AModuleHungInAHandlerIsLeftBehindAndTheMoveCompletes) {
    boot();
    const ModuleId sleeper = booted->id("/other/sleeper");
    ASSERT_TRUE(testing::eventually(
        [&] { return system().module_stats(sleeper).state == ModuleState::running; }));
    Outgoing poke;
    poke.destination = sleeper;
    poke.payload = as_bytes("sleep");
    ASSERT_TRUE(system().inject(poke).has_value());
    // It never reads the flushes nor the order to retire now: after twice the
    // deadline it is left behind (in a process: killed), and the replica
    // takes over without its state rather than wait for it forever.
    const auto r = system().move(sleeper, booted->id("/svc"), {}, std::chrono::milliseconds(1500));
    ASSERT_TRUE(r.has_value()) << r.error();
    EXPECT_EQ(path_of(sleeper), "/svc/sleeper");
    EXPECT_TRUE(testing::eventually(
        [&] { return system().module_stats(sleeper).state == ModuleState::running; }));
    EXPECT_EQ(system().module_stats(sleeper).epoch, 2u);
    // The rest of the system never noticed.
    testing::expect_nothing_lost(wait_replies(k_count), k_count);
}

TEST_P(MoveTest, BadMovesAreRefusedAndChangeNothing) {
    boot();
    struct Bad {
        std::string path, to;
        std::optional<Isolation> isolation;
        const char* says;
    };
    const Isolation same =
        std::string(GetParam()) == "process" ? Isolation::process : Isolation::inproc;
    for (const Bad& b : {
             Bad{"/svc/sub/tally", "/svc/probe", {}, "must be a gateway"},
             Bad{"/svc/sub/tally", "/svc/sub", same, "is attached to /svc/sub already"},
             Bad{"/svc", "/svc/sub", {}, "lies in /svc's own subtree"},
             Bad{"/svc", "/svc", {}, "lies in /svc's own subtree"},
             Bad{"/svc/sub/mark", "/other", {}, "/other/mark exists already"},
             Bad{"/svc/sub", "/other", Isolation::process, "runs in its parent's process"},
             Bad{"/logged/monitor", "/other", {}, "journals its bus"},
             Bad{"/logged/keeper", "/other", {}, "the bus of /other has none"},
             Bad{"/", "/other", {}, "no such module"},
         }) {
        const auto r = move(booted->id(b.path), b.to, b.isolation);
        ASSERT_FALSE(r.has_value()) << b.path << " -> " << b.to;
        EXPECT_NE(r.error().find(b.says), std::string::npos) << r.error();
    }
    EXPECT_EQ(path_of(tally), "/svc/sub/tally");
    EXPECT_EQ(system().module_stats(tally).epoch, 1u);
    testing::expect_nothing_lost(wait_replies(k_count), k_count);
}

INSTANTIATE_TEST_SUITE_P(BothIsolations, MoveTest, ::testing::Values("inproc", "process"),
                         [](const auto& p) { return std::string(p.param); });

}  // namespace
}  // namespace hmk
