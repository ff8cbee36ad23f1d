// SPDX-License-Identifier: Apache-2.0
// Hot swap under load (docs/swap.md): a prober sends 10k requests a second
// to a stateful module and checks every reply (once, in order, each count
// one greater than the last) while the module is swapped for another
// instance, another version, or a replica that goes wrong.
#include <fmt/core.h>
#include <gtest/gtest.h>

#include "load_check.hpp"
#include "tally_module.hpp"
#include "temp_dir.hpp"

namespace hmk {
namespace {

constexpr int k_rate = 10000;
constexpr int k_count = 8000;

std::string system_toml(const std::string& isolation, int count = k_count) {
    return fmt::format(R"(
[system]
name = "swap-test"
plugins = ["{plugin}"]
[[module]]
path = "/svc"
kind = "gateway"
# A window of seconds at 10k messages/s: sanitizer builds run slowly.
bus = {{ capacity = 32768, max_payload = 256 }}
supervisor = {{ intensity = 100, period_ms = 1000 }}
[[module]]
path = "/svc/tally"
kind = "tally"
version = 1
isolation = "{isolation}"
# Room for a second of replies should a sanitizer build stall the pump.
quota = {{ uplink_slots = 16384 }}
restart = "permanent"
config = {{ abort = {abort} }}
[[module]]
path = "/svc/probe"
kind = "prober"
config = {{ to = "/svc/tally", rate = {rate}.0, count = {count}, check_count = true, period_us = 200 }}
)",
                       fmt::arg("plugin", HMK_TEST_PLUGIN), fmt::arg("isolation", isolation),
                       fmt::arg("rate", k_rate), fmt::arg("count", count),
                       // (an in-process module that aborts takes the whole test down)
                       fmt::arg("abort", isolation == "process" ? "true" : "false"));
}

/// /svc/tally on a journaled bus of `capacity` slots (a small ring, as
/// drivers have), recovering from the journal; `tally_extra` adds lines to
/// its table.
std::string journaled_toml(const std::string& isolation, const std::string& dir, int capacity,
                           const std::string& tally_extra, int count) {
    return fmt::format(R"(
[system]
name = "swap-journal-test"
plugins = ["{plugin}"]
[[module]]
path = "/svc"
kind = "gateway"
bus = {{ capacity = {capacity}, max_payload = 256 }}
[[module]]
path = "/svc/monitor"
kind = "monitor"
config = {{ dir = "{dir}", fsync = "none" }}
[[module]]
path = "/svc/tally"
kind = "tally"
version = 1
isolation = "{isolation}"
quota = {{ uplink_slots = 16384 }}
restart = "permanent"
recover = "journal"
{tally_extra}
[[module]]
path = "/svc/probe"
kind = "prober"
config = {{ to = "/svc/tally", rate = {rate}.0, count = {count}, check_count = true, period_us = 200 }}
)",
                       fmt::arg("plugin", HMK_TEST_PLUGIN), fmt::arg("isolation", isolation),
                       fmt::arg("dir", dir), fmt::arg("capacity", capacity),
                       fmt::arg("tally_extra", tally_extra), fmt::arg("rate", k_rate),
                       fmt::arg("count", count));
}

class SwapTest : public ::testing::TestWithParam<const char*> {
  protected:
    testing::RecordBook book;
    Registry registry = make_registry();
    std::unique_ptr<testing::Booted> booted;

    Registry make_registry() {
        Registry r = testing::test_registry(book);
        testing::add_tally(r);
        return r;
    }
    void boot(int count = k_count) {
        booted = testing::boot(system_toml(GetParam(), count), registry);
    }
    ModuleId tally() const { return booted->id("/svc/tally"); }

    std::string ask(const std::string& path) {
        return testing::ask_stats(*booted->system, booted->id(path));
    }
    std::map<std::string, std::uint64_t> wait_replies(std::uint64_t replies) {
        return testing::wait_replies(*booted->system, booted->id("/svc/probe"), replies);
    }
};

TEST_P(SwapTest, SameVersionUnderLoadLosesAndRepeatsNothing) {
    boot();
    wait_replies(2000);
    auto r = booted->system->swap(tally(), "tally", 1);
    ASSERT_TRUE(r.has_value()) << r.error();
    EXPECT_EQ(r->epoch, 2u);
    EXPECT_GT(r->switch_seq, 0u);
    const auto p = wait_replies(k_count);
    testing::expect_nothing_lost(p, k_count);
    EXPECT_EQ(ask("/svc/tally"), fmt::format("total={} version=1 upgraded=0", k_count));
    const ModuleStats s = booted->system->module_stats(tally());
    EXPECT_EQ(s.epoch, 2u);
    EXPECT_EQ(s.state, ModuleState::running);
}

TEST_P(SwapTest, NewVersionUpgradesTheStateAndGoesOnCounting) {
    boot();
    wait_replies(2000);
    auto r = booted->system->swap(tally(), "tally", 2);
    ASSERT_TRUE(r.has_value()) << r.error();
    EXPECT_NE(r->what.find("version 2"), std::string::npos) << r->what;
    testing::expect_nothing_lost(wait_replies(k_count), k_count);
    // Version 2 read version 1's state (format 1) and keeps format 2.
    EXPECT_EQ(ask("/svc/tally"), fmt::format("total={} version=2 upgraded=1", k_count));
    EXPECT_EQ(booted->system->spec().module(tally())->version, 2u);
}

TEST_P(SwapTest, ManySwapsInARowLoseNothing) {
    boot(3 * k_count);
    std::uint64_t at = 1000;
    for (std::uint32_t v : {2u, 2u, 1u, 2u}) {
        // Swapping back to version 1 cannot read format 2: that one rolls back.
        wait_replies(at);
        // The last replica has taken over; a swap needs it to say it runs.
        ASSERT_TRUE(testing::eventually(
            [&] { return booted->system->module_stats(tally()).state == ModuleState::running; }));
        auto r = booted->system->swap(tally(), "tally", v);
        if (v == 1) {
            ASSERT_FALSE(r.has_value());
            EXPECT_NE(r.error().find("rolled back"), std::string::npos) << r.error();
        } else {
            ASSERT_TRUE(r.has_value()) << r.error();
        }
        at += 2500;
    }
    testing::expect_nothing_lost(wait_replies(3 * k_count), 3 * k_count);
    EXPECT_EQ(ask("/svc/tally"), fmt::format("total={} version=2 upgraded=1", 3 * k_count));
    EXPECT_EQ(booted->system->module_stats(tally()).epoch, 5u);  // four replicas, one dropped
}

// A replica that fails goes wrong on the load's messages: the load lasts
// seconds past the swap, so the replica meets them however slowly it starts
// (a sanitizer build takes a third of a second to start a process).
constexpr int k_long_count = 3 * k_count;

TEST_P(SwapTest, ReplicaThatCrashesWhileCatchingUpIsDroppedAndNothingIsLost) {
    boot(k_long_count);
    wait_replies(2000);
    auto r = booted->system->swap(tally(), "tally", 3);
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.error().find("rolled back: the replica failed"), std::string::npos) << r.error();
    EXPECT_NE(r.error().find("keeps running as before"), std::string::npos) << r.error();
    testing::expect_nothing_lost(wait_replies(k_long_count), k_long_count);
    EXPECT_EQ(ask("/svc/tally"), fmt::format("total={} version=1 upgraded=0", k_long_count));
    const ModuleStats s = booted->system->module_stats(tally());
    EXPECT_EQ(s.epoch, 1u);
    EXPECT_EQ(s.restarts, 0u);  // the old instance never noticed
}

TEST_P(SwapTest, ReplicaThatCannotReadTheStateIsDropped) {
    boot();
    wait_replies(2000);
    auto r = booted->system->swap(tally(), "tally", 4);
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.error().find("rolled back"), std::string::npos) << r.error();
    testing::expect_nothing_lost(wait_replies(k_count), k_count);
    EXPECT_EQ(booted->system->module_stats(tally()).epoch, 1u);
}

TEST_P(SwapTest, ReplicaThatCannotKeepUpIsDroppedAtTheDeadline) {
    boot(k_long_count);
    wait_replies(1000);
    auto r = booted->system->swap(tally(), "tally", 5, std::chrono::milliseconds(300));
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.error().find("was not ready within 300 ms"), std::string::npos) << r.error();
    testing::expect_nothing_lost(wait_replies(k_long_count), k_long_count);
    EXPECT_EQ(ask("/svc/tally"), fmt::format("total={} version=1 upgraded=0", k_long_count));
}

// On a journaled bus with a small ring, as drivers have: the module
// recovers from the journal and sends snapshots while it is swapped twice.
TEST_P(SwapTest, OnAJournaledBusWithSnapshotsNothingIsLostOrRepeated) {
    const testing::TempDir dir("hmk-swap-test");
    booted = testing::boot(
        journaled_toml(GetParam(), dir.path, 1024, "snapshot_every = 100", k_long_count), registry);
    std::uint64_t at = 1500;
    for (std::uint32_t v : {1u, 2u}) {
        wait_replies(at);
        ASSERT_TRUE(testing::eventually(
            [&] { return booted->system->module_stats(tally()).state == ModuleState::running; }));
        auto r = booted->system->swap(tally(), "tally", v);
        ASSERT_TRUE(r.has_value()) << r.error();
        at += 6000;
    }
    testing::expect_nothing_lost(wait_replies(k_long_count), k_long_count);
    EXPECT_EQ(ask("/svc/tally"), fmt::format("total={} version=2 upgraded=1", k_long_count));
    booted.reset();  // before its journal goes
}

// A replica that starts late on a busy journaled bus: the ring has moved
// on past where it began reading before it reads a thing, and it finds the
// old instance's state and last word in the journal. The old instance is
// slow to make its state, so the replica, having read past the point the
// state is of, reads the journal again from there (a sandboxed one asks
// its parent for a new run of its journal feed).
TEST_P(SwapTest, ReplicaThatStartsBehindTheRingReadsTheJournal) {
    const testing::TempDir dir("hmk-swap-test");
    booted = testing::boot(journaled_toml(GetParam(), dir.path, 256,
                                          "config = { snapshot_delay_ms = 300 }", k_long_count),
                           registry);
    wait_replies(1500);
    // Version 6 takes 300 ms to be made, and the old instance 300 ms to
    // make its state: 6000 messages each at this load, and the ring holds 256.
    auto r = booted->system->swap(tally(), "tally", 6);
    ASSERT_TRUE(r.has_value()) << r.error();
    EXPECT_GT(booted->system->module_stats(tally()).caught_up, 0u);
    testing::expect_nothing_lost(wait_replies(k_long_count), k_long_count);
    EXPECT_EQ(ask("/svc/tally"), fmt::format("total={} version=6 upgraded=1", k_long_count));
    booted.reset();  // before its journal goes
}

TEST_P(SwapTest, BadRequestsAreRefusedWithTheReason) {
    boot(1000);
    struct Bad {
        std::string path, kind;
        std::uint32_t version;
        const char* says;
    };
    for (const Bad& b :
         {Bad{"/svc/tally", "nonesuch", 0, "no module kind 'nonesuch'"},
          Bad{"/svc/tally", "tally", 9, "has no version 9 (it has 1, 2, 3, 4, 5, 6)"},
          Bad{"/svc/tally", "gateway", 0, "is a gateway"},
          Bad{"/svc", "gateway", 0, "/svc is a gateway: a gateway is not swapped"},
          Bad{"/", "gateway", 0, "no such module"}}) {
        auto r = booted->system->swap(booted->id(b.path), b.kind, b.version);
        ASSERT_FALSE(r.has_value()) << b.path << " " << b.kind;
        EXPECT_NE(r.error().find(b.says), std::string::npos) << r.error();
    }
    EXPECT_EQ(booted->system->module_stats(tally()).epoch, 1u);
}

INSTANTIATE_TEST_SUITE_P(BothIsolations, SwapTest, ::testing::Values("inproc", "process"),
                         [](const auto& p) { return std::string(p.param); });

}  // namespace
}  // namespace hmk
