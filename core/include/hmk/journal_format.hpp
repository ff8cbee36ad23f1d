// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "hmk/header.hpp"
#include "hmk/ids.hpp"
#include "hmk/result.hpp"

namespace hmk {

/// On-disk journal format, version 1 (docs/journal.md). A bus's journal is a
/// directory of segment files, each a 32-byte segment header followed by
/// records; all integers little-endian.
///
/// Segment header: "HMKJSEG1" (8) | version u32 | bus u32 | first_seq u64 | reserved u64 (0).
/// Record:         length u32 | crc32c u32 of the message bytes | message (header + payload).
inline constexpr std::size_t k_segment_header_size = 32;
inline constexpr std::size_t k_record_prefix = 8;
inline constexpr std::uint32_t k_journal_version = 1;

struct SegmentHeader {
    BusId bus = k_no_module;
    std::uint64_t first_seq = 0;  ///< sequence number of the segment's first record
};

void encode_segment_header(const SegmentHeader& header,
                           std::span<std::byte, k_segment_header_size> out);

enum class JournalError : std::uint8_t {
    bad_segment_header = 1,  ///< magic, version or reserved field wrong, or file too short
    truncated,               ///< a record cut short (typically the tail of a crash)
    bad_length,              ///< a record length above the limit or below a header
    bad_crc,                 ///< the checksum does not match the bytes
    bad_message,             ///< the bytes are not a valid message
    wrong_bus,               ///< a message of another bus
    sequence_gap,            ///< not the sequence number that follows the previous record
};
const char* to_string(JournalError error);

/// Encodes one record (prefix + message) into `out`, which must hold
/// k_record_prefix + message.size() bytes. Returns the bytes written.
std::size_t encode_record(std::span<const std::byte> message, std::span<std::byte> out);

/// One record as read back.
struct JournalRecord {
    Header header;
    std::span<const std::byte> message;  ///< header + payload, a view into the scanned bytes
    std::size_t offset = 0;              ///< of the record in the segment
};

/// Walks the records of one segment held in memory. Every length, checksum,
/// header and sequence number is checked; the first damage stops the walk
/// and is reported with its offset. Never reads outside `segment`.
class SegmentScanner {
  public:
    /// `expected_seq`: the sequence number the first record must carry
    /// (0: take the segment header's first_seq).
    SegmentScanner(std::span<const std::byte> segment, std::uint32_t max_payload = k_max_payload,
                   std::uint64_t expected_seq = 0);

    /// The segment header, or why it is bad.
    Result<SegmentHeader, JournalError> header() const;
    /// The next record; nullopt-like `has_value() == false` with `done()` at a clean end.
    Result<JournalRecord, JournalError> next();
    bool done() const { return m_offset >= m_segment.size() && m_ok; }
    std::size_t offset() const { return m_offset; }
    /// Sequence number the next record must carry.
    std::uint64_t expected_seq() const { return m_expected; }

  private:
    std::span<const std::byte> m_segment;
    std::uint32_t m_max_payload;
    std::uint64_t m_expected;
    std::size_t m_offset = k_segment_header_size;
    BusId m_bus = k_no_module;
    bool m_ok = true;
};

}  // namespace hmk
