// SPDX-License-Identifier: Apache-2.0
#include "hmk/runtime/script.hpp"

#include <gtest/gtest.h>

#include "recorder.hpp"

namespace hmk {
namespace {

constexpr const char* k_system = R"(
[[module]]
path = "/g"
kind = "gateway"
[[module]]
path = "/g/echo"
kind = "echo"
[[module]]
path = "/g/sink"
kind = "sink"
)";

struct ScriptTest : ::testing::Test {
    testing::RecordBook book;
    Registry registry = testing::test_registry(book);
    std::unique_ptr<testing::Booted> booted = testing::boot(k_system, registry);

    Result<Script, ConfigError> parse(const std::string& text) {
        return parse_script(text, "s.hmks", booted->topology());
    }
    int run(const std::string& text) {
        auto s = parse(text);
        EXPECT_TRUE(s.has_value()) << s.error().to_string();
        return s ? run_script(*booted->system, *s, booted->logger) : -1;
    }
};

TEST_F(ScriptTest, PassingScriptReturnsZero) {
    EXPECT_EQ(run("send /g/echo data \"hi there\"\n"
                  "expect reply \"hi there\"\n"
                  "send /g/sink data hex:00ff\n"
                  "send /g/sink stats\n"
                  "expect reply~ count=1\n"
                  "expect stat /g/sink rx == 2\n"
                  "expect bus /g published >= 4\n"
                  "expect state /g/echo running\n"),
              0);
}

TEST_F(ScriptTest, WrongReplyFails) {
    EXPECT_EQ(run("timeout 500\nsend /g/echo data abc\nexpect reply xyz\n"), 1);
}

TEST_F(ScriptTest, MissingReplyFails) {
    EXPECT_EQ(run("timeout 200\nsend /g/sink data abc\nexpect reply abc\n"), 1);
}

TEST_F(ScriptTest, UnmetCounterFails) {
    EXPECT_EQ(run("timeout 200\nexpect stat /g/sink rx >= 1\n"), 1);
}

TEST_F(ScriptTest, MovesChangeThePathsLaterCommandsUse) {
    EXPECT_EQ(run("move /g/echo --to /\n"
                  "send /echo data hi\n"
                  "expect reply hi\n"
                  "move /echo --to /g --isolation process\n"
                  "send /g/echo data again\n"
                  "expect reply again\n"),
              0);
    EXPECT_NE(booted->system->module_stats(booted->id("/g/echo")).pid, 0);
}

TEST_F(ScriptTest, BroadcastFromAModuleReachesItsBus) {
    EXPECT_EQ(run("send --from /g/echo --scope bus * data x\nexpect stat /g/sink rx == 1\n"), 0);
}

struct BadScript {
    const char* name;
    const char* text;
    const char* location;
    const char* says;
    friend void PrintTo(const BadScript& c, std::ostream* os) { *os << c.name; }
};

class ScriptErrorTest : public ScriptTest, public ::testing::WithParamInterface<BadScript> {};

TEST_P(ScriptErrorTest, NamesLineColumnAndReason) {
    auto s = parse(GetParam().text);
    ASSERT_FALSE(s.has_value());
    const std::string text = s.error().to_string();
    EXPECT_EQ(text.rfind(std::string(GetParam().location) + ": error: ", 0), 0u) << text;
    EXPECT_NE(text.find(GetParam().says), std::string::npos) << text;
}

INSTANTIATE_TEST_SUITE_P(
    EveryErrorKind, ScriptErrorTest,
    ::testing::Values(
        BadScript{"unknown_command", "\n  fly /g\n", "s.hmks:2:3", "unknown command 'fly'"},
        BadScript{"unknown_module", "send /nope data x\n", "s.hmks:1:6", "no module /nope"},
        BadScript{"unknown_type", "send /g/echo flavour x\n", "s.hmks:1:14",
                  "unknown message type"},
        BadScript{"bad_scope", "send --scope world * data\n", "s.hmks:1:14", "unknown scope"},
        BadScript{"unterminated", "send /g/echo data \"abc\n", "s.hmks:1:19", "unterminated"},
        BadScript{"bad_counter", "expect stat /g/sink speed == 1\n", "s.hmks:1:21",
                  "unknown counter"},
        BadScript{"bad_comparison", "expect stat /g/sink rx ~ 1\n", "s.hmks:1:24",
                  "unknown comparison"},
        BadScript{"not_a_bus", "expect bus /g/sink published == 1\n", "s.hmks:1:12", "owns no bus"},
        BadScript{"trailing", "wait 5 6\n", "s.hmks:1:8", "unexpected '6'"},
        BadScript{"bad_hex", "send /g/echo data hex:0g\n", "s.hmks:1:19", "bad hex digit"},
        BadScript{"bad_state", "expect state /g/echo asleep\n", "s.hmks:1:22",
                  "unknown state 'asleep' (one of: running, failed, stopped, restarting"},
        BadScript{"kill_nothing", "kill\n", "s.hmks:1:1", "usage: kill PATH"},
        BadScript{"kill_unknown", "kill /g/nope\n", "s.hmks:1:6", "no module /g/nope"},
        BadScript{"snapshot_root", "snapshot /\n", "s.hmks:1:10",
                  "the microkernel cannot be snapshotted"},
        BadScript{"swap_no_kind", "swap /g/echo\n", "s.hmks:1:6", "which kind?"},
        BadScript{"swap_root", "swap / --kind echo\n", "s.hmks:1:6",
                  "the microkernel cannot be swapped"},
        BadScript{"move_nowhere", "move /g/echo\n", "s.hmks:1:6", "where to?"},
        BadScript{"move_to_a_leaf", "move /g/echo --to /g/sink\n", "s.hmks:1:19",
                  "/g/sink owns no bus"},
        BadScript{"move_into_itself", "move /g --to /g\n", "s.hmks:1:14",
                  "lies in /g's own subtree"},
        BadScript{"move_bad_isolation", "move /g/echo --to / --isolation vm\n", "s.hmks:1:33",
                  "--isolation is inproc or process"},
        // Later commands see the tree as the moves before them leave it.
        BadScript{"old_path_after_move", "move /g/echo --to /\nsend /g/echo data x\n", "s.hmks:2:6",
                  "no module /g/echo"},
        BadScript{"clash_after_move", "move /g/echo --to /\nmove /g --to /g/echo\n", "s.hmks:2:14",
                  "/g/echo"}),
    [](const auto& p) { return std::string(p.param.name); });

}  // namespace
}  // namespace hmk
