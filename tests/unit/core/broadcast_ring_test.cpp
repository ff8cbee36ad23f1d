// SPDX-License-Identifier: Apache-2.0
#include "hmk/broadcast_ring.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <new>
#include <thread>
#include <vector>

namespace hmk {
namespace {

struct Region {
    explicit Region(std::size_t n)
        : size(n), data(static_cast<std::byte*>(::operator new (n, std::align_val_t{64}))) {}
    ~Region() { ::operator delete (data, std::align_val_t{64}); }
    std::span<std::byte> span() { return {data, size}; }
    std::size_t size;
    std::byte* data;
};

std::uint64_t publish_text(BroadcastRing& ring, const std::string& text, std::uint32_t type = 0) {
    Header h;
    h.type = type;
    return ring.publish(h, std::as_bytes(std::span(text.data(), text.size()))).value();
}

TEST(BroadcastRingTest, ReadersSeeEveryMessageInOrder) {
    Region r(BroadcastRing::region_size(8, 64));
    auto ring = BroadcastRing::create(r.span(), 8, 64);
    ASSERT_TRUE(ring.has_value());
    for (int i = 1; i <= 5; ++i)
        EXPECT_EQ(publish_text(*ring, "m" + std::to_string(i)), static_cast<std::uint64_t>(i));
    std::vector<std::byte> buf(ring->max_message());
    for (int reader = 0; reader < 2; ++reader) {
        std::uint64_t cursor = 1;
        for (int i = 1; i <= 5; ++i) {
            const ReadResult res = ring->read(cursor, buf);
            ASSERT_EQ(res.status, ReadStatus::ok);
            EXPECT_EQ(res.seq, static_cast<std::uint64_t>(i));
            const auto h =
                decode_header(std::span<const std::byte>(buf.data(), res.size), 64, Framing::exact);
            ASSERT_TRUE(h.has_value());
            EXPECT_EQ(h->seq, static_cast<std::uint64_t>(i));
            EXPECT_EQ(std::string(reinterpret_cast<const char*>(buf.data()) + k_header_size,
                                  h->payload_size),
                      "m" + std::to_string(i));
        }
        EXPECT_EQ(ring->read(cursor, buf).status, ReadStatus::empty);
    }
}

TEST(BroadcastRingTest, LappedReaderIsToldExactlyWhatItLost) {
    Region r(BroadcastRing::region_size(8, 16));
    auto ring = BroadcastRing::create(r.span(), 8, 16);
    ASSERT_TRUE(ring.has_value());
    for (int i = 0; i < 20; ++i) publish_text(*ring, "x");
    std::vector<std::byte> buf(ring->max_message());
    std::uint64_t cursor = 3;
    ReadResult res = ring->read(cursor, buf);
    ASSERT_EQ(res.status, ReadStatus::lost);
    EXPECT_EQ(res.lost_first, 3u);
    EXPECT_EQ(res.lost_last, 12u);  // 20 published, 8 held: 13..20
    EXPECT_EQ(cursor, 13u);
    res = ring->read(cursor, buf);
    ASSERT_EQ(res.status, ReadStatus::ok);
    EXPECT_EQ(res.seq, 13u);
}

TEST(BroadcastRingTest, AttachChecksTheRegion) {
    Region r(BroadcastRing::region_size(8, 16));
    std::memset(r.data, 0, r.size);
    auto bad = BroadcastRing::attach(r.span());
    ASSERT_FALSE(bad.has_value());
    EXPECT_EQ(bad.error(), RingError::not_formatted);
    ASSERT_TRUE(BroadcastRing::create(r.span(), 8, 16).has_value());
    auto good = BroadcastRing::attach(r.span());
    ASSERT_TRUE(good.has_value());
    EXPECT_EQ(good->slot_count(), 8u);
    EXPECT_FALSE(BroadcastRing::attach(r.span().first(r.size - 1)).has_value());
}

TEST(BroadcastRingTest, OversizedPayloadIsRefusedAndWritesNothing) {
    Region r(BroadcastRing::region_size(8, 16));
    auto ring = BroadcastRing::create(r.span(), 8, 16);
    ASSERT_TRUE(ring.has_value());
    const std::string big(17, 'x');
    Header h;
    const auto res = ring->publish(h, std::as_bytes(std::span(big.data(), big.size())));
    ASSERT_FALSE(res.has_value());
    EXPECT_EQ(res.error(), RingError::payload_too_large);
    EXPECT_EQ(ring->head(), 0u);
}

TEST(BroadcastRingTest, RejectsBadGeometry) {
    Region r(BroadcastRing::region_size(8, 16));
    EXPECT_EQ(BroadcastRing::create(r.span(), 6, 16).error(), RingError::bad_geometry);
    EXPECT_EQ(BroadcastRing::create(r.span(), 16, 16).error(), RingError::too_small);
    EXPECT_EQ(BroadcastRing::create(r.span().subspan(8), 8, 16).error(), RingError::misaligned);
}

// One writer, several readers racing it with a small ring: a reader either
// gets an intact message (its payload matches its sequence number) or is told
// it lost a range; it never gets a torn one. Run under TSan too.
TEST(BroadcastRingTest, ConcurrentReadersNeverSeeTornMessages) {
    constexpr std::uint32_t k_slots = 16;
    constexpr std::uint64_t k_messages = 200000;
    Region r(BroadcastRing::region_size(k_slots, 256));
    auto ring = BroadcastRing::create(r.span(), k_slots, 256);
    ASSERT_TRUE(ring.has_value());
    std::atomic<bool> done{false};
    std::atomic<std::uint64_t> torn{0}, seen{0}, lost{0};
    auto reader = [&] {
        std::vector<std::byte> buf(ring->max_message());
        std::uint64_t cursor = 1, last = 0;
        for (;;) {
            const bool finished = done.load();
            const ReadResult res = ring->read(cursor, buf);
            if (res.status == ReadStatus::empty) {
                if (finished) break;
                std::this_thread::yield();
                continue;
            }
            if (res.status == ReadStatus::lost) {
                lost += res.lost_last - res.lost_first + 1;
                if (res.lost_first != last + 1)
                    ++torn;  // a lost range must start right after the last seen
                last = res.lost_last;
                continue;
            }
            const auto h = decode_header(std::span<const std::byte>(buf.data(), res.size), 256,
                                         Framing::exact);
            if (!h || h->seq != res.seq || res.seq != last + 1) {
                ++torn;
                continue;
            }
            // Payload: the sequence number repeated; any mix of two messages shows.
            for (std::size_t i = 0; i + 8 <= h->payload_size; i += 8) {
                std::uint64_t v;
                std::memcpy(&v, buf.data() + k_header_size + i, 8);
                if (v != res.seq) {
                    ++torn;
                    break;
                }
            }
            last = res.seq;
            ++seen;
        }
    };
    std::vector<std::thread> readers;
    for (int i = 0; i < 3; ++i) readers.emplace_back(reader);
    std::vector<std::uint64_t> payload(24);
    for (std::uint64_t s = 1; s <= k_messages; ++s) {
        std::fill(payload.begin(), payload.end(), s);
        Header h;
        const std::size_t words = 1 + s % 24;  // 8 to 192 bytes
        ASSERT_TRUE(ring->publish(h, std::as_bytes(std::span(payload.data(), words))).has_value());
    }
    done.store(true);
    for (auto& t : readers) t.join();
    EXPECT_EQ(torn.load(), 0u);
    EXPECT_EQ(seen.load() + lost.load(), 3 * k_messages)
        << "every message either seen or reported lost";
}

}  // namespace
}  // namespace hmk
