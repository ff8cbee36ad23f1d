// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "hmk/journal_format.hpp"
#include "hmk/result.hpp"
#include "hmk/snapshot_format.hpp"

namespace hmk {

/// When appended records reach the disk (DESIGN.md section 7).
enum class FsyncPolicy : std::uint8_t {
    none,      ///< written out at commit() (or when the buffer fills); never fsynced
    interval,  ///< written at commit(), fdatasync'ed at most `fsync_interval_ms` after append
    always,    ///< written and fdatasync'ed at commit(): one sync for a whole batch
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

const char* to_string(FsyncPolicy policy);

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

    /// Appends one message (header + payload) to the buffer; commit() makes it
    /// as durable as the policy says. A sequence number that does not follow
    /// the last one starts a new segment, so the gap stays visible.
    Result<void, std::string> append(std::span<const std::byte> message, std::uint64_t seq);
    /// Writes out buffered records and fdatasyncs (whatever the policy).
    Result<void, std::string> sync();
    /// Writes out buffered records (no fdatasync): readers of the files see them.
    Result<void, std::string> flush();
    /// For `interval`: sync if the interval since the oldest unsynced append passed.
    Result<void, std::string> tick(std::uint64_t now_ns);
    /// Makes what was appended as durable as the policy promises: `always`
    /// syncs, the others write out (so readers see it). Then written_seq() is last_seq().
    Result<void, std::string> commit();

    std::uint64_t last_seq() const { return m_last_seq; }
    /// The last seq written to the files (readable by a JournalReader).
    std::uint64_t written_seq() const { return m_written_seq; }
    /// The last seq fdatasync'ed.
    std::uint64_t synced_seq() const { return m_synced_seq; }
    const std::string& repaired() const { return m_repaired; }
    const JournalOptions& options() const { return m_options; }
    /// Where the record of `seq` starts, if it was appended recently (a few
    /// million records back): its segment's first seq and the offset of a
    /// record at or before it. {0, 0} if unknown.
    std::pair<std::uint64_t, std::uint64_t> locate(std::uint64_t seq) const;

  private:
    explicit JournalWriter(JournalOptions options) : m_options(std::move(options)) {}
    Result<void, std::string> start_segment(std::uint64_t first_seq);

    JournalOptions m_options;
    int m_fd = -1;
    std::uint64_t m_segment_first = 0;
    std::uint64_t m_segment_size = 0;
    std::uint64_t m_last_seq = 0;
    std::uint64_t m_written_seq = 0;
    std::uint64_t m_synced_seq = 0;
    std::uint64_t m_unsynced_since_ns = 0;
    std::vector<std::byte> m_buffer;
    std::string m_repaired;
    // Sparse index of recent records: every k_index_every-th record's seq,
    // segment and offset (bounded).
    static constexpr std::uint64_t k_index_every = 256;
    static constexpr std::size_t k_index_max = 1 << 16;
    struct IndexEntry {
        std::uint64_t seq, segment, offset;
    };
    std::vector<IndexEntry> m_index;
};

/// What repair_journal() did.
struct JournalRepair {
    std::uint64_t last_seq = 0;  ///< of the last valid record (0: the journal is empty)
    std::string report;          ///< "" when nothing was damaged
};

/// Makes `dir` a clean prefix of what it held: finds the first damaged
/// record (a torn tail after a crash, a bit flip, a gap), keeps everything
/// before it, and moves the damaged rest into `dir/damaged-<time>/` (never
/// deletes it). Creates `dir` if missing.
Result<JournalRepair, std::string> repair_journal(const std::string& dir);

/// Reads a journal from a given sequence number on, record by record, while
/// its monitor may still append to it. Reads files in blocks through its own
/// buffer; checks every record it returns (length, CRC, header, sequence).
/// A damaged or missing journal never crashes it. One thread at a time.
class JournalReader {
  public:
    enum class Status : std::uint8_t {
        ok,       ///< `record` holds the next message
        end,      ///< nothing more for now (the writer may append more later)
        missing,  ///< the journal does not hold the wanted seq: see missing_last()
        damaged,  ///< a damaged record; problem() says where
    };

    explicit JournalReader(std::string dir, std::uint32_t max_payload = k_max_payload);
    JournalReader(JournalReader&&) noexcept;
    JournalReader& operator=(JournalReader&&) noexcept;
    JournalReader(const JournalReader&) = delete;
    JournalReader& operator=(const JournalReader&) = delete;
    ~JournalReader();

    /// The next record next() returns is `seq`. A hint (from
    /// JournalWriter::locate or a snapshot file) lets it start scanning there
    /// instead of at the segment's start.
    void seek(std::uint64_t seq, std::uint64_t hint_segment = 0, std::uint64_t hint_offset = 0);
    /// The record of the wanted seq; then the wanted seq moves on by one.
    /// `record.message` is valid until the next call.
    Status next(JournalRecord& record);
    /// The wanted seq (the one the next ok will carry).
    std::uint64_t position() const { return m_want; }
    /// With Status::missing: the last seq of the missing range (from position()).
    /// When the journal ends before position(), it is 0.
    std::uint64_t missing_last() const { return m_missing_last; }
    const std::string& problem() const { return m_problem; }
    /// For tests: called each time a read reaches the end of a segment file,
    /// before the reader looks for a later segment, so that a test can put a
    /// writer's last appends and its rotation exactly there.
    void on_segment_end(std::function<void()> hook) { m_on_segment_end = std::move(hook); }

  private:
    Status open_segment_for(std::uint64_t seq);
    Status fill(std::size_t need);

    std::string m_dir;
    std::uint32_t m_max_payload;
    std::uint64_t m_want = 1;
    int m_fd = -1;
    std::uint64_t m_segment_first = 0;
    std::uint64_t m_file_pos = 0;  // file offset of m_buffer[0]
    std::size_t m_pos = 0;         // parse position in m_buffer
    std::vector<std::byte> m_buffer;
    std::size_t m_len = 0;  // valid bytes in m_buffer
    std::uint64_t m_hint_segment = 0, m_hint_offset = 0;
    std::uint64_t m_missing_last = 0;
    bool m_reread = false;  // re-reading a segment's end once a later segment exists
    std::string m_problem;
    std::function<void()> m_on_segment_end;
};

// --- snapshots ------------------------------------------------------------

/// A snapshot file found in a journal directory.
struct SnapshotFile {
    std::string path;
    ModuleId module = k_no_module;
    std::uint64_t input_seq = 0;
};
/// The snapshot files of `dir` (of `module` only, unless it is k_no_module),
/// newest input seq last. Only names are looked at.
Result<std::vector<SnapshotFile>, std::string> list_snapshots(const std::string& dir,
                                                              ModuleId module = k_no_module);

struct LoadedSnapshot {
    std::string path;
    SnapshotFileHeader header;
    std::vector<std::byte> body;
};
/// The newest snapshot of `module` in `dir` that checks out whole (header,
/// size, CRC) and whose input seq is at most `at_most`. Damaged files are
/// passed over, each with a line in `skipped`.
std::optional<LoadedSnapshot> load_latest_snapshot(const std::string& dir, ModuleId module,
                                                   std::vector<std::string>* skipped = nullptr,
                                                   std::uint64_t at_most = UINT64_MAX);

/// Writes a snapshot file atomically (temporary file, then rename), durable
/// per `fsync` (`none`: not synced), then keeps the newest `keep` snapshots of
/// the module (0: all).
Result<std::string, std::string> write_snapshot_file(const std::string& dir,
                                                     const SnapshotFileHeader& header,
                                                     std::span<const std::byte> body,
                                                     FsyncPolicy fsync, std::uint32_t keep);

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
    /// Live scans only: the newest segment ended in a record (or a header)
    /// still being written; the scan stopped before it.
    bool tail_in_progress = false;
    /// Live scans only: listed segments that retention deleted before they
    /// were read (the continuity across each is not checked).
    std::uint64_t vanished = 0;
};

/// Whether the journal is at rest or may be written while it is read.
enum class ScanMode : std::uint8_t {
    at_rest,  ///< no writer: anything cut short is damage (a crash's torn tail)
    /// its monitor may be appending, rotating and deleting old segments: a
    /// record cut short at the end of the newest segment is one being
    /// written, and a segment gone before it was read was deleted by retention
    live,
};

/// Reads every segment in order, checking each record (length, CRC, header,
/// bus) and the sequence continuity within and across segments; calls
/// `visit` for each valid record up to the first damage, then stops.
/// A corrupt journal never crashes the reader.
JournalScan scan_journal(const std::string& dir,
                         const std::function<void(const JournalRecord&)>& visit = {},
                         ScanMode mode = ScanMode::at_rest);

/// Whether a running system holds the journal in `dir` (its bus's monitor
/// locks `dir/.lock` while it runs). Takes a shared lock for an instant to
/// find out; false if there is no lock file.
bool journal_in_use(const std::string& dir);

/// How to scan the journal in `dir` now: live while a running system holds it.
inline ScanMode scan_mode_of(const std::string& dir) {
    return journal_in_use(dir) ? ScanMode::live : ScanMode::at_rest;
}

}  // namespace hmk
