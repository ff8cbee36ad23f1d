// SPDX-License-Identifier: Apache-2.0
// The key-value store over the file system: /apps/app1 routes keys to three
// shards, which keep their pairs in logs on /fs, which gets its blocks from
// /drivers/disk and the kernel's block device. Every request goes from the
// root through the buses. Shards and the fs are killed under a writer;
// nothing answered is lost, across a reboot too.
#include <fmt/core.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <random>

#include "hmk/proto/kv_generated.h"
#include "hmk/services/protocol.hpp"
#include "recorder.hpp"

namespace hmk {
namespace {

namespace pk = hmk::proto::kv;
using services::bytes_of;
using services::verified;

std::string system_toml(const std::string& isolation, const std::string& image) {
    return fmt::format(R"(
[system]
name = "kv-test"
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
isolation = "inproc"
config = {{ image = "{image}", blocks = 8192 }}
[[module]]
path = "/drivers"
kind = "gateway"
bus = {{ capacity = 4096, max_payload = 8192 }}
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
[[module]]
path = "/apps"
kind = "gateway"
bus = {{ capacity = 4096, max_payload = 8192 }}
[[module]]
path = "/apps/app1"
kind = "kv"
bus = {{ capacity = 4096, max_payload = 8192 }}
supervisor = {{ intensity = 1000, period_ms = 1000, backoff_ms = 1 }}
[[module]]
path = "/apps/app1/shard0"
kind = "kvshard"
isolation = "{isolation}"
restart = "permanent"
config = {{ timeout_ms = 50 }}
[[module]]
path = "/apps/app1/shard1"
kind = "kvshard"
isolation = "{isolation}"
restart = "permanent"
config = {{ timeout_ms = 50 }}
[[module]]
path = "/apps/app1/shard2"
kind = "kvshard"
isolation = "{isolation}"
restart = "permanent"
config = {{ timeout_ms = 50 }}
)",
                       fmt::arg("image", image), fmt::arg("isolation", isolation));
}

struct KvAnswer {
    bool answered = false;
    pk::Status status = pk::Status::Unavailable;
    std::string value;
    std::vector<std::pair<std::string, std::string>> pairs;
    bool more = false;
    bool error_flag = false;
};

class KvTest : public ::testing::TestWithParam<const char*> {
  protected:
    testing::RecordBook book;
    Registry registry = testing::test_registry(book);
    std::unique_ptr<testing::Booted> booted;
    std::string m_dir;

    KvTest() {
        char tmpl[] = "/tmp/hmk-kv-test-XXXXXX";
        if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp");
        m_dir = tmpl;
    }
    ~KvTest() override {
        booted.reset();
        std::filesystem::remove_all(m_dir);
    }
    void boot() { booted = testing::boot(system_toml(GetParam(), m_dir + "/disk.img"), registry); }
    System& system() { return *booted->system; }
    ModuleId id(const std::string& path) { return booted->id(path); }

    KvAnswer send(std::uint32_t type, std::span<const std::byte> payload,
                  std::chrono::milliseconds wait) {
        KvAnswer a;
        Outgoing out;
        out.destination = id("/apps/app1");
        out.type = type;
        out.payload = payload;
        const auto corr = system().inject(out);
        if (!corr) return a;
        const auto reply = system().wait_for_root(*corr, wait);
        if (!reply) return a;
        a.answered = true;
        a.error_flag = (reply->header.flags & k_flag_error) != 0;
        const pk::Reply* r = verified<pk::Reply>(reply->payload);
        if (r == nullptr) return a;
        a.status = r->status();
        if (r->value() != nullptr) a.value = r->value()->str();
        if (r->pairs() != nullptr) {
            for (const auto* p : *r->pairs())
                a.pairs.emplace_back(p->key()->str(), p->value()->str());
        }
        a.more = r->more();
        return a;
    }
    KvAnswer call(pk::Op op, const std::string& key, const std::string& value = {},
                  const std::string& prefix = {}, std::uint32_t limit = 0,
                  std::chrono::milliseconds wait = std::chrono::seconds(5)) {
        flatbuffers::FlatBufferBuilder b;
        const auto k = b.CreateString(key);
        const auto v = b.CreateString(value);
        const auto p = b.CreateString(prefix);
        b.Finish(pk::CreateRequest(b, op, k, v, p, limit));
        return send(services::k_kv_type, bytes_of(b), wait);
    }
    /// Asks until a shard answers for real (it may be starting or restarting).
    KvAnswer call_until_answered(pk::Op op, const std::string& key, const std::string& value = {}) {
        for (int i = 0; i < 60; ++i) {
            KvAnswer a = call(op, key, value, {}, 0, std::chrono::milliseconds(1000));
            if (a.answered && a.status != pk::Status::Unavailable) return a;
        }
        return KvAnswer{};
    }
};

// A kv store without a shard used to pass `hmk check` and fail at boot.
TEST(KvConfigTest, AStoreWithoutShardsIsRefusedByTheCheck) {
    testing::RecordBook book;
    Registry registry = testing::test_registry(book);
    const auto spec = parse_system(
        "[[module]]\npath = \"/kv\"\nkind = \"kv\"\n[[module]]\npath = \"/kv/cache\"\n"
        "kind = \"sink\"\n",
        "kv.toml", registry);
    ASSERT_FALSE(spec);
    EXPECT_EQ(spec.error().to_string(),
              "kv.toml:1:1: error: module /kv: a kv store needs at least one shard (a child "
              "named shard*, kind kvshard)");
}

TEST_P(KvTest, PutGetDeleteAndScanSurviveAReboot) {
    boot();
    for (int i = 0; i < 60; ++i) {
        ASSERT_EQ(call_until_answered(pk::Op::Put, fmt::format("user:{:03}", i),
                                      fmt::format("name {}", i))
                      .status,
                  pk::Status::Ok);
    }
    ASSERT_EQ(call_until_answered(pk::Op::Put, "user:007", "bond").status, pk::Status::Ok);
    ASSERT_EQ(call_until_answered(pk::Op::Del, "user:013").status, pk::Status::Ok);
    EXPECT_EQ(call(pk::Op::Del, "user:013").status, pk::Status::NotFound);
    EXPECT_EQ(call(pk::Op::Get, "user:007").value, "bond");
    EXPECT_EQ(call(pk::Op::Get, "user:013").status, pk::Status::NotFound);
    // A scan merges the three shards in key order.
    const KvAnswer scan = call(pk::Op::Scan, "user:005", {}, "user:", 5);
    ASSERT_EQ(scan.status, pk::Status::Ok);
    ASSERT_EQ(scan.pairs.size(), 5u);
    EXPECT_EQ(scan.pairs[0].first, "user:005");
    EXPECT_EQ(scan.pairs[2], (std::pair<std::string, std::string>{"user:007", "bond"}));
    EXPECT_EQ(scan.pairs[4].first, "user:009");
    EXPECT_TRUE(scan.more);
    // Every shard holds some of the keys.
    for (const char* shard : {"/apps/app1/shard0", "/apps/app1/shard1", "/apps/app1/shard2"})
        EXPECT_GT(system().module_stats(id(shard)).rx, 5u) << shard;

    booted.reset();
    boot();
    EXPECT_EQ(call_until_answered(pk::Op::Get, "user:007").value, "bond");
    EXPECT_EQ(call_until_answered(pk::Op::Get, "user:013").status, pk::Status::NotFound);
    const KvAnswer all = call(pk::Op::Scan, "", {}, "user:");
    EXPECT_EQ(all.pairs.size(), 59u);
    EXPECT_FALSE(all.more);
}

TEST_P(KvTest, BadRequestsGetErrorReplies) {
    boot();
    ASSERT_EQ(call_until_answered(pk::Op::Put, "k", "v").status, pk::Status::Ok);
    const std::string garbage = "not a flatbuffer at all, but long enough to be parsed as one";
    KvAnswer a = send(services::k_kv_type, as_bytes(garbage), std::chrono::seconds(2));
    EXPECT_EQ(a.status, pk::Status::BadRequest);
    EXPECT_TRUE(a.error_flag);
    a = send(msg::k_data, as_bytes("get k"), std::chrono::seconds(2));
    EXPECT_EQ(a.status, pk::Status::BadRequest);
    EXPECT_EQ(call(pk::Op::Put, std::string(600, 'k'), "v").status, pk::Status::TooBig);
    EXPECT_EQ(call(pk::Op::Put, "", "v").status, pk::Status::TooBig);
    EXPECT_EQ(call(pk::Op::Put, "big", std::string(4000, 'v')).status, pk::Status::TooBig);
    EXPECT_EQ(call(static_cast<pk::Op>(77), "k").status, pk::Status::BadRequest);
    EXPECT_EQ(call(pk::Op::Get, "k").value, "v");
}

TEST_P(KvTest, SurvivesRestartsOfAnyShardAndOfTheFs) {
    boot();
    std::mt19937 rng(5);
    const std::vector<std::string> victims{"/apps/app1/shard0", "/apps/app1/shard1",
                                           "/apps/app1/shard2", "/fs"};
    std::map<std::string, std::string> acked;
    int kills = 0;
    for (int i = 0; i < 300; ++i) {
        if (i % 25 == 10 && system().kill(id(victims[rng() % victims.size()]))) ++kills;
        const std::string key = fmt::format("k{}", rng() % 100);
        const std::string value = fmt::format("v{}", i);
        const KvAnswer a = call_until_answered(pk::Op::Put, key, value);
        ASSERT_EQ(a.status, pk::Status::Ok) << key;
        acked[key] = value;
    }
    EXPECT_GE(kills, 10);
    auto check_all = [&] {
        for (const auto& [k, v] : acked) {
            const KvAnswer a = call_until_answered(pk::Op::Get, k);
            ASSERT_EQ(a.status, pk::Status::Ok) << k;
            EXPECT_EQ(a.value, v) << k;
        }
    };
    check_all();
    booted.reset();
    boot();
    check_all();
}

INSTANTIATE_TEST_SUITE_P(BothIsolations, KvTest, ::testing::Values("inproc", "process"),
                         [](const auto& p) { return std::string(p.param); });

}  // namespace
}  // namespace hmk
