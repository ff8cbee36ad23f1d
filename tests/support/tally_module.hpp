// SPDX-License-Identifier: Apache-2.0
#pragma once

#include "hmk/runtime/module.hpp"

namespace hmk::testing {

/// Adds the `tally` test kind, versions 1 to 5 (tally_module.cpp).
void add_tally(Registry& registry);

}  // namespace hmk::testing
