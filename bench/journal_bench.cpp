// SPDX-License-Identifier: Apache-2.0
// Journal append throughput of 64-byte-payload messages per fsync policy, to
// real files (the machine's /tmp). items_per_second is messages/s.
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <filesystem>
#include <vector>

#include "hmk/runtime/journal.hpp"

namespace {

void BM_JournalAppend(benchmark::State& state) {
    char tmpl[] = "/tmp/hmk-journal-bench-XXXXXX";
    const std::string dir = mkdtemp(tmpl);
    hmk::JournalOptions o;
    o.dir = dir;
    o.bus = 1;
    o.fsync = static_cast<hmk::FsyncPolicy>(state.range(0));
    o.segment_bytes = 64ull << 20;
    o.keep_segments = 4;  // bounded disk use however long it runs
    auto w = std::move(hmk::JournalWriter::open(o)).value();
    hmk::Header h;
    h.bus = 1;
    h.payload_size = 64;
    std::vector<std::byte> msg(hmk::k_header_size + 64);
    std::uint64_t seq = 0;
    for (auto _ : state) {
        h.seq = ++seq;
        hmk::encode_header(
            h, std::span<std::byte, hmk::k_header_size>(msg.data(), hmk::k_header_size));
        if (!w.append(msg, seq)) state.SkipWithError("append failed");
        // One commit per record with `always` (the worst case: a monitor
        // commits a whole batch at once); the others commit when they choose.
        if (o.fsync == hmk::FsyncPolicy::always && !w.commit())
            state.SkipWithError("commit failed");
    }
    (void)w.sync();
    state.SetItemsProcessed(state.iterations());
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(msg.size()));
    std::filesystem::remove_all(dir);
}
BENCHMARK(BM_JournalAppend)->Arg(0)->Arg(1)->ArgName("fsync_none0_interval1")->MinTime(1.0);
BENCHMARK(BM_JournalAppend)->Arg(2)->ArgName("fsync_always2")->Iterations(2000);

}  // namespace
