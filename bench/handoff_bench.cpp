// SPDX-License-Identifier: Apache-2.0
// hmk_handoff_bench: the pause a swap or a move costs a module's clients.
// A prober sends numbered requests at a steady rate (10k and 100k a second)
// to a `counter` that answers each with its running total, and measures the
// longest gap between two replies. Each round has two windows of equal
// length: a quiet one (the baseline: what the timer tick and the scheduler
// cost anyway) and one with a swap or a move in it. A round counts only if
// every request was answered once, in order, with the count going on.
//
//   hmk_handoff_bench [--rounds N] [--window-ms MS]
#include <fmt/core.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_system.hpp"
#include "hmk/runtime/config.hpp"
#include "hmk/runtime/system.hpp"

namespace {

using namespace hmk;
using namespace std::chrono_literals;

struct Case {
    const char* op;         ///< swap or move
    const char* isolation;  ///< where the counter runs
    int rate;               ///< requests per second
};

struct Figures {
    std::vector<double> quiet_us, handoff_us, takeover_us;
    std::uint64_t requests = 0, lost = 0, dup = 0, late = 0, count_errors = 0;
    std::uint64_t quiet_lost = 0;  ///< of `lost`, in quiet windows
    int failed_handoffs = 0;
};

double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5)];
}

std::map<std::string, std::uint64_t> counters(const std::string& text) {
    std::map<std::string, std::uint64_t> out;
    std::istringstream in(text);
    std::string word;
    while (in >> word) {
        const auto eq = word.find('=');
        if (eq != std::string::npos)
            out[word.substr(0, eq)] = std::strtoull(word.c_str() + eq + 1, nullptr, 10);
    }
    return out;
}

std::string ask(System& sys, ModuleId id, std::uint32_t type) {
    Outgoing q;
    q.destination = id;
    q.type = type;
    auto corr = sys.inject(q);
    if (!corr) return {};
    auto reply = sys.wait_for_root(*corr, 2s);
    return reply ? std::string(reply->text()) : std::string();
}

std::optional<Figures> run(const Case& c, int rounds, std::chrono::milliseconds window) {
    const std::string toml =
        fmt::format(R"(
[system]
name = "handoff-bench"
[[module]]
path = "/svc"
id = 10
kind = "gateway"
bus = {{ capacity = 65536, max_payload = 256 }}
[[module]]
path = "/svc/count"
id = 20
kind = "counter"
isolation = "{isolation}"
config = {{ ack = true }}
# Room for 160 ms of replies at 100k/s should the pump be descheduled (a
# full uplink makes a send fail: a lost reply that is not the handoff's).
quota = {{ uplink_slots = 16384 }}
[[module]]
path = "/svc/probe"
id = 30
kind = "prober"
config = {{ to = "/svc/count", rate = {rate}.0, count = 0, check_count = true, period_us = 100 }}
[[module]]
path = "/other"
id = 40
kind = "gateway"
bus = {{ capacity = 65536, max_payload = 256 }}
)",
                    fmt::arg("isolation", c.isolation), fmt::arg("rate", c.rate));
    const auto booted = hmk::bench::boot(toml, "handoff-bench.toml");
    if (!booted) return std::nullopt;
    System& sys = *booted->system;
    const ModuleId counter = 20, probe = 30;
    std::this_thread::sleep_for(300ms);  // warm up

    Figures f;
    auto window_gap = [&](bool quiet, auto&& during) -> std::optional<double> {
        if (ask(sys, probe, msg::k_reset) != "ok") return std::nullopt;
        const auto t0 = std::chrono::steady_clock::now();
        during();
        std::this_thread::sleep_until(t0 + window);
        auto p = counters(ask(sys, probe, msg::k_stats));
        // Replies still on their way at the end of the window are not lost.
        std::this_thread::sleep_for(20ms);
        auto settled = counters(ask(sys, probe, msg::k_stats));
        f.requests += p["sent"];
        f.lost += settled["lost"];
        if (quiet) f.quiet_lost += settled["lost"];
        f.dup += settled["dup"];
        f.late += settled["late"];
        f.count_errors += settled["count_errors"];
        return static_cast<double>(p["max_gap_us"]);
    };
    const bool move = std::strcmp(c.op, "move") == 0;
    for (int r = 0; r < rounds; ++r) {
        const auto quiet = window_gap(true, [] {});
        if (!quiet) return std::nullopt;
        f.quiet_us.push_back(*quiet);
        const auto busy = window_gap(false, [&] {
            const auto done = move ? sys.move(counter, r % 2 == 0 ? 40 : 10, std::nullopt)
                                   : sys.swap(counter, "counter", 0);
            if (!done) {
                ++f.failed_handoffs;
                fmt::print(stderr, "{} {} failed: {}\n", c.op, r, done.error());
            } else {
                f.takeover_us.push_back(done->takeover_us);
            }
        });
        if (!busy) return std::nullopt;
        f.handoff_us.push_back(*busy);
    }
    sys.stop();
    return f;
}

}  // namespace

int main(int argc, char** argv) {
    int rounds = 10;
    std::chrono::milliseconds window{200};
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            fmt::print(
                "usage: hmk_handoff_bench [--rounds N] [--window-ms MS]\n"
                "The longest gap in a prober's replies with a swap or a move in the window,\n"
                "against the same window without one, at 10k and 100k requests per second.\n");
            return 0;
        }
        if (a == "--rounds" && i + 1 < argc) {
            rounds = std::max(1, std::atoi(argv[++i]));
        } else if (a == "--window-ms" && i + 1 < argc) {
            window = std::chrono::milliseconds(std::max(50, std::atoi(argv[++i])));
        } else {
            fmt::print(stderr, "hmk_handoff_bench: unknown argument {} (try --help)\n", a);
            return 2;
        }
    }
    fmt::print(
        "Switch-over pause: the longest gap between two replies a prober sees, in a\n"
        "{} ms window with a swap or move in it, against a quiet window of the same\n"
        "length ({} rounds each; gaps in us; takeover: the switch to the replica live)\n\n",
        window.count(), rounds);
    fmt::print("{:<5} {:<8} {:>7} | {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>6} {:>9} | {}\n", "op",
               "runs", "req/s", "quiet p50", "max", "pause p50", "p90", "max", "ratio", "takeover",
               "lost/dup/late/count_err/failed");
    bool ok = true;
    for (const Case& c : {Case{"swap", "inproc", 10000}, Case{"swap", "inproc", 100000},
                          Case{"swap", "process", 10000}, Case{"swap", "process", 100000},
                          Case{"move", "inproc", 10000}, Case{"move", "inproc", 100000},
                          Case{"move", "process", 10000}, Case{"move", "process", 100000}}) {
        const auto f = run(c, rounds, window);
        if (!f) {
            fmt::print("{:<5} {:<8} {:>7} | could not run\n", c.op, c.isolation, c.rate);
            ok = false;
            continue;
        }
        const double quiet50 = percentile(f->quiet_us, 0.5);
        const double pause50 = percentile(f->handoff_us, 0.5);
        fmt::print(
            "{:<5} {:<8} {:>7} | {:>8.0f} {:>8.0f} | {:>8.0f} {:>8.0f} {:>8.0f} | {:>6.1f} "
            "{:>9.0f} "
            "| {}/{}/{}/{}/{} of {}{}\n",
            c.op, c.isolation, c.rate, quiet50, percentile(f->quiet_us, 1.0), pause50,
            percentile(f->handoff_us, 0.9), percentile(f->handoff_us, 1.0),
            quiet50 > 0 ? pause50 / quiet50 : 0.0, percentile(f->takeover_us, 0.5), f->lost, f->dup,
            f->late, f->count_errors, f->failed_handoffs, f->requests,
            f->quiet_lost != 0 ? fmt::format(" ({} lost in quiet windows)", f->quiet_lost) : "");
        if (f->lost + f->dup + f->count_errors != 0 || f->failed_handoffs != 0) ok = false;
    }
    fmt::print(
        "\nratio: pause p50 / quiet p50. A row with anything lost, repeated or failed\n"
        "makes the run fail.\n");
    return ok ? 0 : 1;
}
