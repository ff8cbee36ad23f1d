// SPDX-License-Identifier: Apache-2.0
#include "hmk/runtime/journal.hpp"

#include <fcntl.h>
#include <fmt/core.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <thread>

#include "hmk/crc32c.hpp"
#include "recorder.hpp"
#include "temp_dir.hpp"

namespace hmk {
namespace {

namespace fs = std::filesystem;

using testing::TempDir;

std::vector<std::byte> message(BusId bus, std::uint64_t seq, std::size_t payload = 40) {
    Header h;
    h.bus = bus;
    h.seq = seq;
    h.type = 0x1000;
    h.payload_size = static_cast<std::uint32_t>(payload);
    std::vector<std::byte> m(k_header_size + payload, std::byte{0x5A});
    encode_header(h, std::span<std::byte, k_header_size>(m.data(), k_header_size));
    return m;
}

JournalOptions options(const std::string& dir, FsyncPolicy fsync = FsyncPolicy::none) {
    JournalOptions o;
    o.dir = dir;
    o.bus = 7;
    o.fsync = fsync;
    o.segment_bytes = 4096;
    return o;
}

TEST(JournalTest, WriterRotatesSegmentsAndReadsBackEveryRecord) {
    TempDir d;
    {
        auto w = JournalWriter::open(options(d.path));
        ASSERT_TRUE(w.has_value()) << w.error();
        for (std::uint64_t s = 1; s <= 1000; ++s)
            ASSERT_TRUE(w->append(message(7, s), s).has_value());
    }
    std::uint64_t next = 1;
    const JournalScan scan =
        scan_journal(d.path, [&](const JournalRecord& r) { EXPECT_EQ(r.header.seq, next++); });
    EXPECT_TRUE(scan.clean) << scan.problem;
    EXPECT_EQ(scan.records, 1000u);
    EXPECT_GT(scan.segments, 10u);
    EXPECT_EQ(scan.last_seq, 1000u);
}

TEST(JournalTest, RetentionKeepsTheNewestSegments) {
    TempDir d;
    auto o = options(d.path);
    o.keep_segments = 3;
    {
        auto w = JournalWriter::open(o);
        for (std::uint64_t s = 1; s <= 1000; ++s)
            ASSERT_TRUE(w->append(message(7, s), s).has_value());
    }
    const auto segments = list_segments(d.path);
    ASSERT_TRUE(segments.has_value());
    EXPECT_EQ(segments->size(), 3u);
    const JournalScan scan = scan_journal(d.path);
    EXPECT_TRUE(scan.clean) << scan.problem;
    EXPECT_EQ(scan.last_seq, 1000u);
    EXPECT_GT(scan.first_seq, 1u);
}

TEST(JournalTest, ReopenCutsADamagedTailAndContinues) {
    TempDir d;
    {
        auto w = JournalWriter::open(options(d.path));
        for (std::uint64_t s = 1; s <= 100; ++s)
            ASSERT_TRUE(w->append(message(7, s), s).has_value());
    }
    // Flip a byte in the last segment's last record, as a torn write would.
    const auto segments = *list_segments(d.path);
    const std::string last = segments.back().path;
    const auto size = fs::file_size(last);
    {
        std::fstream f(last, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(static_cast<std::streamoff>(size - 3));
        f.put('!');
    }
    JournalScan scan = scan_journal(d.path);
    ASSERT_FALSE(scan.clean);
    EXPECT_EQ(scan.last_seq, 99u);
    EXPECT_NE(scan.problem.find("CRC32C mismatch"), std::string::npos) << scan.problem;
    {
        auto w = JournalWriter::open(options(d.path));
        ASSERT_TRUE(w.has_value());
        EXPECT_NE(w->repaired().find("continuing after seq 99"), std::string::npos)
            << w->repaired();
        EXPECT_EQ(w->last_seq(), 99u);
        for (std::uint64_t s = 100; s <= 150; ++s)
            ASSERT_TRUE(w->append(message(7, s), s).has_value());
    }
    scan = scan_journal(d.path);
    EXPECT_TRUE(scan.clean) << scan.problem;
    EXPECT_EQ(scan.last_seq, 150u);
    EXPECT_EQ(scan.records, 150u);
}

// A snapshot of a seq the repair cut off must go with the tail: once the
// bus has gone on past it with other messages, restoring it would bring
// back what was cut and lose what came since.
TEST(JournalTest, ASnapshotPastACutTailGoesWithIt) {
    TempDir d;
    {
        auto w = JournalWriter::open(options(d.path));
        for (std::uint64_t s = 1; s <= 100; ++s)
            ASSERT_TRUE(w->append(message(7, s), s).has_value());
    }
    const std::byte body[4] = {std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4}};
    for (const std::uint64_t at : {50u, 99u, 100u}) {
        SnapshotFileHeader h;
        h.module = 5;
        h.input_seq = at;
        h.output_seq = at + 1;
        h.body_size = sizeof(body);
        h.body_crc = crc32c(body);
        ASSERT_TRUE(write_snapshot_file(d.path, h, body, FsyncPolicy::none, 0));
    }
    // A torn last record: the journal goes on after seq 99.
    const std::string last = list_segments(d.path)->back().path;
    const auto size = fs::file_size(last);
    {
        std::fstream f(last, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(static_cast<std::streamoff>(size - 3));
        f.put('!');
    }
    {
        auto w = JournalWriter::open(options(d.path));
        ASSERT_TRUE(w.has_value()) << w.error();
        EXPECT_NE(w->repaired().find("1 snapshot of a seq past 99"), std::string::npos)
            << w->repaired();
        for (std::uint64_t s = 100; s <= 150; ++s)
            ASSERT_TRUE(w->append(message(7, s), s).has_value());
    }
    const auto kept = list_snapshots(d.path, 5);
    ASSERT_TRUE(kept);
    ASSERT_EQ(kept->size(), 2u);
    const auto latest = load_latest_snapshot(d.path, 5, nullptr, 150);
    ASSERT_TRUE(latest);
    EXPECT_EQ(latest->header.input_seq, 99u);
    // A clean journal keeps every snapshot it holds the messages of.
    auto w = JournalWriter::open(options(d.path));
    ASSERT_TRUE(w.has_value());
    EXPECT_EQ(w->repaired(), "");
}

TEST(JournalTest, AGapInTheBusOrderStaysVisible) {
    TempDir d;
    {
        auto w = JournalWriter::open(options(d.path));
        for (std::uint64_t s = 1; s <= 10; ++s)
            ASSERT_TRUE(w->append(message(7, s), s).has_value());
        for (std::uint64_t s = 20; s <= 30; ++s)
            ASSERT_TRUE(w->append(message(7, s), s).has_value());
    }
    const JournalScan scan = scan_journal(d.path);
    EXPECT_FALSE(scan.clean);
    EXPECT_NE(scan.problem.find("seq 11..19 are missing"), std::string::npos) << scan.problem;
    EXPECT_EQ(scan.last_seq, 10u);
}

// A journal its monitor is writing: a record cut short at the end of the
// newest segment is one still being written (live), damage at rest; any
// other damage is damage either way.
TEST(JournalTest, ALiveScanTakesACutTailOfTheNewestSegmentForARecordBeingWritten) {
    TempDir d;
    // 100 records, ~36 a segment: three segments, the newest holding 73..100.
    auto build = [&] {
        fs::remove_all(d.path);
        fs::create_directories(d.path);
        auto w = JournalWriter::open(options(d.path));
        for (std::uint64_t s = 1; s <= 100; ++s)
            ASSERT_TRUE(w->append(message(7, s), s).has_value());
    };
    ASSERT_NO_FATAL_FAILURE(build());
    auto segments = *list_segments(d.path);
    ASSERT_EQ(segments.size(), 3u);
    const std::string newest = segments.back().path, middle = segments[1].path;

    fs::resize_file(newest, fs::file_size(newest) - 5);
    JournalScan scan = scan_journal(d.path, {}, ScanMode::live);
    EXPECT_TRUE(scan.clean) << scan.problem;
    EXPECT_TRUE(scan.tail_in_progress);
    EXPECT_EQ(scan.last_seq, 99u);
    scan = scan_journal(d.path);
    EXPECT_FALSE(scan.clean);
    EXPECT_NE(scan.problem.find("record truncated"), std::string::npos) << scan.problem;

    // A newest segment just created: its header goes out with its first records.
    fs::resize_file(newest, 0);
    scan = scan_journal(d.path, {}, ScanMode::live);
    EXPECT_TRUE(scan.clean) << scan.problem;
    EXPECT_TRUE(scan.tail_in_progress);
    EXPECT_EQ(scan.last_seq, segments.back().first_seq - 1);
    EXPECT_FALSE(scan_journal(d.path).clean);

    // A flipped bit in the newest segment: damage, live or not.
    ASSERT_NO_FATAL_FAILURE(build());
    {
        std::fstream f(newest, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(static_cast<std::streamoff>(fs::file_size(newest) - 3));
        f.put('!');
    }
    scan = scan_journal(d.path, {}, ScanMode::live);
    EXPECT_FALSE(scan.clean);
    EXPECT_NE(scan.problem.find("CRC32C mismatch"), std::string::npos) << scan.problem;
    EXPECT_FALSE(scan.tail_in_progress);

    // Cut short in a segment a later one follows: damage, live or not.
    ASSERT_NO_FATAL_FAILURE(build());
    fs::resize_file(middle, fs::file_size(middle) - 5);
    scan = scan_journal(d.path, {}, ScanMode::live);
    EXPECT_FALSE(scan.clean);
    EXPECT_NE(scan.problem.find("record truncated"), std::string::npos) << scan.problem;
    EXPECT_FALSE(scan.tail_in_progress);
}

// Scans of a journal its writer appends to, rotates and trims meanwhile are
// all clean, and never end before an earlier one did unless segments vanished.
TEST(JournalTest, LiveScansOfAJournalBeingWrittenAreClean) {
    TempDir d;
    constexpr std::uint64_t k_records = 20000;
    auto o = options(d.path);
    o.segment_bytes = 8192;
    o.keep_segments = 6;
    std::atomic<bool> done{false};
    std::thread writer([&] {
        auto w = JournalWriter::open(o);
        for (std::uint64_t s = 1; w && s <= k_records; ++s) {
            if (!w->append(message(7, s, 1 + s % 200), s)) break;
            if (s % 5 == 0 && !w->commit()) break;
        }
        done.store(true);
    });
    struct Join {
        std::thread& t;
        ~Join() {
            if (t.joinable()) t.join();
        }
    } join{writer};
    std::uint64_t last = 0, scans = 0, tails = 0, vanished = 0;
    while (!done.load()) {
        const JournalScan scan = scan_journal(d.path, {}, ScanMode::live);
        ASSERT_TRUE(scan.clean) << "scan " << scans << ": " << scan.problem;
        // (A scan slower than the writer may find even its newest segment
        // deleted by retention; only a scan that lost none must reach as far.)
        if (scan.vanished == 0) {
            ASSERT_GE(scan.last_seq, last) << "scan " << scans;
            last = scan.last_seq;
        }
        ++scans;
        tails += scan.tail_in_progress ? 1 : 0;
        vanished += scan.vanished;
    }
    writer.join();
    const JournalScan at_rest = scan_journal(d.path);
    EXPECT_TRUE(at_rest.clean) << at_rest.problem;
    EXPECT_EQ(at_rest.last_seq, k_records);
    EXPECT_GT(scans, 0u);
    std::printf("%llu live scans, %llu with a tail being written, %llu segments vanished\n",
                static_cast<unsigned long long>(scans), static_cast<unsigned long long>(tails),
                static_cast<unsigned long long>(vanished));
}

TEST(JournalTest, InUseWhileSomeoneHoldsItsLock) {
    TempDir d;
    EXPECT_FALSE(journal_in_use(d.path));  // no lock file
    const std::string lock_file = d.path + "/.lock";
    const int fd = ::open(lock_file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    EXPECT_FALSE(journal_in_use(d.path));
    ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
    EXPECT_TRUE(journal_in_use(d.path));
    ASSERT_EQ(::flock(fd, LOCK_UN), 0);
    EXPECT_FALSE(journal_in_use(d.path));
    // Asking did not keep a lock that would stop a system from taking it.
    EXPECT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
    ::close(fd);
}

// A directory, a FIFO, or a link to /dev/zero with a segment's name: the
// scan, the writer and the reader name it; none blocks, reads for ever, or
// throws.
TEST(JournalTest, AnEntryNamedLikeASegmentThatIsNoFileIsNamedNotRead) {
    struct Case {
        const char* what;
        const char* says;
    };
    for (const Case c : {Case{"directory", "is a directory"}, Case{"fifo", "is a FIFO"},
                         Case{"link", "is a symbolic link"}}) {
        SCOPED_TRACE(c.what);
        TempDir d;
        {
            auto w = JournalWriter::open(options(d.path));
            ASSERT_TRUE(w.has_value()) << w.error();
            for (std::uint64_t s = 1; s <= 10; ++s)
                ASSERT_TRUE(w->append(message(7, s), s).has_value());
        }
        const std::string bogus = d.path + "/seg-00000000000000000011.hmkj";
        if (std::string(c.what) == "directory") {
            ASSERT_EQ(::mkdir(bogus.c_str(), 0700), 0);
        } else if (std::string(c.what) == "fifo") {
            ASSERT_EQ(::mkfifo(bogus.c_str(), 0600), 0);
        } else {
            ASSERT_EQ(::symlink("/dev/zero", bogus.c_str()), 0);
        }
        const JournalScan scan = scan_journal(d.path);
        EXPECT_FALSE(scan.clean);
        EXPECT_NE(scan.problem.find(bogus), std::string::npos) << scan.problem;
        EXPECT_NE(scan.problem.find(c.says), std::string::npos) << scan.problem;
        auto w = JournalWriter::open(options(d.path));
        ASSERT_FALSE(w.has_value());
        EXPECT_NE(w.error().find(c.says), std::string::npos) << w.error();
        JournalReader reader(d.path);
        JournalRecord record;
        EXPECT_NE(reader.next(record), JournalReader::Status::ok);
        EXPECT_NE(reader.problem().find(c.says), std::string::npos) << reader.problem();
    }
}

TEST(JournalTest, MissingDirectoryIsAnErrorNotACrash) {
    const JournalScan scan = scan_journal("/nonexistent/journal");
    EXPECT_FALSE(scan.clean);
    EXPECT_NE(scan.problem.find("cannot open journal directory"), std::string::npos);
}

// kill -9 at random points while a process appends with fsync = always: the
// journal afterwards verifies up to its last whole record, and holds every
// record the writer had acknowledged.
TEST(JournalTest, KilledWriterLosesNothingItAcknowledged) {
    std::mt19937 rng(4242);
    for (int round = 0; round < 12; ++round) {
        TempDir d;
        int acks[2];
        ASSERT_EQ(pipe(acks), 0);
        const pid_t child = fork();
        ASSERT_GE(child, 0);
        if (child == 0) {
            close(acks[0]);
            auto w = JournalWriter::open(options(d.path, FsyncPolicy::always));
            if (!w) _exit(2);
            for (std::uint64_t s = 1;; ++s) {
                if (!w->append(message(7, s, 1 + s % 200), s)) _exit(3);
                // A commit of one record, or of a batch of up to 8.
                if (s % (1 + s % 8) == 0 && !w->commit()) _exit(5);
                if (s % (1 + s % 8) != 0) continue;
                if (write(acks[1], &s, sizeof(s)) != sizeof(s)) _exit(4);
            }
        }
        close(acks[1]);
        std::uint64_t acked = 0, s = 0;
        const int want = std::uniform_int_distribution<int>(1, 400)(rng);
        for (int i = 0; i < want && read(acks[0], &s, sizeof(s)) == sizeof(s); ++i) acked = s;
        kill(child, SIGKILL);
        waitpid(child, nullptr, 0);
        // Whatever was acknowledged after we stopped reading counts too.
        while (read(acks[0], &s, sizeof(s)) == sizeof(s)) acked = s;
        close(acks[0]);

        const JournalScan scan = scan_journal(d.path);
        ASSERT_GE(scan.last_seq, acked)
            << "round " << round << ": an acknowledged record is missing; " << scan.problem;
        auto w = JournalWriter::open(options(d.path));
        ASSERT_TRUE(w.has_value());
        EXPECT_EQ(w->last_seq(), scan.last_seq);
    }
}

TEST(JournalTest, MonitorJournalsEveryMessageOfItsBus) {
    TempDir d;
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    auto b = testing::boot(fmt::format(R"(
[[module]]
path = "/g"
kind = "gateway"
[[module]]
path = "/g/src"
kind = "source"
config = {{ to = "/g/sink", count = 300, rate = 0 }}
[[module]]
path = "/g/sink"
kind = "sink"
[[module]]
path = "/g/mon"
kind = "monitor"
config = {{ dir = "{}", fsync = "always", segment_bytes = 8192 }}
)",
                                       d.path),
                           reg);
    const ModuleId src = b->id("/g/src"), mon = b->id("/g/mon");
    ASSERT_TRUE(testing::eventually([&] { return b->system->module_stats(mon).seen >= 300; }));
    // A ping to the monitor itself, which its runtime answers, is on the bus
    // like any other message, so in the journal too (hmk inject found it
    // missing: a gap of one seq per ping).
    Outgoing ping;
    ping.destination = mon;
    ping.type = msg::k_ping;
    const auto corr = b->system->inject(ping);
    ASSERT_TRUE(corr);
    ASSERT_TRUE(b->system->wait_for_root(*corr, std::chrono::seconds(5)));
    b->system->stop();
    std::uint64_t from_source = 0, next = 1, pings = 0;
    const JournalScan scan = scan_journal(d.path, [&](const JournalRecord& r) {
        if (r.header.sender == src) {
            EXPECT_EQ(r.header.correlation, ++from_source);
        }
        pings += r.header.type == msg::k_ping;
        EXPECT_EQ(r.header.seq, next++);
        EXPECT_EQ(r.header.bus, b->id("/g"));
    });
    EXPECT_TRUE(scan.clean) << scan.problem;
    EXPECT_EQ(from_source, 300u);
    EXPECT_EQ(pings, 2u);  // the ping and its answer
}

// Two systems on one journal would interleave two bus orders in one file:
// the second is refused, with a reason, and starts nothing.
TEST(JournalTest, ASecondSystemOnTheSameJournalIsRefused) {
    TempDir d;
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    const std::string toml = fmt::format(R"(
[[module]]
path = "/g"
kind = "gateway"
[[module]]
path = "/g/mon"
kind = "monitor"
config = {{ dir = "{}" }}
)",
                                         d.path);
    auto first = testing::boot(toml, reg);
    auto spec = parse_system(toml, "test.toml", reg);
    ASSERT_TRUE(spec.has_value());
    Logger logger(stderr, LogLevel::warn);
    auto second = System::create(*spec, reg, logger);
    ASSERT_FALSE(second.has_value());
    EXPECT_NE(second.error().find("in use by another running system"), std::string::npos)
        << second.error();
    first->system->stop();
    first.reset();
    auto third = System::create(*spec, reg, logger);
    EXPECT_TRUE(third.has_value()) << "the lock outlived its system";
}

// --- JournalReader -----------------------------------------------------------

TEST(JournalReaderTest, ReadsEveryRecordInOrderAcrossSegmentsFromAnySeq) {
    TempDir d;
    {
        auto w = JournalWriter::open(options(d.path));
        for (std::uint64_t s = 1; s <= 1000; ++s)
            ASSERT_TRUE(w->append(message(7, s, s % 90), s).has_value());
    }
    ASSERT_GT(list_segments(d.path)->size(), 10u);
    for (std::uint64_t from : {1u, 2u, 57u, 500u, 999u, 1000u}) {
        JournalReader r(d.path);
        r.seek(from);
        JournalRecord rec;
        for (std::uint64_t s = from; s <= 1000; ++s) {
            ASSERT_EQ(r.next(rec), JournalReader::Status::ok) << "from " << from << " at " << s;
            ASSERT_EQ(rec.header.seq, s);
            ASSERT_EQ(rec.header.payload_size, s % 90);
        }
        EXPECT_EQ(r.next(rec), JournalReader::Status::end);
    }
}

TEST(JournalReaderTest, AHintFromTheWriterStartsTheScanMidSegment) {
    TempDir d;
    auto o = options(d.path);
    o.segment_bytes = 1 << 20;
    auto w = JournalWriter::open(o);
    for (std::uint64_t s = 1; s <= 5000; ++s) ASSERT_TRUE(w->append(message(7, s), s).has_value());
    ASSERT_TRUE(w->commit().has_value());
    const auto [segment, offset] = w->locate(4321);
    ASSERT_NE(segment, 0u);
    ASSERT_GT(offset, k_segment_header_size);
    JournalReader r(d.path);
    r.seek(4321, segment, offset);
    JournalRecord rec;
    ASSERT_EQ(r.next(rec), JournalReader::Status::ok);
    EXPECT_EQ(rec.header.seq, 4321u);
    EXPECT_LE(rec.offset - offset, 256u * (k_record_prefix + k_header_size + 40));
    // A wrong hint (another segment) is ignored, not trusted.
    r.seek(4000, segment + 1, offset);
    ASSERT_EQ(r.next(rec), JournalReader::Status::ok);
    EXPECT_EQ(rec.header.seq, 4000u);
}

// The reader follows a writer that appends, commits and rotates meanwhile:
// it gets `end` when caught up, never a false `damaged` at a segment's end.
TEST(JournalReaderTest, FollowsAWriterThatIsStillAppending) {
    TempDir d;
    constexpr std::uint64_t k_records = 20000;
    auto o = options(d.path);
    o.segment_bytes = 16384;  // many rotations
    std::atomic<std::uint64_t> committed{0};
    std::atomic<bool> writer_failed{false};
    std::thread writer([&] {
        auto w = JournalWriter::open(o);
        for (std::uint64_t s = 1; w && s <= k_records; ++s) {
            if (!w->append(message(7, s, 1 + s % 300), s)) break;
            if (s % 7 == 0 || s == k_records) {
                if (!w->commit()) break;
                committed.store(s);
            }
        }
        if (committed.load() != k_records) writer_failed.store(true);
    });
    struct Join {
        std::thread& t;
        ~Join() {
            if (t.joinable()) t.join();
        }
    } join{writer};
    JournalReader r(d.path);
    r.seek(1);
    JournalRecord rec;
    std::uint64_t next = 1;
    while (next <= k_records) {
        // Once the writer has committed everything, `end` means the reader is stuck.
        const bool all_committed = committed.load() == k_records;
        const auto st = r.next(rec);
        ASSERT_NE(st, JournalReader::Status::damaged) << r.problem();
        ASSERT_NE(st, JournalReader::Status::missing) << r.problem();
        if (st == JournalReader::Status::end) {
            ASSERT_FALSE(all_committed) << "stuck at seq " << next;
            ASSERT_FALSE(writer_failed.load()) << "the writer failed";
            std::this_thread::yield();
            continue;
        }
        ASSERT_EQ(rec.header.seq, next++);
    }
}

// The reader's read of a segment ends at a record boundary; before it looks
// for a later segment, the writer appends to that segment and rotates. What
// was appended is read, not reported as missing (a false `missing` made a
// catching-up module skip messages as lost).
TEST(JournalReaderTest, RecordsAppendedJustBeforeARotationAreRead) {
    TempDir d;
    auto o = options(d.path);
    const std::size_t record = k_record_prefix + message(7, 1).size();
    o.segment_bytes = k_segment_header_size + 6 * record;  // seq 7 starts a segment
    auto w = JournalWriter::open(o);
    ASSERT_TRUE(w.has_value()) << w.error();
    for (std::uint64_t s = 1; s <= 3; ++s) ASSERT_TRUE(w->append(message(7, s), s).has_value());
    ASSERT_TRUE(w->commit().has_value());
    JournalReader r(d.path);
    int ends = 0;
    r.on_segment_end([&] {
        if (++ends != 1) return;
        for (std::uint64_t s = 4; s <= 7; ++s) ASSERT_TRUE(w->append(message(7, s), s).has_value());
        ASSERT_TRUE(w->commit().has_value());
    });
    ASSERT_EQ(list_segments(d.path)->size(), 1u);
    r.seek(1);
    JournalRecord rec;
    for (std::uint64_t s = 1; s <= 7; ++s) {
        ASSERT_EQ(r.next(rec), JournalReader::Status::ok) << "seq " << s << ": " << r.problem();
        EXPECT_EQ(rec.header.seq, s);
    }
    EXPECT_EQ(r.next(rec), JournalReader::Status::end);
    EXPECT_GE(ends, 1);
    EXPECT_EQ(list_segments(d.path)->size(), 2u);
}

TEST(JournalReaderTest, TellsExactlyWhatTheJournalDoesNotHold) {
    TempDir d;
    auto o = options(d.path);
    o.keep_segments = 5;  // ~36 records a segment: the end of 1..500, and 600..700
    {
        auto w = JournalWriter::open(o);
        for (std::uint64_t s = 1; s <= 500; ++s)
            ASSERT_TRUE(w->append(message(7, s), s).has_value());
        for (std::uint64_t s = 600; s <= 700; ++s)
            ASSERT_TRUE(w->append(message(7, s), s).has_value());
    }
    const auto segments = *list_segments(d.path);
    ASSERT_EQ(segments.size(), 5u);
    ASSERT_LT(segments.front().first_seq, 500u);
    JournalReader r(d.path);
    JournalRecord rec;
    // Before the oldest segment kept: missing up to just before it.
    r.seek(1);
    ASSERT_EQ(r.next(rec), JournalReader::Status::missing);
    EXPECT_EQ(r.missing_last(), segments.front().first_seq - 1);
    // The gap in the bus order, between two segments.
    r.seek(500);
    ASSERT_EQ(r.next(rec), JournalReader::Status::ok);
    EXPECT_EQ(rec.header.seq, 500u);
    ASSERT_EQ(r.next(rec), JournalReader::Status::missing);
    EXPECT_EQ(r.missing_last(), 599u);
    r.seek(600);
    ASSERT_EQ(r.next(rec), JournalReader::Status::ok);
    EXPECT_EQ(rec.header.seq, 600u);
    // Past the end: nothing yet.
    r.seek(701);
    EXPECT_EQ(r.next(rec), JournalReader::Status::end);
}

TEST(JournalReaderTest, DamageIsReportedNeverReadPastOrCrashedOn) {
    TempDir d;
    {
        auto w = JournalWriter::open(options(d.path));
        for (std::uint64_t s = 1; s <= 300; ++s)
            ASSERT_TRUE(w->append(message(7, s), s).has_value());
    }
    const auto segments = *list_segments(d.path);
    const std::string victim = segments[segments.size() / 2].path;
    std::vector<char> original;
    {
        std::ifstream in(victim, std::ios::binary);
        original.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    std::mt19937 rng(99);
    for (int round = 0; round < 200; ++round) {
        std::vector<char> bytes = original;
        const std::size_t at = std::uniform_int_distribution<std::size_t>(k_segment_header_size,
                                                                          bytes.size() - 1)(rng);
        bytes[at] = static_cast<char>(bytes[at] ^ (1 << (round % 8)));
        std::ofstream(victim, std::ios::binary | std::ios::trunc)
            .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        JournalReader r(d.path);
        r.seek(segments[segments.size() / 2].first_seq);
        JournalRecord rec;
        bool damaged = false;
        for (int i = 0; i < 400; ++i) {
            const auto st = r.next(rec);
            if (st == JournalReader::Status::damaged) {
                damaged = true;
                EXPECT_FALSE(r.problem().empty());
                break;
            }
            if (st != JournalReader::Status::ok) break;
        }
        EXPECT_TRUE(damaged) << "a flipped bit went unnoticed at offset " << at;
    }
}

}  // namespace
}  // namespace hmk
