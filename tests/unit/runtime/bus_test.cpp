// SPDX-License-Identifier: Apache-2.0
#include <gtest/gtest.h>

#include <fmt/core.h>

#include <set>

#include "inproc_bus.hpp"
#include "recorder.hpp"

namespace hmk {
namespace {

using testing::boot;
using testing::eventually;

// DESIGN.md 2.1 + 2.2: several modules send concurrently on one bus; every
// receiver (the owner included) sees the same messages in the same order with
// contiguous sequence numbers, and each sender's messages in its sending order.
TEST(BusTest, AllReceiversSeeOneTotalOrderUnderConcurrentSenders) {
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    constexpr int k_senders = 4, k_each = 5000;
    std::string toml =
        "[bus]\ncapacity = 32768\n[[module]]\npath = \"/g\"\nkind = \"recgw\"\nbus = { capacity = "
        "32768 }\n";
    for (int i = 0; i < k_senders; ++i) {
        toml += fmt::format(
            "[[module]]\npath = \"/g/s{}\"\nkind = \"source\"\nconfig = {{ count = {}, rate = "
            "100000 }}\n",
            i, k_each);
    }
    for (int i = 0; i < 3; ++i)
        toml += fmt::format("[[module]]\npath = \"/g/r{}\"\nkind = \"rec\"\n", i);
    auto b = boot(toml, reg);
    const std::vector<std::string> receivers{"/g", "/g/r0", "/g/r1", "/g/r2"};
    ASSERT_TRUE(eventually([&] {
        for (const auto& r : receivers) {
            if (book.of(b->id(r)).size() < k_senders * k_each) return false;
        }
        return true;
    })) << "not every receiver got every message: "
        << [&] {
               std::string counts;
               for (const auto& r : receivers)
                   counts += fmt::format("{}={} ", r, book.of(b->id(r)).size());
               return counts;
           }();
    b->system->stop();

    std::vector<std::pair<ModuleId, std::uint64_t>> reference;
    for (const auto& path : receivers) {
        std::vector<std::pair<ModuleId, std::uint64_t>> order;
        std::map<ModuleId, std::uint64_t> last_of_sender;
        std::uint64_t expected_seq = 1;
        for (const testing::Record& r : book.of(b->id(path))) {
            if (r.header.bus != b->id("/g")) continue;  // the gateway also sees Bus 0
            ASSERT_EQ(r.header.seq, expected_seq++) << path << ": sequence numbers not contiguous";
            auto& last = last_of_sender[r.header.sender];
            ASSERT_EQ(r.header.correlation, last + 1)
                << path << ": a sender's messages out of order";
            last = r.header.correlation;
            order.emplace_back(r.header.sender, r.header.correlation);
        }
        ASSERT_EQ(order.size(), static_cast<std::size_t>(k_senders * k_each)) << path;
        if (reference.empty()) {
            reference = order;
        } else {
            ASSERT_EQ(order, reference) << path << " saw a different order";
        }
    }
    // Rate-limited senders overlap in time, so the order really interleaves them
    // (otherwise the test would prove little).
    std::size_t switches = 0;
    for (std::size_t i = 1; i < reference.size(); ++i)
        switches += reference[i].first != reference[i - 1].first;
    EXPECT_GT(switches, static_cast<std::size_t>(k_senders));
}

// DESIGN.md 2.3: on a reliable bus (the default) a slow reader holds its
// sender back: it gets every message, in order, and loses none.
TEST(BusTest, SlowReaderOnAReliableBusGetsEverythingInOrder) {
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    auto b = boot(R"(
[[module]]
path = "/g"
kind = "gateway"
bus = { capacity = 16 }
[[module]]
path = "/g/fast"
kind = "source"
config = { count = 500, rate = 0 }
[[module]]
path = "/g/slow"
kind = "rec"
config = { sleep_us = 2000 }
)",
                  reg);
    const ModuleId src = b->id("/g/fast"), slow = b->id("/g/slow");
    ASSERT_TRUE(eventually([&] { return b->system->module_stats(slow).seen == 500; }));
    EXPECT_EQ(b->system->module_stats(src).tx, 500u);
    EXPECT_EQ(b->system->module_stats(slow).lost, 0u);
    std::uint64_t prev = 0;
    for (const auto& r : book.of(slow)) ASSERT_EQ(r.header.seq, ++prev);
    EXPECT_EQ(prev, 500u);
}

// DESIGN.md 2.3: on a best-effort bus a reader that falls behind does not
// hold back the bus; it is told exactly how many messages it lost, and what
// it got plus what it lost is everything that was published.
TEST(BusTest, SlowReaderOnABestEffortBusLosesACountedRangeAndNeverBlocksTheSender) {
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    auto b = boot(R"(
[[module]]
path = "/g"
kind = "gateway"
bus = { capacity = 16, delivery = "best_effort" }
[[module]]
path = "/g/fast"
kind = "source"
config = { count = 3000, rate = 0 }
[[module]]
path = "/g/slow"
kind = "rec"
config = { sleep_us = 2000 }
)",
                  reg);
    const ModuleId src = b->id("/g/fast"), slow = b->id("/g/slow");
    ASSERT_TRUE(eventually([&] { return b->system->module_stats(src).tx == 3000; }));
    // The sender finished while the slow reader had taken only a few messages.
    EXPECT_LT(b->system->module_stats(slow).seen, 3000u);
    ASSERT_TRUE(eventually([&] {
        const ModuleStats s = b->system->module_stats(slow);
        return s.seen + s.lost == 3000;
    }));
    const ModuleStats s = b->system->module_stats(slow);
    EXPECT_GT(s.lost, 0u);
    // What it did get is in order, with gaps exactly where it was told of losses.
    std::uint64_t prev = 0, gap_total = 0;
    for (const auto& r : book.of(slow)) {
        ASSERT_GT(r.header.seq, prev);
        gap_total += r.header.seq - prev - 1;
        prev = r.header.seq;
    }
    EXPECT_EQ(gap_total + (3000 - prev), s.lost);
}

// DESIGN.md 2.4: the owner stamps who put a message on the bus and refuses a
// module that is not attached, or that claims to speak for someone else.
TEST(BusTest, OwnerRefusesForeignAndForgedPublishers) {
    auto topo = Topology::build({{0, "/g", Role::gateway},
                                 {0, "/g/a", Role::leaf},
                                 {0, "/g/b", Role::leaf},
                                 {0, "/h", Role::gateway},
                                 {0, "/h/x", Role::leaf}});
    ASSERT_TRUE(topo.has_value());
    const ModuleId g = topo->find("/g")->id, a = topo->find("/g/a")->id,
                   bb = topo->find("/g/b")->id, h = topo->find("/h")->id,
                   x = topo->find("/h/x")->id;
    Logger logger(stderr, LogLevel::warn);
    SystemSpec spec;
    spec.topology = *topo;
    const detail::Generations generations(spec);
    detail::InprocBus bus(g, "/g", detail::BusSettings{16, 32, {}}, generations, logger);

    Header msg;
    msg.sender = a;
    EXPECT_TRUE(bus.publish(msg, {}, a).has_value());
    msg.sender = bb;  // a poses as b
    EXPECT_EQ(bus.publish(msg, {}, a).error(), SendError::rejected);
    msg.sender = x;  // x is not on this bus
    EXPECT_EQ(bus.publish(msg, {}, x).error(), SendError::rejected);
    msg.sender = a;  // /h forwarding a's message onto a bus it is not attached to
    msg.hops = 1;
    EXPECT_EQ(bus.publish(msg, {}, h).error(), SendError::rejected);
    msg.sender = x;  // the owner forwarding down a message from elsewhere: fine
    EXPECT_TRUE(bus.publish(msg, {}, g).has_value());
    const std::string big(33, 'x');
    msg.sender = a;
    msg.hops = 0;
    EXPECT_EQ(bus.publish(msg, std::as_bytes(std::span(big.data(), big.size())), a).error(),
              SendError::payload_too_large);
    EXPECT_EQ(bus.rejected(), 3u);
    EXPECT_EQ(bus.ring().head(), 2u);

    std::vector<std::byte> buf(bus.ring().max_message());
    std::uint64_t cursor = 2;
    ASSERT_EQ(bus.ring().read(cursor, buf).status, ReadStatus::ok);
    const auto decoded = decode_header(std::span<const std::byte>(buf.data(), k_header_size), 32);
    ASSERT_TRUE(decoded.has_value());
    EXPECT_EQ(decoded->via, g) << "via is stamped by the owner";
    EXPECT_EQ(decoded->bus, g);
    EXPECT_GT(decoded->timestamp_ns, 0u);
}

// A module whose handler throws fails alone: the bus and its siblings go on.
TEST(BusTest, FailingModuleIsContainedAndSiblingsKeepReceiving) {
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    auto b = boot(R"(
[[module]]
path = "/g"
kind = "gateway"
[[module]]
path = "/g/bad"
kind = "thrower"
[[module]]
path = "/g/good"
kind = "echo"
)",
                  reg);
    Outgoing out;
    out.destination = b->id("/g/bad");
    ASSERT_TRUE(b->system->inject(out).has_value());
    ASSERT_TRUE(eventually(
        [&] { return b->system->module_stats(b->id("/g/bad")).state == ModuleState::failed; }));
    for (int i = 0; i < 10; ++i) {
        out.destination = b->id("/g/good");
        const std::string text = "ping " + std::to_string(i);
        out.payload = as_bytes(text);
        auto corr = b->system->inject(out);
        ASSERT_TRUE(corr.has_value());
        auto reply = b->system->wait_for_root(*corr, std::chrono::seconds(10));
        ASSERT_TRUE(reply.has_value()) << "sibling stopped answering after the failure";
        EXPECT_EQ(reply->text(), text);
    }
    EXPECT_EQ(b->system->module_stats(b->id("/g")).state, ModuleState::running);
}

TEST(BusTest, PingIsAnsweredByTheRuntime) {
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    auto b = boot("[[module]]\npath = \"/r\"\nkind = \"rec\"\n", reg);
    Outgoing out;
    out.destination = b->id("/r");
    out.type = msg::k_ping;
    auto corr = b->system->inject(out);
    ASSERT_TRUE(corr.has_value());
    auto reply = b->system->wait_for_root(*corr, std::chrono::seconds(10));
    ASSERT_TRUE(reply.has_value());
    EXPECT_EQ(reply->text(), "pong");
    EXPECT_TRUE(reply->header.is_reply());
    EXPECT_EQ(reply->header.sender, b->id("/r"));
}

}  // namespace
}  // namespace hmk
