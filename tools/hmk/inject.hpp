// SPDX-License-Identifier: Apache-2.0
// `hmk inject`: a fault-injection campaign against a system it boots
// (docs/inject.md).
#pragma once

#include <cstdint>
#include <string>

#include "hmk/runtime/module.hpp"

namespace hmk::tools {

struct InjectOptions {
    std::string file;            ///< the system description
    std::uint64_t seed = 1;      ///< the campaign is a function of it
    std::uint64_t faults = 100;  ///< how many
    double duration_s = 0;       ///< > 0: stop after this long, whatever is left
    std::int64_t only = -1;      ///< >= 0: that fault alone (to reproduce an escape)
    std::string classes = "crash,garbage,flood";  ///< fault classes, comma-separated
    std::uint32_t settle_ms = 5000;               ///< how long the system may take to recover
    bool json = false;                            ///< a JSON summary on stdout
    std::string log;  ///< the system's log goes here ("": kept in memory)
};

/// Boots the system, injects the faults one after another and checks the
/// invariants after each. Exit status: 0 no escape, 1 escapes, 2 bad
/// input or a system that does not boot.
int run_inject(const InjectOptions& options, Registry& registry);

}  // namespace hmk::tools
