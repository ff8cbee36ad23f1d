// SPDX-License-Identifier: Apache-2.0
#include "hmk/runtime/config.hpp"

#include <gtest/gtest.h>

#include <filesystem>

namespace hmk {
namespace {

Registry& standard() {
    static Registry r = [] {
        Registry x;
        register_standard_modules(x);
        return x;
    }();
    return r;
}

TEST(ConfigTest, LoadsAValidSystem) {
    const auto spec = parse_system(R"(
[system]
name = "t"
[bus]
capacity = 64
reader_deadline_ms = 250
[[module]]
path = "/g"
kind = "gateway"
bus = { capacity = 128, max_payload = 100, up = { system = true }, delivery = "best_effort" }
[[module]]
path = "/g/src"
kind = "source"
id = 40
config = { to = "/g", count = 3, rate = 2.5, scope = "subtree" }
)",
                                   "t.toml", standard());
    ASSERT_TRUE(spec.has_value()) << spec.error().to_string();
    EXPECT_EQ(spec->name, "t");
    EXPECT_EQ(spec->root_bus.capacity, 64u);
    ASSERT_EQ(spec->modules.size(), 2u);
    EXPECT_EQ(spec->modules[0].bus.capacity, 128u);
    EXPECT_EQ(spec->modules[0].bus.max_payload, 100u);
    EXPECT_TRUE(spec->modules[0].bus.up.system);
    EXPECT_EQ(spec->root_bus.delivery, Delivery::reliable);  // the default
    EXPECT_EQ(spec->root_bus.reader_deadline_ms, 250u);
    EXPECT_EQ(spec->modules[0].bus.delivery, Delivery::best_effort);
    EXPECT_EQ(spec->modules[0].bus.reader_deadline_ms, 5000u);  // the default
    EXPECT_EQ(spec->modules[1].id, 40u);
    EXPECT_EQ(spec->modules[1].config.integer("count"), 3);
    EXPECT_DOUBLE_EQ(spec->modules[1].config.number("rate"), 2.5);
    EXPECT_EQ(spec->modules[1].config.string("payload"), "tick");  // default filled in
    EXPECT_EQ(spec->topology.find("/g/src")->level, 2u);
}

// The default name is the directory's, however the path to the file is spelt.
TEST(ConfigTest, TheDefaultNameIsTheDirectorysHoweverThePathIsSpelt) {
    const std::string here = std::filesystem::current_path().filename().string();
    const std::string up = std::filesystem::current_path().parent_path().filename().string();
    for (const std::string& file : {std::string("noname.toml"), std::string("./noname.toml"),
                                    std::filesystem::current_path().string() + "/noname.toml",
                                    std::string("x/../noname.toml")}) {
        const auto spec = parse_system("", file, standard());
        ASSERT_TRUE(spec) << spec.error().to_string();
        EXPECT_EQ(spec->name, here) << file;
    }
    const auto spec = parse_system("", "../noname.toml", standard());
    ASSERT_TRUE(spec) << spec.error().to_string();
    EXPECT_EQ(spec->name, up);
    const auto root = parse_system("", "/noname.toml", standard());
    ASSERT_TRUE(root) << root.error().to_string();
    EXPECT_EQ(root->name, "system");
}

struct BadConfig {
    const char* name;
    const char* toml;
    const char* location;  // "FILE:LINE:COL" prefix the error must start with
    const char* says;      // text the message must contain
    friend void PrintTo(const BadConfig& c, std::ostream* os) { *os << c.name; }
};

class ConfigErrorTest : public ::testing::TestWithParam<BadConfig> {};

TEST_P(ConfigErrorTest, NamesFileLineColumnAndReason) {
    const auto spec = parse_system(GetParam().toml, "bad.toml", standard());
    ASSERT_FALSE(spec.has_value());
    const std::string text = spec.error().to_string();
    EXPECT_EQ(text.rfind(std::string(GetParam().location) + ": error: ", 0), 0u) << text;
    EXPECT_NE(text.find(GetParam().says), std::string::npos) << text;
}

INSTANTIATE_TEST_SUITE_P(
    EveryErrorKind, ConfigErrorTest,
    ::testing::Values(
        BadConfig{"syntax", "[system\nname = 1\n", "bad.toml:1:8", ""},
        BadConfig{"unknown_top_key", "colour = 1\n", "bad.toml:1:10", "unknown key 'colour'"},
        BadConfig{"unknown_module_key", "[[module]]\npath = \"/a\"\nkind = \"echo\"\nspeed = 3\n",
                  "bad.toml:4:9", "unknown key 'speed'"},
        BadConfig{"unknown_version", "[[module]]\npath = \"/a\"\nkind = \"echo\"\nversion = 7\n",
                  "bad.toml:4:11", "kind 'echo' has no version 7 (it has 1)"},
        BadConfig{"wrong_type", "[[module]]\npath = 5\nkind = \"echo\"\n", "bad.toml:2:8",
                  "'path' must be a string, not an integer"},
        BadConfig{"duplicate_path",
                  "[[module]]\npath = \"/a\"\nkind = \"echo\"\n[[module]]\npath = \"/a\"\nkind = "
                  "\"sink\"\n",
                  "bad.toml:5:8", "first declared at bad.toml:1:1"},
        BadConfig{"under_non_gateway",
                  "[[module]]\npath = \"/a\"\nkind = \"echo\"\n[[module]]\npath = \"/a/b\"\nkind = "
                  "\"sink\"\n",
                  "bad.toml:5:8", "not a gateway"},
        BadConfig{"missing_parent", "[[module]]\npath = \"/x/b\"\nkind = \"sink\"\n",
                  "bad.toml:2:8", "parent /x is not declared"},
        BadConfig{"missing_kind", "[[module]]\npath = \"/a\"\nkind = \"nosuch\"\n", "bad.toml:3:8",
                  "no module kind 'nosuch'"},
        BadConfig{"no_kind", "[[module]]\npath = \"/a\"\n", "bad.toml:1:1", "needs a 'kind'"},
        BadConfig{"bad_path", "[[module]]\npath = \"/a//b\"\nkind = \"echo\"\n", "bad.toml:2:8",
                  "bad module path"},
        BadConfig{"root_declared", "[[module]]\npath = \"/\"\nkind = \"gateway\"\n", "bad.toml:2:8",
                  "microkernel"},
        BadConfig{"duplicate_id",
                  "[[module]]\npath = \"/a\"\nkind = \"echo\"\nid = 9\n[[module]]\npath = "
                  "\"/b\"\nkind = \"echo\"\nid = 9\n",
                  "bad.toml:8:6", "already used by /a"},
        BadConfig{"bad_isolation",
                  "[[module]]\npath = \"/a\"\nkind = \"echo\"\nisolation = \"vm\"\n",
                  "bad.toml:4:13", "must be one of: inproc, process"},
        BadConfig{"bus_on_leaf",
                  "[[module]]\npath = \"/a\"\nkind = \"echo\"\nbus = { capacity = 8 }\n",
                  "bad.toml:4:7", "not a gateway and owns no bus"},
        BadConfig{"capacity_not_power_of_two", "[bus]\ncapacity = 100\n", "bad.toml:2:12",
                  "power of two"},
        BadConfig{"payload_too_big", "[bus]\nmax_payload = 2000000\n", "bad.toml:2:15",
                  "between 0 and 1048576"},
        BadConfig{"delivery_unknown", "[bus]\ndelivery = \"sometimes\"\n", "bad.toml:2:12",
                  "must be one of: reliable, best_effort"},
        BadConfig{"reader_deadline_too_short",
                  "[[module]]\npath = \"/g\"\nkind = \"gateway\"\nbus = { reader_deadline_ms = 1 "
                  "}\n",
                  "bad.toml:4:30", "must be between 10 and 3600000"},
        BadConfig{"ring_too_big", "[bus]\ncapacity = 1048576\nmax_payload = 1048576\n",
                  "bad.toml:1:1", "the ring of Bus 0 (1048576 slots of up to 1048576 bytes)"},
        BadConfig{"rings_too_big_together",
                  "[bus]\ncapacity = 65536\nmax_payload = 16384\n[[module]]\npath = \"/g\"\n"
                  "kind = \"gateway\"\nbus = { capacity = 65536, max_payload = 65536 }\n",
                  "bad.toml:7:7", "in all: at most 4096 MiB"},
        BadConfig{"empty_file_name",
                  "[[module]]\npath = \"/mon\"\nkind = \"monitor\"\nconfig = { dir = \"\" }\n",
                  "bad.toml:4:18", "'dir' is empty: it needs a file name"},
        BadConfig{
            "tap_skip_misspelt",
            "[[module]]\npath = \"/t\"\nkind = \"tap\"\nconfig = { skip = \"ping, blokc\" }\n",
            "bad.toml:4:19", "'skip': unknown message type 'blokc'"},
        BadConfig{"root_up_policy", "[bus]\nup = { system = true }\n", "bad.toml:2:6",
                  "Bus 0 has no parent"},
        BadConfig{"unknown_config_key",
                  "[[module]]\npath = \"/a\"\nkind = \"source\"\nconfig = { speed = 1 }\n",
                  "bad.toml:4:20", "has no config key 'speed'"},
        BadConfig{"config_wrong_type",
                  "[[module]]\npath = \"/a\"\nkind = \"source\"\nconfig = { count = \"ten\" }\n",
                  "bad.toml:4:20", "'count' must be an integer, not a string"},
        BadConfig{"config_out_of_range",
                  "[[module]]\npath = \"/a\"\nkind = \"source\"\nconfig = { count = -1 }\n",
                  "bad.toml:4:20", "must be between 0 and"},
        BadConfig{"config_choice",
                  "[[module]]\npath = \"/a\"\nkind = \"source\"\nconfig = { scope = \"world\" }\n",
                  "bad.toml:4:20", "must be one of: bus, subtree, up, system"},
        BadConfig{"config_path_unknown",
                  "[[module]]\npath = \"/a\"\nkind = \"source\"\nconfig = { to = \"/nowhere\" }\n",
                  "bad.toml:4:17", "/nowhere, which is not a module"},
        BadConfig{"journal_in_process_gateway",
                  "[[module]]\npath = \"/a\"\nkind = \"gateway\"\nisolation = \"process\"\n"
                  "[[module]]\npath = \"/a/m\"\nkind = \"monitor\"\nconfig = { dir = \"j\" }\n",
                  "bad.toml:5:1", "journals its bus inside gateway /a, which runs in a process"},
        BadConfig{"quota_on_gateway",
                  "[[module]]\npath = \"/a\"\nkind = \"gateway\"\nquota = { memory = 99999999 }\n",
                  "bad.toml:4:9", "a quota applies to modules in processes of their own"},
        BadConfig{"quota_unknown_key",
                  "[[module]]\npath = \"/a\"\nkind = \"echo\"\nisolation = \"process\"\nquota = { "
                  "disk = 1 }\n",
                  "bad.toml:5:18", "unknown key 'disk'"},
        BadConfig{"quota_cpu_too_small",
                  "[[module]]\npath = \"/a\"\nkind = \"echo\"\nquota = { cpu = 0.001 }\n",
                  "bad.toml:4:17", "'cpu' is 0.001, must be from 0.01 to 1024"},
        BadConfig{"grant_outside",
                  "[[module]]\npath = \"/a\"\nkind = \"echo\"\nisolation = \"process\"\n"
                  "grants = [{ dir = \"/etc\" }]\n",
                  "bad.toml:5:19", "grant \"/etc\" is not inside the system's directory"},
        BadConfig{
            "grant_by_unknown_key",
            "[[module]]\npath = \"/a\"\nkind = \"gateway\"\n[[module]]\npath = \"/a/m\"\n"
            "kind = \"monitor\"\nconfig = { dir = \"j\" }\ngrants = [{ file_key = \"fsync\" }]\n",
            "bad.toml:8:24", "kind 'monitor' has no file config key 'fsync' (its file keys: dir)"},
        BadConfig{"grant_on_gateway",
                  "[[module]]\npath = \"/a\"\nkind = \"gateway\"\ngrants = [{ dir = \"x\" }]\n",
                  "bad.toml:4:10", "grants are for the modules that use files"},
        BadConfig{"quota_too_little_memory",
                  "[[module]]\npath = \"/a\"\nkind = \"echo\"\nisolation = \"process\"\nquota = { "
                  "memory = 1000 }\n",
                  "bad.toml:5:20", "at least 67108864"},
        BadConfig{"recover_without_journal",
                  "[[module]]\npath = \"/g\"\nkind = \"gateway\"\n[[module]]\npath = \"/g/a\"\n"
                  "kind = \"echo\"\nrecover = \"journal\"\n",
                  "bad.toml:7:11", "its bus /g has none: add a monitor module on it"},
        BadConfig{"recover_unknown",
                  "[[module]]\npath = \"/a\"\nkind = \"echo\"\nrecover = \"memory\"\n",
                  "bad.toml:4:11", "must be one of: none, journal"},
        BadConfig{"recover_gateway",
                  "[[module]]\npath = \"/g\"\nkind = \"gateway\"\nrecover = \"journal\"\n",
                  "bad.toml:4:11", "only leaves that do not journal recover from the journal"},
        BadConfig{"snapshot_without_recover",
                  "[[module]]\npath = \"/a\"\nkind = \"echo\"\nsnapshot_every = 100\n",
                  "bad.toml:4:18", "add recover = \"journal\""},
        BadConfig{"two_journals",
                  "[[module]]\npath = \"/m1\"\nkind = \"monitor\"\nconfig = { dir = \"a\" }\n"
                  "[[module]]\npath = \"/m2\"\nkind = \"monitor\"\nconfig = { dir = \"b\" }\n",
                  "bad.toml:5:1", "bus Bus 0 has a journal already (/m1)"},
        BadConfig{"journal_in_process",
                  "[[module]]\npath = \"/m\"\nkind = \"monitor\"\nisolation = \"process\"\n"
                  "config = { dir = \"a\" }\n",
                  "bad.toml:4:13", "a sandboxed process has no file access"},
        BadConfig{"journal_small_bus",
                  "[bus]\ncapacity = 64\n[[module]]\npath = \"/m\"\nkind = \"monitor\"\n"
                  "config = { dir = \"a\" }\n",
                  "bad.toml:3:1", "needs a capacity of at least 256"},
        BadConfig{"restart_unknown",
                  "[[module]]\npath = \"/a\"\nkind = \"echo\"\nisolation = \"process\"\nrestart = "
                  "\"sometimes\"\n",
                  "bad.toml:5:11", "must be one of: permanent, transient, temporary"},
        BadConfig{"strategy_unknown",
                  "[[module]]\npath = \"/g\"\nkind = \"gateway\"\nsupervisor = { strategy = "
                  "\"one_for_some\" }\n",
                  "bad.toml:4:27", "must be one of: one_for_one, one_for_all, rest_for_one"},
        BadConfig{"heartbeat_misses_zero",
                  "[[module]]\npath = \"/g\"\nkind = \"gateway\"\nsupervisor = { heartbeat_misses "
                  "= 0 }\n",
                  "bad.toml:4:35", "must be between 1 and 1000"},
        BadConfig{"stop_grace_too_long",
                  "[[module]]\npath = \"/g\"\nkind = \"gateway\"\nsupervisor = { stop_grace_ms "
                  "= 900000 }\n",
                  "bad.toml:4:32", "must be between 0 and 600000"},
        BadConfig{"supervisor_on_leaf",
                  "[[module]]\npath = \"/a\"\nkind = \"echo\"\nsupervisor = { intensity = 1 }\n",
                  "bad.toml:4:14", "has no children to supervise"},
        BadConfig{"plugin_missing", "[system]\nplugins = [\"nope.so\"]\n", "bad.toml:2:12",
                  "cannot load plugin"}),
    [](const auto& p) { return std::string(p.param.name); });

TEST(ConfigTest, IsolationDefaultsByLevelForLeavesOnly) {
    const auto spec = parse_system(R"(
[system]
isolate_from_level = 2
[[module]]
path = "/top"
kind = "echo"
[[module]]
path = "/g"
kind = "gateway"
[[module]]
path = "/g/deep"
kind = "echo"
[[module]]
path = "/g/trusted"
kind = "echo"
isolation = "inproc"
[[module]]
path = "/g/inner"
kind = "gateway"
)",
                                   "t.toml", standard());
    ASSERT_TRUE(spec.has_value()) << spec.error().to_string();
    auto iso = [&](const char* p) { return spec->module(spec->topology.find(p)->id)->isolation; };
    EXPECT_EQ(iso("/top"), Isolation::inproc);        // level 1
    EXPECT_EQ(iso("/g/deep"), Isolation::process);    // level 2: isolated by default
    EXPECT_EQ(iso("/g/trusted"), Isolation::inproc);  // said otherwise
    EXPECT_EQ(iso("/g/inner"), Isolation::inproc);    // a gateway stays in its parent's process
}

TEST(ConfigTest, AModuleRunsTheNewestVersionOfItsKindUnlessItNamesOne) {
    Registry registry;
    register_standard_modules(registry);
    for (std::uint32_t v : {3u, 2u}) {
        ModuleKind k = *registry.find("echo");
        k.version = v;
        ASSERT_TRUE(registry.add(k));
    }
    EXPECT_FALSE(registry.add(*registry.find("echo", 2)));  // taken
    EXPECT_EQ(registry.versions("echo"), (std::vector<std::uint32_t>{1, 2, 3}));
    EXPECT_EQ(registry.names(), [&] {
        auto n = registry.names();
        n.erase(std::unique(n.begin(), n.end()), n.end());
        return n;
    }());
    const auto spec = parse_system(
        "[[module]]\npath = \"/a\"\nkind = \"echo\"\n[[module]]\npath = \"/b\"\nkind = "
        "\"echo\"\nversion = 2\n",
        "v.toml", registry);
    ASSERT_TRUE(spec.has_value()) << spec.error().to_string();
    EXPECT_EQ(spec->modules[0].version, 3u);
    EXPECT_EQ(spec->modules[1].version, 2u);
}

TEST(ConfigTest, MissingFileIsAnErrorNotACrash) {
    const auto spec = load_system_file("/nonexistent/system.toml", standard());
    ASSERT_FALSE(spec.has_value());
    EXPECT_NE(spec.error().to_string().find("cannot open"), std::string::npos);
}

TEST(ConfigTest, GarbageInputIsAnErrorNotACrash) {
    std::string junk;
    for (int i = 0; i < 4096; ++i) junk += static_cast<char>((i * 7919) % 256);
    EXPECT_FALSE(parse_system(junk, "junk.toml", standard()).has_value());
}

}  // namespace
}  // namespace hmk
