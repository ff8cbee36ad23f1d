// SPDX-License-Identifier: Apache-2.0
#include "hmk/runtime/journal.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

namespace hmk {
namespace {

constexpr std::size_t k_buffer_bytes = 1 << 20;

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

Result<std::vector<std::byte>, std::string> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return Err{errno_text("cannot read " + path)};
    std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::byte> bytes(raw.size());
    std::memcpy(bytes.data(), raw.data(), raw.size());
    return bytes;
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
            out.push_back({dir + "/" + name, static_cast<std::uint64_t>(first)});
        }
    }
    closedir(d);
    std::sort(out.begin(), out.end(),
              [](const auto& a, const auto& b) { return a.first_seq < b.first_seq; });
    return out;
}

JournalScan scan_journal(const std::string& dir,
                         const std::function<void(const JournalRecord&)>& visit) {
    JournalScan scan;
    auto segments = list_segments(dir);
    if (!segments) {
        scan.clean = false;
        scan.problem = segments.error();
        return scan;
    }
    std::uint64_t expected = 0;
    for (const SegmentFile& f : *segments) {
        auto bytes = read_file(f.path);
        if (!bytes) {
            scan.clean = false;
            scan.problem = bytes.error();
            return scan;
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

Result<JournalWriter, std::string> JournalWriter::open(const JournalOptions& options) {
    if (::mkdir(options.dir.c_str(), 0700) != 0 && errno != EEXIST) {
        return Err{errno_text("cannot create journal directory " + options.dir)};
    }
    JournalWriter w(options);
    w.m_buffer.reserve(k_buffer_bytes);
    // Continue an existing journal after its last valid record; cut a damaged tail.
    const JournalScan scan = scan_journal(options.dir);
    auto segments = HMK_TRY(list_segments(options.dir));
    if (!segments.empty()) {
        if (!scan.clean) {
            w.m_repaired = "journal damaged, continuing after seq " +
                           std::to_string(scan.last_seq) + ": " + scan.problem;
            // Segments after the damage go; the damaged one is cut at the damage.
            bool after = false;
            for (const auto& s : segments) {
                if (after) ::unlink(s.path.c_str());
                if (s.path == scan.problem_file) {
                    after = true;
                    const std::uint64_t offset = scan.problem_offset;
                    if (offset < k_segment_header_size) {
                        ::unlink(s.path.c_str());
                    } else if (::truncate(s.path.c_str(), static_cast<off_t>(offset)) != 0) {
                        return Err{errno_text("cannot cut the damaged tail of " + s.path)};
                    }
                }
            }
        }
        w.m_last_seq = scan.last_seq;
    }
    return w;
}

JournalWriter::JournalWriter(JournalWriter&& o) noexcept
    : m_options(std::move(o.m_options)),
      m_fd(std::exchange(o.m_fd, -1)),
      m_segment_size(o.m_segment_size),
      m_last_seq(o.m_last_seq),
      m_unsynced_since_ns(o.m_unsynced_since_ns),
      m_buffer(std::move(o.m_buffer)),
      m_repaired(std::move(o.m_repaired)) {}

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
    m_fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (m_fd < 0) return Err{errno_text("cannot create " + path)};
    std::byte header[k_segment_header_size];
    encode_segment_header(SegmentHeader{m_options.bus, first_seq}, header);
    m_buffer.insert(m_buffer.end(), header, header + k_segment_header_size);
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
    m_segment_size += k_record_prefix + message.size();
    m_last_seq = seq;
    if (m_unsynced_since_ns == 0) m_unsynced_since_ns = monotonic_ns();
    switch (m_options.fsync) {
        case FsyncPolicy::always:
            return sync();
        case FsyncPolicy::interval:
            return tick(monotonic_ns());
        case FsyncPolicy::none:
            return m_buffer.size() >= k_buffer_bytes ? flush() : Result<void, std::string>{};
    }
    return {};
}

Result<void, std::string> JournalWriter::flush() {
    if (m_buffer.empty() || m_fd < 0) return {};
    if (!write_all(m_fd, m_buffer.data(), m_buffer.size())) return Err{errno_text("journal write")};
    m_buffer.clear();
    return {};
}

Result<void, std::string> JournalWriter::sync() {
    HMK_TRY(flush());
    if (m_fd >= 0 && m_options.fsync != FsyncPolicy::none && ::fdatasync(m_fd) != 0) {
        return Err{errno_text("journal fdatasync")};
    }
    m_unsynced_since_ns = 0;
    return {};
}

Result<void, std::string> JournalWriter::tick(std::uint64_t now_ns) {
    if (m_unsynced_since_ns != 0 &&
        now_ns - m_unsynced_since_ns >= std::uint64_t{m_options.fsync_interval_ms} * 1'000'000u) {
        return sync();
    }
    if (m_buffer.size() >= k_buffer_bytes) return flush();
    return {};
}

}  // namespace hmk
