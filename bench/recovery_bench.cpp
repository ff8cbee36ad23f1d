// SPDX-License-Identifier: Apache-2.0
// hmk_recovery_bench: how long a module takes to come back from a crash.
// A `counter` (stateful, acknowledging every message) on a journaled bus gets
// N messages, then is killed again and again (SIGKILL for a process module,
// a crash for an in-process one). For each kill:
//   detection = the parent's `failed` event on the bus - the kill
//   recovery  = the new instance live (its snapshot restored, the journal
//               replayed, the old instance's outputs dropped) - detection
// for N = 1k, 10k, 100k, with and without snapshots every 1k messages.
// Then a subtree: a sandboxed gateway with 10 sandboxed children, killed 50
// times: the time until all 10 answer again.
#include <fmt/core.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <thread>
#include <vector>

#include "bench_clock.hpp"
#include "bench_system.hpp"
#include "hmk/platform/process.hpp"
#include "hmk/runtime/config.hpp"
#include "hmk/runtime/journal.hpp"
#include "hmk/runtime/system.hpp"
#include "hmk/snapshot_format.hpp"

namespace {

using namespace hmk;
using hmk::bench::now_ns;

struct Case {
    const char* isolation;
    std::uint64_t inputs;
    bool snapshots;
    int kills;
};

struct Result_ {
    std::vector<double> detection_us, recovery_us;
    std::vector<double> exit_us;  // process modules: kill -> exit seen on a pidfd of our own
    std::uint64_t replayed = 0;
};

double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5)];
}

template <typename F>
bool wait_for(F done, std::uint64_t limit_ms = 60000) {
    const std::uint64_t deadline = now_ns() + limit_ms * 1'000'000;
    while (!done()) {
        if (now_ns() > deadline) return false;
        std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    return true;
}

std::optional<Result_> run(const Case& c) {
    char tmpl[] = "/tmp/hmk-recovery-bench-XXXXXX";
    const std::string dir = mkdtemp(tmpl);
    const std::string toml =
        fmt::format(R"(
[[module]]
path = "/g"
id = 10
kind = "gateway"
supervisor = {{ intensity = 100000, period_ms = 1000, backoff_ms = 0 }}
[[module]]
path = "/g/mon"
kind = "monitor"
config = {{ dir = "{dir}", fsync = "none" }}
[[module]]
path = "/g/src"
kind = "source"
config = {{ to = "/g/count", count = {n}, rate = 0 }}
[[module]]
path = "/g/count"
id = 20
kind = "counter"
isolation = "{isolation}"
restart = "permanent"
recover = "journal"
snapshot_every = {every}
config = {{ ack = true }}
)",
                    fmt::arg("dir", dir), fmt::arg("n", c.inputs),
                    fmt::arg("isolation", c.isolation), fmt::arg("every", c.snapshots ? 1000 : 0));
    const auto booted = hmk::bench::boot(toml, "recovery-bench.toml");
    if (!booted) return std::nullopt;
    System& sys = *booted->system;
    const ModuleId counter = 20;
    if (!wait_for([&] { return sys.module_stats(counter).rx >= c.inputs; })) {
        fmt::print(stderr, "the counter did not get its {} messages\n", c.inputs);
        return std::nullopt;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // acks and snapshots settle

    std::map<std::uint64_t, std::uint64_t> killed_at, live_at, exited_at;  // by the killed epoch
    Result_ out;
    for (int k = 0; k < c.kills; ++k) {
        const ModuleStats before = sys.module_stats(counter);
        const std::uint64_t epoch = before.epoch;
        // For a process, a pidfd of our own shows when the kernel is done with it.
        const int pidfd =
            before.pid > 0 ? static_cast<int>(syscall(SYS_pidfd_open, before.pid, 0)) : -1;
        const std::uint64_t t0 = now_ns();
        if (!sys.kill(counter)) {
            fmt::print(stderr, "cannot kill the counter\n");
            return std::nullopt;
        }
        killed_at[epoch] = t0;
        if (pidfd >= 0) {
            pollfd p{pidfd, POLLIN, 0};
            (void)poll(&p, 1, 5000);
            exited_at[epoch] = now_ns();
            close(pidfd);
        }
        std::uint64_t next_report = t0 + 300'000'000;
        if (!wait_for([&] {
                const ModuleStats s = sys.module_stats(counter);
                if (std::getenv("HMK_BENCH_VERBOSE") != nullptr && now_ns() > next_report) {
                    next_report += 100'000'000;
                    fmt::print(stderr,
                               "  still recovering after {} ms: epoch {} state {} cursor {} "
                               "caught_up {} seen {} head {}\n",
                               (now_ns() - t0) / 1'000'000, s.epoch, to_string(s.state), s.cursor,
                               s.caught_up, s.seen, sys.bus_stats()[1].head);
                }
                return s.epoch > epoch && s.state == ModuleState::running;
            })) {
            fmt::print(stderr, "the counter did not come back\n");
            return std::nullopt;
        }
        live_at[epoch] = now_ns();
        if (std::getenv("HMK_BENCH_VERBOSE") != nullptr) {
            fmt::print(stderr, "kill {}: {:.1f} ms to live\n", k,
                       static_cast<double>(live_at[epoch] - t0) / 1e6);
        }
        out.replayed = sys.module_stats(counter).caught_up;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    sys.stop();
    // With HMK_BENCH_VERBOSE: where a slow recovery spent its time.
    std::map<std::uint64_t, std::map<LifecycleKind, std::uint64_t>> phases;  // by epoch
    (void)scan_journal(dir, [&](const JournalRecord& r) {
        if (r.header.type != msg::k_lifecycle) return;
        std::span<const std::byte> text;
        const auto e = decode_lifecycle(r.message.subspan(k_header_size), text);
        if (e && e->module == counter) phases[e->epoch][e->kind] = r.header.timestamp_ns;
    });
    if (std::getenv("HMK_BENCH_VERBOSE") != nullptr) {
        for (const auto& [epoch, k] : killed_at) {
            const auto& p = phases[epoch];
            const auto& next = phases[epoch + 1];
            auto at = [](const auto& m, LifecycleKind kind) {
                const auto it = m.find(kind);
                return it == m.end() ? 0.0 : static_cast<double>(it->second);
            };
            const double f = at(p, LifecycleKind::failed), rs = at(p, LifecycleKind::restarting);
            const double rc = at(next, LifecycleKind::recovering);
            const double live = static_cast<double>(live_at[epoch]);
            if (live - f > 100e6) {
                fmt::print(stderr,
                           "slow: epoch {}: failed +{:.1f} ms restarting +{:.1f} ms recovering "
                           "+{:.1f} ms live\n",
                           epoch, (rs - f) / 1e6, (rc - rs) / 1e6, (live - rc) / 1e6);
            }
        }
    }
    // The parent's `failed` events, with the bus clock (the same monotonic clock).
    (void)scan_journal(dir, [&](const JournalRecord& r) {
        if (r.header.type != msg::k_lifecycle) return;
        std::span<const std::byte> text;
        const auto e = decode_lifecycle(r.message.subspan(k_header_size), text);
        if (!e || e->module != counter || e->kind != LifecycleKind::failed) return;
        const auto k = killed_at.find(e->epoch);
        const auto l = live_at.find(e->epoch);
        if (k == killed_at.end() || l == live_at.end()) return;
        out.detection_us.push_back(static_cast<double>(r.header.timestamp_ns - k->second) / 1e3);
        if (const auto x = exited_at.find(e->epoch); x != exited_at.end())
            out.exit_us.push_back(static_cast<double>(x->second - k->second) / 1e3);
        out.recovery_us.push_back(static_cast<double>(l->second - r.header.timestamp_ns) / 1e3);
    });
    std::filesystem::remove_all(dir);
    return out;
}

// Throughput of a live bus: a source sends N 64-byte messages as fast as it
// can to a sink; with a monitor journaling the bus (which the bus then waits
// for) in each fsync policy and visibility, and without one, in the same run.
struct Journaling {
    const char* name;
    const char* monitor;  // "" : no journal
};

double bus_throughput(const Journaling& j, std::uint64_t n, std::uint64_t& lost) {
    char tmpl[] = "/tmp/hmk-journal-bench-XXXXXX";
    const std::string dir = mkdtemp(tmpl);
    std::string toml = fmt::format(R"(
[[module]]
path = "/g"
kind = "gateway"
[[module]]
path = "/g/src"
kind = "source"
config = {{ to = "/g/sink", count = {n}, rate = 0, delay_ms = 50, payload = "{payload}" }}
[[module]]
path = "/g/sink"
kind = "sink"
)",
                                   fmt::arg("n", n), fmt::arg("payload", std::string(64, 'x')));
    if (j.monitor[0] != 0) {
        toml += fmt::format(
            "[[module]]\npath = \"/g/mon\"\nkind = \"monitor\"\nconfig = {{ dir = "
            "\"{}\", {} }}\n",
            dir, j.monitor);
    }
    const auto booted = hmk::bench::boot(toml, "journal-bench.toml");
    double rate = 0;
    if (booted) {
        System& sys = *booted->system;
        const ModuleId sink = sys.topology().find("/g/sink")->id;
        (void)wait_for([&] { return sys.module_stats(sink).rx >= 1; });
        const std::uint64_t t0 = now_ns();
        // Without a journal a sink that falls a ring behind loses messages
        // (counted): the rate is of messages delivered or accounted for.
        (void)wait_for([&] {
            const ModuleStats s = sys.module_stats(sink);
            return s.rx + s.lost >= n;
        });
        rate = static_cast<double>(n - 1) / (static_cast<double>(now_ns() - t0) / 1e9);
        lost = sys.module_stats(sink).lost;
        sys.stop();
    }
    std::filesystem::remove_all(dir);
    return rate;
}

// The kernel's share of detecting a killed process, on this machine now: a
// child spawned like a module host (namespaces, nobody), SIGKILLed, until its
// pidfd says it is gone.
std::vector<double> kernel_baseline_us() {
    std::vector<double> out;
    for (int i = 0; i < 30; ++i) {
        platform::SpawnOptions o;
        o.program = "/bin/sleep";
        o.argv = {"sleep", "10"};
        auto child = platform::spawn(o);
        if (!child) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        const std::uint64_t t0 = now_ns();
        platform::kill_child(child->pidfd);
        pollfd p{child->pidfd.get(), POLLIN, 0};
        (void)poll(&p, 1, 5000);
        out.push_back(static_cast<double>(now_ns() - t0) / 1e3);
        (void)platform::try_reap(child->pidfd);
    }
    return out;
}

// A sandboxed gateway with 10 sandboxed children is SIGKILLed `kills`
// times: from the kill until all 10 answer a ping again (the gateway's
// process restarted by its parent, its bus made again, its 10 children
// spawned by it), in microseconds.
std::vector<double> subtree_recovery_us(int children, int kills) {
    std::string toml =
        // No backoff: the figure is the recovery itself, not the restart
        // policy's delay (which doubles while a child keeps failing soon).
        "[supervisor]\nintensity = 100000\nperiod_ms = 1000\nbackoff_ms = 0\n"
        "[[module]]\npath = \"/g\"\nkind = \"gateway\"\nisolation = \"process\"\n"
        "restart = \"permanent\"\n";
    for (int i = 0; i < children; ++i) {
        toml += fmt::format(
            "[[module]]\npath = \"/g/e{}\"\nkind = \"echo\"\nisolation = \"process\"\n", i);
    }
    auto b = hmk::bench::boot(toml, "subtree.toml");
    std::vector<double> out;
    if (!b) return out;
    System& sys = *b->system;
    const ModuleId g = sys.topology().find("/g")->id;
    std::vector<ModuleId> ids;
    for (int i = 0; i < children; ++i)
        ids.push_back(sys.topology().find(fmt::format("/g/e{}", i))->id);
    auto answers = [&](ModuleId id) {
        Outgoing ping;
        ping.destination = id;
        ping.type = msg::k_ping;
        auto corr = sys.inject(ping);
        return corr && sys.wait_for_root(*corr, std::chrono::milliseconds(20)).has_value();
    };
    for (int k = 0; k < kills; ++k) {
        for (ModuleId id : ids) {
            if (!wait_for([&] { return answers(id); }, 10000)) {
                fmt::print(stderr, "subtree: a child never answered before kill {}\n", k + 1);
                return out;
            }
        }
        const std::int64_t pid = sys.module_stats(g).pid;
        if (pid <= 0) {
            fmt::print(stderr, "subtree: no gateway process before kill {}\n", k + 1);
            return out;
        }
        const std::uint64_t t0 = now_ns();
        ::kill(static_cast<pid_t>(pid), SIGKILL);
        // Until the new gateway process runs (a ping could find the old one's
        // children still alive for a moment), then until every child answers.
        if (!wait_for(
                [&] {
                    const auto p = sys.module_stats(g).pid;
                    return p > 0 && p != pid;
                },
                10000)) {
            fmt::print(stderr, "subtree: the gateway did not come back after kill {}\n", k + 1);
            return out;
        }
        // One ping each: published after the new gateway started reading
        // its parent's bus, it waits on the new bus for a child still
        // starting (a child reads its bus from the start at boot).
        std::vector<std::uint64_t> pings;
        for (ModuleId id : ids) {
            Outgoing ping;
            ping.destination = id;
            ping.type = msg::k_ping;
            auto corr = sys.inject(ping);
            if (!corr) {
                fmt::print(stderr, "subtree: cannot ping after kill {}: {}\n", k + 1,
                           to_string(corr.error()));
                return out;
            }
            pings.push_back(*corr);
        }
        for (std::uint64_t corr : pings) {
            if (!sys.wait_for_root(corr, std::chrono::seconds(10))) {
                fmt::print(stderr, "subtree: a child did not answer after kill {}\n", k + 1);
                return out;
            }
        }
        out.push_back(static_cast<double>(now_ns() - t0) / 1e3);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    // Optional filter: a word every case to run must contain ("process", "100000", ...),
    // or "subtree" for the subtree recovery alone.
    const std::string only = argc > 1 ? argv[1] : "";
    const std::vector<Case> cases = {
        {"inproc", 1000, false, 30},  {"inproc", 10000, false, 20},  {"inproc", 100000, false, 10},
        {"inproc", 1000, true, 30},   {"inproc", 10000, true, 30},   {"inproc", 100000, true, 30},
        {"process", 1000, false, 30}, {"process", 10000, false, 20}, {"process", 100000, false, 10},
        {"process", 1000, true, 30},  {"process", 10000, true, 30},  {"process", 100000, true, 30},
    };
    fmt::print(
        "Recovery of a `counter` killed after N journaled messages (it acknowledges each: the\n"
        "recovery drops those acknowledgements, already on the bus). detection = kill -> the\n"
        "parent's 'failed' event; recovery = that event -> the new instance live. "
        "Microseconds.\n\n");
    fmt::print("{:<8} {:>7} {:>10} {:>6} | {:>9} {:>9} {:>8} | {:>9} {:>9} {:>9} | {:>9}\n",
               "module", "N", "snapshots", "kills", "detect50", "detect99", "exit50", "recov50",
               "recov99", "recovmax", "replayed");
    for (const Case& c : cases) {
        const std::string name =
            fmt::format("{} {} {}", c.isolation, c.inputs, c.snapshots ? "snapshots" : "journal");
        if (!only.empty() && name.find(only) == std::string::npos) continue;
        const auto r = run(c);
        if (!r || r->recovery_us.empty()) {
            fmt::print("{:<8} {:>7} {:>10} failed\n", c.isolation, c.inputs,
                       c.snapshots ? "every 1k" : "none");
            continue;
        }
        fmt::print(
            "{:<8} {:>7} {:>10} {:>6} | {:>9.0f} {:>9.0f} {:>8} | {:>9.0f} {:>9.0f} {:>9.0f} | "
            "{:>9}\n",
            c.isolation, c.inputs, c.snapshots ? "every 1k" : "none", r->recovery_us.size(),
            percentile(r->detection_us, 0.5), percentile(r->detection_us, 0.99),
            r->exit_us.empty() ? std::string("-")
                               : fmt::format("{:.0f}", percentile(r->exit_us, 0.5)),
            percentile(r->recovery_us, 0.5), percentile(r->recovery_us, 0.99),
            percentile(r->recovery_us, 1.0), r->replayed);
    }
    if (only.empty() || only == "subtree") {
        constexpr int k_children = 10, k_kills = 50;
        const auto subtree = subtree_recovery_us(k_children, k_kills);
        if (subtree.size() == k_kills) {
            fmt::print(
                "\nA sandboxed gateway with {} sandboxed children, SIGKILLed {} times: kill -> all "
                "{} "
                "answer again\n(its parent restarts it; it makes its bus and spawns its children): "
                "p50 {:.1f} ms, p99 {:.1f} ms, max {:.1f} ms\n",
                k_children, k_kills, k_children, percentile(subtree, 0.5) / 1e3,
                percentile(subtree, 0.99) / 1e3, percentile(subtree, 1.0) / 1e3);
        } else {
            fmt::print("\nsubtree recovery: failed after {} of {} kills\n", subtree.size(),
                       k_kills);
        }
    }
    if (!only.empty()) return 0;
    constexpr std::uint64_t k_messages = 300000;
    const std::vector<Journaling> journaling = {
        {"no journal (baseline)", ""},
        {"fsync none", "fsync = \"none\""},
        {"fsync interval (100 ms)", "fsync = \"interval\""},
        {"fsync always", "fsync = \"always\""},
        {"always + durable", "fsync = \"always\", visibility = \"durable\""},
    };
    fmt::print(
        "\nA live bus journaled: a source sends {} messages of 64 bytes as fast as it can to "
        "a sink.\n",
        k_messages);
    double baseline = 0;
    for (const Journaling& j : journaling) {
        std::uint64_t lost = 0;
        const double r = bus_throughput(j, k_messages, lost);
        if (baseline == 0) baseline = r;
        fmt::print("{:<26} {:>8.0f} k msgs/s  {:>5.2f}x  lost by the sink: {}\n", j.name, r / 1e3,
                   baseline > 0 ? r / baseline : 0.0, lost);
    }
    const auto kernel = kernel_baseline_us();
    fmt::print(
        "\nexit50: for a process, kill -> its exit seen on a pidfd of the benchmark's own: the "
        "kernel's\nshare of the detection (tearing the process down); the rest is hmk's.\n"
        "replayed: messages the last instance read from the journal (the rest came from the "
        "bus ring).\nbaseline, same run: a plain /bin/sleep spawned the same way takes p50 {:.0f} "
        "us, p99 {:.0f} us from SIGKILL to its exit on its pidfd.\n",
        percentile(kernel, 0.5), percentile(kernel, 0.99));
    return 0;
}
