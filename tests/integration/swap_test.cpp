// SPDX-License-Identifier: Apache-2.0
// Hot swap under load (docs/swap.md): a prober sends 10k requests a second
// to a stateful module and checks every reply (once, in order, each count
// one greater than the last) while the module is swapped for another
// instance, another version, or a replica that goes wrong.
#include <fmt/core.h>
#include <gtest/gtest.h>

#include <map>
#include <sstream>
#include <thread>

#include "recorder.hpp"
#include "tally_module.hpp"

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

/// The prober's counters ("sent=1 replied=1 ...").
std::map<std::string, std::uint64_t> parse(const std::string& text) {
    std::map<std::string, std::uint64_t> out;
    std::istringstream in(text);
    std::string word;
    while (in >> word) {
        const auto eq = word.find('=');
        if (eq == std::string::npos) continue;
        try {
            out[word.substr(0, eq)] = std::stoull(word.substr(eq + 1));
        } catch (...) {
        }
    }
    return out;
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
        Outgoing q;
        q.destination = booted->id(path);
        q.type = msg::k_stats;
        auto corr = booted->system->inject(q);
        if (!corr) return "(cannot ask)";
        auto reply = booted->system->wait_for_root(*corr, std::chrono::seconds(2));
        return reply ? std::string(reply->text()) : "(no reply)";
    }
    std::map<std::string, std::uint64_t> probe() { return parse(ask("/svc/probe")); }

    /// Waits until the prober has `replies` replies; its counters then.
    std::map<std::string, std::uint64_t> wait_replies(std::uint64_t replies) {
        std::map<std::string, std::uint64_t> p;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (std::chrono::steady_clock::now() < deadline) {
            p = probe();
            if (p["replied"] >= replies) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        return p;
    }

    /// Every request answered once, in order, counting on by one.
    void expect_nothing_lost(std::map<std::string, std::uint64_t> p, std::uint64_t count) {
        EXPECT_EQ(p["sent"], count);
        EXPECT_EQ(p["replied"], count);
        EXPECT_EQ(p["lost"], 0u);
        EXPECT_EQ(p["dup"], 0u);
        EXPECT_EQ(p["late"], 0u);
        EXPECT_EQ(p["count_errors"], 0u);
        EXPECT_EQ(p["last"], count);  // the state went on: the count never restarted
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
    expect_nothing_lost(p, k_count);
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
    expect_nothing_lost(wait_replies(k_count), k_count);
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
        auto r = booted->system->swap(tally(), "tally", v);
        if (v == 1) {
            ASSERT_FALSE(r.has_value());
            EXPECT_NE(r.error().find("rolled back"), std::string::npos) << r.error();
        } else {
            ASSERT_TRUE(r.has_value()) << r.error();
        }
        at += 2500;
    }
    expect_nothing_lost(wait_replies(3 * k_count), 3 * k_count);
    EXPECT_EQ(ask("/svc/tally"), fmt::format("total={} version=2 upgraded=1", 3 * k_count));
    EXPECT_EQ(booted->system->module_stats(tally()).epoch, 5u);  // four replicas, one dropped
}

TEST_P(SwapTest, ReplicaThatCrashesWhileCatchingUpIsDroppedAndNothingIsLost) {
    boot();
    wait_replies(2000);
    auto r = booted->system->swap(tally(), "tally", 3);
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.error().find("rolled back: the replica failed"), std::string::npos) << r.error();
    EXPECT_NE(r.error().find("keeps running as before"), std::string::npos) << r.error();
    expect_nothing_lost(wait_replies(k_count), k_count);
    EXPECT_EQ(ask("/svc/tally"), fmt::format("total={} version=1 upgraded=0", k_count));
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
    expect_nothing_lost(wait_replies(k_count), k_count);
    EXPECT_EQ(booted->system->module_stats(tally()).epoch, 1u);
}

TEST_P(SwapTest, ReplicaThatCannotKeepUpIsDroppedAtTheDeadline) {
    boot();
    wait_replies(1000);
    auto r = booted->system->swap(tally(), "tally", 5, std::chrono::milliseconds(300));
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.error().find("was not ready within 300 ms"), std::string::npos) << r.error();
    expect_nothing_lost(wait_replies(k_count), k_count);
    EXPECT_EQ(ask("/svc/tally"), fmt::format("total={} version=1 upgraded=0", k_count));
}

TEST_P(SwapTest, BadRequestsAreRefusedWithTheReason) {
    boot(1000);
    struct Bad {
        std::string path, kind;
        std::uint32_t version;
        const char* says;
    };
    for (const Bad& b : {Bad{"/svc/tally", "nonesuch", 0, "no module kind 'nonesuch'"},
                         Bad{"/svc/tally", "tally", 9, "has no version 9 (it has 1, 2, 3, 4, 5)"},
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
