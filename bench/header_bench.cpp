// SPDX-License-Identifier: Apache-2.0
#include <benchmark/benchmark.h>

#include <array>

#include "hmk/header.hpp"

namespace {

void BM_HeaderEncode(benchmark::State& state) {
    hmk::Header h;
    h.seq = 42;
    h.sender = 7;
    h.payload_size = 64;
    std::array<std::byte, hmk::k_header_size> buf{};
    for (auto _ : state) {
        hmk::encode_header(h, buf);
        benchmark::DoNotOptimize(buf);
        ++h.seq;
    }
}
BENCHMARK(BM_HeaderEncode);

void BM_HeaderDecode(benchmark::State& state) {
    hmk::Header h;
    h.payload_size = 64;
    std::array<std::byte, hmk::k_header_size + 64> buf{};
    hmk::encode_header(h, std::span<std::byte, hmk::k_header_size>(buf.data(), hmk::k_header_size));
    for (auto _ : state) {
        auto d = hmk::decode_header(buf, hmk::k_max_payload, hmk::Framing::exact);
        benchmark::DoNotOptimize(d);
    }
}
BENCHMARK(BM_HeaderDecode);

}  // namespace
