// SPDX-License-Identifier: Apache-2.0
// hmk_ipc_bench: one-way latency and throughput of 64-byte messages over the
// hmk process bus (child -> uplink -> owner relay -> broadcast ring -> reader),
// the hmk in-process bus, a Unix socket pair and a pipe, all measured in the
// same run, printed with ratios to the Unix socket; then the sender's cost
// per message as the number of receivers grows.
#include <fmt/core.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "bench_clock.hpp"
#include "hmk/runtime/config.hpp"
#include "hmk/runtime/system.hpp"
#include "inproc_bus.hpp"

namespace {

using namespace hmk;

constexpr std::size_t k_size = 64;
// Two latency regimes: sparse messages (the sender sleeps 100 us between
// them, so every message finds its reader asleep) and a stream (the sender
// spins 20 us between them, which takes one of this machine's cores).
constexpr std::uint64_t k_latency_messages = 10000;
struct Pace {
    const char* name;
    std::uint64_t gap_ns;
    bool spin;
};
constexpr Pace k_sparse{"sleep", 100000, false};
constexpr Pace k_stream{"spin", 20000, true};
constexpr std::uint64_t k_throughput_messages = 400000;

using hmk::bench::now_ns;
using hmk::bench::wait_until;
std::uint64_t thread_cpu_ns() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

struct Figures {
    std::string name;
    double p50_us = 0, p99_us = 0;                // sparse
    double stream_p50_us = 0, stream_p99_us = 0;  // stream
    double msgs_per_s = 0;
};

struct Samples {
    std::vector<std::uint64_t> latency;
    std::atomic<std::uint64_t> count{0};
    std::atomic<std::uint64_t> last_ns{0};
};

double percentile(std::vector<std::uint64_t> v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return static_cast<double>(v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))]) /
           1000.0;
}

// --- OS baselines: a writer thread and a blocking reader thread over two fds.
bool read_full(int fd, char* buf, std::size_t n) {
    std::size_t done = 0;
    while (done < n) {
        const ssize_t r = read(fd, buf + done, n - done);
        if (r <= 0) return false;
        done += static_cast<std::size_t>(r);
    }
    return true;
}

Figures fd_figures(const std::string& name, int rd, int wr) {
    Figures f{name};
    auto run = [&](std::uint64_t count, std::uint64_t gap, bool spin, Samples& s) {
        s.latency.reserve(count);
        std::thread reader([&] {
            char buf[k_size];
            for (std::uint64_t i = 0; i < count && read_full(rd, buf, k_size); ++i) {
                std::uint64_t t;
                std::memcpy(&t, buf, 8);
                const std::uint64_t now = now_ns();
                if (gap != 0) s.latency.push_back(now - t);
                s.last_ns = now;
                ++s.count;
            }
        });
        char buf[k_size] = {};
        std::uint64_t next = now_ns();
        const std::uint64_t start = next;
        for (std::uint64_t i = 0; i < count; ++i) {
            if (gap != 0) {
                wait_until(next, spin);
                next += gap;
            }
            const std::uint64_t t = now_ns();
            std::memcpy(buf, &t, 8);
            if (write(wr, buf, k_size) != static_cast<ssize_t>(k_size)) break;
        }
        reader.join();
        return start;
    };
    Samples sparse, stream, thr;
    run(k_latency_messages, k_sparse.gap_ns, k_sparse.spin, sparse);
    run(k_latency_messages, k_stream.gap_ns, k_stream.spin, stream);
    f.p50_us = percentile(sparse.latency, 0.50);
    f.p99_us = percentile(sparse.latency, 0.99);
    f.stream_p50_us = percentile(stream.latency, 0.50);
    f.stream_p99_us = percentile(stream.latency, 0.99);
    const std::uint64_t start = run(k_throughput_messages, 0, false, thr);
    f.msgs_per_s =
        static_cast<double>(thr.count) / (static_cast<double>(thr.last_ns - start) / 1e9);
    return f;
}

// --- hmk: a blaster module (inproc or in its own process) and an in-process receiver.
class Receiver final : public Module {
  public:
    Receiver(Env& env, Samples& s) : m_env(env), m_samples(s) {}
    void on_message(const Message& m) override {
        if (m.header.correlation == 0 || m.payload.size() < 8 || m.header.sender == m_env.id())
            return;
        std::uint64_t t;
        std::memcpy(&t, m.payload.data(), 8);
        const std::uint64_t now = now_ns();
        if (m_samples.latency.size() < m_samples.latency.capacity())
            m_samples.latency.push_back(now - t);
        m_samples.last_ns.store(now);
        m_samples.count.fetch_add(1);
    }

  private:
    Env& m_env;
    Samples& m_samples;
};

/// The system of a run: the blaster /.../tx and the receiver /.../rx, given
/// its message count and pace.
using Layout = std::function<std::string(std::uint64_t count, const Pace& pace)>;

Figures hmk_figures(const std::string& name, const std::string& isolation,
                    const std::string& plugin);

/// `levels` gateways g1/g2/... above the blaster, which addresses the
/// receiver on Bus 0: every message climbs all of them. `isolation` for the
/// gateways and the blaster alike.
Layout levels_layout(int levels, const std::string& isolation, const std::string& plugin) {
    return [=](std::uint64_t count, const Pace& pace) {
        const bool process = isolation == "process";
        const std::string quota =
            process ? "quota = { messages_per_s = 1e9, bytes_per_s = 1e12, uplink_slots = 4096 }\n"
                    : "";
        std::string toml =
            fmt::format("[system]\nplugins = [\"{}\"]\n[bus]\ncapacity = 65536\n", plugin);
        std::string path;
        for (int l = 1; l <= levels; ++l) {
            path += "/g" + std::to_string(l);
            toml += fmt::format(
                "[[module]]\npath = \"{}\"\nkind = \"gateway\"\nisolation = \"{}\"\n"
                "bus = {{ capacity = 65536 }}\n{}",
                path, isolation, quota);
        }
        toml += fmt::format(
            "[[module]]\npath = \"{}/tx\"\nkind = \"blaster\"\nisolation = \"{}\"\n"
            "config = {{ count = {}, gap_ns = {}, pace = \"{}\", to = \"/rx\" }}\n{}"
            "[[module]]\npath = \"/rx\"\nkind = \"receiver\"\n",
            path, isolation, count, pace.gap_ns, pace.name, quota);
        return toml;
    };
}

Figures hmk_figures(const std::string& name, const Layout& layout, const std::string& tx,
                    std::uint64_t throughput_messages);

Figures hmk_figures(const std::string& name, const std::string& isolation,
                    const std::string& plugin) {
    return hmk_figures(
        name,
        [&](std::uint64_t count, const Pace& pace) {
            const std::string quota =
                isolation == "process"
                    ? "quota = { messages_per_s = 1e9, bytes_per_s = 1e12, uplink_slots = 4096 }\n"
                    : "";
            return fmt::format(
                "[system]\nplugins = [\"{}\"]\n[[module]]\npath = \"/b\"\nkind = "
                "\"gateway\"\nbus = {{ capacity = 65536 }}\n"
                "[[module]]\npath = \"/b/tx\"\nkind = \"blaster\"\nisolation = \"{}\"\n"
                "config = {{ count = {}, gap_ns = {}, pace = \"{}\" }}\n{}"
                "[[module]]\npath = \"/b/rx\"\nkind = \"receiver\"\n",
                plugin, isolation, count, pace.gap_ns, pace.name, quota);
        },
        "/b/tx", k_throughput_messages);
}

Figures hmk_figures(const std::string& name, const Layout& layout, const std::string& tx,
                    std::uint64_t throughput_messages) {
    Figures f{name};
    auto run = [&](std::uint64_t count, const Pace& pace, Samples& s) -> std::uint64_t {
        Registry reg;
        register_standard_modules(reg);
        reg.add(ModuleKind{"receiver",
                           "bench receiver",
                           Role::leaf,
                           Eavesdrop::no,
                           {},
                           [&s](Env& env) -> Result<std::unique_ptr<Module>, std::string> {
                               return std::unique_ptr<Module>(std::make_unique<Receiver>(env, s));
                           }});
        auto spec = parse_system(layout(count, pace), "bench.toml", reg);
        if (!spec) {
            fmt::print(stderr, "{}\n", spec.error().to_string());
            std::exit(2);
        }
        Logger logger(stderr, LogLevel::warn);
        auto sys = std::move(System::create(*spec, reg, logger)).value();
        if (auto started = sys->start(); !started) {
            fmt::print(stderr, "{}\n", started.error());
            std::exit(2);
        }
        s.latency.reserve(count);
        Outgoing go;
        go.destination = sys->topology().find(tx)->id;
        const std::uint64_t start = now_ns();
        (void)sys->inject(go);
        const std::uint64_t deadline = start + 60'000'000'000ull;
        while (s.count.load() < count && now_ns() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        sys->stop();
        return start;
    };
    Samples sparse, stream, thr;
    run(k_latency_messages, k_sparse, sparse);
    run(k_latency_messages, k_stream, stream);
    f.p50_us = percentile(sparse.latency, 0.50);
    f.p99_us = percentile(sparse.latency, 0.99);
    f.stream_p50_us = percentile(stream.latency, 0.50);
    f.stream_p99_us = percentile(stream.latency, 0.99);
    const std::uint64_t start = run(throughput_messages, Pace{"sleep", 0, false}, thr);
    f.msgs_per_s =
        static_cast<double>(thr.count) / (static_cast<double>(thr.last_ns - start) / 1e9);
    return f;
}

// --- Fan-out: what one publish costs the sender with K receivers subscribed.
double fanout_ns(int receivers, bool remote) {
    auto topo = Topology::build([&] {
        std::vector<ModuleDecl> d{{0, "/b", Role::gateway}, {0, "/b/tx", Role::leaf}};
        for (int i = 0; i < receivers; ++i)
            d.push_back({0, "/b/r" + std::to_string(i), Role::leaf});
        return d;
    }());
    Logger logger(stderr, LogLevel::warn);
    SystemSpec spec;
    spec.topology = *topo;
    const detail::Generations generations(spec);
    detail::InprocBus bus(topo->find("/b")->id, "/b", detail::BusSettings{4096, 256, {}},
                          generations, logger);
    std::vector<std::atomic<std::uint32_t>> words(static_cast<std::size_t>(receivers));
    std::vector<std::atomic<std::uint32_t>> armed(static_cast<std::size_t>(receivers));
    for (int i = 0; i < receivers; ++i) {
        (void)bus.subscribe(
            detail::Doorbell{&words[static_cast<std::size_t>(i)],
                             &armed[static_cast<std::size_t>(i)],
                             remote ? platform::FutexScope::shared : platform::FutexScope::process},
            remote);
    }
    std::byte payload[k_size] = {};
    Header h;
    h.sender = topo->find("/b/tx")->id;
    constexpr int k_n = 2'000'000;
    const std::uint64_t cpu0 = thread_cpu_ns();
    for (int i = 0; i < k_n; ++i) (void)bus.publish(h, payload, h.sender);
    return static_cast<double>(thread_cpu_ns() - cpu0) / k_n;
}

std::string levels_path(int levels) {
    std::string path;
    for (int l = 1; l <= levels; ++l) path += "/g" + std::to_string(l);
    return path;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc > 1 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
        fmt::print(
            "hmk_ipc_bench [PLUGIN]: latency and throughput of 64-byte messages over hmk buses and "
            "OS IPC,\n"
            "measured side by side in one run. PLUGIN: the bench plugin (default: "
            "../lib/libhmk-bench.so)\n");
        return 0;
    }
    std::string plugin = argc > 1 ? argv[1] : "";
    if (plugin.empty()) {
        char buf[4096];
        const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
        std::string dir(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
        plugin = dir.substr(0, dir.rfind('/')) + "/../lib/libhmk-bench.so";
    }

    std::vector<Figures> rows;
    int sv[2], sv2[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    rows.push_back(fd_figures("unix socket pair", sv[1], sv[0]));
    int p[2];
    if (pipe(p) != 0) return 1;
    rows.push_back(fd_figures("pipe", p[0], p[1]));
    (void)sv2;
    rows.push_back(hmk_figures("hmk inproc bus", "inproc", plugin));
    rows.push_back(hmk_figures("hmk process bus", "process", plugin));

    const Figures& base = rows.front();
    fmt::print(
        "\none-way latency of {}-byte messages, {} each: sparse (the sender sleeps {} us between\n"
        "them) and stream (the sender spins {} us between them); throughput: {} messages flat "
        "out\n",
        k_size, k_latency_messages, k_sparse.gap_ns / 1000, k_stream.gap_ns / 1000,
        k_throughput_messages);
    fmt::print("{:<18} {:>10} {:>10} {:>10} {:>10} {:>11} | {:>8} {:>8} {:>8}\n", "transport",
               "sparse p50", "sparse p99", "stream p50", "stream p99", "msgs/s", "sparse", "stream",
               "thru");
    for (const Figures& f : rows) {
        fmt::print(
            "{:<18} {:>10.2f} {:>10.2f} {:>10.2f} {:>10.2f} {:>11.0f} | {:>7.2f}x {:>7.2f}x "
            "{:>7.2f}x\n",
            f.name, f.p50_us, f.p99_us, f.stream_p50_us, f.stream_p99_us, f.msgs_per_s,
            f.p50_us / base.p50_us, f.stream_p50_us / base.stream_p50_us,
            f.msgs_per_s / base.msgs_per_s);
    }
    fmt::print(
        "(latencies in us; the ratios are the p50s and the throughput relative to the unix socket "
        "pair)\n");

    // Across gateway levels: a blaster below L gateways addresses a receiver
    // on Bus 0, all inproc, then gateways and blaster each in a process.
    fmt::print(
        "\none-way latency of {}-byte messages that climb L gateways to Bus 0 (sparse, {} each) "
        "and throughput ({} flat out)\n",
        k_size, k_latency_messages, k_throughput_messages / 4);
    fmt::print("{:<10} {:>6} {:>10} {:>10} {:>11} | {:>14} {:>8}\n", "isolation", "levels",
               "sparse p50", "sparse p99", "msgs/s", "p50 per level", "vs unix");
    for (const char* isolation : {"inproc", "process"}) {
        double base_p50 = 0;
        for (int levels = 0; levels <= 3; ++levels) {
            const Figures f = hmk_figures(fmt::format("{} x{}", isolation, levels),
                                          levels_layout(levels, isolation, plugin),
                                          levels_path(levels) + "/tx", k_throughput_messages / 4);
            if (levels == 0) base_p50 = f.p50_us;
            const std::string per_level =
                levels == 0 ? std::string("-")
                            : fmt::format("+{:.2f}", (f.p50_us - base_p50) / levels);
            fmt::print("{:<10} {:>6} {:>10.2f} {:>10.2f} {:>11.0f} | {:>14} {:>7.2f}x\n", isolation,
                       levels, f.p50_us, f.p99_us, f.msgs_per_s, per_level, f.p50_us / base.p50_us);
        }
    }
    fmt::print(
        "(us; 'p50 per level': what each gateway level adds to the p50 of level 0; 'vs unix': "
        "the p50 against the unix socket pair above)\n");

    fmt::print("\nsender CPU per publish (ns) by receivers on the bus (no reader asleep)\n");
    fmt::print("{:<12} {:>12} {:>16}\n", "receivers", "in-process", "other processes");
    for (int k : {1, 4, 16})
        fmt::print("{:<12} {:>12.1f} {:>16.1f}\n", k, fanout_ns(k, false), fanout_ns(k, true));
    return 0;
}
