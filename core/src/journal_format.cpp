// SPDX-License-Identifier: Apache-2.0
#include "hmk/journal_format.hpp"

#include <cstring>

#include "hmk/crc32c.hpp"
#include "hmk/detail/endian.hpp"

namespace hmk {
namespace {

constexpr std::byte k_magic[8] = {std::byte{'H'}, std::byte{'M'}, std::byte{'K'}, std::byte{'J'},
                                  std::byte{'S'}, std::byte{'E'}, std::byte{'G'}, std::byte{'1'}};

template <typename T>
void put(std::byte* out, T v) {
    detail::put_le(out, 0, v);
}
template <typename T>
T get(const std::byte* in) {
    return detail::get_le<T>(in, 0);
}

}  // namespace

const char* to_string(JournalError error) {
    switch (error) {
        case JournalError::bad_segment_header:
            return "bad segment header";
        case JournalError::truncated:
            return "record truncated";
        case JournalError::bad_length:
            return "bad record length";
        case JournalError::bad_crc:
            return "CRC32C mismatch";
        case JournalError::bad_message:
            return "invalid message header";
        case JournalError::wrong_bus:
            return "message of another bus";
        case JournalError::sequence_gap:
            return "sequence gap";
    }
    return "journal error";
}

void encode_segment_header(const SegmentHeader& h,
                           std::span<std::byte, k_segment_header_size> out) {
    std::memcpy(out.data(), k_magic, 8);
    put<std::uint32_t>(out.data() + 8, k_journal_version);
    put<std::uint32_t>(out.data() + 12, h.bus);
    put<std::uint64_t>(out.data() + 16, h.first_seq);
    put<std::uint64_t>(out.data() + 24, 0);
}

std::size_t encode_record(std::span<const std::byte> message, std::span<std::byte> out) {
    put<std::uint32_t>(out.data(), static_cast<std::uint32_t>(message.size()));
    put<std::uint32_t>(out.data() + 4, crc32c(message));
    std::memcpy(out.data() + k_record_prefix, message.data(), message.size());
    return k_record_prefix + message.size();
}

SegmentScanner::SegmentScanner(std::span<const std::byte> segment, std::uint32_t max_payload,
                               std::uint64_t expected_seq)
    : m_segment(segment), m_max_payload(max_payload), m_expected(expected_seq) {
    const auto h = header();
    if (!h) {
        m_ok = false;
        m_offset = segment.size();
        return;
    }
    m_bus = h->bus;
    if (m_expected == 0) m_expected = h->first_seq;
}

Result<SegmentHeader, JournalError> SegmentScanner::header() const {
    if (m_segment.size() < k_segment_header_size) return Err{JournalError::bad_segment_header};
    const std::byte* p = m_segment.data();
    if (std::memcmp(p, k_magic, 8) != 0 || get<std::uint32_t>(p + 8) != k_journal_version ||
        get<std::uint64_t>(p + 24) != 0) {
        return Err{JournalError::bad_segment_header};
    }
    return SegmentHeader{get<std::uint32_t>(p + 12), get<std::uint64_t>(p + 16)};
}

Result<JournalRecord, JournalError> SegmentScanner::next() {
    if (!m_ok) return Err{JournalError::bad_segment_header};
    const std::size_t left = m_segment.size() - m_offset;
    auto fail = [&](JournalError e) -> Result<JournalRecord, JournalError> {
        m_ok = false;
        return Err{e};
    };
    if (left < k_record_prefix) return fail(JournalError::truncated);
    const std::byte* p = m_segment.data() + m_offset;
    const std::uint32_t length = get<std::uint32_t>(p);
    if (length < k_header_size || length > k_header_size + m_max_payload)
        return fail(JournalError::bad_length);
    if (left - k_record_prefix < length) return fail(JournalError::truncated);
    const std::span<const std::byte> message(p + k_record_prefix, length);
    if (crc32c(message) != get<std::uint32_t>(p + 4)) return fail(JournalError::bad_crc);
    const auto h = decode_header(message, m_max_payload, Framing::exact);
    if (!h) return fail(JournalError::bad_message);
    if (h->bus != m_bus) return fail(JournalError::wrong_bus);
    if (h->seq != m_expected) return fail(JournalError::sequence_gap);
    JournalRecord r{*h, message, m_offset};
    m_offset += k_record_prefix + length;
    ++m_expected;
    return r;
}

}  // namespace hmk
