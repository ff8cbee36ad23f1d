// SPDX-License-Identifier: Apache-2.0
// Recovery from the journal (DESIGN.md section 7, docs/recovery.md): a
// stateful module killed at random moments under load, restarted by its
// parent, restores its latest snapshot and replays the journal; afterwards
// its state, its replies and even its random numbers are exactly those a
// module that never failed would have, as computed from the journal.
#include <gtest/gtest.h>

#include <fmt/core.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <thread>

#include "hmk/crc32c.hpp"
#include "ledger_reference.hpp"
#include "recorder.hpp"
#include "temp_dir.hpp"

namespace hmk {
namespace {

namespace fs = std::filesystem;
using testing::eventually;
using testing::read_all;

using testing::TempDir;

struct Case {
    const char* isolation;
    bool snapshots;
    friend void PrintTo(const Case& c, std::ostream* os) {
        *os << c.isolation << (c.snapshots ? "_snapshots" : "_journal_only");
    }
};

std::string ledger_system(const std::string& dir, const Case& c, int count, int rate,
                          int capacity = 256, const std::string& extra = "") {
    return fmt::format(R"(
[system]
plugins = ["{plugin}"]
[[module]]
path = "/g"
kind = "gateway"
bus = {{ capacity = {capacity} }}
supervisor = {{ intensity = 1000, period_ms = 60000, backoff_ms = 0 }}
[[module]]
path = "/g/mon"
kind = "monitor"
config = {{ dir = "{dir}", fsync = "none", segment_bytes = 65536 }}
[[module]]
path = "/g/src"
kind = "source"
config = {{ to = "/g/ledger", count = {count}, rate = {rate}, payload = "entry" }}
[[module]]
path = "/g/ledger"
id = 50
kind = "ledger"
isolation = "{isolation}"
restart = "permanent"
recover = "journal"
snapshot_every = {every}
config = {{ tick_ms = 25, snapshots = {snapshots} }}
{extra}
)",
                       fmt::arg("plugin", HMK_TEST_PLUGIN), fmt::arg("capacity", capacity),
                       fmt::arg("dir", dir), fmt::arg("count", count), fmt::arg("rate", rate),
                       fmt::arg("isolation", c.isolation), fmt::arg("every", c.snapshots ? 40 : 0),
                       fmt::arg("snapshots", c.snapshots ? "true" : "false"),
                       fmt::arg("extra", extra));
}

/// Asks the ledger for its state until it has seen `count` entries; returns
/// its last answer and the seq of the question.
std::optional<testing::LedgerState> settled_state(testing::Booted& b, std::uint64_t count,
                                                  std::string& raw,
                                                  const std::string& path = "/g/ledger") {
    const ModuleId ledger = b.id(path);
    std::optional<testing::LedgerState> state;
    const bool ok = eventually(
        [&] {
            Outgoing ask;
            ask.destination = ledger;
            ask.type = msg::k_stats;
            auto corr = b.system->inject(ask);
            if (!corr) return false;
            auto reply = b.system->wait_for_root(*corr, std::chrono::milliseconds(500));
            if (!reply) return false;
            raw = std::string(reply->text());
            state = testing::parse_ledger_stats(raw);
            return state && state->count >= count;
        },
        std::chrono::seconds(60));
    if (!ok) return std::nullopt;
    return state;
}

/// The seq of the last stats question to the ledger on its bus.
std::uint64_t last_question(const std::string& dir, ModuleId ledger) {
    std::uint64_t seq = 0;
    const auto visit = [&](const JournalRecord& r) {
        if (r.header.destination == ledger && r.header.type == msg::k_stats && !r.header.is_reply())
            seq = r.header.seq;
    };
    (void)scan_journal(dir, visit, scan_mode_of(dir));
    return seq;
}

class RecoveryTest : public ::testing::TestWithParam<Case> {};

TEST_P(RecoveryTest, KilledAtRandomUnderLoadRecoversExactlyWhatANeverFailingOneWouldHave) {
    constexpr int k_count = 2500;
    TempDir d;
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    std::FILE* log = std::tmpfile();
    auto b =
        testing::boot(ledger_system(d.path, GetParam(), k_count, 1500), reg, log, LogLevel::info);
    const ModuleId ledger = b->id("/g/ledger"), src = b->id("/g/src");
    std::mt19937 rng(GetParam().snapshots ? 7 : 11);
    std::uint64_t kills = 0;
    // Kills while the load runs: some land while a recovery is still replaying.
    // At least five, however slowly a restart goes (a sanitizer build on a
    // busy machine restarts a process in a third of a second): the last ones
    // may then come after the load.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while ((b->system->module_stats(src).tx < static_cast<std::uint64_t>(k_count) || kills < 5) &&
           std::chrono::steady_clock::now() < give_up) {
        std::this_thread::sleep_for(
            std::chrono::milliseconds(std::uniform_int_distribution<int>(20, 120)(rng)));
        if (GetParam().snapshots) {
            // Each instance killed has sent a snapshot first (a slow build
            // could kill every one before its first: no recovery would
            // start from a snapshot). Past the load there may be none to send.
            (void)eventually(
                [&] {
                    const ModuleStats s = b->system->module_stats(ledger);
                    return s.state == ModuleState::running && s.snapshots > 0;
                },
                std::chrono::seconds(2));
        }
        if (kills % 2 == 1 &&
            b->system->module_stats(src).tx < static_cast<std::uint64_t>(k_count)) {
            // Every other instance is killed once it replied live (a slow
            // build could kill every one while it still replays: no
            // recovery would find outputs of its predecessor to drop).
            std::uint64_t tx0 = 0;
            if (eventually(
                    [&] {
                        const ModuleStats s = b->system->module_stats(ledger);
                        tx0 = s.tx;
                        return s.state == ModuleState::running;
                    },
                    std::chrono::seconds(3)))
                (void)eventually([&] { return b->system->module_stats(ledger).tx > tx0; },
                                 std::chrono::seconds(2));
        }
        if (b->system->kill(ledger)) ++kills;
    }
    ASSERT_GE(kills, 5u);
    std::string raw;
    const auto state = settled_state(*b, k_count, raw);
    ASSERT_TRUE(state.has_value()) << "the ledger did not get all entries: " << raw << "\n"
                                   << read_all(log);
    ASSERT_TRUE(eventually([&] { return b->system->module_stats(ledger).restarts == kills; }))
        << "restarts " << b->system->module_stats(ledger).restarts << ", kills " << kills << "\n"
        << read_all(log);
    const ModuleStats ls = b->system->module_stats(ledger);
    b->system->stop();

    const testing::LedgerHistory h =
        testing::ledger_history(d.path, ledger, b->id("/g"), last_question(d.path, ledger));
    ASSERT_TRUE(h.scan.clean) << h.scan.problem;
    // Every entry once, in order, and the state a never-failing ledger has.
    EXPECT_EQ(state->count, static_cast<std::uint64_t>(k_count));
    EXPECT_EQ(state->dups, 0u) << "an entry was handled twice or out of order";
    EXPECT_EQ(state->sum, static_cast<std::uint64_t>(k_count) * (k_count + 1) / 2);
    EXPECT_EQ(*state, h.state) << "recovered: " << raw;
    // Every reply once, in order, with the same random numbers.
    EXPECT_EQ(testing::check_replies(h, k_count), "");
    const std::string text = read_all(log);
    std::fclose(log);
    // Some recovery had outputs of its dead predecessor to drop (else the
    // test would prove little).
    static const std::regex dropped(R"(; ([1-9][0-9]*) of its messages are on the bus already)");
    EXPECT_TRUE(std::regex_search(text, dropped)) << text;
    (void)ls;
    if (GetParam().snapshots) {
        EXPECT_NE(text.find("recovering from snapshot"), std::string::npos);
        EXPECT_FALSE(list_snapshots(d.path, ledger)->empty());
    } else {
        EXPECT_NE(text.find("recovering from its start"), std::string::npos);
    }
    EXPECT_EQ(text.find("replay diverged"), std::string::npos) << text;
}

INSTANTIATE_TEST_SUITE_P(EveryMode, RecoveryTest,
                         ::testing::Values(Case{"inproc", false}, Case{"inproc", true},
                                           Case{"process", false}, Case{"process", true}),
                         [](const auto& p) {
                             return std::string(p.param.isolation) +
                                    (p.param.snapshots ? "_snapshots" : "_journal_only");
                         });

// The monitor is what the ledger recovers from: killed under load, it is
// restarted (a monitor is `permanent` unless told otherwise), the bus
// waits for it meanwhile, and a ledger killed afterwards still recovers
// every entry. (A monitor left down used to leave a gap in the journal, and
// the ledger came back with a fifth of its state, the loss logged one line
// per missing seq.)
TEST_P(RecoveryTest, AKilledMonitorComesBackAndTheLedgerStillRecoversEverything) {
    constexpr int k_count = 2500;
    TempDir d;
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    std::FILE* log = std::tmpfile();
    auto b =
        testing::boot(ledger_system(d.path, GetParam(), k_count, 2500), reg, log, LogLevel::info);
    const ModuleId ledger = b->id("/g/ledger"), src = b->id("/g/src"), mon = b->id("/g/mon");
    ASSERT_TRUE(eventually([&] { return b->system->module_stats(src).tx >= k_count / 4; }));
    ASSERT_TRUE(b->system->kill(mon));
    ASSERT_TRUE(eventually([&] {
        const ModuleStats s = b->system->module_stats(mon);
        return s.restarts == 1 && s.state == ModuleState::running;
    })) << read_all(log);
    ASSERT_TRUE(eventually([&] { return b->system->module_stats(src).tx >= k_count / 2; }));
    ASSERT_TRUE(b->system->kill(ledger));
    std::string raw;
    const auto state = settled_state(*b, k_count, raw);
    ASSERT_TRUE(state.has_value()) << "the ledger did not get all entries: " << raw << "\n"
                                   << read_all(log);
    b->system->stop();
    EXPECT_EQ(state->count, static_cast<std::uint64_t>(k_count));
    EXPECT_EQ(state->dups, 0u);
    EXPECT_EQ(state->sum, static_cast<std::uint64_t>(k_count) * (k_count + 1) / 2);
    EXPECT_TRUE(scan_journal(d.path).clean) << scan_journal(d.path).problem;
    const std::string text = read_all(log);
    std::fclose(log);
    EXPECT_EQ(text.find("in neither the bus nor its journal"), std::string::npos) << text;
    EXPECT_EQ(text.find("the journal will have a gap"), std::string::npos) << text;
}

// The whole system stops and boots again on the same journal: the bus goes on
// numbering after it, and the ledger comes back with its state.
TEST(RecoveryRebootTest, ABootOnTheSameJournalRestoresTheState) {
    TempDir d;
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    std::uint64_t first_head = 0;
    {
        auto b = testing::boot(ledger_system(d.path, Case{"process", true}, 600, 0), reg);
        std::string raw;
        ASSERT_TRUE(settled_state(*b, 600, raw).has_value()) << raw;
        first_head = b->system->bus_stats()[1].head;
    }
    for (const char* isolation : {"inproc", "process"}) {
        auto b = testing::boot(ledger_system(d.path, Case{isolation, true}, 0, 0), reg);
        EXPECT_GT(b->system->bus_stats()[1].head, first_head) << "the bus numbering restarted";
        std::string raw;
        const auto state = settled_state(*b, 600, raw);
        ASSERT_TRUE(state.has_value()) << raw;
        b->system->stop();
        const auto h = testing::ledger_history(d.path, b->id("/g/ledger"), b->id("/g"),
                                               last_question(d.path, b->id("/g/ledger")));
        ASSERT_TRUE(h.scan.clean) << h.scan.problem;
        EXPECT_EQ(*state, h.state) << isolation << ": " << raw;
        EXPECT_EQ(state->count, 600u);
        EXPECT_EQ(testing::check_replies(h, 600), "");
    }
}

// Damage in the journal's tail (a torn write, a flipped bit) is cut off into
// quarantine at the next boot; recovery restores the state up to the last
// valid record, and a damaged snapshot file is passed over for the journal.
TEST(RecoveryRebootTest, DamagedJournalAndSnapshotRecoverUpToTheLastValidRecord) {
    TempDir d;
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    {
        auto b = testing::boot(ledger_system(d.path, Case{"inproc", true}, 400, 0), reg);
        std::string raw;
        ASSERT_TRUE(settled_state(*b, 400, raw).has_value()) << raw;
    }
    // Flip a byte in the record of the 200th entry, and one in the newest snapshot.
    std::string victim;
    std::size_t victim_offset = 0;
    {
        std::uint64_t entries = 0, victim_seq = 0;
        (void)scan_journal(d.path, [&](const JournalRecord& r) {
            if (r.header.destination == 50 && r.header.type == msg::k_data && ++entries == 200) {
                victim_seq = r.header.seq;
                victim_offset = r.offset;
            }
        });
        ASSERT_NE(victim_seq, 0u);
        const auto segments = list_segments(d.path);
        ASSERT_TRUE(segments.has_value());
        for (const auto& seg : *segments) {
            if (seg.first_seq <= victim_seq) victim = seg.path;
        }
    }
    {
        std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(static_cast<std::streamoff>(victim_offset + 30));
        f.put('\x5a');
    }
    const JournalScan damaged = scan_journal(d.path);
    ASSERT_FALSE(damaged.clean);

    std::FILE* log = std::tmpfile();
    auto b =
        testing::boot(ledger_system(d.path, Case{"inproc", true}, 0, 0), reg, log, LogLevel::info);
    // Whatever the journal kept, the ledger has exactly that.
    std::string raw;
    std::optional<testing::LedgerState> state;
    ASSERT_TRUE(eventually([&] {
        state = settled_state(*b, 0, raw);
        return state && b->system->module_stats(b->id("/g/ledger")).state == ModuleState::running;
    }));
    b->system->stop();
    const auto h = testing::ledger_history(d.path, 50, b->id("/g"), last_question(d.path, 50));
    ASSERT_TRUE(h.scan.clean) << h.scan.problem;
    EXPECT_EQ(*state, h.state) << raw;
    EXPECT_EQ(state->count, 199u) << "not the entries before the damage\n" << read_all(log);
    const std::string text = read_all(log);
    std::fclose(log);
    EXPECT_NE(text.find("journal damaged, continuing after seq"), std::string::npos) << text;
    EXPECT_NE(text.find("the damaged part is kept in"), std::string::npos);
    // Snapshots taken after the damage are of no use now: they go with the
    // damaged tail, and the log says so.
    const std::regex set_aside(
        fmt::format(R"([1-9][0-9]* snapshots? of a seq past {}, the journal's end, set aside)",
                    damaged.last_seq));
    EXPECT_TRUE(std::regex_search(text, set_aside)) << text;
    bool quarantined = false, snapshot_kept = false;
    for (const auto& e : fs::directory_iterator(d.path)) {
        if (e.path().filename().string().rfind("damaged-", 0) != 0) continue;
        quarantined = true;
        for (const auto& q : fs::directory_iterator(e.path()))
            snapshot_kept = snapshot_kept || q.path().extension() == ".hmks";
    }
    EXPECT_TRUE(quarantined);
    EXPECT_TRUE(snapshot_kept);  // the evidence, kept
}

// A damaged snapshot (a flipped bit, a cut file) is passed over for an older
// one, and without any for the start in the journal: the state is the same.
TEST(RecoveryRebootTest, DamagedSnapshotsArePassedOverForOlderOnesOrTheJournal) {
    TempDir d;
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    {
        auto b = testing::boot(ledger_system(d.path, Case{"inproc", true}, 400, 0), reg);
        std::string raw;
        ASSERT_TRUE(settled_state(*b, 400, raw).has_value()) << raw;
    }
    for (const char* damage : {"flip", "cut", "all"}) {
        const auto snaps = list_snapshots(d.path, 50);
        ASSERT_TRUE(snaps.has_value());
        ASSERT_GE(snaps->size(), 2u);
        for (std::size_t i = 0; i < snaps->size(); ++i) {
            const std::string& path = (*snaps)[i].path;
            if (std::string(damage) != "all" && i + 1 != snaps->size()) continue;
            if (std::string(damage) == "cut") {
                fs::resize_file(path, fs::file_size(path) - 7);
            } else {
                std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
                f.seekp(static_cast<std::streamoff>(fs::file_size(path) - 1));
                f.put('\x01');
            }
        }
        std::FILE* log = std::tmpfile();
        auto b = testing::boot(ledger_system(d.path, Case{"inproc", true}, 0, 0), reg, log,
                               LogLevel::info);
        std::string raw;
        const auto state = settled_state(*b, 400, raw);
        ASSERT_TRUE(state.has_value()) << damage << ": " << raw;
        b->system->stop();
        const auto h = testing::ledger_history(d.path, 50, b->id("/g"), last_question(d.path, 50));
        EXPECT_EQ(*state, h.state) << damage << ": " << raw;
        const std::string text = read_all(log);
        std::fclose(log);
        EXPECT_NE(text.find("snapshot passed over"), std::string::npos) << damage << "\n" << text;
        EXPECT_NE(text.find(std::string(damage) == "cut" ? "truncated" : "CRC32C mismatch"),
                  std::string::npos)
            << damage << "\n"
            << text;
        if (std::string(damage) == "all") {
            EXPECT_NE(text.find("recovering from its start"), std::string::npos) << text;
        } else {
            EXPECT_NE(text.find("recovering from snapshot"), std::string::npos) << text;
        }
        // Start the next round from clean snapshots again.
        const auto stale = list_snapshots(d.path, 50);
        for (const auto& s : *stale) fs::remove(s.path);
        auto again = testing::boot(ledger_system(d.path, Case{"inproc", true}, 0, 0), reg);
        ASSERT_TRUE(settled_state(*again, 400, raw).has_value());
        Outgoing take;
        take.destination = again->id("/g/ledger");
        take.type = msg::k_snapshot_request;
        ASSERT_TRUE(again->system->inject(take, again->id("/g")).has_value());
        ASSERT_TRUE(eventually([&] { return list_snapshots(d.path, 50)->size() >= 1; }));
        ASSERT_TRUE(again->system->inject(take, again->id("/g")).has_value());
        ASSERT_TRUE(eventually([&] { return list_snapshots(d.path, 50)->size() >= 2; }));
    }
}

}  // namespace
}  // namespace hmk

namespace hmk {
namespace {

// DESIGN.md 2.3: a reader that falls behind the bus ring does not lose
// messages when the bus has a journal: it reads the rest from the journal
// (in-process: the files; sandboxed: a feed its parent reads for it) and goes
// back to the ring. Nothing held the writer back meanwhile.
class CatchUpTest : public ::testing::TestWithParam<const char*> {};

TEST_P(CatchUpTest, SlowReaderCatchesUpFromTheJournalInsteadOfLosingMessages) {
    constexpr int k_count = 3000;
    TempDir d;
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    auto b =
        testing::boot(fmt::format(R"(
[system]
plugins = ["{plugin}"]
[[module]]
path = "/g"
kind = "gateway"
bus = {{ capacity = 256 }}
[[module]]
path = "/g/mon"
kind = "monitor"
config = {{ dir = "{dir}", fsync = "none" }}
[[module]]
path = "/g/src"
kind = "source"
config = {{ to = "/g/slow", count = {count}, rate = 0 }}
[[module]]
path = "/g/slow"
kind = "ledger"
isolation = "{isolation}"
config = {{ slow_us = 100 }}
[[module]]
path = "/g/rec"
kind = "rec"
config = {{ sleep_us = 100 }}
)",
                                  fmt::arg("plugin", HMK_TEST_PLUGIN), fmt::arg("dir", d.path),
                                  fmt::arg("count", k_count), fmt::arg("isolation", GetParam())),
                      reg);
    const ModuleId slow = b->id("/g/slow"), src = b->id("/g/src");
    std::string raw;
    const auto state = settled_state(*b, k_count, raw, "/g/slow");
    ASSERT_TRUE(state.has_value()) << raw;
    EXPECT_EQ(state->count, static_cast<std::uint64_t>(k_count));
    EXPECT_EQ(state->dups, 0u);
    const ModuleStats s = b->system->module_stats(slow);
    EXPECT_EQ(s.lost, 0u);
    EXPECT_GT(s.caught_up, 0u) << "it never fell behind: the test proves little";
    // The eavesdropping recorder, slow too, saw every message of the bus in order.
    ASSERT_TRUE(eventually([&] {
        std::size_t n = 0;
        for (const auto& r : book.of(b->id("/g/rec"))) n += r.header.sender == src;
        return n == static_cast<std::size_t>(k_count);
    }));
    std::uint64_t expected = 0;
    for (const auto& r : book.of(b->id("/g/rec"))) {
        if (expected != 0) {
            ASSERT_EQ(r.header.seq, expected) << "a gap in what it saw";
        }
        expected = r.header.seq + 1;
    }
    EXPECT_EQ(b->system->module_stats(b->id("/g/rec")).lost, 0u);
    EXPECT_GT(b->system->module_stats(b->id("/g/rec")).caught_up, 0u);
}

INSTANTIATE_TEST_SUITE_P(BothIsolations, CatchUpTest, ::testing::Values("inproc", "process"),
                         [](const auto& p) { return std::string(p.param); });

// The bus waits for its journal, but not for ever: a journal that stops
// keeping up holds publishers back at most `stall_ms` in a row, then the bus
// goes on without it (a gap the journal will show), and says so.
TEST(JournalGateTest, AStuckJournalDoesNotStopTheBus) {
    TempDir d;
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    std::FILE* log = std::tmpfile();
    auto b = testing::boot(fmt::format(R"(
[[module]]
path = "/g"
kind = "gateway"
bus = {{ capacity = 256 }}
[[module]]
path = "/g/stuck"
kind = "stuckjournal"
config = {{ dir = "{}", stall_ms = 100, sleep_ms = 1000 }}
[[module]]
path = "/g/src"
kind = "source"
config = {{ to = "/g/sink", count = 2000, rate = 0 }}
[[module]]
path = "/g/sink"
kind = "sink"
)",
                                       d.path),
                           reg, log, LogLevel::info);
    // The source is not held back for good, and the sink gets or is told of
    // every message (what the stuck journal never had is counted lost).
    ASSERT_TRUE(eventually([&] { return b->system->module_stats(b->id("/g/src")).tx == 2000; },
                           std::chrono::seconds(30)))
        << read_all(log);
    ASSERT_TRUE(eventually(
        [&] {
            const ModuleStats s = b->system->module_stats(b->id("/g/sink"));
            return s.rx + s.lost >= 2000;
        },
        std::chrono::seconds(30)))
        << read_all(log);
    b->system->stop();
    const std::string text = read_all(log);
    std::fclose(log);
    EXPECT_NE(text.find("its journal has not kept up for 100 ms: the bus goes on"),
              std::string::npos)
        << text;
}

}  // namespace
}  // namespace hmk

namespace hmk {
namespace {

// A snapshot that checks out (CRC and all) but that the module cannot read
// (a bug, or a state format it does not know): the instance fails to start,
// and the next one recovers without that snapshot. At boot too.
TEST(RecoveryRebootTest, ASnapshotTheModuleCannotRestoreIsDroppedForTheNextInstance) {
    TempDir d;
    testing::RecordBook book;
    Registry reg = testing::test_registry(book);
    {
        auto b = testing::boot(ledger_system(d.path, Case{"inproc", true}, 400, 0), reg);
        std::string raw;
        ASSERT_TRUE(settled_state(*b, 400, raw).has_value()) << raw;
    }
    const JournalScan scan = scan_journal(d.path);
    ASSERT_TRUE(scan.clean);
    SnapshotFileHeader bad;
    bad.module = 50;
    bad.input_seq = scan.last_seq;
    bad.output_seq = scan.last_seq;
    bad.state_version = 1;
    const std::vector<std::byte> body =
        detail::encode_body(detail::Envelope{}, as_bytes("not a ledger state"));
    bad.body_size = static_cast<std::uint32_t>(body.size());
    bad.body_crc = crc32c(body);
    ASSERT_TRUE(write_snapshot_file(d.path, bad, body, FsyncPolicy::none, 0).has_value());

    for (const char* isolation : {"inproc", "process"}) {
        // Each boot on a copy of the journal with the bad snapshot the latest:
        // a snapshot the first boot takes would otherwise pass it.
        TempDir copy;
        fs::copy(d.path, copy.path, fs::copy_options::recursive);
        std::FILE* log = std::tmpfile();
        auto b = testing::boot(ledger_system(copy.path, Case{isolation, true}, 0, 0), reg, log,
                               LogLevel::info);
        std::string raw;
        const auto state = settled_state(*b, 400, raw);
        ASSERT_TRUE(state.has_value()) << isolation << ": " << raw << "\n" << read_all(log);
        b->system->stop();
        const auto h =
            testing::ledger_history(copy.path, 50, b->id("/g"), last_question(copy.path, 50));
        EXPECT_EQ(*state, h.state) << isolation << ": " << raw;
        const std::string text = read_all(log);
        std::fclose(log);
        // (A module host logs on its own stderr; its parent sees its exit status.)
        EXPECT_NE(text.find(std::string(isolation) == "inproc"
                                ? "cannot restore its snapshot: state too short"
                                : "exited with status 4"),
                  std::string::npos)
            << isolation << "\n"
            << text;
        EXPECT_NE(text.find(fmt::format("it could not restore its snapshot at seq {}: starting it "
                                        "again without it",
                                        scan.last_seq)),
                  std::string::npos)
            << isolation << "\n"
            << text;
    }
}

}  // namespace
}  // namespace hmk
