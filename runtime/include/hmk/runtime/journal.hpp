// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "hmk/journal_format.hpp"
#include "hmk/result.hpp"

namespace hmk {

/// When appended records reach the disk (DESIGN.md section 7).
enum class FsyncPolicy : std::uint8_t {
    none,      ///< written out when the buffer fills or the journal closes; never fsynced
    interval,  ///< written and fdatasync'ed at most `fsync_interval_ms` after being appended
    always,    ///< written and fdatasync'ed before append() returns
};

struct JournalOptions {
    std::string dir;
    BusId bus = k_no_module;
    FsyncPolicy fsync = FsyncPolicy::interval;
    std::uint32_t fsync_interval_ms = 100;
    std::uint64_t segment_bytes = 64ull << 20;  ///< a segment is closed past this size
    std::uint32_t keep_segments = 0;            ///< retention: segments kept (0: all)
    std::uint32_t max_payload = k_max_payload;
};

/// Appends a bus's messages to segment files `DIR/seg-<first seq>.hmkj`.
/// Single-threaded: one writer (the bus's monitor) per directory.
class JournalWriter {
  public:
    /// Opens (creating) the directory. An existing journal of the same bus is
    /// continued after its last valid record; a damaged tail (a crash while
    /// writing) is cut off and reported in `repaired()`.
    static Result<JournalWriter, std::string> open(const JournalOptions& options);
    JournalWriter(JournalWriter&& other) noexcept;
    JournalWriter& operator=(JournalWriter&& other) = delete;
    JournalWriter(const JournalWriter&) = delete;
    ~JournalWriter();

    /// Appends one message (header + payload). A sequence number that does not
    /// follow the last one starts a new segment, so the gap stays visible.
    Result<void, std::string> append(std::span<const std::byte> message, std::uint64_t seq);
    /// Writes out buffered records and fdatasyncs (whatever the policy).
    Result<void, std::string> sync();
    /// For `interval`: sync if the interval since the oldest unsynced append passed.
    Result<void, std::string> tick(std::uint64_t now_ns);

    std::uint64_t last_seq() const { return m_last_seq; }
    const std::string& repaired() const { return m_repaired; }

  private:
    explicit JournalWriter(JournalOptions options) : m_options(std::move(options)) {}
    Result<void, std::string> start_segment(std::uint64_t first_seq);
    Result<void, std::string> flush();

    JournalOptions m_options;
    int m_fd = -1;
    std::uint64_t m_segment_size = 0;
    std::uint64_t m_last_seq = 0;
    std::uint64_t m_unsynced_since_ns = 0;
    std::vector<std::byte> m_buffer;
    std::string m_repaired;
};

/// A segment file of a journal directory, in sequence order.
struct SegmentFile {
    std::string path;
    std::uint64_t first_seq = 0;
};
/// The segments of `dir` by first sequence number. Error: the directory cannot be read.
Result<std::vector<SegmentFile>, std::string> list_segments(const std::string& dir);

/// What a walk over a journal found.
struct JournalScan {
    std::uint64_t segments = 0;
    std::uint64_t records = 0;
    std::uint64_t bytes = 0;
    std::uint64_t first_seq = 0;
    std::uint64_t last_seq = 0;  ///< of the last valid record
    bool clean = true;
    std::string problem;       ///< "FILE:OFFSET: what" for the first damage found
    std::string problem_file;  ///< the segment holding it ("" if none, or not a segment's fault)
    std::uint64_t problem_offset = 0;
};

/// Reads every segment in order, checking each record (length, CRC, header,
/// bus) and the sequence continuity within and across segments; calls
/// `visit` for each valid record up to the first damage, then stops.
/// A corrupt journal never crashes the reader.
JournalScan scan_journal(const std::string& dir,
                         const std::function<void(const JournalRecord&)>& visit = {});

}  // namespace hmk
