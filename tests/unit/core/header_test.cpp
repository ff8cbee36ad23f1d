// SPDX-License-Identifier: Apache-2.0
#include "hmk/header.hpp"

#include <gtest/gtest.h>

#include <array>
#include <vector>

namespace hmk {
namespace {

Header sample() {
    Header h;
    h.seq = 0x0102030405060708ull;
    h.correlation = 0x1112131415161718ull;
    h.timestamp_ns = 0x2122232425262728ull;
    h.bus = 0x31323334;
    h.sender = 0x41424344;
    h.via = 0x51525354;
    h.destination = 0x61626364;
    h.type = 0x71727374;
    h.payload_size = 3;
    h.scope = Scope::system;
    h.hops = 9;
    h.flags = k_flag_reply | k_flag_error;
    h.generation = 0x0102039A;
    return h;
}

std::vector<std::byte> encoded(const Header& h, std::size_t payload = 0) {
    std::vector<std::byte> buf(k_header_size + payload, std::byte{0xAB});
    encode_header(h, std::span<std::byte, k_header_size>(buf.data(), k_header_size));
    return buf;
}

TEST(HeaderTest, RoundTripKeepsEveryField) {
    const Header h = sample();
    const auto buf = encoded(h, 3);
    const auto d = decode_header(buf, k_max_payload, Framing::exact);
    ASSERT_TRUE(d.has_value()) << to_string(d.error());
    EXPECT_EQ(d->seq, h.seq);
    EXPECT_EQ(d->correlation, h.correlation);
    EXPECT_EQ(d->generation, h.generation);
    EXPECT_EQ(d->timestamp_ns, h.timestamp_ns);
    EXPECT_EQ(d->bus, h.bus);
    EXPECT_EQ(d->sender, h.sender);
    EXPECT_EQ(d->via, h.via);
    EXPECT_EQ(d->destination, h.destination);
    EXPECT_EQ(d->type, h.type);
    EXPECT_EQ(d->payload_size, 3u);
    EXPECT_EQ(d->scope, Scope::system);
    EXPECT_EQ(d->hops, 9);
    EXPECT_EQ(d->flags, k_flag_reply | k_flag_error);
}

// The layout is the one docs/message-header.md documents, little-endian on every platform.
TEST(HeaderTest, LayoutMatchesTheDocumentedBytes) {
    const auto b = encoded(sample(), 3);
    auto at = [&](std::size_t i) { return static_cast<unsigned>(b[i]); };
    EXPECT_EQ(at(0), 'H');
    EXPECT_EQ(at(1), 'M');
    EXPECT_EQ(at(2), 'K');
    EXPECT_EQ(at(3), '1');
    EXPECT_EQ(at(4), 1u);  // version, u16
    EXPECT_EQ(at(5), 0u);
    EXPECT_EQ(at(6), 64u);    // header size, u16
    EXPECT_EQ(at(8), 0x08u);  // seq, least significant byte first
    EXPECT_EQ(at(15), 0x01u);
    EXPECT_EQ(at(16), 0x18u);  // correlation
    EXPECT_EQ(at(24), 0x28u);  // timestamp
    EXPECT_EQ(at(32), 0x34u);  // bus
    EXPECT_EQ(at(36), 0x44u);  // sender
    EXPECT_EQ(at(40), 0x54u);  // via
    EXPECT_EQ(at(44), 0x64u);  // destination
    EXPECT_EQ(at(48), 0x74u);  // type
    EXPECT_EQ(at(52), 3u);     // payload size
    EXPECT_EQ(at(56), 3u);     // scope = system
    EXPECT_EQ(at(57), 9u);     // hops
    EXPECT_EQ(at(58), 3u);     // flags
    EXPECT_EQ(at(60), 0x9Au);  // generation
    EXPECT_EQ(at(63), 0x01u);
}

struct Corruption {
    std::size_t offset;
    std::uint8_t value;
    HeaderError expected;
    friend void PrintTo(const Corruption& c, std::ostream* os) {
        *os << "byte " << c.offset << " = " << int{c.value} << ": " << to_string(c.expected);
    }
};

class HeaderCorruptionTest : public ::testing::TestWithParam<Corruption> {};

TEST_P(HeaderCorruptionTest, IsRejectedWithItsOwnError) {
    auto buf = encoded(sample(), 3);
    buf[GetParam().offset] = std::byte{GetParam().value};
    const auto d = decode_header(buf, k_max_payload, Framing::exact);
    ASSERT_FALSE(d.has_value());
    EXPECT_EQ(d.error(), GetParam().expected) << to_string(d.error());
}

INSTANTIATE_TEST_SUITE_P(EveryCheckedField, HeaderCorruptionTest,
                         ::testing::Values(Corruption{0, 'X', HeaderError::bad_magic},
                                           Corruption{4, 2, HeaderError::bad_version},
                                           Corruption{6, 63, HeaderError::bad_header_size},
                                           Corruption{56, 4, HeaderError::bad_scope},
                                           Corruption{59, 0x80, HeaderError::unknown_flags},
                                           Corruption{52, 4, HeaderError::payload_truncated},
                                           Corruption{52, 2, HeaderError::trailing_bytes}),
                         [](const auto& p) {
                             return "offset_" + std::to_string(p.param.offset) + "_" +
                                    std::to_string(p.index);
                         });

TEST(HeaderTest, ShortBufferIsTruncatedNotACrash) {
    const auto buf = encoded(sample());
    for (std::size_t n = 0; n < k_header_size; ++n) {
        const auto d = decode_header(std::span<const std::byte>(buf.data(), n));
        ASSERT_FALSE(d.has_value());
        EXPECT_EQ(d.error(), HeaderError::truncated);
    }
}

TEST(HeaderTest, PayloadLimitIsEnforced) {
    Header h = sample();
    h.payload_size = 100;
    const auto buf = encoded(h, 100);
    EXPECT_TRUE(decode_header(buf, 100).has_value());
    const auto d = decode_header(buf, 99);
    ASSERT_FALSE(d.has_value());
    EXPECT_EQ(d.error(), HeaderError::payload_too_large);
}

TEST(HeaderTest, HugeClaimedPayloadDoesNotOverflow) {
    Header h = sample();
    h.payload_size = 0xFFFFFFFF;
    const auto buf = encoded(h, 0);
    const auto d = decode_header(buf, 0xFFFFFFFF);
    ASSERT_FALSE(d.has_value());
    EXPECT_EQ(d.error(), HeaderError::payload_truncated);
}

TEST(HeaderTest, PrefixFramingAllowsFollowingBytes) {
    const auto buf = encoded(sample(), 10);  // 3 bytes of payload, then 7 more
    EXPECT_TRUE(decode_header(buf, k_max_payload, Framing::prefix).has_value());
    EXPECT_FALSE(decode_header(buf, k_max_payload, Framing::exact).has_value());
}

TEST(HeaderTest, RandomBytesNeverCrashTheDecoder) {
    std::uint64_t x = 88172645463325252ull;
    std::array<std::byte, 128> buf{};
    int accepted = 0;
    for (int round = 0; round < 100000; ++round) {
        for (auto& b : buf) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b = static_cast<std::byte>(x);
        }
        if (round % 2 == 0) {  // half the time a valid magic, so later checks get exercised
            buf[0] = std::byte{'H'};
            buf[1] = std::byte{'M'};
            buf[2] = std::byte{'K'};
            buf[3] = std::byte{'1'};
        }
        const auto d = decode_header(
            std::span<const std::byte>(buf.data(), static_cast<std::size_t>(x % 129)));
        if (d) {
            ++accepted;
            EXPECT_LE(d->payload_size + k_header_size, x % 129);
        }
    }
    EXPECT_LT(accepted, 100);  // random bytes almost never pass every check
}

}  // namespace
}  // namespace hmk
