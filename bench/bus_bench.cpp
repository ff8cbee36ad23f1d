// SPDX-License-Identifier: Apache-2.0
// Bus costs, with OS baselines measured in the same run: a round trip through
// a booted hmk system (microkernel -> Bus 0 -> echo -> Bus 0 -> microkernel,
// each side on its own thread) next to a round trip between two threads over
// a Unix socket pair and over two pipes, 64-byte messages.
#include <benchmark/benchmark.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <new>
#include <thread>

#include "hmk/broadcast_ring.hpp"
#include "hmk/runtime/config.hpp"
#include "hmk/runtime/system.hpp"

namespace {

constexpr std::size_t k_message = 64;

void BM_RingPublish(benchmark::State& state) {
    const std::size_t size = hmk::BroadcastRing::region_size(4096, 256);
    auto* mem = static_cast<std::byte*>(::operator new (size, std::align_val_t{64}));
    auto ring = *hmk::BroadcastRing::create({mem, size}, 4096, 256);
    std::array<std::byte, k_message> payload{};
    for (auto _ : state) {
        hmk::Header h;
        benchmark::DoNotOptimize(ring.publish(h, payload));
    }
    state.SetItemsProcessed(state.iterations());
    ::operator delete (mem, std::align_val_t{64});
}
BENCHMARK(BM_RingPublish);

void BM_RingPublishThenRead(benchmark::State& state) {
    const std::size_t size = hmk::BroadcastRing::region_size(4096, 256);
    auto* mem = static_cast<std::byte*>(::operator new (size, std::align_val_t{64}));
    auto ring = *hmk::BroadcastRing::create({mem, size}, 4096, 256);
    std::array<std::byte, k_message> payload{};
    std::array<std::byte, hmk::k_header_size + 256> out{};
    std::uint64_t cursor = 1;
    for (auto _ : state) {
        hmk::Header h;
        (void)ring.publish(h, payload);
        benchmark::DoNotOptimize(ring.read(cursor, out));
    }
    state.SetItemsProcessed(state.iterations());
    ::operator delete (mem, std::align_val_t{64});
}
BENCHMARK(BM_RingPublishThenRead);

// Echo thread on a pair of fds: reads 64 bytes, writes them back.
template <typename Setup>
void fd_round_trip(benchmark::State& state, Setup setup) {
    int to_echo[2], from_echo[2];
    setup(to_echo, from_echo);
    std::thread echo([&] {
        std::array<char, k_message> buf{};
        while (read(to_echo[0], buf.data(), buf.size()) == static_cast<ssize_t>(buf.size())) {
            if (write(from_echo[1], buf.data(), buf.size()) != static_cast<ssize_t>(buf.size()))
                break;
        }
    });
    std::array<char, k_message> buf{};
    for (auto _ : state) {
        if (write(to_echo[1], buf.data(), buf.size()) != static_cast<ssize_t>(buf.size()))
            state.SkipWithError("write");
        if (read(from_echo[0], buf.data(), buf.size()) != static_cast<ssize_t>(buf.size()))
            state.SkipWithError("read");
    }
    close(to_echo[1]);
    echo.join();
    for (int fd : {to_echo[0], from_echo[0], from_echo[1]}) close(fd);
}

void BM_UnixSocketRoundTrip(benchmark::State& state) {
    fd_round_trip(state, [](int* a, int* b) {
        int s1[2], s2[2];
        socketpair(AF_UNIX, SOCK_STREAM, 0, s1);
        socketpair(AF_UNIX, SOCK_STREAM, 0, s2);
        a[0] = s1[0];
        a[1] = s1[1];
        b[0] = s2[0];
        b[1] = s2[1];
    });
}
BENCHMARK(BM_UnixSocketRoundTrip)->UseRealTime();

void BM_PipeRoundTrip(benchmark::State& state) {
    fd_round_trip(state, [](int* a, int* b) {
        if (pipe(a) != 0 || pipe(b) != 0) std::abort();
    });
}
BENCHMARK(BM_PipeRoundTrip)->UseRealTime();

void BM_HmkEchoRoundTrip(benchmark::State& state) {
    hmk::Registry registry;
    hmk::register_standard_modules(registry);
    auto spec = hmk::parse_system("[[module]]\npath = \"/echo\"\nkind = \"echo\"\n", "bench.toml",
                                  registry);
    hmk::Logger logger(stderr, hmk::LogLevel::warn);
    auto system = std::move(hmk::System::create(*spec, registry, logger)).value();
    (void)system->start();
    std::array<std::byte, k_message> payload{};
    hmk::Outgoing out;
    out.destination = system->topology().find("/echo")->id;
    out.payload = payload;
    for (auto _ : state) {
        auto corr = system->inject(out);
        if (!corr || !system->wait_for_root(*corr, std::chrono::seconds(5)))
            state.SkipWithError("no reply");
        out.correlation = 0;
    }
    system->stop();
}
BENCHMARK(BM_HmkEchoRoundTrip)->UseRealTime();

}  // namespace
