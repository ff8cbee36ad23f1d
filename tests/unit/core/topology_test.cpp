// SPDX-License-Identifier: Apache-2.0
#include "hmk/topology.hpp"

#include <gtest/gtest.h>

#include <random>

#include "random_tree.hpp"

namespace hmk {
namespace {

std::vector<ModuleDecl> figure1() {
    return {
        {0, "/apps", Role::gateway},      {0, "/apps/app1", Role::gateway},
        {0, "/apps/app1/w", Role::leaf},  {0, "/apps/app2", Role::gateway},
        {0, "/fs", Role::leaf},           {0, "/drivers", Role::gateway},
        {0, "/drivers/disk", Role::leaf},
    };
}

TEST(TopologyTest, BuildsTheTreeWithLevelsAndParents) {
    const auto t = Topology::build(figure1());
    ASSERT_TRUE(t.has_value()) << t.error().detail;
    EXPECT_EQ(t->size(), 8u);
    EXPECT_EQ(t->root().path, "/");
    EXPECT_EQ(t->root().id, k_root_id);
    EXPECT_EQ(t->find("/apps/app1/w")->level, 3u);
    EXPECT_EQ(t->find("/drivers")->level, 1u);
    EXPECT_EQ(t->find("/drivers/disk")->parent, t->find("/drivers")->id);
    EXPECT_EQ(t->find("/fs")->parent, k_root_id);
    EXPECT_EQ(t->root().children.size(), 3u);
}

TEST(TopologyTest, AssignsIdsInDeclarationOrderAfterExplicitOnes) {
    auto decls = figure1();
    decls[4].id = 50;  // /fs
    const auto t = Topology::build(decls);
    ASSERT_TRUE(t.has_value());
    EXPECT_EQ(t->find("/fs")->id, 50u);
    EXPECT_EQ(t->find("/apps")->id, 51u);
    EXPECT_EQ(t->find("/drivers/disk")->id, 56u);
}

TEST(TopologyTest, NodesArePreorderParentsFirst) {
    const auto t = Topology::build(figure1());
    ASSERT_TRUE(t.has_value());
    for (const auto& n : t->nodes()) {
        if (n.parent == k_no_module) continue;
        EXPECT_LT(t->find(n.parent)->pre, n.pre) << n.path;
    }
}

TEST(TopologyTest, SubtreeMembership) {
    const auto t = Topology::build(figure1());
    ASSERT_TRUE(t.has_value());
    auto id = [&](const char* p) { return t->find(p)->id; };
    EXPECT_TRUE(t->in_subtree(id("/apps/app1/w"), id("/apps")));
    EXPECT_TRUE(t->in_subtree(id("/apps"), id("/apps")));
    EXPECT_FALSE(t->in_subtree(id("/apps"), id("/apps/app1")));
    EXPECT_FALSE(t->in_subtree(id("/fs"), id("/apps")));
    EXPECT_TRUE(t->in_subtree(id("/fs"), k_root_id));
}

TEST(TopologyTest, RouteBusesFollowTheUniquePath) {
    const auto t = Topology::build(figure1());
    ASSERT_TRUE(t.has_value());
    auto id = [&](const char* p) { return t->find(p)->id; };
    // worker -> disk: up its bus (/apps/app1), /apps, Bus 0, then down /drivers.
    EXPECT_EQ(t->route_buses(id("/apps/app1/w"), id("/drivers/disk")),
              (std::vector<BusId>{id("/apps/app1"), id("/apps"), k_root_id, id("/drivers")}));
    EXPECT_EQ(t->route_buses(id("/fs"), id("/drivers")), (std::vector<BusId>{k_root_id}));
    EXPECT_EQ(t->route_buses(k_root_id, id("/apps/app1/w")),
              (std::vector<BusId>{k_root_id, id("/apps"), id("/apps/app1")}));
    // A gateway reaches its descendants on its own child bus.
    EXPECT_EQ(t->route_buses(id("/apps"), id("/apps/app1/w")),
              (std::vector<BusId>{id("/apps"), id("/apps/app1")}));
}

struct BadTree {
    const char* name;
    std::vector<ModuleDecl> decls;
    TopologyError::Kind kind;
    friend void PrintTo(const BadTree& c, std::ostream* os) { *os << c.name; }
};

class TopologyErrorTest : public ::testing::TestWithParam<BadTree> {};

TEST_P(TopologyErrorTest, IsRejected) {
    const auto t = Topology::build(GetParam().decls);
    ASSERT_FALSE(t.has_value());
    EXPECT_EQ(t.error().kind, GetParam().kind) << t.error().detail;
    EXPECT_FALSE(t.error().detail.empty());
}

INSTANTIATE_TEST_SUITE_P(
    EveryInvariant, TopologyErrorTest,
    ::testing::Values(
        BadTree{"bad_path", {{0, "/a//b", Role::leaf}}, TopologyError::Kind::bad_path},
        BadTree{"duplicate_path",
                {{0, "/a", Role::leaf}, {0, "/a", Role::gateway}},
                TopologyError::Kind::duplicate_path},
        BadTree{"duplicate_id",
                {{7, "/a", Role::leaf}, {7, "/b", Role::leaf}},
                TopologyError::Kind::duplicate_id},
        BadTree{"root_id", {{k_root_id, "/a", Role::leaf}}, TopologyError::Kind::bad_id},
        BadTree{"missing_parent", {{0, "/a/b", Role::leaf}}, TopologyError::Kind::missing_parent},
        BadTree{"parent_not_gateway",
                {{0, "/a", Role::leaf}, {0, "/a/b", Role::leaf}},
                TopologyError::Kind::parent_not_gateway},
        BadTree{"root_declared", {{0, "/", Role::gateway}}, TopologyError::Kind::root_declared}),
    [](const auto& p) { return std::string(p.param.name); });

TEST(TopologyTest, RandomTreesKeepTheInvariants) {
    std::mt19937 rng(7);
    for (int round = 0; round < 200; ++round) {
        const auto decls = testing::random_tree(rng, 1 + static_cast<std::size_t>(round % 60));
        const auto t = Topology::build(decls);
        ASSERT_TRUE(t.has_value()) << t.error().detail;
        std::size_t attached_total = 0;
        for (const auto& n : t->nodes()) {
            if (n.id == k_root_id) {
                EXPECT_EQ(n.parent, k_no_module);
                EXPECT_EQ(n.level, 0u);
            } else {
                const TopologyNode* p = t->find(n.parent);
                ASSERT_NE(p, nullptr);
                EXPECT_TRUE(p->is_gateway());
                EXPECT_EQ(n.level, p->level + 1);
                EXPECT_EQ(std::count(p->children.begin(), p->children.end(), n.id), 1);
            }
            if (n.is_gateway()) attached_total += t->attached(n.id).size() - 1;
        }
        EXPECT_EQ(attached_total, t->size() - 1) << "every module but the root on exactly one bus";
    }
}

TEST(TopologyTest, MovingASubtreeKeepsIdsAndRenamesItsPaths) {
    const auto t = Topology::build({{10, "/a", Role::gateway},
                                    {11, "/a/g", Role::gateway},
                                    {12, "/a/g/x", Role::leaf},
                                    {13, "/b", Role::gateway},
                                    {14, "/b/y", Role::leaf}});
    ASSERT_TRUE(t.has_value());
    const auto m = t->moved(11, 13);
    ASSERT_TRUE(m.has_value()) << m.error();
    EXPECT_EQ(m->find(11)->path, "/b/g");
    EXPECT_EQ(m->find(12)->path, "/b/g/x");
    EXPECT_EQ(m->find(12)->level, 3u);
    EXPECT_EQ(m->find(11)->parent, 13u);
    EXPECT_EQ(m->find(13)->children.back(), 11u);  // the newcomer is the last child
    EXPECT_TRUE(m->in_subtree(12, 13));
    EXPECT_FALSE(m->in_subtree(12, 10));
    EXPECT_EQ(m->find("/a/g"), nullptr);
    EXPECT_EQ(t->find(11)->path, "/a/g");  // the original is untouched

    const auto up = t->moved(12, k_root_id);
    ASSERT_TRUE(up.has_value()) << up.error();
    EXPECT_EQ(up->find(12)->path, "/x");
    EXPECT_EQ(up->find(12)->level, 1u);

    EXPECT_NE(t->moved(10, 12).error().find("not a gateway"), std::string::npos);
    EXPECT_NE(t->moved(10, 11).error().find("own subtree"), std::string::npos);
    EXPECT_NE(t->moved(12, 11).error().find("already"), std::string::npos);
    EXPECT_NE(t->moved(k_root_id, 13).error().find("microkernel"), std::string::npos);
    const auto clash = Topology::build({{10, "/a", Role::gateway},
                                        {11, "/a/x", Role::leaf},
                                        {12, "/b", Role::gateway},
                                        {13, "/b/x", Role::leaf}});
    EXPECT_NE(clash->moved(11, 12).error().find("/b/x exists already"), std::string::npos);
}

}  // namespace
}  // namespace hmk
