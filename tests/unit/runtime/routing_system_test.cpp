// SPDX-License-Identifier: Apache-2.0
// Routing through a real booted system: random trees of recording modules on
// in-process buses. Every message's path is read back from what the modules
// on each bus saw.
#include <gtest/gtest.h>

#include <fmt/core.h>

#include <random>
#include <set>

#include "random_tree.hpp"
#include "recorder.hpp"

namespace hmk {
namespace {

std::string toml_for(const std::vector<ModuleDecl>& decls) {
    std::string t = "[bus]\ncapacity = 8192\n";
    for (const auto& d : decls) {
        t += fmt::format("[[module]]\npath = \"{}\"\nkind = \"{}\"\n", d.path,
                         d.role == Role::gateway ? "recgw" : "rec");
        if (d.role == Role::gateway) t += "bus = { capacity = 8192, up = { system = true } }\n";
    }
    return t;
}

// True once every module has read everything on its bus(es).
bool quiet(const System& sys) {
    std::map<BusId, std::uint64_t> published;
    for (const BusStats& b : sys.bus_stats()) published[b.id] = b.published;
    for (const TopologyNode& n : sys.topology().nodes()) {
        std::uint64_t total = n.parent != k_no_module ? published[n.parent] : 0;
        if (n.is_gateway()) total += published[n.id];
        if (sys.module_stats(n.id).seen != total) return false;
    }
    return true;
}

std::set<BusId> scope_buses(const Topology& t, BusId home, Scope scope) {
    std::set<BusId> out;
    for (const auto& n : t.nodes()) {
        if (!n.is_gateway()) continue;
        const bool in = scope == Scope::system ||
                        (scope == Scope::subtree && t.in_subtree(n.id, home)) ||
                        (scope == Scope::up && t.in_subtree(home, n.id)) ||
                        (scope == Scope::bus && n.id == home);
        if (in) out.insert(n.id);
    }
    return out;
}

TEST(RoutingSystemTest, RandomTreesDeliverAlongTheUniquePathAndWithinScope) {
    std::mt19937 rng(31337);
    int checked = 0;
    for (int round = 0; round < 12; ++round) {
        auto decls = testing::random_tree(rng, 4 + static_cast<std::size_t>(round));
        // A gateway skips its own forwarded copies, so a bus with only its owner
        // would carry messages nobody records: give every bus a probe.
        const auto tree = decls;
        for (const auto& d : tree) {
            if (d.role == Role::gateway) decls.push_back({0, d.path + "/probe", Role::leaf});
        }
        testing::RecordBook book;
        Registry reg = testing::test_registry(book);
        auto b = testing::boot(toml_for(decls), reg);
        const Topology& t = b->topology();
        const auto& nodes = t.nodes();
        std::uniform_int_distribution<std::size_t> pick(0, nodes.size() - 1);

        struct Sent {
            ModuleId from, to;
            Scope scope;
            std::uint64_t corr;
        };
        std::vector<Sent> sent;
        std::uint64_t corr = 1000;
        for (int i = 0; i < 40; ++i) {
            const ModuleId from = nodes[pick(rng)].id, to = nodes[pick(rng)].id;
            if (from == to) continue;
            Outgoing out;
            out.destination = to;
            out.correlation = ++corr;
            ASSERT_TRUE(b->system->inject(out, from).has_value());
            sent.push_back({from, to, Scope::bus, corr});
        }
        for (Scope scope : {Scope::bus, Scope::subtree, Scope::up, Scope::system}) {
            for (int i = 0; i < 3; ++i) {
                Outgoing out;
                out.scope = scope;
                out.correlation = ++corr;
                const ModuleId from = nodes[pick(rng)].id;
                ASSERT_TRUE(b->system->inject(out, from).has_value());
                sent.push_back({from, k_no_module, scope, corr});
            }
        }
        ASSERT_TRUE(testing::eventually([&] { return quiet(*b->system); })) << "round " << round;
        b->system->stop();
        const auto records = book.all();

        for (const Sent& s : sent) {
            std::set<BusId> buses;
            std::map<ModuleId, int> handled, addressed;
            for (const auto& [module, list] : records) {
                for (const testing::Record& r : list) {
                    if (r.header.sender != s.from || r.header.correlation != s.corr) continue;
                    buses.insert(r.header.bus);
                    ++handled[module];
                    if (r.addressed_to_me) ++addressed[module];
                }
            }
            const std::string what =
                fmt::format("round {} {} -> {}", round, t.find(s.from)->path,
                            s.to ? t.find(s.to)->path : std::string("*") + to_string(s.scope));
            if (s.to != k_no_module) {
                const auto path = t.route_buses(s.from, s.to);
                EXPECT_EQ(buses, std::set<BusId>(path.begin(), path.end())) << what;
                if (s.to != k_root_id) {
                    EXPECT_EQ(addressed.size(), 1u) << what;
                    EXPECT_EQ(addressed[s.to], 1) << what << ": not delivered exactly once";
                }
            } else {
                const auto want = scope_buses(t, t.home_bus(s.from), s.scope);
                EXPECT_EQ(buses, want) << what;
                std::set<ModuleId> reached;
                for (BusId bus : want) {
                    for (ModuleId m : t.attached(bus)) {
                        if (m != k_root_id) reached.insert(m);
                    }
                }
                EXPECT_EQ(handled.size(), reached.size()) << what;
                for (ModuleId m : reached)
                    EXPECT_EQ(handled[m], 1) << what << " at " << t.find(m)->path;
            }
            ++checked;
        }
    }
    EXPECT_GT(checked, 400);
}

}  // namespace
}  // namespace hmk
