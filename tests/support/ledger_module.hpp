// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <span>

#include "hmk/ids.hpp"
#include "hmk/runtime/module.hpp"

namespace hmk::testing {

/// Adds the `ledger` test kind (ledger_module.cpp).
void add_ledger(Registry& registry);

/// The ledger's digest after one data message / one timer tick: the test's
/// reference computes the same from the journal.
std::uint32_t ledger_step(std::uint32_t digest, ModuleId sender, std::uint64_t correlation,
                          std::uint64_t time_ns, std::span<const std::byte> payload);
std::uint32_t ledger_tick(std::uint32_t digest, std::uint64_t time_ns);

}  // namespace hmk::testing
