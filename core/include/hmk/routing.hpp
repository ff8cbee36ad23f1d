// SPDX-License-Identifier: Apache-2.0
#pragma once

#include "hmk/header.hpp"
#include "hmk/topology.hpp"

namespace hmk {

/// Which of its two buses a gateway saw a message on.
enum class Side : std::uint8_t { parent_bus, child_bus };

/// What a gateway lets its children send out of its child bus (DESIGN.md section 3).
struct UpPolicy {
    bool addressed = true;  ///< addressed messages to modules outside the subtree
    bool up = true;         ///< broadcasts of scope `up`
    bool system = false;    ///< broadcasts of scope `system`
};

/// The forwarding decision of one gateway for one message.
struct Forward {
    bool up = false;      ///< copy onto the gateway's parent bus
    bool down = false;    ///< copy onto the gateway's child bus
    bool denied = false;  ///< would go up, but the gateway's policy forbids it
};

/// True when `header` on a bus attached to `self` is a copy that `self`
/// forwarded there itself; such a copy is neither delivered nor routed again.
inline bool is_own_forward(ModuleId self, const Header& header) {
    return header.via == self && header.hops > 0;
}

/// True when the module `self` should hand `header` to its handler: it is
/// addressed to `self` or a broadcast, and not `self`'s own forwarded copy.
inline bool is_for(ModuleId self, const Header& header) {
    if (is_own_forward(self, header)) return false;
    return header.destination == k_no_module || header.destination == self;
}

/// Decides where gateway `gateway` forwards `header`, seen on `side`.
/// Follows the unique tree path for addressed messages and the scope for
/// broadcasts; never sends a message back the way it came, so every module
/// receives each message at most once. Allocation-free.
Forward route(const Topology& topology, ModuleId gateway, Side side, const Header& header,
              const UpPolicy& policy = {});

}  // namespace hmk
