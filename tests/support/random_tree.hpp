// SPDX-License-Identifier: Apache-2.0
// Random module trees for property tests.
#pragma once

#include <random>
#include <string>
#include <vector>

#include "hmk/topology.hpp"

namespace hmk::testing {

/// Declarations of a random tree of `modules` modules below the root; each new
/// module hangs under a random gateway (or the root) and is a gateway itself
/// with probability `gateway_share`.
inline std::vector<ModuleDecl> random_tree(std::mt19937& rng, std::size_t modules,
                                           double gateway_share = 0.4) {
    std::vector<ModuleDecl> decls;
    std::vector<std::string> gateways{"/"};
    std::bernoulli_distribution is_gateway(gateway_share);
    for (std::size_t i = 0; i < modules; ++i) {
        const std::string& parent =
            gateways[std::uniform_int_distribution<std::size_t>(0, gateways.size() - 1)(rng)];
        ModuleDecl d;
        d.path = (parent == "/" ? "" : parent) + "/m" + std::to_string(i);
        d.role = is_gateway(rng) ? Role::gateway : Role::leaf;
        if (d.role == Role::gateway) gateways.push_back(d.path);
        decls.push_back(d);
    }
    return decls;
}

}  // namespace hmk::testing
