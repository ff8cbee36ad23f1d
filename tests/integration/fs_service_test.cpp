// SPDX-License-Identifier: Apache-2.0
// The storage stack as a system: the kernel's block device on Bus 0 (an
// image file), the disk driver under /drivers and the file system on Bus 0,
// the driver and the fs in sandboxed processes or in the kernel's. Requests
// go from the root through the buses as any client's would. The fs and the
// driver are killed under a writer; the whole system is killed (SIGKILL) under
// a writer; afterwards the image checks clean and holds every write that was
// acknowledged.
#include <fmt/core.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <thread>

#include "hmk/fs/file_system.hpp"
#include "hmk/proto/block_generated.h"
#include "hmk/proto/fs_generated.h"
#include "hmk/services/protocol.hpp"
#include "recorder.hpp"

namespace hmk {
namespace {

namespace pf = hmk::proto::fs;
namespace pb = hmk::proto::block;
using services::bytes_of;
using services::verified;

std::string system_toml(const std::string& isolation, const std::string& image) {
    return fmt::format(R"(
[system]
name = "fs-test"
[bus]
capacity = 4096
max_payload = 8192
[supervisor]
intensity = 1000
period_ms = 1000
backoff_ms = 1
[[module]]
path = "/block"
kind = "blockdev"
isolation = "{isolation}"
config = {{ image = "{image}", blocks = 16384 }}
grants = {{ file = "{image}", write = true, create = true }}
[[module]]
path = "/drivers"
kind = "gateway"
bus = {{ capacity = 4096, max_payload = 8192 }}
supervisor = {{ intensity = 1000, period_ms = 1000, backoff_ms = 1 }}
[[module]]
path = "/drivers/disk"
kind = "disk"
isolation = "{isolation}"
restart = "permanent"
[[module]]
path = "/fs"
kind = "fs"
isolation = "{isolation}"
restart = "permanent"
config = {{ format = true, timeout_ms = 50 }}
)",
                       fmt::arg("image", image), fmt::arg("isolation", isolation));
}

/// The file system's answer, copied out of its message.
struct Answer {
    pf::Status status = pf::Status::IoError;
    std::string message;
    std::string data;
    std::uint64_t size = 0;
    std::vector<std::string> names;
    bool answered = false;
};

struct Req {
    Req(pf::Op o, std::string p, std::string t = {}, std::uint64_t at = 0, std::uint32_t len = 0,
        std::uint64_t n = 0, std::string bytes = {}, bool make = false)
        : op(o),
          path(std::move(p)),
          to(std::move(t)),
          offset(at),
          length(len),
          size(n),
          data(std::move(bytes)),
          create(make) {}
    pf::Op op = pf::Op::Stat;
    std::string path;
    std::string to;
    std::uint64_t offset = 0;
    std::uint32_t length = 0;
    std::uint64_t size = 0;
    std::string data;
    bool create = false;
};

std::vector<std::byte> encode(const Req& q) {
    flatbuffers::FlatBufferBuilder b;
    const auto path = b.CreateString(q.path);
    const auto to = b.CreateString(q.to);
    const auto data =
        b.CreateVector(reinterpret_cast<const std::uint8_t*>(q.data.data()), q.data.size());
    b.Finish(pf::CreateRequest(b, q.op, path, to, q.offset, q.length, q.size, data, q.create));
    const auto s = bytes_of(b);
    return {s.begin(), s.end()};
}

class FsServiceTest : public ::testing::TestWithParam<const char*> {
  protected:
    testing::RecordBook book;
    Registry registry = testing::test_registry(book);
    std::unique_ptr<testing::Booted> booted;
    std::string m_dir;
    std::string m_image;

    FsServiceTest() {
        char tmpl[] = "/tmp/hmk-fs-test-XXXXXX";
        if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp");
        m_dir = tmpl;
        m_image = m_dir + "/disk.img";
    }
    ~FsServiceTest() override {
        booted.reset();
        std::filesystem::remove_all(m_dir);
    }
    void boot() {
        // Sandboxed, the block device may use its image only: it is granted.
        booted = testing::boot(system_toml(GetParam(), m_image), registry, stderr, LogLevel::warn,
                               m_dir + "/system.toml");
        wait_mounted();
    }
    System& system() { return *booted->system; }
    ModuleId id(const std::string& path) { return booted->id(path); }

    /// Sends `payload` of `type` from the root; the reply, if one comes.
    std::optional<OwnedMessage> ask(const std::string& to, std::uint32_t type,
                                    std::span<const std::byte> payload,
                                    std::chrono::milliseconds wait = std::chrono::seconds(5)) {
        Outgoing out;
        out.destination = id(to);
        out.type = type;
        out.payload = payload;
        const auto corr = system().inject(out);
        if (!corr) return std::nullopt;
        return system().wait_for_root(*corr, wait);
    }

    Answer call(const Req& q, std::chrono::milliseconds wait = std::chrono::seconds(5)) {
        Answer a;
        const auto bytes = encode(q);
        const auto reply = ask("/fs", services::k_fs_type, bytes, wait);
        if (!reply) return a;
        a.answered = true;
        const pf::Reply* r = verified<pf::Reply>(reply->payload);
        if (r == nullptr) {
            a.message = "(not a reply)";
            return a;
        }
        a.status = r->status();
        if (r->message() != nullptr) a.message = r->message()->str();
        if (r->data() != nullptr)
            a.data.assign(reinterpret_cast<const char*>(r->data()->data()), r->data()->size());
        a.size = r->size();
        if (r->entries() != nullptr) {
            for (const auto* e : *r->entries()) a.names.push_back(e->name()->str());
        }
        return a;
    }
    /// Asks until the fs answers (it may be restarting): the answer.
    /// Asks until the fs answers (it may be mounting or restarting; a slow
    /// machine may take a while): the answer, and whether it was asked again.
    Answer call_until_answered(const Req& q, bool* again = nullptr) {
        for (int i = 0; i < 60; ++i) {
            Answer a = call(q, std::chrono::milliseconds(1000));
            if (a.answered && a.status != pf::Status::IoError) return a;
            if (again != nullptr) *again = true;
        }
        return Answer{};
    }
    void ok(const Req& q) {
        bool again = false;
        const Answer a = call_until_answered(q, &again);
        // Asked again, a mkdir or create may find what its first try made.
        if (again && a.status == pf::Status::Exists &&
            (q.op == pf::Op::Mkdir || q.op == pf::Op::Create))
            return;
        ASSERT_EQ(a.status, pf::Status::Ok) << q.path << ": " << a.message;
    }
    /// Until the fs has mounted its disk (made a file system on the first boot).
    void wait_mounted() {
        ASSERT_TRUE(testing::eventually(
            [&] {
                Outgoing out;
                out.destination = id("/fs");
                out.type = msg::k_stats;
                const auto corr = system().inject(out);
                if (!corr) return false;
                const auto reply = system().wait_for_root(*corr, std::chrono::seconds(1));
                return reply && reply->text().find("mounted=1") != std::string_view::npos;
            },
            std::chrono::seconds(60)));
    }
    std::string read(const std::string& path) {
        std::string all;
        for (;;) {
            const Answer a =
                call_until_answered(Req{pf::Op::Read, path, {}, all.size(), 4096, 0, {}, false});
            EXPECT_EQ(a.status, pf::Status::Ok) << path << ": " << a.message;
            if (a.status != pf::Status::Ok || a.data.empty()) return all;
            all += a.data;
        }
    }
    /// Everything the fs says about itself in its check.
    void expect_check_clean() {
        flatbuffers::FlatBufferBuilder b;
        b.Finish(pf::CreateRequest(b, pf::Op::Check));
        // (it reads every block through the driver: slow under TSan)
        const auto reply = ask("/fs", services::k_fs_type, bytes_of(b), std::chrono::seconds(60));
        ASSERT_TRUE(reply.has_value());
        const pf::Reply* r = verified<pf::Reply>(reply->payload);
        ASSERT_NE(r, nullptr);
        std::string problems;
        if (r->problems() != nullptr) {
            for (const auto* p : *r->problems()) problems += p->str() + "\n";
        }
        EXPECT_EQ(r->status(), pf::Status::Ok) << problems;
    }
    void wait_running(const std::string& path) {
        EXPECT_TRUE(testing::eventually(
            [&] { return system().module_stats(id(path)).state == ModuleState::running; }));
    }
};

TEST_P(FsServiceTest, FilesAndDirectoriesSurviveAReboot) {
    boot();
    ok({pf::Op::Mkdir, "/docs"});
    ok({pf::Op::Write, "/docs/a.txt", {}, 0, 0, 0, "hello, ", true});
    ok({pf::Op::Append, "/docs/a.txt", {}, 0, 0, 0, "world"});
    std::string big(50'000, 'x');
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 23);
    // Written in pieces of at most a message's worth.
    for (std::size_t at = 0; at < big.size(); at += 3000) {
        ok({pf::Op::Write, "/docs/big", {}, at, 0, 0, big.substr(at, 3000), true});
    }
    ok({pf::Op::Create, "/docs/gone"});
    ok({pf::Op::Remove, "/docs/gone"});
    ok({pf::Op::Rename, "/docs/a.txt", "/hello.txt"});
    EXPECT_EQ(read("/hello.txt"), "hello, world");
    EXPECT_EQ(read("/docs/big"), big);
    const Answer list = call({pf::Op::List, "/"});
    EXPECT_EQ(list.names, (std::vector<std::string>{"docs", "hello.txt"}));
    const Answer st = call({pf::Op::Stat, "/docs/big"});
    EXPECT_EQ(st.size, big.size());
    EXPECT_EQ(call({pf::Op::Stat, "/docs/gone"}).status, pf::Status::NotFound);
    EXPECT_EQ(call({pf::Op::Mkdir, "/docs"}).status, pf::Status::Exists);
    EXPECT_EQ(call({pf::Op::Remove, "/docs"}).status, pf::Status::NotEmpty);
    expect_check_clean();

    booted.reset();
    boot();
    EXPECT_EQ(read("/hello.txt"), "hello, world");
    EXPECT_EQ(read("/docs/big"), big);
    expect_check_clean();
    // The image is hmkfs as the tools see it.
    booted.reset();
    auto io = fs::FileBlockIo::open(m_image);
    ASSERT_TRUE(io.has_value()) << io.error();
    auto report = services::run_now(fs::fsck(**io));
    ASSERT_TRUE(report.has_value());
    EXPECT_TRUE(report->problems.empty());
    EXPECT_EQ(report->files, 2u);
    EXPECT_EQ(report->directories, 2u);
}

TEST_P(FsServiceTest, BadRequestsGetErrorReplies) {
    boot();
    ok({pf::Op::Mkdir, "/d"});
    auto fs_status = [&](const std::optional<OwnedMessage>& m) {
        EXPECT_TRUE(m.has_value());
        if (!m) return pf::Status::Ok;
        EXPECT_TRUE((m->header.flags & k_flag_error) != 0);
        const pf::Reply* r = verified<pf::Reply>(m->payload);
        EXPECT_NE(r, nullptr);
        return r != nullptr ? r->status() : pf::Status::Ok;
    };
    auto block_status = [&](const std::optional<OwnedMessage>& m) {
        EXPECT_TRUE(m.has_value());
        if (!m) return pb::Status::Ok;
        EXPECT_TRUE((m->header.flags & k_flag_error) != 0);
        const pb::Reply* r = verified<pb::Reply>(m->payload);
        EXPECT_NE(r, nullptr);
        return r != nullptr ? r->status() : pb::Status::Ok;
    };
    const std::string garbage = "definitely not a flatbuffer, but long enough to look like one";
    // The wrong type, garbage, a truncated buffer: to each service.
    const auto good = encode({pf::Op::Stat, "/d"});
    const std::span<const std::byte> cut(good.data(), good.size() / 2);
    for (const std::string& to : {std::string("/fs")}) {
        EXPECT_EQ(fs_status(ask(to, msg::k_data, as_bytes("hello"))), pf::Status::BadRequest);
        EXPECT_EQ(fs_status(ask(to, services::k_fs_type, as_bytes(garbage))),
                  pf::Status::BadRequest);
        EXPECT_EQ(fs_status(ask(to, services::k_fs_type, cut)), pf::Status::BadRequest);
    }
    for (const std::string& to : {std::string("/block"), std::string("/drivers/disk")}) {
        EXPECT_EQ(block_status(ask(to, msg::k_data, as_bytes("hello"))), pb::Status::BadRequest)
            << to;
        EXPECT_EQ(block_status(ask(to, services::k_block_type, as_bytes(garbage))),
                  pb::Status::BadRequest)
            << to;
        EXPECT_EQ(block_status(ask(to, services::k_block_type, cut)), pb::Status::BadRequest) << to;
        flatbuffers::FlatBufferBuilder b;
        b.Finish(pb::CreateRequest(b, pb::Op::Read, 1u << 30));
        EXPECT_EQ(block_status(ask(to, services::k_block_type, bytes_of(b))),
                  pb::Status::OutOfRange)
            << to;
        flatbuffers::FlatBufferBuilder w;
        const auto short_block = w.CreateVector(std::vector<std::uint8_t>(100, 1));
        w.Finish(pb::CreateRequest(w, pb::Op::Write, 7, short_block));
        EXPECT_EQ(block_status(ask(to, services::k_block_type, bytes_of(w))),
                  pb::Status::BadRequest)
            << to;
    }
    // Paths and names the fs refuses, and operations that make no sense.
    EXPECT_EQ(call({pf::Op::Stat, "/" + std::string(fs::k_max_name + 1, 'n')}).status,
              pf::Status::NameTooLong);
    EXPECT_EQ(call({pf::Op::Stat, std::string(fs::k_max_path + 10, '/')}).status,
              pf::Status::NameTooLong);
    EXPECT_EQ(call({pf::Op::Mkdir, "relative"}).status, pf::Status::BadPath);
    EXPECT_EQ(call({pf::Op::Read, "/d"}).status, pf::Status::IsADirectory);
    EXPECT_EQ(call({pf::Op::Read, "/nothing"}).status, pf::Status::NotFound);
    EXPECT_EQ(call({pf::Op::Remove, "/"}).status, pf::Status::Busy);
    EXPECT_EQ(call({pf::Op::Rename, "/d", "/d/e"}).status, pf::Status::Busy);
    EXPECT_EQ(call(Req{static_cast<pf::Op>(99), "/d"}).status, pf::Status::BadRequest);
    // None of it hurt anyone.
    EXPECT_EQ(system().module_stats(id("/fs")).restarts, 0u);
    EXPECT_EQ(system().module_stats(id("/drivers/disk")).restarts, 0u);
    expect_check_clean();
}

TEST_P(FsServiceTest, KillingTheFsAndTheDriverLosesNoAcknowledgedWrite) {
    boot();
    ok({pf::Op::Mkdir, "/log"});
    // Record i at offset 64 * i: a write sent again after a kill is the same write.
    auto record = [](int i) {
        std::string r = fmt::format("record {:6} ", i);
        r.resize(64, static_cast<char>('a' + i % 26));
        return r;
    };
    std::mt19937 rng(42);
    int acknowledged = 0;
    int kills = 0;
    for (int i = 0; i < 400; ++i) {
        if (i % 40 == 20) {
            const char* victim = rng() % 2 == 0 ? "/fs" : "/drivers/disk";
            if (system().kill(id(victim))) ++kills;
        }
        const Answer a = call_until_answered({pf::Op::Write,
                                              "/log/records",
                                              {},
                                              64u * static_cast<unsigned>(i),
                                              0,
                                              0,
                                              record(i),
                                              true});
        ASSERT_EQ(a.status, pf::Status::Ok) << "record " << i << ": " << a.message;
        ++acknowledged;
    }
    EXPECT_GE(kills, 8);
    const std::string all = read("/log/records");
    ASSERT_EQ(all.size(), 64u * static_cast<unsigned>(acknowledged));
    for (int i = 0; i < acknowledged; ++i) {
        ASSERT_EQ(all.substr(64u * static_cast<unsigned>(i), 64), record(i)) << "record " << i;
    }
    expect_check_clean();
    EXPECT_GE(system().module_stats(id("/fs")).restarts +
                  system().module_stats(id("/drivers/disk")).restarts,
              8u);
}

// The whole system (kernel process, block device, driver and fs hosts) is
// SIGKILLed under a writer, six times; after each, the image checks clean
// (replaying its journal) and holds every write the writer had been answered.
TEST_P(FsServiceTest, KillingTheWholeSystemLosesNoAcknowledgedWrite) {
    auto record = [](int round, int i) {
        std::string r = fmt::format("round {} record {:6} ", round, i);
        r.resize(64, static_cast<char>('a' + i % 26));
        return r;
    };
    std::mt19937 rng(7);
    std::vector<int> acked_per_round;
    for (int round = 0; round < 6; ++round) {
        int fds[2];
        ASSERT_EQ(::pipe(fds), 0);
        const pid_t child = ::fork();
        ASSERT_GE(child, 0);
        if (child == 0) {
            // The system under test: boots on the image, writes until killed,
            // and tells the parent each record it was answered for.
            ::close(fds[0]);
            boot();
            if (round == 0) ok({pf::Op::Mkdir, "/log"});
            for (int i = 0;; ++i) {
                const Answer a = call_until_answered({pf::Op::Write,
                                                      fmt::format("/log/round{}", round),
                                                      {},
                                                      4096u * static_cast<unsigned>(i),
                                                      0,
                                                      0,
                                                      record(round, i),
                                                      true});
                if (a.status != pf::Status::Ok) ::_exit(3);
                if (::write(fds[1], &i, sizeof(i)) != sizeof(i)) ::_exit(4);
            }
        }
        ::close(fds[1]);
        // Once it writes (booting may take a while), it dies at a random point.
        int acked = -1;
        int i = 0;
        while (acked < 20 && ::read(fds[0], &i, sizeof(i)) == sizeof(i)) acked = i;
        std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 500));
        ::kill(child, SIGKILL);
        int status = 0;
        ASSERT_EQ(::waitpid(child, &status, 0), child);
        ASSERT_TRUE(WIFSIGNALED(status)) << "the writer stopped by itself: " << status;
        while (::read(fds[0], &i, sizeof(i)) == sizeof(i)) acked = i;
        ::close(fds[0]);
        ASSERT_GE(acked, 10) << "round " << round << ": too few writes to say anything";
        acked_per_round.push_back(acked);

        // Off line, as the tools see it: the journal replayed, a clean tree.
        auto io = fs::FileBlockIo::open(m_image);
        ASSERT_TRUE(io.has_value()) << io.error();
        auto report = services::run_now(fs::fsck(**io));
        ASSERT_TRUE(report.has_value()) << fs::to_string(report.error());
        std::string problems;
        for (const auto& p : report->problems) problems += p + "\n";
        EXPECT_TRUE(report->problems.empty()) << problems;
        auto mounted = services::run_now(fs::FileSystem::mount(**io));
        ASSERT_TRUE(mounted.has_value());
        for (int r = 0; r <= round; ++r) {
            // Record k at 4096 * k: every write takes a new block (bitmap, inode, data).
            const auto n = static_cast<std::uint32_t>(
                4096 * acked_per_round[static_cast<std::size_t>(r)] + 64);
            auto data = services::run_now((*mounted)->read(fmt::format("/log/round{}", r), 0, n));
            ASSERT_TRUE(data.has_value()) << "round " << r;
            ASSERT_EQ(data->size(), n) << "round " << r << ": a write that was answered is gone";
            const std::string text(reinterpret_cast<const char*>(data->data()), data->size());
            for (int k = 0; k <= acked_per_round[static_cast<std::size_t>(r)]; ++k) {
                ASSERT_EQ(text.substr(4096u * static_cast<unsigned>(k), 64), record(r, k))
                    << "round " << r << " record " << k;
            }
        }
    }
}

INSTANTIATE_TEST_SUITE_P(BothIsolations, FsServiceTest, ::testing::Values("inproc", "process"),
                         [](const auto& p) { return std::string(p.param); });

}  // namespace
}  // namespace hmk
