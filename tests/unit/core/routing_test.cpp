// SPDX-License-Identifier: Apache-2.0
// Routing through gateways, checked by simulating every bus of a tree with the
// same decisions the runtime makes (core's route() and is_for()).
#include "hmk/routing.hpp"

#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <random>
#include <set>

#include "random_tree.hpp"

namespace hmk {
namespace {

struct Outcome {
    std::map<ModuleId, int> delivered;  // handler calls per module
    std::vector<BusId> buses;           // buses the message was published on, in order
    int denied = 0;
};

// Publishes `h` on `bus` and lets every attached module react, until quiet.
Outcome simulate(const Topology& t, Header h, BusId first_bus, const UpPolicy& policy = {}) {
    Outcome out;
    std::deque<std::pair<BusId, Header>> queue{{first_bus, h}};
    while (!queue.empty()) {
        auto [bus, msg] = queue.front();
        queue.pop_front();
        out.buses.push_back(bus);
        for (ModuleId m : t.attached(bus)) {
            const TopologyNode* n = t.find(m);
            if (n->is_gateway()) {
                const Side side = bus == m ? Side::child_bus : Side::parent_bus;
                const Forward f = route(t, m, side, msg, policy);
                if (f.denied) ++out.denied;
                Header copy = msg;
                copy.via = m;
                copy.hops = static_cast<std::uint8_t>(msg.hops + 1);
                if (f.up) queue.emplace_back(n->parent, copy);
                if (f.down) queue.emplace_back(m, copy);
            }
            if (is_for(m, msg)) ++out.delivered[m];
        }
    }
    return out;
}

Header from(ModuleId sender, ModuleId destination, Scope scope = Scope::bus) {
    Header h;
    h.sender = sender;
    h.via = sender;
    h.destination = destination;
    h.scope = scope;
    return h;
}

// The bus a module sends an addressed message on (as the runtime's Env::send does).
BusId first_bus(const Topology& t, ModuleId sender, ModuleId destination) {
    const auto buses = t.route_buses(sender, destination);
    return buses.empty() ? t.home_bus(sender) : buses.front();
}

std::set<BusId> expected_buses(const Topology& t, BusId home, Scope scope) {
    std::set<BusId> out;
    switch (scope) {
        case Scope::bus:
            out.insert(home);
            break;
        case Scope::up:
            for (BusId b = home; b != k_no_module; b = t.find(b)->parent) out.insert(b);
            break;
        case Scope::subtree:
        case Scope::system:
            for (const auto& n : t.nodes()) {
                if (n.is_gateway() && (scope == Scope::system || t.in_subtree(n.id, home)))
                    out.insert(n.id);
            }
            break;
    }
    return out;
}

TEST(RoutingTest, GatewayForwardsAddressedMessagesAlongThePath) {
    const auto t =
        Topology::build({{0, "/a", Role::gateway}, {0, "/a/x", Role::leaf}, {0, "/b", Role::leaf}});
    ASSERT_TRUE(t.has_value());
    const ModuleId a = t->find("/a")->id, x = t->find("/a/x")->id, b = t->find("/b")->id;
    // b -> x, seen by /a on its parent bus: down.
    Forward f = route(*t, a, Side::parent_bus, from(b, x));
    EXPECT_TRUE(f.down);
    EXPECT_FALSE(f.up);
    // x -> b, seen by /a on its child bus: up.
    f = route(*t, a, Side::child_bus, from(x, b));
    EXPECT_TRUE(f.up);
    EXPECT_FALSE(f.down);
    // x -> a: for the gateway itself, no forwarding.
    f = route(*t, a, Side::child_bus, from(x, a));
    EXPECT_FALSE(f.up || f.down);
    // Its own forwarded copy is never routed again.
    Header own = from(b, x);
    own.via = a;
    own.hops = 1;
    f = route(*t, a, Side::child_bus, own);
    EXPECT_FALSE(f.up || f.down);
}

TEST(RoutingTest, UpPolicyHoldsBackWhatChildrenMayNotSendOut) {
    const auto t =
        Topology::build({{0, "/a", Role::gateway}, {0, "/a/x", Role::leaf}, {0, "/b", Role::leaf}});
    ASSERT_TRUE(t.has_value());
    const ModuleId a = t->find("/a")->id, x = t->find("/a/x")->id, b = t->find("/b")->id;
    UpPolicy closed{false, false, false};
    Forward f = route(*t, a, Side::child_bus, from(x, b), closed);
    EXPECT_FALSE(f.up);
    EXPECT_TRUE(f.denied);
    f = route(*t, a, Side::child_bus,
              from(x, k_no_module, Scope::system));  // default policy: no system
    EXPECT_FALSE(f.up);
    EXPECT_TRUE(f.denied);
    f = route(*t, a, Side::child_bus, from(x, k_no_module, Scope::system),
              UpPolicy{true, true, true});
    EXPECT_TRUE(f.up);
}

TEST(RoutingTest, HopLimitStopsForwarding) {
    const auto t =
        Topology::build({{0, "/a", Role::gateway}, {0, "/a/x", Role::leaf}, {0, "/b", Role::leaf}});
    ASSERT_TRUE(t.has_value());
    Header h = from(t->find("/b")->id, t->find("/a/x")->id);
    h.hops = k_max_hops;
    EXPECT_FALSE(route(*t, t->find("/a")->id, Side::parent_bus, h).down);
}

// Property: in many random trees, an addressed message from any module to any
// other arrives exactly once at its destination, at no other handler, and
// crosses exactly the buses of the unique path.
TEST(RoutingPropertyTest, AddressedMessagesTakeTheUniquePathExactlyOnce) {
    std::mt19937 rng(2024);
    int pairs = 0;
    for (int round = 0; round < 150; ++round) {
        const auto t =
            Topology::build(testing::random_tree(rng, 2 + static_cast<std::size_t>(round % 30)));
        ASSERT_TRUE(t.has_value());
        for (const auto& src : t->nodes()) {
            for (const auto& dst : t->nodes()) {
                if (src.id == dst.id) continue;
                const Outcome o = simulate(*t, from(src.id, dst.id), first_bus(*t, src.id, dst.id));
                ASSERT_EQ(o.delivered.size(), 1u) << src.path << " -> " << dst.path;
                ASSERT_EQ(o.delivered.begin()->first, dst.id) << src.path << " -> " << dst.path;
                ASSERT_EQ(o.delivered.begin()->second, 1) << src.path << " -> " << dst.path;
                ASSERT_EQ(o.buses, t->route_buses(src.id, dst.id))
                    << src.path << " -> " << dst.path;
                ++pairs;
            }
        }
    }
    EXPECT_GT(pairs, 10000);
}

// Property: each broadcast scope reaches exactly the modules attached to the
// expected buses, each exactly once, and each bus carries it once.
TEST(RoutingPropertyTest, EachScopeReachesExactlyItsBuses) {
    std::mt19937 rng(99);
    const UpPolicy open{true, true, true};
    for (int round = 0; round < 150; ++round) {
        const auto t =
            Topology::build(testing::random_tree(rng, 1 + static_cast<std::size_t>(round % 30)));
        ASSERT_TRUE(t.has_value());
        for (const auto& src : t->nodes()) {
            for (Scope scope : {Scope::bus, Scope::subtree, Scope::up, Scope::system}) {
                const BusId home = t->home_bus(src.id);
                const Outcome o = simulate(*t, from(src.id, k_no_module, scope), home, open);
                const std::set<BusId> want = expected_buses(*t, home, scope);
                const std::set<BusId> got(o.buses.begin(), o.buses.end());
                ASSERT_EQ(got, want) << src.path << " scope " << to_string(scope);
                ASSERT_EQ(o.buses.size(), want.size()) << "a bus carried it twice: " << src.path;
                std::set<ModuleId> reached;
                for (BusId b : want) {
                    for (ModuleId m : t->attached(b)) reached.insert(m);
                }
                ASSERT_EQ(o.delivered.size(), reached.size())
                    << src.path << " scope " << to_string(scope);
                for (const auto& [m, count] : o.delivered) {
                    ASSERT_TRUE(reached.count(m)) << t->find(m)->path;
                    ASSERT_EQ(count, 1) << t->find(m)->path << " got it " << count << " times";
                }
            }
        }
    }
}

}  // namespace
}  // namespace hmk
