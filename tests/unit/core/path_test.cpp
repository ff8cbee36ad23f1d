// SPDX-License-Identifier: Apache-2.0
#include "hmk/path.hpp"

#include <gtest/gtest.h>

#include <string>

namespace hmk {
namespace {

TEST(PathTest, AcceptsModulePaths) {
    for (const char* p : {"/", "/a", "/apps/app1/worker0", "/x-y_z.1/B"})
        EXPECT_TRUE(is_valid_path(p)) << p;
}

TEST(PathTest, RejectsEachKindOfBadPath) {
    struct Case {
        std::string path;
        PathError why;
    };
    const Case cases[] = {
        {"", PathError::empty},
        {"apps", PathError::not_absolute},
        {"/apps/", PathError::empty_segment},
        {"//apps", PathError::empty_segment},
        {"/ap ps", PathError::bad_character},
        {"/apps/..", PathError::dot_segment},
        {"/" + std::string(300, 'a'), PathError::too_long},
        {"/" + std::string(64, 'a'), PathError::name_too_long},
    };
    for (const auto& c : cases) {
        PathError why{};
        EXPECT_FALSE(is_valid_path(c.path, &why)) << c.path;
        EXPECT_EQ(why, c.why) << c.path;
    }
}

TEST(PathTest, ParentAndBaseName) {
    EXPECT_EQ(parent_path("/a/b/c"), "/a/b");
    EXPECT_EQ(parent_path("/a"), "/");
    EXPECT_EQ(base_name("/a/b/c"), "c");
    EXPECT_EQ(base_name("/"), "");
}

}  // namespace
}  // namespace hmk
