// SPDX-License-Identifier: Apache-2.0
// Delivery on a bus (DESIGN.md 2.3, docs/delivery.md): a reliable bus holds
// its senders back instead of lapping a reader, and evicts a reader that
// holds them back past its deadline; a best-effort bus laps a slow reader,
// which is told what it lost and reads on, in a process as in the kernel's.
#include <gtest/gtest.h>

#include <fmt/core.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include "load_check.hpp"
#include "recorder.hpp"
#include "temp_dir.hpp"

namespace hmk {
namespace {

using testing::eventually;

class DeliveryTest : public ::testing::TestWithParam<std::string> {
  protected:
    const std::string& isolation() const { return GetParam(); }
};

BusStats stats_of(System& system, const std::string& bus) {
    for (const BusStats& s : system.bus_stats())
        if (s.name == bus) return s;
    return {};
}

std::uint64_t published_on(System& system, const std::string& bus) {
    return stats_of(system, bus).head;
}

// The flood of the reader-wedge report: a sender as fast as it can go
// (200,000 messages of 32 bytes), a ring of 64 slots, and two readers: on a
// reliable bus every message reaches both, in order, and nobody is evicted.
TEST_P(DeliveryTest, AReliableBusDeliversAFloodWholeAndInOrder) {
    constexpr int k_count = 200000;
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    auto b = testing::boot(fmt::format(R"(
[[module]]
path = "/g"
kind = "gateway"
bus = {{ capacity = 64 }}
[[module]]
path = "/g/src"
kind = "source"
isolation = "{0}"
config = {{ to = "/g/sink", count = {1}, rate = 0, payload = "{2}" }}
[[module]]
path = "/g/sink"
kind = "sink"
isolation = "{0}"
[[module]]
path = "/g/other"
kind = "sink"
isolation = "{0}"
)",
                                       isolation(), k_count, std::string(32, 'x')),
                           reg);
    System& sys = *b->system;
    const ModuleId src = b->id("/g/src"), sink = b->id("/g/sink");
    ASSERT_TRUE(
        eventually([&] { return sys.module_stats(src).tx >= k_count; }, std::chrono::seconds(120)))
        << "sent " << sys.module_stats(src).tx;
    ASSERT_TRUE(eventually([&] {
        return testing::parse_counters(testing::ask_stats(sys, sink))["count"] >= k_count;
    })) << testing::ask_stats(sys, sink);
    const auto counters = testing::parse_counters(testing::ask_stats(sys, sink));
    EXPECT_EQ(counters.at("count"), static_cast<std::uint64_t>(k_count));
    EXPECT_EQ(counters.at("bytes"), static_cast<std::uint64_t>(k_count) * 32);
    EXPECT_EQ(counters.at("gaps"), 0u);  // in order, none missing
    EXPECT_EQ(sys.module_stats(sink).lost, 0u);
    EXPECT_EQ(sys.module_stats(b->id("/g/other")).lost, 0u);
    // The other reader saw every one go by too.
    EXPECT_TRUE(eventually(
        [&] { return sys.module_stats(b->id("/g/other")).cursor > published_on(sys, "/g"); }));
    const BusStats bus = stats_of(sys, "/g");
    EXPECT_EQ(bus.delivery, Delivery::reliable);
    EXPECT_EQ(bus.evicted, 0u);
    // The ring is far smaller than the flood: the sender was held back.
    EXPECT_GT(bus.pressure_ns, 0u);
    EXPECT_EQ(sys.module_stats(src).send_errors, 0u);
}

// A reader that stops reading (stuck in its handler, alive) holds the
// reliable bus back only until its deadline: then it is evicted, failed to
// its parent, and the sender and the other reader go on, losing nothing.
TEST_P(DeliveryTest, AReaderThatStopsReadingIsEvictedAtItsDeadlineAndTheBusGoesOn) {
    constexpr int k_count = 5000;
    testing::TempDir dir("hmk-delivery");
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    std::FILE* log = std::tmpfile();
    ASSERT_NE(log, nullptr);
    auto b = testing::boot(fmt::format(R"(
[system]
plugins = ["{0}"]
[[module]]
path = "/g"
kind = "gateway"
bus = {{ capacity = 64, reader_deadline_ms = 1000 }}
supervisor = {{ stop_grace_ms = 600000 }}
[[module]]
path = "/g/stuck"
kind = "evil"
isolation = "{1}"
config = {{ mode = "{4}", release = "{2}" }}
[[module]]
path = "/g/src"
kind = "source"
isolation = "{1}"
config = {{ to = "/g/sink", count = {3}, rate = 0, on_demand = true }}
[[module]]
path = "/g/sink"
kind = "sink"
isolation = "{1}"
)",
                                       HMK_TEST_PLUGIN, isolation(), dir.file("release"), k_count,
                                       // (the sandbox forbids a look at the file system)
                                       isolation() == "process" ? "sleep" : "stall"),
                           reg, log, LogLevel::info);
    System& sys = *b->system;
    const ModuleId stuck = b->id("/g/stuck"), src = b->id("/g/src"), sink = b->id("/g/sink");
    Outgoing poke;
    poke.destination = stuck;
    // The poke keeps it in its handler for good; the flood comes after it
    // on the bus.
    ASSERT_TRUE(sys.inject(poke));
    Outgoing start;
    start.destination = src;
    start.type = msg::k_start;
    ASSERT_TRUE(sys.inject(start));

    ASSERT_TRUE(
        eventually([&] { return sys.module_stats(src).tx >= k_count; }, std::chrono::seconds(120)))
        << "sent " << sys.module_stats(src).tx << "\n"
        << testing::read_all(log);
    ASSERT_TRUE(eventually([&] {
        return testing::parse_counters(testing::ask_stats(sys, sink))["count"] >= k_count;
    })) << testing::ask_stats(sys, sink);
    const auto counters = testing::parse_counters(testing::ask_stats(sys, sink));
    EXPECT_EQ(counters.at("count"), static_cast<std::uint64_t>(k_count));
    EXPECT_EQ(counters.at("gaps"), 0u);
    EXPECT_EQ(sys.module_stats(sink).lost, 0u);
    EXPECT_EQ(stats_of(sys, "/g").evicted, 1u);
    // Its parent failed it (restart = "temporary": it stays down).
    EXPECT_TRUE(eventually([&] { return sys.module_stats(stuck).state != ModuleState::running; }))
        << testing::read_all(log);
    const std::string text = testing::read_all(log);
    EXPECT_NE(text.find("/g/stuck: did not keep up with bus /g"), std::string::npos) << text;
    std::ofstream(dir.file("release")) << "go\n";
}

// The reader wedge: a sandboxed reader lapped on a best-effort bus that has
// no monitor used to wait for a journal feed that never came, and read
// nothing again. It learns what it lost, reads on and answers.
TEST_P(DeliveryTest, AReaderLappedOnABestEffortBusIsToldItsGapAndReadsOn) {
    constexpr int k_count = 3000;
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    std::FILE* log = std::tmpfile();
    ASSERT_NE(log, nullptr);
    auto b = testing::boot(fmt::format(R"(
[system]
plugins = ["{0}"]
[[module]]
path = "/g"
kind = "gateway"
bus = {{ capacity = 16, delivery = "best_effort" }}
[[module]]
path = "/g/slow"
kind = "evil"
isolation = "{2}"
config = {{ mode = "pause", pause_ms = 2000 }}
[[module]]
path = "/g/src"
kind = "source"
config = {{ to = "/g/sink", count = {1}, rate = 0, on_demand = true }}
[[module]]
path = "/g/sink"
kind = "sink"
)",
                                       HMK_TEST_PLUGIN, k_count, isolation()),
                           reg, log, LogLevel::info);
    System& sys = *b->system;
    const ModuleId slow = b->id("/g/slow"), src = b->id("/g/src");
    Outgoing poke;
    poke.destination = slow;
    // The poke keeps it in its handler for 2 s; the flood comes once it is
    // in there (had the flood lapped the poke, it would not have paused).
    ASSERT_TRUE(sys.inject(poke));
    ASSERT_TRUE(eventually([&] { return sys.module_stats(slow).rx >= 1; }));
    Outgoing start;
    start.destination = src;
    start.type = msg::k_start;
    ASSERT_TRUE(sys.inject(start));
    // A best-effort bus never waits for the paused reader.
    ASSERT_TRUE(eventually([&] { return sys.module_stats(src).tx >= k_count; }))
        << "sent " << sys.module_stats(src).tx;
    // Out of its handler, it reads on to the head of the bus, told of the
    // range the ring overwrote.
    ASSERT_TRUE(eventually([&] { return sys.module_stats(slow).cursor > published_on(sys, "/g"); }))
        << "cursor " << sys.module_stats(slow).cursor << " head " << published_on(sys, "/g") << "\n"
        << testing::read_all(log);
    const ModuleStats s = sys.module_stats(slow);
    EXPECT_GT(s.lost, 0u);
    EXPECT_EQ(s.state, ModuleState::running);
    EXPECT_EQ(stats_of(sys, "/g").evicted, 0u);
    const std::string text = testing::read_all(log);
    EXPECT_NE(text.find("fell behind on bus /g"), std::string::npos) << text;
    // And it answers its requests again.
    EXPECT_EQ(testing::ask_stats(sys, slow), "attacks=1");
}

INSTANTIATE_TEST_SUITE_P(BothIsolations, DeliveryTest, ::testing::Values("inproc", "process"),
                         [](const auto& p) { return std::string(p.param); });

}  // namespace
}  // namespace hmk
