// SPDX-License-Identifier: Apache-2.0
// The control endpoint: commands through the socket, and refusal of any
// user but the system's.
#include "hmk/runtime/control.hpp"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <thread>

#include "hmk/runtime/script.hpp"
#include "recorder.hpp"

namespace hmk {
namespace {

constexpr const char* k_system = R"(
[system]
name = "ctl-test"
[[module]]
path = "/g"
kind = "gateway"
[[module]]
path = "/g/echo"
kind = "echo"
restart = "permanent"
[[module]]
path = "/g/sink"
kind = "sink"
)";

struct ControlTest : ::testing::Test {
    testing::RecordBook book;
    Registry registry = testing::test_registry(book);
    std::unique_ptr<testing::Booted> booted = testing::boot(k_system, registry);
    std::string dir = make_dir();
    std::string socket = dir + "/ctl.sock";
    std::unique_ptr<ControlServer> server = open_server();

    static std::string make_dir() {
        char name[] = "/tmp/hmk-ctl-test-XXXXXX";
        const char* made = ::mkdtemp(name);
        if (made == nullptr) throw std::runtime_error("mkdtemp");
        return made;
    }
    std::unique_ptr<ControlServer> open_server() {
        auto s = ControlServer::open(*booted->system, booted->logger, socket);
        if (!s) throw std::runtime_error(s.error());
        return std::move(s).value();
    }
    ~ControlTest() override {
        server.reset();
        std::filesystem::remove_all(dir);
    }

    struct Answer {
        bool ok;
        std::string message;
        std::string output;
    };
    Answer ask(const std::string& line) {
        std::string output;
        auto r = control_request(socket, line, [&](std::string_view l) {
            output += l;
            output += '\n';
        });
        if (!r) return Answer{false, "transport: " + r.error(), output};
        return Answer{r->ok, r->message, output};
    }
};

TEST_F(ControlTest, TreeListsEveryModuleWithItsState) {
    const Answer a = ask("tree");
    ASSERT_TRUE(a.ok) << a.message;
    for (const char* needle : {"microkernel", "g/", "echo", "sink", "running"})
        EXPECT_NE(a.output.find(needle), std::string::npos) << needle << " in\n" << a.output;
}

TEST_F(ControlTest, StatsAndSendGoThroughTheRunningSystem) {
    const Answer sent = ask(join_command_words({"send", "/g/sink", "data", "a b \"c\""}));
    ASSERT_TRUE(sent.ok) << sent.message;
    EXPECT_NE(sent.message.find("/g/sink"), std::string::npos);
    EXPECT_NE(sent.output.find("no reply within 1000 ms"), std::string::npos) << sent.output;
    const Answer echoed = ask("send /g/echo data hello");
    ASSERT_TRUE(echoed.ok) << echoed.message;
    EXPECT_EQ(echoed.output, "reply from /g/echo: \"hello\"\n");
    const Answer expect = ask("expect stat /g/sink rx == 1");
    EXPECT_TRUE(expect.ok) << expect.message;
    const Answer stats = ask("stats");
    ASSERT_TRUE(stats.ok);
    EXPECT_NE(stats.output.find("published"), std::string::npos);
}

TEST_F(ControlTest, KillGoesToTheParentWhichRestartsTheModule) {
    const ModuleId echo = booted->id("/g/echo");
    const Answer a = ask("kill /g/echo");
    ASSERT_TRUE(a.ok) << a.message;
    EXPECT_EQ(a.message, "killed /g/echo");
    const Answer b = ask("expect stat /g/echo epoch == 2");
    EXPECT_TRUE(b.ok) << b.message;
    EXPECT_EQ(booted->system->module_stats(echo).restarts, 1u);
}

TEST_F(ControlTest, BadCommandsGetClearErrors) {
    Answer a = ask("kill /nope");
    EXPECT_FALSE(a.ok);
    EXPECT_NE(a.message.find("no module /nope"), std::string::npos) << a.message;
    a = ask("frobnicate /g");
    EXPECT_FALSE(a.ok);
    EXPECT_NE(a.message.find("unknown command 'frobnicate'"), std::string::npos) << a.message;
    a = ask("kill /");
    EXPECT_FALSE(a.ok);
    EXPECT_NE(a.message.find("microkernel cannot be killed"), std::string::npos) << a.message;
    a = ask("");
    EXPECT_FALSE(a.ok);
}

// A connection of its own, for what control_request() would not send.
int connect_to(const std::string& path) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

// Sends `bytes` and reads the answer to the end (the server closes).
std::string raw_request(const std::string& path, const std::string& bytes) {
    const int fd = connect_to(path);
    if (fd < 0) return "(cannot connect)";
    std::string_view rest(bytes);
    while (!rest.empty()) {
        const ssize_t n = ::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
        if (n <= 0) break;  // it may answer (and close) before taking it all
        rest.remove_prefix(static_cast<std::size_t>(n));
    }
    std::string out;
    char buf[4096];
    ssize_t n = 0;
    while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) out.append(buf, static_cast<std::size_t>(n));
    ::close(fd);
    return out;
}

TEST_F(ControlTest, ARequestLineLongerThanTheLimitIsRefused) {
    // 64 KiB before the newline is the most it takes...
    std::string line = "tree #";
    line.resize(64 * 1024, 'x');
    std::string answer = raw_request(socket, line + "\n");
    EXPECT_NE(answer.find("\nok\n"), std::string::npos) << answer.substr(0, 200);
    // ... and one byte more is refused, all of it in the buffer or not.
    line += 'x';
    answer = raw_request(socket, line + "\n");
    EXPECT_EQ(answer.rfind("error: the request line is longer than 64 KiB", 0), 0u) << answer;
    line.resize(68 * 1024, 'x');
    answer = raw_request(socket, line + "\n");
    EXPECT_EQ(answer.rfind("error: the request line is longer than 64 KiB", 0), 0u) << answer;
}

TEST_F(ControlTest, ATimeoutPrefixHasAnUpperBound) {
    EXPECT_TRUE(ask("timeout 3600000 tree").ok);
    const Answer a = ask("timeout 3600001 tree");
    EXPECT_FALSE(a.ok);
    EXPECT_NE(a.message.find("must be between 1 and 3600000"), std::string::npos) << a.message;
}

// Every connection the server takes runs an hour-long wait, then hangs up:
// the waits are cancelled, and the server takes commands again.
TEST_F(ControlTest, TheCommandsOfClientsThatHangUpAreCancelled) {
    std::vector<int> fds;
    for (int i = 0; i < 16; ++i) {
        const int fd = connect_to(socket);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(::send(fd, "wait 3600000\n", 13, MSG_NOSIGNAL), 13);
        fds.push_back(fd);
    }
    // Every place is taken...
    const std::string busy = raw_request(socket, "tree\n");
    EXPECT_NE(busy.find("busy: too many control connections"), std::string::npos) << busy;
    // ... until they hang up.
    for (const int fd : fds) ::close(fd);
    EXPECT_TRUE(testing::eventually([&] { return ask("tree").ok; })) << ask("tree").message;
}

TEST_F(ControlTest, SocketIsForItsOwnerOnly) {
    struct stat st {};
    ASSERT_EQ(::stat(socket.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(ControlTest, ASecondSystemCannotTakeALiveSocket) {
    auto second = ControlServer::open(*booted->system, booted->logger, socket);
    ASSERT_FALSE(second.has_value());
    EXPECT_NE(second.error().find("another system listens"), std::string::npos) << second.error();
}

TEST_F(ControlTest, AStaleSocketIsReplaced) {
    server.reset();
    // A socket file nobody listens on, as a killed system leaves behind.
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strcpy(a.sun_path, socket.c_str());
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    ::close(fd);
    server = open_server();
    EXPECT_TRUE(ask("tree").ok);
}

// What another user gets, from a child process that became `nobody`.
// Returns the first line the server answered, or "connect: <errno text>".
std::string as_nobody(const std::string& path) {
    int pipefd[2];
    if (::pipe(pipefd) != 0) return "pipe";
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::close(pipefd[0]);
        auto say = [&](const char* text) {
            (void)!::write(pipefd[1], text, std::strlen(text));
            ::_exit(0);
        };
        if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0)
            say("setresuid failed");
        const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
        if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
            char text[128];
            std::snprintf(text, sizeof(text), "connect: %s", std::strerror(errno));
            say(text);
        }
        // (The server may have answered and closed before this: no SIGPIPE.)
        (void)!::send(fd, "kill /g/echo\n", 13, MSG_NOSIGNAL);
        char buf[256] = {};
        const ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
        if (n > 0) {
            buf[std::strcspn(buf, "\n")] = 0;
            say(buf);
        }
        say("no answer");
    }
    ::close(pipefd[1]);
    std::string out;
    char buf[256];
    ssize_t n = 0;
    while ((n = ::read(pipefd[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
    ::close(pipefd[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return out;
}

TEST_F(ControlTest, AnotherUserIsRefused) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to become another user";
    const ModuleId echo = booted->id("/g/echo");
    // The file mode keeps it out...
    EXPECT_EQ(as_nobody(socket), "connect: Permission denied");
    // ... and so do its credentials, should the mode let it in.
    ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);
    ASSERT_EQ(::chmod(socket.c_str(), 0666), 0);
    const std::string answer = as_nobody(socket);
    EXPECT_EQ(answer.rfind("error: refused: uid 65534 is not the system's user", 0), 0u) << answer;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(booted->system->module_stats(echo).epoch, 1u);  // nothing was done
    EXPECT_EQ(booted->system->module_stats(echo).restarts, 0u);
}

// Another user who made /tmp/hmk-UID first cannot keep the system from
// its control socket: it goes to the home directory instead.
TEST(ControlPaths, AnotherUsersDirectoryInTmpIsPassedOver) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a directory to another user";
    char tmp_name[] = "/tmp/hmk-ctl-tmp-XXXXXX";
    char home_name[] = "/tmp/hmk-ctl-home-XXXXXX";
    const std::string tmp = ::mkdtemp(tmp_name), home = ::mkdtemp(home_name);
    const char* xdg = std::getenv("XDG_RUNTIME_DIR");
    const std::string saved_xdg = xdg ? xdg : "";
    const char* old_home = std::getenv("HOME");
    const std::string saved_home = old_home ? old_home : "";
    ::unsetenv("XDG_RUNTIME_DIR");
    ::setenv("TMPDIR", tmp.c_str(), 1);
    ::setenv("HOME", home.c_str(), 1);
    const std::string taken = tmp + "/hmk-" + std::to_string(::geteuid());
    ASSERT_EQ(::mkdir(taken.c_str(), 0777), 0);
    ASSERT_EQ(::chown(taken.c_str(), 65534, 65534), 0);
    EXPECT_EQ(default_control_dir(), home + "/.hmk");
    {
        testing::RecordBook book;
        Registry registry = testing::test_registry(book);
        auto booted = testing::boot(k_system, registry);
        auto server =
            ControlServer::open(*booted->system, booted->logger, default_control_path("ctl-test"));
        ASSERT_TRUE(server) << server.error();
        EXPECT_EQ((*server)->path(), home + "/.hmk/ctl-test.sock");
        struct stat st {};
        ASSERT_EQ(::stat((home + "/.hmk").c_str(), &st), 0);
        EXPECT_EQ(st.st_mode & 0777, 0700u);
        auto r = control_request((*server)->path(), "tree", [](std::string_view) {});
        ASSERT_TRUE(r) << r.error();
        EXPECT_TRUE(r->ok);
    }
    // With TMPDIR's own name free, that is where it goes.
    ASSERT_EQ(::rmdir(taken.c_str()), 0);
    EXPECT_EQ(default_control_dir(), taken);
    if (saved_xdg.empty()) {
        ::unsetenv("XDG_RUNTIME_DIR");
    } else {
        ::setenv("XDG_RUNTIME_DIR", saved_xdg.c_str(), 1);
    }
    ::setenv("HOME", saved_home.c_str(), 1);
    ::unsetenv("TMPDIR");
    std::filesystem::remove_all(tmp);
    std::filesystem::remove_all(home);
}

TEST(ControlPaths, DefaultSocketIsNamedAfterTheSystem) {
    const std::string p = default_control_path("my sys/../x");
    EXPECT_EQ(p, default_control_dir() + "/my_sys_.._x.sock");
    EXPECT_EQ(default_control_path(".hidden"), default_control_dir() + "/_hidden.sock");
}

}  // namespace
}  // namespace hmk
