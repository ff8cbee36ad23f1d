// SPDX-License-Identifier: Apache-2.0
#include "hmk/journal_format.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "hmk/crc32c.hpp"

namespace hmk {
namespace {

std::span<const std::byte> bytes(const std::string& s) {
    return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

TEST(Crc32cTest, KnownVectors) {
    EXPECT_EQ(crc32c(bytes("123456789")), 0xE3069283u);
    EXPECT_EQ(crc32c(bytes("")), 0u);
    const std::string zeros(32, '\0');
    EXPECT_EQ(crc32c(bytes(zeros)), 0x8A9136AAu);  // RFC 3720 B.4
    // Running checksum over pieces equals the one-shot checksum.
    const std::string text = "The quick brown fox jumps over the lazy dog, twice over.";
    for (std::size_t cut = 0; cut <= text.size(); ++cut) {
        EXPECT_EQ(crc32c(bytes(text.substr(cut)), crc32c(bytes(text.substr(0, cut)))),
                  crc32c(bytes(text)));
    }
}

// A segment of `n` messages of bus 7 starting at `first`.
std::vector<std::byte> segment(std::uint64_t first, int n, BusId bus = 7) {
    std::vector<std::byte> out(k_segment_header_size);
    encode_segment_header(SegmentHeader{bus, first}, std::span<std::byte, k_segment_header_size>(
                                                         out.data(), k_segment_header_size));
    for (int i = 0; i < n; ++i) {
        Header h;
        h.seq = first + static_cast<std::uint64_t>(i);
        h.bus = bus;
        h.type = 0x1000;
        const std::string payload = "message " + std::to_string(i);
        h.payload_size = static_cast<std::uint32_t>(payload.size());
        std::vector<std::byte> msg(k_header_size + payload.size());
        encode_header(h, std::span<std::byte, k_header_size>(msg.data(), k_header_size));
        std::memcpy(msg.data() + k_header_size, payload.data(), payload.size());
        const std::size_t at = out.size();
        out.resize(at + k_record_prefix + msg.size());
        encode_record(msg, std::span<std::byte>(out.data() + at, out.size() - at));
    }
    return out;
}

int count_valid(std::span<const std::byte> seg, JournalError* error = nullptr) {
    SegmentScanner s(seg);
    int n = 0;
    while (!s.done()) {
        auto r = s.next();
        if (!r) {
            if (error != nullptr) *error = r.error();
            return n;
        }
        ++n;
    }
    return n;
}

TEST(JournalFormatTest, RecordsReadBackInOrder) {
    const auto seg = segment(41, 10);
    SegmentScanner s(seg);
    ASSERT_TRUE(s.header().has_value());
    EXPECT_EQ(s.header()->first_seq, 41u);
    for (int i = 0; i < 10; ++i) {
        auto r = s.next();
        ASSERT_TRUE(r.has_value()) << to_string(r.error());
        EXPECT_EQ(r->header.seq, 41u + static_cast<std::uint64_t>(i));
    }
    EXPECT_TRUE(s.done());
}

TEST(JournalFormatTest, EveryTruncationKeepsExactlyTheWholeRecords) {
    const auto seg = segment(1, 5);
    std::vector<std::size_t> ends;  // where each record ends
    {
        SegmentScanner s(seg);
        while (!s.done()) {
            ASSERT_TRUE(s.next().has_value());
            ends.push_back(s.offset());
        }
    }
    for (std::size_t cut = k_segment_header_size; cut < seg.size(); ++cut) {
        JournalError e{};
        const int n = count_valid(std::span<const std::byte>(seg.data(), cut), &e);
        const auto whole = static_cast<int>(
            std::count_if(ends.begin(), ends.end(), [&](std::size_t x) { return x <= cut; }));
        ASSERT_EQ(n, whole) << "cut at " << cut;
        // Between records (or right after the segment header) is a clean end.
        if (cut != k_segment_header_size &&
            std::find(ends.begin(), ends.end(), cut) == ends.end()) {
            ASSERT_EQ(e, JournalError::truncated) << "cut at " << cut;
        }
    }
}

TEST(JournalFormatTest, EveryBitFlipIsCaughtAndNeverCrashes) {
    const auto good = segment(1, 4);
    for (std::size_t at = 0; at < good.size(); ++at) {
        for (int bit = 0; bit < 8; ++bit) {
            auto bad = good;
            bad[at] ^= static_cast<std::byte>(1 << bit);
            JournalError e{};
            const int n = count_valid(bad, &e);
            ASSERT_LT(n, 4) << "flip at byte " << at << " bit " << bit << " went unnoticed";
        }
    }
}

TEST(JournalFormatTest, GapsAndForeignBusesAreReported) {
    auto seg = segment(1, 3);
    const auto other = segment(5, 1);  // seq 5 after 1..3: a gap
    seg.insert(seg.end(), other.begin() + k_segment_header_size, other.end());
    JournalError e{};
    EXPECT_EQ(count_valid(seg, &e), 3);
    EXPECT_EQ(e, JournalError::sequence_gap);

    auto mixed = segment(1, 2);
    const auto foreign = segment(3, 1, 8);
    mixed.insert(mixed.end(), foreign.begin() + k_segment_header_size, foreign.end());
    EXPECT_EQ(count_valid(mixed, &e), 2);
    EXPECT_EQ(e, JournalError::wrong_bus);
}

TEST(JournalFormatTest, BadSegmentHeaderIsReported) {
    auto seg = segment(1, 1);
    seg[0] = std::byte{'X'};
    SegmentScanner s(seg);
    EXPECT_FALSE(s.header().has_value());
    EXPECT_FALSE(s.next().has_value());
    EXPECT_EQ(count_valid(std::span<const std::byte>(seg.data(), 10)), 0);
}

}  // namespace
}  // namespace hmk
