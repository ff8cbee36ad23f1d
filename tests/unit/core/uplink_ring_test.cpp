// SPDX-License-Identifier: Apache-2.0
#include "hmk/uplink_ring.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <new>
#include <thread>
#include <vector>

namespace hmk {
namespace {

struct Region {
    explicit Region(std::size_t n)
        : size(n), data(static_cast<std::byte*>(::operator new (n, std::align_val_t{64}))) {
        std::memset(data, 0, n);
    }
    ~Region() { ::operator delete (data, std::align_val_t{64}); }
    std::span<std::byte> span() { return {data, size}; }
    std::size_t size;
    std::byte* data;
};

std::vector<std::byte> bytes_of(const std::string& s) {
    std::vector<std::byte> v(s.size());
    std::memcpy(v.data(), s.data(), s.size());
    return v;
}

TEST(UplinkRingTest, OwnerTakesWhatTheChildPushedInOrder) {
    Region r(UplinkRing::region_size(4, 64));
    auto owner = UplinkRing::create(r.span(), 4, 64);
    auto child = UplinkRing::attach(r.span());
    ASSERT_TRUE(owner.has_value() && child.has_value());
    for (int i = 0; i < 4; ++i) EXPECT_TRUE(child->try_push(bytes_of("m" + std::to_string(i))));
    EXPECT_FALSE(child->try_push(bytes_of("full"))) << "a full ring refuses, it never overwrites";
    std::vector<std::byte> out(owner->max_message());
    for (int i = 0; i < 4; ++i) {
        const PopResult p = owner->pop(out);
        ASSERT_EQ(p.status, PopStatus::ok);
        EXPECT_EQ(std::string(reinterpret_cast<const char*>(out.data()), p.size),
                  "m" + std::to_string(i));
    }
    EXPECT_EQ(owner->pop(out).status, PopStatus::empty);
    EXPECT_TRUE(child->try_push(bytes_of("again"))) << "space is given back as the owner reads";
}

TEST(UplinkRingTest, ResetEmptiesTheRingForANewChild) {
    Region r(UplinkRing::region_size(4, 64));
    auto owner = UplinkRing::create(r.span(), 4, 64);
    {
        auto old_child = UplinkRing::attach(r.span());
        for (int i = 0; i < 3; ++i) ASSERT_TRUE(old_child->try_push(bytes_of("old")));
        old_child->stats().state.store(1);
    }
    owner->reset();
    EXPECT_EQ(owner->pending(), 0u);
    EXPECT_EQ(owner->stats().state.load(), 0u);
    auto new_child = UplinkRing::attach(r.span());
    for (int i = 0; i < 4; ++i)
        ASSERT_TRUE(new_child->try_push(bytes_of("new"))) << "the whole ring is free again";
    std::vector<std::byte> out(owner->max_message());
    const PopResult p = owner->pop(out);
    ASSERT_EQ(p.status, PopStatus::ok);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(out.data()), p.size), "new");
}

TEST(UplinkRingTest, OversizedPushIsRefused) {
    Region r(UplinkRing::region_size(4, 16));
    ASSERT_TRUE(UplinkRing::create(r.span(), 4, 16).has_value());
    auto child = UplinkRing::attach(r.span());
    ASSERT_TRUE(child.has_value());
    EXPECT_FALSE(child->try_push(std::vector<std::byte>(k_header_size + 17)));
    EXPECT_TRUE(child->try_push(std::vector<std::byte>(k_header_size + 16)));
}

// The child owns the memory: whatever it writes there, the owner reads within
// bounds and reports corruption instead of trusting it.
TEST(UplinkRingTest, CursorBeyondTheRingIsCorruption) {
    Region r(UplinkRing::region_size(4, 64));
    auto owner = UplinkRing::create(r.span(), 4, 64);
    ASSERT_TRUE(owner.has_value());
    auto* write_pos = reinterpret_cast<std::atomic<std::uint64_t>*>(r.data + 64);
    write_pos->store(5);  // 5 records claimed in a 4-slot ring
    std::vector<std::byte> out(owner->max_message());
    EXPECT_EQ(owner->pop(out).status, PopStatus::corrupt);
    write_pos->store(~0ull);
    EXPECT_EQ(owner->pop(out).status, PopStatus::corrupt);
    EXPECT_EQ(owner->pending(), 0u);
}

TEST(UplinkRingTest, RecordSizeBeyondTheSlotIsCorruption) {
    Region r(UplinkRing::region_size(4, 64));
    auto owner = UplinkRing::create(r.span(), 4, 64);
    auto child = UplinkRing::attach(r.span());
    ASSERT_TRUE(child->try_push(bytes_of("ok")));
    const std::uint32_t huge = 0xFFFFFFF0u;
    std::memcpy(r.data + 512, &huge, 4);  // the first slot's size field
    std::vector<std::byte> out(owner->max_message());
    EXPECT_EQ(owner->pop(out).status, PopStatus::corrupt);
}

TEST(UplinkRingTest, ScribbledControlNeverMakesTheOwnerReadOutOfBounds) {
    std::uint64_t x = 12345;
    for (int round = 0; round < 2000; ++round) {
        Region r(UplinkRing::region_size(8, 32));
        auto owner = UplinkRing::create(r.span(), 8, 32);
        ASSERT_TRUE(owner.has_value());
        for (std::size_t i = 0; i < r.size; ++i) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            r.data[i] = static_cast<std::byte>(x);
        }
        std::vector<std::byte> out(owner->max_message());
        for (int i = 0; i < 20; ++i) {
            const PopResult p = owner->pop(out);
            if (p.status != PopStatus::ok) break;
            EXPECT_LE(p.size, owner->max_message());
        }
    }
}

// One child thread pushing, the owner popping: everything arrives, in order.
TEST(UplinkRingTest, ConcurrentPushAndPopKeepOrder) {
    Region r(UplinkRing::region_size(64, 16));
    auto owner = UplinkRing::create(r.span(), 64, 16);
    auto child = UplinkRing::attach(r.span());
    constexpr std::uint64_t k_n = 200000;
    std::thread producer([&] {
        for (std::uint64_t i = 1; i <= k_n; ++i) {
            std::vector<std::byte> m(8);
            std::memcpy(m.data(), &i, 8);
            while (!child->try_push(m)) std::this_thread::yield();
        }
    });
    std::vector<std::byte> out(owner->max_message());
    std::uint64_t expected = 1;
    while (expected <= k_n) {
        const PopResult p = owner->pop(out);
        ASSERT_NE(p.status, PopStatus::corrupt);
        if (p.status == PopStatus::empty) continue;
        std::uint64_t v;
        std::memcpy(&v, out.data(), 8);
        ASSERT_EQ(v, expected++);
    }
    producer.join();
}

}  // namespace
}  // namespace hmk
