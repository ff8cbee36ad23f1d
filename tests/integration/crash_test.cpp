// SPDX-License-Identifier: Apache-2.0
// Crash consistency (DESIGN.md section 7): the whole system, `hmk run` and
// every module host, is killed with SIGKILL at random points under load, boot
// after boot on the same journal. With fsync = always and durable
// visibility, a module only sees a message once it is on disk; so every
// reply an observer saw must survive the kill: it is in the journal's valid
// prefix at the next boot, and the recovered ledger holds its request.
#include <gtest/gtest.h>

#include <fmt/core.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "ledger_reference.hpp"
#include "temp_dir.hpp"

namespace hmk {
namespace {

namespace fs = std::filesystem;

using testing::TempDir;

constexpr ModuleId k_ledger = 50;
constexpr BusId k_bus = 10;

std::string system_text(const std::string& dir, int round, bool load) {
    std::string text = fmt::format(R"(
[system]
plugins = ["{plugin}"]
[[module]]
path = "/g"
id = 10
kind = "gateway"
bus = {{ capacity = 1024 }}
[[module]]
path = "/g/mon"
kind = "monitor"
config = {{ dir = "{dir}", fsync = "always", visibility = "durable", segment_bytes = 262144 }}
[[module]]
path = "/g/ledger"
id = 50
kind = "ledger"
isolation = "{isolation}"
restart = "permanent"
recover = "journal"
snapshot_every = 64
[[module]]
path = "/g/acks"
kind = "acks"
config = {{ of = "/g/ledger" }}
)",
                                   fmt::arg("plugin", HMK_TEST_PLUGIN), fmt::arg("dir", dir),
                                   fmt::arg("isolation", round % 2 == 0 ? "inproc" : "process"));
    if (load) {
        // A new sender each boot (its own id), so its numbering starts afresh.
        text += fmt::format(R"(
[[module]]
path = "/g/src{r}"
id = {id}
kind = "source"
config = {{ to = "/g/ledger", count = 1000000, rate = 3000, payload = "round {r}" }}
)",
                            fmt::arg("r", round), fmt::arg("id", 100 + round));
    }
    return text;
}

struct Outcome {
    std::string out;
    int status = 0;
};

/// Runs `hmk ARGS`; kills it with SIGKILL `kill_after_ms` after it first
/// printed `after` (at once if empty), or lets it end if negative. Returns
/// what it printed on stdout (and stderr, if `both`).
Outcome run_hmk(const std::vector<std::string>& args, int kill_after_ms, bool both = false,
                const std::string& after = {}) {
    int pipe_fds[2];
    if (pipe(pipe_fds) != 0) return {};
    const pid_t pid = fork();
    if (pid == 0) {
        dup2(pipe_fds[1], STDOUT_FILENO);
        if (both) dup2(pipe_fds[1], STDERR_FILENO);
        close(pipe_fds[0]);
        close(pipe_fds[1]);
        std::vector<char*> argv;
        std::string program = HMK_BIN;
        argv.push_back(program.data());
        std::vector<std::string> copy = args;
        for (auto& a : copy) argv.push_back(a.data());
        argv.push_back(nullptr);
        execv(HMK_BIN, argv.data());
        _exit(127);
    }
    close(pipe_fds[1]);
    Outcome run;
    auto start = std::chrono::steady_clock::now();
    bool armed = after.empty();
    bool killed = false;
    char buf[4096];
    for (;;) {
        if (!armed && run.out.find(after) != std::string::npos) {
            armed = true;
            start = std::chrono::steady_clock::now();
        }
        if (armed && !killed && kill_after_ms >= 0 &&
            std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(kill_after_ms)) {
            kill(pid, SIGKILL);
            killed = true;
        }
        pollfd p{pipe_fds[0], POLLIN, 0};
        if (poll(&p, 1, 5) <= 0) continue;
        const ssize_t n = read(pipe_fds[0], buf, sizeof(buf));
        if (n <= 0) break;  // the writer is gone
        run.out.append(buf, static_cast<std::size_t>(n));
    }
    close(pipe_fds[0]);
    waitpid(pid, &run.status, 0);
    return run;
}

TEST(CrashTest, KilledWholeSystemLosesNothingAcknowledgedAndRecoversIt) {
    TempDir d;
    const std::string sys = d.path + "/system.toml";
    const std::string journal = d.path + "/journal";
    std::mt19937 rng(20261125);
    std::uint64_t acked_seq = 0;
    std::set<std::pair<std::uint64_t, std::uint64_t>> acked;  // (requester, correlation)
    for (int round = 0; round < 6; ++round) {
        std::ofstream(sys) << system_text(journal, round, true);
        // Killed at a random point once the load is under way.
        const int kill_after = std::uniform_int_distribution<int>(50, 600)(rng);
        const Outcome run =
            run_hmk({"run", sys, "--for", "60", "--log-level", "error"}, kill_after, false, "ack ");
        ASSERT_TRUE(WIFSIGNALED(run.status) && WTERMSIG(run.status) == SIGKILL)
            << "round " << round << ": hmk ended before it was killed\n"
            << run.out;
        std::size_t at = 0;
        std::uint64_t round_acks = 0;
        while ((at = run.out.find("ack ", at)) != std::string::npos) {
            unsigned long long corr = 0, seq = 0, to = 0;
            if (std::sscanf(run.out.c_str() + at, "ack %llu %llu %llu", &corr, &seq, &to) == 3) {
                acked_seq = std::max<std::uint64_t>(acked_seq, seq);
                acked.insert({to, corr});
                ++round_acks;
            }
            at += 4;
        }
        EXPECT_GT(round_acks, 0u) << "round " << round << ": nothing was acknowledged";
        // The journal holds everything that was acknowledged, whatever the
        // kill cut off after it (a torn tail is allowed, and cut at the next boot).
        const JournalScan scan = scan_journal(journal);
        ASSERT_GE(scan.last_seq, acked_seq)
            << "round " << round << ": an acknowledged reply is not in the journal; "
            << scan.problem;
        const Outcome verify = run_hmk({"journal", "verify", journal}, -1);
        if (!scan.clean) {
            EXPECT_EQ(WEXITSTATUS(verify.status), 1);
            EXPECT_NE(verify.out.find("BAD"), std::string::npos) << verify.out;
        } else {
            EXPECT_EQ(WEXITSTATUS(verify.status), 0) << verify.out;
        }
    }

    // A last boot without load: the ledger recovers, and holds every entry
    // the journal kept, each once, as the journal says.
    std::ofstream(sys) << system_text(journal, 6, false);
    const std::string script = d.path + "/ask.hmks";
    std::ofstream(script) << "send /g/ledger stats\nexpect reply~ \"count=\"\n";
    const Outcome ask = run_hmk({"run", sys, "--script", script}, -1, true);
    ASSERT_TRUE(WIFEXITED(ask.status) && WEXITSTATUS(ask.status) == 0) << ask.out;
    const std::size_t at = ask.out.find("count=");
    ASSERT_NE(at, std::string::npos) << ask.out;
    std::string raw = ask.out.substr(at);
    raw = raw.substr(0, raw.find('"'));
    const auto state = testing::parse_ledger_stats(raw);
    ASSERT_TRUE(state.has_value()) << raw;
    std::uint64_t question = 0;
    (void)scan_journal(journal, [&](const JournalRecord& r) {
        if (r.header.destination == k_ledger && r.header.type == msg::k_stats)
            question = r.header.seq;
    });
    const auto h = testing::ledger_history(journal, k_ledger, k_bus, question);
    EXPECT_TRUE(h.scan.clean) << h.scan.problem;
    EXPECT_EQ(state->dups, 0u);
    EXPECT_EQ(*state, h.state) << raw;
    // Every acknowledged entry is among those the ledger holds.
    std::set<std::pair<std::uint64_t, std::uint64_t>> held;
    (void)scan_journal(journal, [&](const JournalRecord& r) {
        if (r.header.destination == k_ledger && r.header.type == msg::k_data &&
            !r.header.is_reply() && r.header.seq < question)
            held.insert({r.header.sender, r.header.correlation});
    });
    for (const auto& a : acked) {
        ASSERT_TRUE(held.count(a) != 0)
            << "entry " << a.second << " of #" << a.first << " was acknowledged, then lost";
    }
    EXPECT_GE(state->count, acked.size());
}

}  // namespace
}  // namespace hmk
