// SPDX-License-Identifier: Apache-2.0
// Checks a module under load through a prober (modules/std/prober.cpp): the
// prober's counters, asked over the bus, and the checks every swap or move
// test makes (every request answered once, in order, the count going on).
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <sstream>
#include <string>
#include <thread>

#include "recorder.hpp"

namespace hmk::testing {

/// "sent=1 replied=1 ..." as a map; words without '=' or a number are skipped.
inline std::map<std::string, std::uint64_t> parse_counters(const std::string& text) {
    std::map<std::string, std::uint64_t> out;
    std::istringstream in(text);
    std::string word;
    while (in >> word) {
        const auto eq = word.find('=');
        if (eq == std::string::npos) continue;
        try {
            out[word.substr(0, eq)] = std::stoull(word.substr(eq + 1));
        } catch (...) {
        }
    }
    return out;
}

/// The text of module `id`'s reply to a stats request from the root.
inline std::string ask_stats(System& system, ModuleId id) {
    Outgoing q;
    q.destination = id;
    q.type = msg::k_stats;
    auto corr = system.inject(q);
    if (!corr) return "(cannot ask)";
    auto reply = system.wait_for_root(*corr, std::chrono::seconds(2));
    return reply ? std::string(reply->text()) : "(no reply)";
}

/// Waits (at most 30 s) until prober `probe` has `replies` replies; its counters then.
inline std::map<std::string, std::uint64_t> wait_replies(System& system, ModuleId probe,
                                                         std::uint64_t replies) {
    std::map<std::string, std::uint64_t> p;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
        p = parse_counters(ask_stats(system, probe));
        if (p["replied"] >= replies) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return p;
}

/// Every one of `count` requests answered once, in order, counting on by one.
inline void expect_nothing_lost(std::map<std::string, std::uint64_t> p, std::uint64_t count) {
    EXPECT_EQ(p["sent"], count);
    EXPECT_EQ(p["replied"], count);
    EXPECT_EQ(p["lost"], 0u);
    EXPECT_EQ(p["dup"], 0u);
    EXPECT_EQ(p["late"], 0u);
    EXPECT_EQ(p["count_errors"], 0u);
    EXPECT_EQ(p["last"], count);  // the state went on: the count never restarted
}

}  // namespace hmk::testing
