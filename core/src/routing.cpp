// SPDX-License-Identifier: Apache-2.0
#include "hmk/routing.hpp"

#include "hmk/message_types.hpp"

namespace hmk {

Forward route(const Topology& topology, ModuleId gateway, Side side, const Header& h,
              const UpPolicy& policy) {
    Forward f;
    if (is_own_forward(gateway, h) || h.hops >= k_max_hops) return f;
    const TopologyNode* self = topology.find(gateway);
    if (self == nullptr || !self->is_gateway()) return f;
    const bool has_parent = self->parent != k_no_module;

    if (side == Side::parent_bus) {
        // From above (or a sibling): only ever down.
        if (h.is_broadcast()) {
            f.down = h.scope == Scope::subtree || h.scope == Scope::system;
        } else {
            f.down = h.destination != gateway && topology.in_subtree(h.destination, gateway);
        }
        return f;
    }

    // Seen on the child bus, which this gateway owns: only ever up.
    if (!has_parent) return f;
    bool wants_up = false;
    bool allowed = false;
    if (h.is_broadcast()) {
        wants_up = h.scope == Scope::up || h.scope == Scope::system;
        allowed = h.scope == Scope::up ? policy.up : policy.system;
    } else {
        wants_up =
            !topology.in_subtree(h.destination, gateway) && topology.find(h.destination) != nullptr;
        allowed = policy.addressed;
    }
    // The gateway itself is trusted by its parent to speak for itself; and a
    // handoff (a module moving elsewhere) is the runtime's own business: only
    // the runtime sends those, and a module host may send only its own.
    if ((h.sender == gateway && h.hops == 0) || h.type == msg::k_handoff) allowed = true;
    f.up = wants_up && allowed;
    f.denied = wants_up && !allowed;
    return f;
}

}  // namespace hmk
