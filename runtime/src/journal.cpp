// SPDX-License-Identifier: Apache-2.0
#include "hmk/runtime/journal.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "hmk/crc32c.hpp"
#include "hmk/detail/endian.hpp"

namespace hmk {
namespace {

constexpr std::size_t k_buffer_bytes = 1 << 20;
constexpr std::size_t k_read_block = 256 << 10;

std::string errno_text(const std::string& what) {
    return what + ": " + std::strerror(errno);
}

std::uint64_t monotonic_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

std::string segment_name(std::uint64_t first_seq) {
    return fmt::format("seg-{:020}.hmkj", first_seq);
}

const char* file_type(mode_t mode) {
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISLNK(mode)) return "a symbolic link";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a regular file";
}

// Opens a file of the journal directory, which must be a regular file: a
// FIFO, a device or a link to one in its place fails at once, naming what
// it is, instead of blocking or never ending. `flags` as for open(2).
Result<int, std::string> open_regular(const std::string& path, int flags) {
    const int fd = ::open(path.c_str(), flags | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
    if (fd < 0) {
        if (errno == ELOOP) return Err{path + " is a symbolic link, not a journal file"};
        if (errno == ENXIO) return Err{path + " is a FIFO, not a journal file"};
        return Err{errno_text("cannot open " + path)};
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        const std::string why =
            fmt::format("{} is {}, not a journal file", path, file_type(st.st_mode));
        ::close(fd);
        return Err{why};
    }
    // (O_NONBLOCK means nothing to a regular file.)
    return fd;
}

Result<std::vector<std::byte>, std::string> read_file(const std::string& path) {
    const int fd = HMK_TRY(open_regular(path, O_RDONLY));
    std::vector<std::byte> bytes;
    std::byte buf[64 << 10];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            const std::string why = errno_text("cannot read " + path);
            ::close(fd);
            return Err{why};
        }
        if (n == 0) break;
        bytes.insert(bytes.end(), buf, buf + n);
    }
    ::close(fd);
    return bytes;
}

// mkdir -p: the directory and any missing parents.
bool make_directories(const std::string& dir) {
    for (std::size_t at = dir.find('/', 1);; at = dir.find('/', at + 1)) {
        const std::string part = dir.substr(0, at);
        if (!part.empty() && ::mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) return false;
        if (at == std::string::npos) return true;
    }
}

bool write_all(int fd, const std::byte* p, std::size_t n) {
    while (n > 0) {
        const ssize_t w = ::write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= static_cast<std::size_t>(w);
    }
    return true;
}

}  // namespace

Result<std::vector<SegmentFile>, std::string> list_segments(const std::string& dir) {
    DIR* d = opendir(dir.c_str());
    if (d == nullptr) return Err{errno_text("cannot open journal directory " + dir)};
    std::vector<SegmentFile> out;
    while (dirent* e = readdir(d)) {
        const std::string name = e->d_name;
        unsigned long long first = 0;
        if (name.size() == 29 && name.rfind("seg-", 0) == 0 && name.substr(24) == ".hmkj" &&
            std::sscanf(name.c_str() + 4, "%20llu", &first) == 1) {
            const std::string path = dir + "/" + name;
            struct stat st {};
            if (::lstat(path.c_str(), &st) != 0) {
                if (errno == ENOENT) {
                    // Deleted (retention) since the listing: a live scan
                    // counts it as vanished when it finds it gone.
                    out.push_back({path, static_cast<std::uint64_t>(first)});
                    continue;
                }
                const std::string why = errno_text("cannot stat " + path);
                closedir(d);
                return Err{why};
            }
            if (!S_ISREG(st.st_mode)) {
                closedir(d);
                return Err{
                    fmt::format("{} is {}, not a journal segment (move it out of the "
                                "journal directory)",
                                path, file_type(st.st_mode))};
            }
            out.push_back({path, static_cast<std::uint64_t>(first)});
        }
    }
    closedir(d);
    std::sort(out.begin(), out.end(),
              [](const auto& a, const auto& b) { return a.first_seq < b.first_seq; });
    return out;
}

JournalScan scan_journal(const std::string& dir,
                         const std::function<void(const JournalRecord&)>& visit, ScanMode mode) {
    const bool live = mode == ScanMode::live;
    JournalScan scan;
    auto segments = list_segments(dir);
    if (!segments) {
        scan.clean = false;
        scan.problem = segments.error();
        return scan;
    }
    std::uint64_t expected = 0;
    for (const SegmentFile& f : *segments) {
        // Listed after the writer had started the next segment, a segment is
        // whole (the writer closes one before it creates the next): only the
        // newest may still grow.
        const bool newest = &f == &segments->back();
        auto bytes = read_file(f.path);
        if (!bytes) {
            std::error_code gone;
            if (live && !std::filesystem::exists(f.path, gone)) {
                // Retention deleted it (and any older one) after the listing:
                // what it held is no longer in the journal, and the next
                // segment cannot be checked to continue it.
                ++scan.vanished;
                expected = 0;
                continue;
            }
            scan.clean = false;
            scan.problem = bytes.error();
            return scan;
        }
        if (live && newest && bytes->size() < k_segment_header_size) {
            // Just created: its header goes out with its first records.
            scan.tail_in_progress = true;
            break;
        }
        ++scan.segments;
        SegmentScanner scanner(*bytes, k_max_payload, 0);
        const auto header = scanner.header();
        if (!header || header->first_seq != f.first_seq) {
            scan.clean = false;
            scan.problem_file = f.path;
            scan.problem = fmt::format("{}:0: {}", f.path,
                                       header ? "first sequence number differs from the file name"
                                              : to_string(header.error()));
            return scan;
        }
        if (expected != 0 && header->first_seq != expected) {
            scan.clean = false;
            scan.problem_file = f.path;
            scan.problem = fmt::format("{}:0: sequence gap: seq {}..{} are missing", f.path,
                                       expected, header->first_seq - 1);
            return scan;
        }
        while (!scanner.done()) {
            const std::size_t at = scanner.offset();
            auto r = scanner.next();
            if (!r) {
                if (live && newest && r.error() == JournalError::truncated) {
                    scan.tail_in_progress = true;
                    break;
                }
                scan.clean = false;
                scan.problem_file = f.path;
                scan.problem_offset = at;
                scan.problem =
                    fmt::format("{}:{}: {} (expected seq {}); valid up to seq {}", f.path, at,
                                to_string(r.error()), scanner.expected_seq(), scan.last_seq);
                return scan;
            }
            if (scan.records == 0) scan.first_seq = r->header.seq;
            ++scan.records;
            scan.bytes += r->message.size();
            scan.last_seq = r->header.seq;
            if (visit) visit(*r);
        }
        expected = scanner.expected_seq();
    }
    return scan;
}

bool journal_in_use(const std::string& dir) {
    const std::string lock_file = dir + "/.lock";
    const int fd = ::open(lock_file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    const bool held = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    ::close(fd);  // (releases the shared lock, if it was taken)
    return held;
}

Result<JournalRepair, std::string> repair_journal(const std::string& dir) {
    if (!make_directories(dir)) {
        return Err{errno_text("cannot create journal directory " + dir)};
    }
    JournalRepair out;
    const JournalScan scan = scan_journal(dir);
    out.last_seq = scan.last_seq;
    if (!scan.clean && scan.problem_file.empty()) return Err{scan.problem};
    // Keep the evidence: what goes, goes into a quarantine directory.
    std::string quarantine;
    auto quarantine_dir = [&]() -> Result<std::string, std::string> {
        if (quarantine.empty()) {
            quarantine = fmt::format("{}/damaged-{}-{}", dir,
                                     static_cast<long long>(::time(nullptr)), ::getpid());
            if (::mkdir(quarantine.c_str(), 0700) != 0 && errno != EEXIST) {
                return Err{errno_text("cannot create " + quarantine)};
            }
        }
        return quarantine;
    };
    if (!scan.clean) {
        // The damaged segment goes whole into quarantine (its valid prefix
        // stays in place), later segments move there.
        const std::string to = HMK_TRY(quarantine_dir());
        const auto segments = HMK_TRY(list_segments(dir));
        bool after = false;
        for (const auto& seg : segments) {
            const std::string name = seg.path.substr(seg.path.rfind('/') + 1);
            const std::string moved = to + "/" + name;
            if (after ||
                (seg.path == scan.problem_file && scan.problem_offset < k_segment_header_size)) {
                if (::rename(seg.path.c_str(), moved.c_str()) != 0)
                    return Err{errno_text("cannot move " + seg.path + " to " + to)};
                after = true;
                continue;
            }
            if (seg.path != scan.problem_file) continue;
            after = true;
            auto bytes = HMK_TRY(read_file(seg.path));
            const int fd = ::open(moved.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            if (fd < 0) return Err{errno_text("cannot create " + moved)};
            const bool ok = write_all(fd, bytes.data(), bytes.size());
            ::close(fd);
            if (!ok) return Err{errno_text("cannot write " + moved)};
            if (::truncate(seg.path.c_str(), static_cast<off_t>(scan.problem_offset)) != 0)
                return Err{errno_text("cannot cut the damaged tail of " + seg.path)};
        }
        out.report = fmt::format(
            "journal damaged, continuing after seq {}: {} (the damaged part is kept in {})",
            scan.last_seq, scan.problem, to);
    }
    // A snapshot taken after what the journal now holds speaks of messages
    // that are gone: the bus goes on from the journal's end with others of
    // the same numbers, and restoring it later would bring the lost ones
    // back and lose the new ones. It goes with the tail.
    const auto snapshots = HMK_TRY(list_snapshots(dir, k_no_module));
    std::size_t stale = 0;
    for (const auto& snap : snapshots) {
        if (snap.input_seq <= scan.last_seq) continue;
        const std::string to = HMK_TRY(quarantine_dir());
        const std::string moved = to + snap.path.substr(snap.path.rfind('/'));
        if (::rename(snap.path.c_str(), moved.c_str()) != 0)
            return Err{errno_text("cannot move " + snap.path + " to " + to)};
        ++stale;
    }
    if (stale != 0) {
        out.report +=
            fmt::format("{}{} snapshot{} of a seq past {}, the journal's end, set aside in {}",
                        out.report.empty() ? "" : "; ", stale, stale == 1 ? "" : "s", scan.last_seq,
                        quarantine);
    }
    return out;
}

const char* to_string(FsyncPolicy policy) {
    switch (policy) {
        case FsyncPolicy::none:
            return "none";
        case FsyncPolicy::interval:
            return "interval";
        case FsyncPolicy::always:
            return "always";
    }
    return "?";
}

Result<JournalWriter, std::string> JournalWriter::open(const JournalOptions& options) {
    const JournalRepair repair = HMK_TRY(repair_journal(options.dir));
    JournalWriter w(options);
    w.m_buffer.reserve(k_buffer_bytes);
    w.m_repaired = repair.report;
    w.m_last_seq = repair.last_seq;
    w.m_written_seq = repair.last_seq;
    w.m_synced_seq = repair.last_seq;
    return w;
}

JournalWriter::JournalWriter(JournalWriter&& o) noexcept
    : m_options(std::move(o.m_options)),
      m_fd(std::exchange(o.m_fd, -1)),
      m_segment_first(o.m_segment_first),
      m_segment_size(o.m_segment_size),
      m_last_seq(o.m_last_seq),
      m_written_seq(o.m_written_seq),
      m_synced_seq(o.m_synced_seq),
      m_unsynced_since_ns(o.m_unsynced_since_ns),
      m_buffer(std::move(o.m_buffer)),
      m_repaired(std::move(o.m_repaired)),
      m_index(std::move(o.m_index)) {}

JournalWriter::~JournalWriter() {
    if (m_fd >= 0) {
        (void)sync();
        ::close(m_fd);
    }
}

Result<void, std::string> JournalWriter::start_segment(std::uint64_t first_seq) {
    if (m_fd >= 0) {
        HMK_TRY(sync());
        ::close(m_fd);
        m_fd = -1;
    }
    const std::string path = m_options.dir + "/" + segment_name(first_seq);
    m_fd = HMK_TRY(open_regular(path, O_WRONLY | O_CREAT | O_TRUNC));
    // A synced record in a file whose directory entry is not synced could
    // vanish with the file in a power cut.
    if (m_options.fsync != FsyncPolicy::none) {
        const int dir = ::open(m_options.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        const bool synced = dir >= 0 && ::fsync(dir) == 0;
        const int saved = errno;
        if (dir >= 0) ::close(dir);
        errno = saved;
        if (!synced) return Err{errno_text("cannot fsync " + m_options.dir)};
    }
    std::byte header[k_segment_header_size];
    encode_segment_header(SegmentHeader{m_options.bus, first_seq}, header);
    m_buffer.insert(m_buffer.end(), header, header + k_segment_header_size);
    m_segment_first = first_seq;
    m_segment_size = k_segment_header_size;
    // Retention: drop the oldest segments beyond the limit.
    if (m_options.keep_segments != 0) {
        auto segments = HMK_TRY(list_segments(m_options.dir));
        while (segments.size() > m_options.keep_segments) {
            ::unlink(segments.front().path.c_str());
            segments.erase(segments.begin());
        }
    }
    return {};
}

Result<void, std::string> JournalWriter::append(std::span<const std::byte> message,
                                                std::uint64_t seq) {
    if (message.size() > k_header_size + m_options.max_payload)
        return Err{std::string("message too large")};
    if (m_fd < 0 || seq != m_last_seq + 1 || m_segment_size >= m_options.segment_bytes) {
        // A new segment: the first append, a size rotation, or a gap in the bus
        // order (the gap then shows between two segments, it is not hidden).
        HMK_TRY(start_segment(seq));
    }
    const std::size_t start = m_buffer.size();
    m_buffer.resize(start + k_record_prefix + message.size());
    encode_record(message, std::span<std::byte>(m_buffer.data() + start, m_buffer.size() - start));
    if (seq == m_segment_first || seq % k_index_every == 0) {
        if (m_index.size() >= k_index_max) {
            m_index.erase(m_index.begin(), m_index.begin() + k_index_max / 2);
        }
        m_index.push_back({seq, m_segment_first, m_segment_size});
    }
    m_segment_size += k_record_prefix + message.size();
    m_last_seq = seq;
    if (m_unsynced_since_ns == 0) m_unsynced_since_ns = monotonic_ns();
    // Durability comes with commit(): `always` syncs a whole batch at once.
    if (m_options.fsync == FsyncPolicy::interval) return tick(monotonic_ns());
    return m_buffer.size() >= k_buffer_bytes ? flush() : Result<void, std::string>{};
}

Result<void, std::string> JournalWriter::flush() {
    if (!m_buffer.empty() && m_fd >= 0) {
        if (!write_all(m_fd, m_buffer.data(), m_buffer.size()))
            return Err{errno_text("journal write")};
        m_buffer.clear();
    }
    m_written_seq = m_last_seq;
    return {};
}

Result<void, std::string> JournalWriter::sync() {
    HMK_TRY(flush());
    if (m_fd >= 0 && m_options.fsync != FsyncPolicy::none && ::fdatasync(m_fd) != 0) {
        return Err{errno_text("journal fdatasync")};
    }
    m_unsynced_since_ns = 0;
    if (m_options.fsync != FsyncPolicy::none) m_synced_seq = m_last_seq;
    return {};
}

Result<void, std::string> JournalWriter::commit() {
    if (m_options.fsync == FsyncPolicy::always)
        return m_synced_seq == m_last_seq ? Result<void, std::string>{} : sync();
    return m_written_seq == m_last_seq ? Result<void, std::string>{} : flush();
}

std::pair<std::uint64_t, std::uint64_t> JournalWriter::locate(std::uint64_t seq) const {
    // The newest index entry at or before seq, in the same segment as seq.
    auto it = std::upper_bound(m_index.begin(), m_index.end(), seq,
                               [](std::uint64_t s, const IndexEntry& e) { return s < e.seq; });
    if (it == m_index.begin()) return {0, 0};
    --it;
    // A later segment start between the entry and seq would make the hint wrong.
    const auto next_segment = std::find_if(
        it, m_index.end(), [&](const IndexEntry& e) { return e.segment != it->segment; });
    if (next_segment != m_index.end() && next_segment->seq <= seq) return {0, 0};
    if (seq > m_last_seq) return {0, 0};
    return {it->segment, it->offset};
}

Result<void, std::string> JournalWriter::tick(std::uint64_t now_ns) {
    if (m_unsynced_since_ns != 0 &&
        now_ns - m_unsynced_since_ns >= std::uint64_t{m_options.fsync_interval_ms} * 1'000'000u) {
        return sync();
    }
    if (m_buffer.size() >= k_buffer_bytes) return flush();
    return {};
}

// --- JournalReader ----------------------------------------------------------

JournalReader::JournalReader(std::string dir, std::uint32_t max_payload)
    : m_dir(std::move(dir)), m_max_payload(max_payload) {
    m_buffer.resize(k_read_block);
}

JournalReader::JournalReader(JournalReader&& o) noexcept
    : m_dir(std::move(o.m_dir)),
      m_max_payload(o.m_max_payload),
      m_want(o.m_want),
      m_fd(std::exchange(o.m_fd, -1)),
      m_segment_first(o.m_segment_first),
      m_file_pos(o.m_file_pos),
      m_pos(o.m_pos),
      m_buffer(std::move(o.m_buffer)),
      m_len(o.m_len),
      m_hint_segment(o.m_hint_segment),
      m_hint_offset(o.m_hint_offset),
      m_missing_last(o.m_missing_last),
      m_reread(o.m_reread),
      m_problem(std::move(o.m_problem)),
      m_on_segment_end(std::move(o.m_on_segment_end)) {}

JournalReader& JournalReader::operator=(JournalReader&& o) noexcept {
    if (this != &o) {
        if (m_fd >= 0) ::close(m_fd);
        m_dir = std::move(o.m_dir);
        m_max_payload = o.m_max_payload;
        m_want = o.m_want;
        m_fd = std::exchange(o.m_fd, -1);
        m_segment_first = o.m_segment_first;
        m_file_pos = o.m_file_pos;
        m_pos = o.m_pos;
        m_buffer = std::move(o.m_buffer);
        m_len = o.m_len;
        m_hint_segment = o.m_hint_segment;
        m_hint_offset = o.m_hint_offset;
        m_missing_last = o.m_missing_last;
        m_reread = o.m_reread;
        m_problem = std::move(o.m_problem);
        m_on_segment_end = std::move(o.m_on_segment_end);
    }
    return *this;
}

JournalReader::~JournalReader() {
    if (m_fd >= 0) ::close(m_fd);
}

void JournalReader::seek(std::uint64_t seq, std::uint64_t hint_segment, std::uint64_t hint_offset) {
    // Reading on from where we are is the common case (catching up): keep the file.
    if (m_fd >= 0 && seq == m_want) return;
    if (m_fd >= 0) ::close(m_fd);
    m_fd = -1;
    m_want = seq;
    m_hint_segment = hint_segment;
    m_hint_offset = hint_offset;
}

JournalReader::Status JournalReader::open_segment_for(std::uint64_t seq) {
    m_problem.clear();
    m_missing_last = 0;
    auto segments = list_segments(m_dir);
    if (!segments) {
        m_problem = segments.error();
        return Status::end;
    }
    const SegmentFile* pick = nullptr;
    for (const auto& s : *segments) {
        if (s.first_seq <= seq) pick = &s;
    }
    if (pick == nullptr) {
        if (segments->empty()) {
            m_problem = "the journal is empty";
            return Status::end;
        }
        m_missing_last = segments->front().first_seq - 1;
        m_problem = fmt::format("the journal starts at seq {}", segments->front().first_seq);
        return Status::missing;
    }
    auto opened = open_regular(pick->path, O_RDONLY);
    if (!opened) {
        m_problem = opened.error();
        return Status::end;
    }
    m_fd = *opened;
    m_segment_first = pick->first_seq;
    std::byte header[k_segment_header_size];
    const ssize_t n = ::pread(m_fd, header, sizeof(header), 0);
    const bool whole = n == static_cast<ssize_t>(k_segment_header_size);
    SegmentScanner check(
        std::span<const std::byte>(header, n > 0 ? static_cast<std::size_t>(n) : 0));
    if (!whole || !check.header() || check.header()->first_seq != pick->first_seq) {
        ::close(m_fd);
        m_fd = -1;
        // The writer has just made the newest segment: its header goes out
        // with its first records.
        if (!whole && pick == &segments->back()) return Status::end;
        m_problem = fmt::format("{}:0: bad segment header", pick->path);
        return Status::damaged;
    }
    m_file_pos = k_segment_header_size;
    if (m_hint_segment == pick->first_seq && m_hint_offset >= k_segment_header_size) {
        m_file_pos = m_hint_offset;
    }
    m_hint_segment = 0;
    m_pos = 0;
    m_len = 0;
    return Status::ok;
}

// Makes at least `need` bytes available at m_pos; `end` at the end of the file.
JournalReader::Status JournalReader::fill(std::size_t need) {
    if (m_len - m_pos >= need) return Status::ok;
    if (m_pos > 0) {
        std::memmove(m_buffer.data(), m_buffer.data() + m_pos, m_len - m_pos);
        m_file_pos += m_pos;
        m_len -= m_pos;
        m_pos = 0;
    }
    if (m_buffer.size() < need) m_buffer.resize(std::max(need, k_read_block));
    while (m_len < need) {
        const ssize_t n = ::pread(m_fd, m_buffer.data() + m_len, m_buffer.size() - m_len,
                                  static_cast<off_t>(m_file_pos + m_len));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return Status::end;
        m_len += static_cast<std::size_t>(n);
    }
    return Status::ok;
}

JournalReader::Status JournalReader::next(JournalRecord& record) {
    m_missing_last = 0;
    for (;;) {
        if (m_fd < 0) {
            if (const Status opened = open_segment_for(m_want); opened != Status::ok) {
                // Missing only what lies before the journal's first segment.
                if (opened == Status::missing && m_missing_last < m_want) return Status::end;
                return opened;
            }
        }
        Status st = fill(k_record_prefix);
        std::uint32_t length = 0;
        if (st == Status::ok) {
            length = detail::get_le<std::uint32_t>(m_buffer.data() + m_pos, 0);
            if (length < k_header_size || length > k_header_size + m_max_payload) {
                m_problem = fmt::format("segment {} offset {}: bad record length", m_segment_first,
                                        m_file_pos + m_pos);
                return Status::damaged;
            }
            st = fill(k_record_prefix + length);
        }
        if (st != Status::ok) {
            // End of this file. A later segment means this one is complete.
            if (m_on_segment_end) m_on_segment_end();
            auto segments = list_segments(m_dir);
            const SegmentFile* later = nullptr;
            if (segments) {
                for (const auto& s : *segments) {
                    if (s.first_seq > m_segment_first) {
                        later = &s;
                        break;
                    }
                }
            }
            if (later == nullptr) return Status::end;  // the writer may add more
            // The writer closes a segment before it starts the next, so this
            // one is whole now, but what we read of it may predate the last
            // writes: a record cut mid-write, or whole records appended after
            // our read ended at a record boundary. Read it again before judging.
            if (!m_reread) {
                m_reread = true;
                m_len = m_pos;  // drop what was read beyond the parse position
                continue;
            }
            m_reread = false;
            if (m_len != m_pos) {
                m_problem = fmt::format("segment {} offset {}: record cut short", m_segment_first,
                                        m_file_pos + m_pos);
                return Status::damaged;
            }
            ::close(m_fd);
            m_fd = -1;
            if (later->first_seq > m_want) {
                m_missing_last = later->first_seq - 1;
                m_problem =
                    fmt::format("seq {}..{} are not in the journal", m_want, m_missing_last);
                return Status::missing;
            }
            continue;
        }
        const std::span<const std::byte> message(m_buffer.data() + m_pos + k_record_prefix, length);
        const auto h = decode_header(message, m_max_payload, Framing::exact);
        if (!h) {
            m_problem = fmt::format("segment {} offset {}: {}", m_segment_first, m_file_pos + m_pos,
                                    to_string(h.error()));
            return Status::damaged;
        }
        if (h->seq < m_want) {  // seeking: hop over it
            m_pos += k_record_prefix + length;
            continue;
        }
        if (h->seq > m_want) {
            m_problem = fmt::format("segment {} offset {}: seq {} where {} was expected",
                                    m_segment_first, m_file_pos + m_pos, h->seq, m_want);
            return Status::damaged;
        }
        const std::uint32_t crc = detail::get_le<std::uint32_t>(m_buffer.data() + m_pos, 4);
        if (crc32c(message) != crc) {
            m_problem = fmt::format("segment {} offset {}: CRC32C mismatch (seq {})",
                                    m_segment_first, m_file_pos + m_pos, m_want);
            return Status::damaged;
        }
        record = JournalRecord{*h, message, static_cast<std::size_t>(m_file_pos + m_pos)};
        m_reread = false;
        m_pos += k_record_prefix + length;
        ++m_want;
        return Status::ok;
    }
}

// --- snapshots -------------------------------------------------------------

namespace {

std::string snapshot_name(ModuleId module, std::uint64_t input_seq) {
    return fmt::format("snap-{:010}-{:020}.hmks", module, input_seq);
}

bool fsync_dir(const std::string& dir) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return false;
    const bool ok = ::fsync(fd) == 0;
    ::close(fd);
    return ok;
}

}  // namespace

Result<std::vector<SnapshotFile>, std::string> list_snapshots(const std::string& dir,
                                                              ModuleId module) {
    DIR* d = opendir(dir.c_str());
    if (d == nullptr) return Err{errno_text("cannot open journal directory " + dir)};
    std::vector<SnapshotFile> out;
    while (dirent* e = readdir(d)) {
        const std::string name = e->d_name;
        unsigned int id = 0;
        unsigned long long seq = 0;
        if (name.size() == 41 && name.rfind("snap-", 0) == 0 && name.substr(36) == ".hmks" &&
            name[15] == '-' && std::sscanf(name.c_str() + 5, "%10u", &id) == 1 &&
            std::sscanf(name.c_str() + 16, "%20llu", &seq) == 1) {
            if (module != k_no_module && id != module) continue;
            out.push_back(
                {dir + "/" + name, static_cast<ModuleId>(id), static_cast<std::uint64_t>(seq)});
        }
    }
    closedir(d);
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
        return a.module != b.module ? a.module < b.module : a.input_seq < b.input_seq;
    });
    return out;
}

std::optional<LoadedSnapshot> load_latest_snapshot(const std::string& dir, ModuleId module,
                                                   std::vector<std::string>* skipped,
                                                   std::uint64_t at_most) {
    auto files = list_snapshots(dir, module);
    if (!files) return std::nullopt;
    for (auto it = files->rbegin(); it != files->rend(); ++it) {
        if (it->input_seq > at_most) {
            if (skipped) {
                skipped->push_back(
                    fmt::format("{}: of seq {}, past seq {} (the journal lost what "
                                "it was taken after, or it failed to restore)",
                                it->path, it->input_seq, at_most));
            }
            continue;
        }
        auto bytes = read_file(it->path);
        if (!bytes) {
            if (skipped) skipped->push_back(bytes.error());
            continue;
        }
        std::span<const std::byte> body;
        auto header = check_snapshot_file(*bytes, body);
        if (!header) {
            if (skipped) skipped->push_back(it->path + ": " + to_string(header.error()));
            continue;
        }
        if (header->module != module || header->input_seq != it->input_seq) {
            if (skipped) skipped->push_back(it->path + ": header does not match the file name");
            continue;
        }
        return LoadedSnapshot{it->path, *header, std::vector<std::byte>(body.begin(), body.end())};
    }
    return std::nullopt;
}

Result<std::string, std::string> write_snapshot_file(const std::string& dir,
                                                     const SnapshotFileHeader& header,
                                                     std::span<const std::byte> body,
                                                     FsyncPolicy fsync, std::uint32_t keep) {
    const std::string name = snapshot_name(header.module, header.input_seq);
    const std::string path = dir + "/" + name;
    const std::string temp = dir + "/." + name + ".tmp";
    std::byte head[k_snapshot_file_header];
    encode_snapshot_file_header(header, head);
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return Err{errno_text("cannot create " + temp)};
    bool ok = write_all(fd, head, sizeof(head)) && write_all(fd, body.data(), body.size());
    if (ok && fsync != FsyncPolicy::none) ok = ::fdatasync(fd) == 0;
    ::close(fd);
    if (!ok || ::rename(temp.c_str(), path.c_str()) != 0) {
        const std::string why = errno_text("cannot write snapshot " + path);
        ::unlink(temp.c_str());
        return Err{why};
    }
    if (fsync != FsyncPolicy::none && !fsync_dir(dir)) return Err{errno_text("fsync " + dir)};
    if (keep != 0) {
        auto files = HMK_TRY(list_snapshots(dir, header.module));
        for (std::size_t i = 0; i + keep < files.size(); ++i) ::unlink(files[i].path.c_str());
    }
    return path;
}

}  // namespace hmk
