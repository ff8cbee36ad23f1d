// SPDX-License-Identifier: Apache-2.0
// hmk_delivery_bench: a flood of 64-byte messages on one bus with 1, 4 and
// 16 readers (all fast, or one of them slow), reliable against best effort,
// and reliable with a journal at each fsync mode; next to a Unix socket pair
// and a pipe measured in the same run. Reports throughput, the p99 latency
// at the fast readers, the messages lost (0 wherever the bus is reliable),
// the readers evicted and the time the sender spent held back.
#include <fmt/core.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <filesystem>
#include <thread>
#include <vector>

#include "bench_clock.hpp"
#include "hmk/runtime/config.hpp"
#include "hmk/runtime/system.hpp"

namespace {

using namespace hmk;
using hmk::bench::now_ns;

constexpr std::size_t k_size = 64;
constexpr std::uint64_t k_messages = 100000;
constexpr std::uint32_t k_capacity = 1024;
constexpr std::uint64_t k_slow_ns = 5000;  // a slow reader's work per message
constexpr std::size_t k_samples = 20000;   // latencies kept per reader

struct Row {
    std::string name;
    double msgs_per_s = 0;
    double p99_us = 0;
    std::uint64_t lost = 0;
    std::uint64_t evicted = 0;
    double held_ms = 0;
    bool complete = true;  // false: the run hit its deadline
};

double p99_us(std::vector<std::uint64_t> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return static_cast<double>(v[(v.size() - 1) * 99 / 100]) / 1000.0;
}

// --- OS baselines: one writer thread, one blocking reader thread.
Row fd_row(const std::string& name, int rd, int wr) {
    std::vector<std::uint64_t> latency;
    latency.reserve(k_samples);
    std::uint64_t got = 0, last = 0;
    std::thread reader([&] {
        char buf[k_size];
        std::size_t have = 0;
        while (got < k_messages) {
            const ssize_t r = read(rd, buf + have, k_size - have);
            if (r <= 0) break;
            have += static_cast<std::size_t>(r);
            if (have < k_size) continue;
            have = 0;
            std::uint64_t t;
            std::memcpy(&t, buf, 8);
            last = now_ns();
            if (got % (k_messages / k_samples) == 0) latency.push_back(last - t);
            ++got;
        }
    });
    char buf[k_size] = {};
    const std::uint64_t start = now_ns();
    for (std::uint64_t i = 0; i < k_messages; ++i) {
        const std::uint64_t t = now_ns();
        std::memcpy(buf, &t, 8);
        if (write(wr, buf, k_size) != static_cast<ssize_t>(k_size)) break;
    }
    reader.join();
    Row row{name};
    row.msgs_per_s = static_cast<double>(got) / (static_cast<double>(last - start) / 1e9);
    row.p99_us = p99_us(std::move(latency));
    row.lost = k_messages - got;
    return row;
}

// --- hmk: the blaster (bench plugin) and in-process readers on one bus.
struct Slot {
    std::vector<std::uint64_t> latency;
    std::atomic<std::uint64_t> count{0}, last_ns{0};
    std::uint64_t slow_ns = 0;
};

class Reader final : public Module {
  public:
    Reader(Env& env, Slot& slot) : m_env(env), m_slot(slot) {}
    void on_message(const Message& m) override {
        if (m.header.correlation == 0 || m.payload.size() < 8 || m.header.sender == m_env.id())
            return;
        std::uint64_t t;
        std::memcpy(&t, m.payload.data(), 8);
        const std::uint64_t now = now_ns();
        const std::uint64_t n = m_slot.count.load(std::memory_order_relaxed);
        if (n % (k_messages / k_samples) == 0 && m_slot.latency.size() < k_samples)
            m_slot.latency.push_back(now - t);
        if (m_slot.slow_ns != 0) {
            const std::uint64_t until = now + m_slot.slow_ns;
            while (now_ns() < until) {
            }
        }
        m_slot.last_ns.store(now_ns(), std::memory_order_release);
        m_slot.count.store(n + 1, std::memory_order_release);
    }

  private:
    Env& m_env;
    Slot& m_slot;
};

struct Setup {
    const char* delivery;
    int readers;
    bool one_slow;
    const char* fsync;  // null: no journal
};

Row hmk_row(const Setup& s, const std::string& plugin, const std::filesystem::path& scratch) {
    std::deque<Slot> slots(static_cast<std::size_t>(s.readers));
    if (s.one_slow) slots[0].slow_ns = k_slow_ns;
    for (Slot& slot : slots) slot.latency.reserve(k_samples);
    Registry reg;
    register_standard_modules(reg);
    reg.add(ModuleKind{"reader",
                       "bench reader",
                       Role::leaf,
                       Eavesdrop::no,
                       {ConfigKey("slot", ConfigType::integer, std::int64_t{0}, "its slot")},
                       [&slots](Env& env) -> Result<std::unique_ptr<Module>, std::string> {
                           Slot& slot =
                               slots[static_cast<std::size_t>(env.config().integer("slot"))];
                           return std::unique_ptr<Module>(std::make_unique<Reader>(env, slot));
                       }});
    std::string toml = fmt::format(
        "[system]\nplugins = [\"{}\"]\n[[module]]\npath = \"/b\"\nkind = \"gateway\"\n"
        "bus = {{ capacity = {}, delivery = \"{}\" }}\n"
        "[[module]]\npath = \"/b/tx\"\nkind = \"blaster\"\nconfig = {{ count = {} }}\n",
        plugin, k_capacity, s.delivery, k_messages);
    for (int i = 0; i < s.readers; ++i)
        toml += fmt::format(
            "[[module]]\npath = \"/b/r{0}\"\nkind = \"reader\"\nconfig = {{ slot = {0} }}\n", i);
    std::error_code ec;
    std::filesystem::remove_all(scratch, ec);
    if (s.fsync != nullptr)
        toml += fmt::format(
            "[[module]]\npath = \"/b/mon\"\nkind = \"monitor\"\nconfig = {{ dir = \"{}\", "
            "fsync = \"{}\" }}\n",
            scratch.string(), s.fsync);
    Row row{fmt::format("{}{}, {} reader{}{}", s.delivery,
                        s.fsync ? fmt::format(" + journal (fsync {})", s.fsync) : "", s.readers,
                        s.readers > 1 ? "s" : "", s.one_slow ? ", one slow" : "")};
    auto spec = parse_system(toml, "delivery-bench.toml", reg);
    if (!spec) {
        fmt::print(stderr, "{}\n", spec.error().to_string());
        std::exit(2);
    }
    Logger logger(stderr, LogLevel::error);
    auto created = System::create(*spec, reg, logger);
    if (!created) {
        fmt::print(stderr, "{}\n", created.error());
        std::exit(2);
    }
    auto sys = std::move(created).value();
    if (auto started = sys->start(); !started) {
        fmt::print(stderr, "{}\n", started.error());
        std::exit(2);
    }
    const ModuleId tx = sys->topology().find("/b/tx")->id;
    auto bus = [&] {
        for (const BusStats& b : sys->bus_stats())
            if (b.name == "/b") return b;
        return BusStats{};
    };
    auto done = [&] {
        bool all = true, caught_up = sys->module_stats(tx).tx >= k_messages;
        const std::uint64_t head = bus().head;
        for (int i = 0; i < s.readers; ++i) {
            all = all && slots[static_cast<std::size_t>(i)].count.load() >= k_messages;
            const ModuleId r = sys->topology().find(fmt::format("/b/r{}", i))->id;
            caught_up = caught_up && sys->module_stats(r).cursor > head;
        }
        return all || caught_up;
    };
    Outgoing go;
    go.destination = tx;
    const std::uint64_t start = now_ns();
    (void)sys->inject(go);
    const std::uint64_t deadline = start + 60'000'000'000ull;
    while (!done() && now_ns() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    row.complete = done();
    std::uint64_t last = start;
    std::vector<std::uint64_t> fast;
    for (std::size_t i = 0; i < slots.size(); ++i) {
        last = std::max(last, slots[i].last_ns.load());
        row.lost += k_messages - std::min(k_messages, slots[i].count.load());
        if (slots[i].slow_ns == 0 || slots.size() == 1)
            fast.insert(fast.end(), slots[i].latency.begin(), slots[i].latency.end());
    }
    // Delivered per reader per second: on a best-effort bus what was lost
    // does not count.
    const double per_reader = static_cast<double>(k_messages) -
                              static_cast<double>(row.lost) / static_cast<double>(slots.size());
    row.msgs_per_s = per_reader / (static_cast<double>(last - start) / 1e9);
    row.p99_us = p99_us(std::move(fast));
    const BusStats b = bus();
    row.evicted = b.evicted;
    row.held_ms = static_cast<double>(sys->module_stats(tx).waited_ns) / 1e6;
    sys->stop();
    std::filesystem::remove_all(scratch, ec);
    return row;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc > 1 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
        fmt::print(
            "hmk_delivery_bench [PLUGIN]: a flood of {} messages of {} bytes on a bus of {} "
            "slots,\nreliable and best effort, 1, 4 and 16 readers, one of them slow ({} us a "
            "message),\nwith a journal at each fsync mode; a Unix socket pair and a pipe "
            "alongside.\nPLUGIN: the bench plugin (default: ../lib/libhmk-bench.so)\n",
            k_messages, k_size, k_capacity, k_slow_ns / 1000);
        return 0;
    }
    std::string plugin = argc > 1 ? argv[1] : "";
    if (plugin.empty()) {
        char buf[4096];
        const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
        std::string dir(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
        plugin = dir.substr(0, dir.rfind('/')) + "/../lib/libhmk-bench.so";
    }
    const std::filesystem::path scratch =
        std::filesystem::temp_directory_path() / fmt::format("hmk-delivery-bench-{}", getpid());

    std::vector<Row> rows;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 1;
    rows.push_back(fd_row("unix socket pair", sv[1], sv[0]));
    int p[2];
    if (pipe(p) != 0) return 1;
    rows.push_back(fd_row("pipe", p[0], p[1]));
    for (const char* delivery : {"reliable", "best_effort"})
        for (int readers : {1, 4, 16})
            for (bool slow : {false, true})
                rows.push_back(hmk_row(Setup{delivery, readers, slow, nullptr}, plugin, scratch));
    for (const char* fsync : {"none", "interval", "always"})
        rows.push_back(hmk_row(Setup{"reliable", 4, false, fsync}, plugin, scratch));

    fmt::print(
        "\n{} messages of {} bytes flat out; hmk: one in-process sender, in-process readers, a bus "
        "of {} slots;\na slow reader spends {} us on each message. p99: one-way latency at the "
        "fast readers.\n",
        k_messages, k_size, k_capacity, k_slow_ns / 1000);
    fmt::print("{:<48} {:>11} {:>9} {:>8} {:>8} {:>9} {:>7}\n", "transport", "delivered/s",
               "p99 us", "lost", "evicted", "held ms", "vs unix");
    const double base = rows.front().msgs_per_s;
    for (const Row& r : rows)
        fmt::print("{:<48} {:>11.0f} {:>9.1f} {:>8} {:>8} {:>9.1f} {:>6.2f}x{}\n", r.name,
                   r.msgs_per_s, r.p99_us, r.lost, r.evicted, r.held_ms, r.msgs_per_s / base,
                   r.complete ? "" : "  (deadline)");
    fmt::print(
        "(delivered/s: messages each reader got, per second until the last one had them all; lost: "
        "messages\nsome reader never got, summed over readers; held: the time the sender's sends "
        "waited for room\non a reliable bus; a journaled bus holds its sender back at the "
        "journal instead)\n");
    return 0;
}
