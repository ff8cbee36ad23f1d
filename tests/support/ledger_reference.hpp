// SPDX-License-Identifier: Apache-2.0
// What a `ledger` must hold and must have said, computed independently from
// the bus journal: the reference recovery tests compare a recovered ledger to.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "hmk/message_types.hpp"
#include "hmk/runtime/journal.hpp"
#include "hmk/snapshot_format.hpp"
#include "ledger_module.hpp"
#include "runner_state.hpp"

namespace hmk::testing {

/// A ledger's `stats` answer, or the same computed from the journal.
struct LedgerState {
    std::uint64_t count = 0, sum = 0, dups = 0, ticks = 0;
    std::uint32_t digest = 0;
    bool operator==(const LedgerState&) const = default;
};

inline std::optional<LedgerState> parse_ledger_stats(const std::string& text) {
    LedgerState s;
    unsigned long long count = 0, sum = 0, dups = 0, ticks = 0;
    unsigned int digest = 0;
    if (std::sscanf(text.c_str(), "count=%llu sum=%llu dups=%llu digest=%x ticks=%llu", &count,
                    &sum, &dups, &digest, &ticks) != 5) {
        return std::nullopt;
    }
    s.count = count;
    s.sum = sum;
    s.dups = dups;
    s.ticks = ticks;
    s.digest = digest;
    return s;
}

struct LedgerReply {
    std::uint64_t corr = 0, count = 0, random = 0, seq = 0;
};

/// Everything the journal of the ledger's bus says about it.
struct LedgerHistory {
    LedgerState state;                    ///< after every input before `until`
    std::vector<std::uint64_t> requests;  ///< correlation of each data request, in order
    std::vector<LedgerReply> replies;     ///< its answers to them, in bus order (whole journal)
    std::uint64_t seed = 0;               ///< of its latest fresh start
    bool seeded = false;
    JournalScan scan;
};

inline LedgerHistory ledger_history(const std::string& dir, ModuleId ledger, BusId bus,
                                    std::uint64_t until = UINT64_MAX) {
    LedgerHistory out;
    const auto visit = [&](const JournalRecord& r) {
        const Header& h = r.header;
        const auto payload = r.message.subspan(k_header_size);
        if (h.type == msg::k_lifecycle && h.sender == bus && h.via == bus) {
            std::span<const std::byte> text;
            const auto e = decode_lifecycle(payload, text);
            if (e && e->module == ledger && e->kind == LifecycleKind::started) {
                out.seed = e->seed;
                out.seeded = true;
            }
            return;
        }
        if (h.sender == ledger && h.via == ledger && h.hops == 0 && h.is_reply() &&
            h.type == msg::k_data) {
            const std::string text(reinterpret_cast<const char*>(payload.data()), payload.size());
            unsigned long long corr = 0, count = 0, random = 0;
            if (std::sscanf(text.c_str(), "ok %llu %llu %llu", &corr, &count, &random) == 3)
                out.replies.push_back({corr, count, random, h.seq});
            return;
        }
        if (h.seq >= until) return;
        if (h.destination == ledger && h.type == msg::k_data && !h.is_reply()) {
            ++out.state.count;
            out.state.sum += h.correlation;
            out.state.digest =
                ledger_step(out.state.digest, h.sender, h.correlation, h.timestamp_ns, payload);
            out.requests.push_back(h.correlation);
        } else if (h.type == msg::k_timer && h.sender == ledger && h.via == ledger &&
                   h.destination == ledger && h.hops == 0) {
            ++out.state.ticks;
            out.state.digest = ledger_tick(out.state.digest, h.timestamp_ns);
        }
    };
    // (Read while the system runs, its monitor may be writing the tail.)
    out.scan = scan_journal(dir, visit, scan_mode_of(dir));
    return out;
}

/// Checks the replies: exactly one per request, in order, counting up, and
/// carrying the random numbers a generator seeded as the journal says gives.
/// Empty when all is well, else what is wrong.
inline std::string check_replies(const LedgerHistory& h, std::uint64_t expected) {
    if (h.replies.size() != expected) {
        return "the ledger answered " + std::to_string(h.replies.size()) + " times, not " +
               std::to_string(expected);
    }
    if (!h.seeded) return "no start of the ledger in the journal";
    detail::Xoshiro generator(h.seed);
    for (std::size_t i = 0; i < h.replies.size(); ++i) {
        const LedgerReply& r = h.replies[i];
        if (r.count != i + 1 || (i < h.requests.size() && r.corr != h.requests[i])) {
            return "reply " + std::to_string(i + 1) + " (seq " + std::to_string(r.seq) +
                   ") says corr " + std::to_string(r.corr) + " count " + std::to_string(r.count);
        }
        if (r.random != generator()) {
            return "reply " + std::to_string(i + 1) + " (seq " + std::to_string(r.seq) +
                   ") carries a random number the generator did not give there";
        }
    }
    return {};
}

}  // namespace hmk::testing
