// SPDX-License-Identifier: Apache-2.0
// File system throughput through the whole stack (make bench): a client
// module in /apps/app1 asks /fs, which asks /drivers/disk, which asks the
// kernel's block device on Bus 0, one request at a time as a plain program
// would make its system calls. Side by side, the same operations on the
// host's file system in the same run (pwrite/pread of the same chunks, no
// fsync on either side: hmk's `durable` is off, as the host's page cache).
//
//   hmk_fs_bench [--mib N] [--files N] [--keys N]
#include <fcntl.h>
#include <fmt/core.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "hmk/proto/fs_generated.h"
#include "hmk/proto/kv_generated.h"
#include "hmk/runtime/config.hpp"
#include "hmk/runtime/system.hpp"
#include "hmk/services/protocol.hpp"

namespace {

using namespace hmk;
namespace pf = hmk::proto::fs;
namespace pk = hmk::proto::kv;
using services::k_kv_type;
constexpr std::uint32_t k_chunk = 4096;

/// `fsclient`: on `start` with "MODE COUNT", runs COUNT requests to /fs one
/// after another (seqwrite: 4 KiB writes to /bench/seq; seqread: 4 KiB
/// reads of it; create: COUNT files of 100 bytes) and answers the start with
/// "ok NS" (kernel clock from the start to the last answer) or "error ...".
class FsClient final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        return std::unique_ptr<Module>(new FsClient(env));
    }
    void on_message(const Message& m) override {
        const Header& h = m.header;
        if (h.destination != m_env.id()) return;
        if (h.type == msg::k_start && !h.is_reply()) {
            char mode[16] = {};
            unsigned long count = 0;
            const std::string text(m.text());
            if (std::sscanf(text.c_str(), "%15s %lu", mode, &count) != 2) return;
            m_mode = mode;
            m_count = count;
            m_done = 0;
            m_starter = h.sender;
            m_starter_correlation = h.correlation;
            m_start_ns = m_env.now_ns();
            next();
            return;
        }
        if (!h.is_reply() || h.correlation != m_waiting) return;
        if (h.type == services::k_kv_type) {
            const pk::Reply* kr = services::verified<pk::Reply>(m.payload);
            if (kr == nullptr || kr->status() != pk::Status::Ok) {
                finish(fmt::format("error at kv request {}", m_done));
                return;
            }
            if (++m_done == m_count) {
                finish(fmt::format("ok {}", m_env.now_ns() - m_start_ns));
                return;
            }
            next();
            return;
        }
        if (h.type != services::k_fs_type) return;
        const pf::Reply* r = services::verified<pf::Reply>(m.payload);
        if (r == nullptr || r->status() != pf::Status::Ok) {
            finish(fmt::format(
                "error at request {}: {}", m_done,
                r != nullptr && r->message() != nullptr ? r->message()->str() : "bad reply"));
            return;
        }
        if (m_mode == "seqread" && (r->data() == nullptr || r->data()->size() != k_chunk)) {
            finish(fmt::format("error: short read at request {}", m_done));
            return;
        }
        if (++m_done == m_count) {
            finish(fmt::format("ok {}", m_env.now_ns() - m_start_ns));
            return;
        }
        next();
    }

  private:
    explicit FsClient(Env& env)
        : m_env(env),
          m_fs(env.topology().find("/fs")->id),
          m_kv(env.topology().find("/apps/kv")->id) {}

    void next() {
        m_builder.Clear();
        if (m_mode == "seqwrite") {
            const auto path = m_builder.CreateString("/bench/seq");
            const auto data = m_builder.CreateVector(m_block);
            m_builder.Finish(pf::CreateRequest(m_builder, pf::Op::Write, path, 0,
                                               std::uint64_t{k_chunk} * m_done, 0, 0, data, true));
        } else if (m_mode == "seqread") {
            const auto path = m_builder.CreateString("/bench/seq");
            m_builder.Finish(pf::CreateRequest(m_builder, pf::Op::Read, path, 0,
                                               std::uint64_t{k_chunk} * m_done, k_chunk));
        } else if (m_mode == "kvput" || m_mode == "kvget") {
            const auto key = m_builder.CreateString(fmt::format("key{:08}", m_done));
            const auto value = m_builder.CreateString(std::string(100, 'v'));
            m_builder.Finish(pk::CreateRequest(
                m_builder, m_mode == "kvput" ? pk::Op::Put : pk::Op::Get, key, value));
            send_to(m_kv, k_kv_type);
            return;
        } else {
            const auto path = m_builder.CreateString(fmt::format("/bench/small/f{}", m_done));
            const auto data = m_builder.CreateVector(m_block.data(), 100);
            m_builder.Finish(
                pf::CreateRequest(m_builder, pf::Op::Write, path, 0, 0, 0, 0, data, true));
        }
        send_to(m_fs, services::k_fs_type);
    }

    void send_to(ModuleId to, std::uint32_t type) {
        Outgoing out;
        out.destination = to;
        out.type = type;
        out.correlation = m_env.next_correlation();
        out.payload = services::bytes_of(m_builder);
        m_waiting = out.correlation;
        if (auto r = m_env.send(out); !r) finish(fmt::format("error: {}", to_string(r.error())));
    }

    void finish(const std::string& text) {
        Outgoing out;
        out.destination = m_starter;
        out.type = msg::k_start;
        out.correlation = m_starter_correlation;
        out.flags = k_flag_reply;
        out.payload = as_bytes(text);
        (void)m_env.send(out);
        m_waiting = 0;
    }

    Env& m_env;
    ModuleId m_fs;
    ModuleId m_kv;
    std::string m_mode;
    std::uint64_t m_count = 0;
    std::uint64_t m_done = 0;
    ModuleId m_starter = k_no_module;
    std::uint64_t m_starter_correlation = 0;
    std::uint64_t m_start_ns = 0;
    std::uint64_t m_waiting = 0;
    std::vector<std::uint8_t> m_block = std::vector<std::uint8_t>(k_chunk, 0x5a);
    flatbuffers::FlatBufferBuilder m_builder{8192};
};

std::string system_toml(const std::string& isolation, const std::string& image) {
    return fmt::format(R"(
[system]
name = "fs-bench"
[bus]
capacity = 4096
max_payload = 8192
[[module]]
path = "/block"
kind = "blockdev"
isolation = "inproc"
config = {{ image = "{image}", blocks = 65536 }}
[[module]]
path = "/apps"
kind = "gateway"
bus = {{ capacity = 4096, max_payload = 8192 }}
[[module]]
path = "/apps/app1"
kind = "gateway"
bus = {{ capacity = 4096, max_payload = 8192 }}
[[module]]
path = "/apps/app1/client"
kind = "fsclient"
isolation = "inproc"
[[module]]
path = "/apps/kv"
kind = "kv"
bus = {{ capacity = 4096, max_payload = 8192 }}
[[module]]
path = "/apps/kv/shard0"
kind = "kvshard"
isolation = "{isolation}"
[[module]]
path = "/apps/kv/shard1"
kind = "kvshard"
isolation = "{isolation}"
[[module]]
path = "/fs"
kind = "fs"
isolation = "{isolation}"
config = {{ format = true }}
[[module]]
path = "/drivers"
kind = "gateway"
bus = {{ capacity = 4096, max_payload = 8192 }}
[[module]]
path = "/drivers/disk"
kind = "disk"
isolation = "{isolation}"
)",
                       fmt::arg("image", image), fmt::arg("isolation", isolation));
}

struct Run {
    double seconds = 0;
    bool ok = false;
};

// Asks the client to run `mode` `count` times; its own clock's time.
Run ask(System& system, ModuleId client, const std::string& mode, std::uint64_t count) {
    Outgoing out;
    out.destination = client;
    out.type = msg::k_start;
    const std::string text = fmt::format("{} {}", mode, count);
    out.payload = as_bytes(text);
    const auto corr = system.inject(out);
    if (!corr) return {};
    const auto reply = system.wait_for_root(*corr, std::chrono::minutes(5));
    if (!reply || reply->text().substr(0, 3) != "ok ") {
        fmt::print(stderr, "{}: {}\n", mode, reply ? std::string(reply->text()) : "no answer");
        return {};
    }
    return Run{std::stod(std::string(reply->text().substr(3))) / 1e9, true};
}

// A request to /fs from the root (mkdir).
bool mkdir(System& system, const std::string& path) {
    flatbuffers::FlatBufferBuilder b;
    const auto p = b.CreateString(path);
    b.Finish(pf::CreateRequest(b, pf::Op::Mkdir, p));
    Outgoing out;
    out.destination = system.topology().find("/fs")->id;
    out.type = services::k_fs_type;
    out.payload = services::bytes_of(b);
    for (int i = 0; i < 50; ++i) {  // the fs may still be mounting
        const auto corr = system.inject(out);
        if (!corr) return false;
        const auto reply = system.wait_for_root(*corr, std::chrono::milliseconds(500));
        if (reply) return true;
    }
    return false;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// The host's file system: the same chunks, the same files.
struct HostRun {
    double write_s = 0, read_s = 0, create_s = 0, put_s = 0, get_s = 0;
};
HostRun host(const std::string& dir, std::uint64_t chunks, std::uint64_t files,
             std::uint64_t keys) {
    HostRun h;
    {
        // A shard without the OS: the same log records appended to a host
        // file (no fsync, as hmk's), the pairs in a map.
        std::map<std::string, std::string> pairs;
        const std::string log = dir + "/kv.log";
        const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        const std::string value(100, 'v');
        auto t = std::chrono::steady_clock::now();
        off_t at = 0;
        for (std::uint64_t i = 0; i < keys; ++i) {
            const std::string key = fmt::format("key{:08}", i);
            const std::string rec =
                fmt::format("{:08x}{:08x}1{}{}", key.size() + value.size(), 0, key, value);
            if (::pwrite(fd, rec.data(), rec.size(), at) != static_cast<ssize_t>(rec.size())) break;
            at += static_cast<off_t>(rec.size());
            pairs[key] = value;
        }
        h.put_s = seconds_since(t);
        ::close(fd);
        t = std::chrono::steady_clock::now();
        std::size_t found = 0;
        for (std::uint64_t i = 0; i < keys; ++i) found += pairs.count(fmt::format("key{:08}", i));
        h.get_s = seconds_since(t);
        if (found != keys) h.get_s = 0;
    }
    std::vector<char> block(k_chunk, 0x5a);
    const std::string file = dir + "/seq";
    int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
    auto t = std::chrono::steady_clock::now();
    for (std::uint64_t i = 0; i < chunks; ++i) {
        if (::pwrite(fd, block.data(), k_chunk, static_cast<off_t>(i * k_chunk)) != k_chunk) break;
    }
    h.write_s = seconds_since(t);
    t = std::chrono::steady_clock::now();
    for (std::uint64_t i = 0; i < chunks; ++i) {
        if (::pread(fd, block.data(), k_chunk, static_cast<off_t>(i * k_chunk)) != k_chunk) break;
    }
    h.read_s = seconds_since(t);
    ::close(fd);
    std::filesystem::create_directory(dir + "/small");
    t = std::chrono::steady_clock::now();
    for (std::uint64_t i = 0; i < files; ++i) {
        const std::string name = fmt::format("{}/small/f{}", dir, i);
        fd = ::open(name.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || ::write(fd, block.data(), 100) != 100) break;
        ::close(fd);
    }
    h.create_s = seconds_since(t);
    return h;
}

}  // namespace

int main(int argc, char** argv) {
    std::uint64_t mib = 16;
    std::uint64_t files = 2000;
    std::uint64_t keys = 2000;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i];
        if (a == "--mib") mib = std::stoull(argv[i + 1]);
        if (a == "--files") files = std::stoull(argv[i + 1]);
        if (a == "--keys") keys = std::stoull(argv[i + 1]);
    }
    if (argc > 1 && std::string(argv[1]) == "--help") {
        fmt::print(
            "hmk_fs_bench [--mib N] [--files N] [--keys N]: fs and kv throughput through the stack "
            "vs the host\n");
        return 0;
    }
    const std::uint64_t chunks = mib * (1 << 20) / k_chunk;
    char tmpl[] = "/tmp/hmk-fs-bench-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return 1;
    const std::string dir = tmpl;

    fmt::print(
        "fs through the stack: /apps/app1/client -> /apps/app1 -> /apps -> Bus 0 -> /fs -> "
        "/drivers -> /drivers/disk -> Bus 0 -> /block (an image file)\n");
    fmt::print("{} MiB in 4 KiB requests, {} files of 100 bytes; one request at a time\n\n", mib,
               files);
    fmt::print("{:<26} {:>12} {:>12} {:>14} {:>12} {:>12}\n", "", "write MB/s", "read MB/s",
               "creates/s", "kv put/s", "kv get/s");
    const HostRun h = host(dir, chunks, files, keys);
    const double mb = static_cast<double>(chunks * k_chunk) / 1e6;
    const double nk = static_cast<double>(keys);
    fmt::print("{:<26} {:>12.1f} {:>12.1f} {:>14.0f} {:>12.0f} {:>12.0f}\n", "host (file, map)",
               mb / h.write_s, mb / h.read_s, static_cast<double>(files) / h.create_s, nk / h.put_s,
               nk / h.get_s);
    int rc = 0;
    for (const char* isolation : {"inproc", "process"}) {
        Registry registry;
        register_standard_modules(registry);
        registry.add<FsClient>("fsclient", "fs benchmark client", Role::leaf, {});
        const std::string image = fmt::format("{}/disk-{}.img", dir, isolation);
        auto spec = parse_system(system_toml(isolation, image), "fs-bench.toml", registry);
        if (!spec) {
            fmt::print(stderr, "{}\n", spec.error().to_string());
            return 1;
        }
        Logger logger(stderr, LogLevel::error);
        auto system = System::create(*spec, registry, logger);
        if (!system || !(*system)->start()) return 1;
        System& s = **system;
        const ModuleId client = s.topology().find("/apps/app1/client")->id;
        if (!mkdir(s, "/bench") || !mkdir(s, "/bench/small")) {
            fmt::print(stderr, "the fs does not answer\n");
            return 1;
        }
        const Run w = ask(s, client, "seqwrite", chunks);
        const Run r = ask(s, client, "seqread", chunks);
        const Run c = ask(s, client, "create", files);
        const Run kp = ask(s, client, "kvput", keys);
        const Run kg = ask(s, client, "kvget", keys);
        if (!w.ok || !r.ok || !c.ok || !kp.ok || !kg.ok) rc = 1;
        fmt::print("{:<26} {:>12.1f} {:>12.1f} {:>14.0f} {:>12.0f} {:>12.0f}\n",
                   fmt::format("hmk, services {}", isolation), mb / w.seconds, mb / r.seconds,
                   static_cast<double>(files) / c.seconds, nk / kp.seconds, nk / kg.seconds);
        fmt::print("{:<26} {:>12.1f} {:>12.1f} {:>14.1f} {:>12.1f} {:>12.1f}\n",
                   "  ratio host / hmk", w.seconds / h.write_s, r.seconds / h.read_s,
                   c.seconds / h.create_s, kp.seconds / h.put_s, kg.seconds / h.get_s);
    }
    std::filesystem::remove_all(dir);
    return rc;
}
