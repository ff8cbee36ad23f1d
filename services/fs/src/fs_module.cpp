// SPDX-License-Identifier: Apache-2.0
// `fs`: hmkfs as a service (docs/fs.md). Requests (schemas/fs.fbs) are
// handled one at a time, in the order they came; each is a coroutine that
// waits on the disk driver for blocks. The module keeps no state of its own
// beyond a cache: everything is on the disk, so a restarted fs mounts again
// (replaying its journal) and goes on; a client sends again what it had not
// been answered.
#include <fmt/core.h>

#include <deque>
#include <stdexcept>

#include "bus_block_io.hpp"
#include "hmk/fs/file_system.hpp"
#include "hmk/proto/fs_generated.h"
#include "hmk/services/protocol.hpp"
#include "hmk/services/services.hpp"

namespace hmk::services {
namespace {

namespace pf = hmk::proto::fs;

constexpr std::uint64_t k_ms = 1'000'000;
// Bytes a reply carries besides its data (table, strings, alignment).
constexpr std::size_t k_reply_room = 512;

class FsModule final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        const TopologyNode* device = env.topology().find(env.config().string("device"));
        if (device == nullptr)
            return Err{fmt::format("no disk driver at {}", env.config().string("device"))};
        return std::unique_ptr<Module>(new FsModule(env, device->id));
    }

    void on_start() override {
        m_tick = m_env.set_timer(std::chrono::milliseconds(50), TimerMode::periodic);
        m_main = mount_and_serve();
        check();
    }

    void on_message(const Message& m) override {
        const Header& h = m.header;
        if (h.destination != m_env.id()) return;
        if (h.type == k_block_type && h.is_reply()) {
            m_io.on_reply(m);
            check();
            return;
        }
        if (h.is_reply()) return;
        if (h.type == msg::k_stats) {
            const std::string text = fmt::format(
                "mounted={} replayed={} queued={} done={} failed={} refused={} io_out={} "
                "io_resent={}",
                m_fs != nullptr ? 1 : 0, m_fs != nullptr && m_fs->replayed() ? 1 : 0,
                m_queue.size(), m_done, m_failed, m_refused, m_io.outstanding(), m_io.resent());
            (void)m_env.reply(m, as_bytes(text));
            return;
        }
        if (h.type < msg::k_user_base) return;
        if (h.type != k_fs_type) {
            ++m_refused;
            answer(Pending{h.sender, h.correlation, {}}, pf::Status::BadRequest,
                   fmt::format("type {:#x} is not the file system protocol ({:#x}, "
                               "schemas/fs.fbs)",
                               h.type, k_fs_type));
            return;
        }
        if (verified<pf::Request>(m.payload) == nullptr) {
            ++m_refused;
            answer(Pending{h.sender, h.correlation, {}}, pf::Status::BadRequest,
                   "not a file system request (schemas/fs.fbs)");
            return;
        }
        if (m_queue.size() >= 4096) {
            ++m_refused;
            answer(Pending{h.sender, h.correlation, {}}, pf::Status::Busy, "too many requests");
            return;
        }
        m_queue.push_back(Pending{h.sender, h.correlation, {m.payload.begin(), m.payload.end()}});
        if (m_fs != nullptr && !m_serving) {
            m_main = serve();
            check();
        }
    }

    void on_timer(TimerId id) override {
        if (id != m_tick) return;
        m_io.on_tick(m_env.now_ns());
        check();
    }

  private:
    struct Pending {
        ModuleId client = k_no_module;
        std::uint64_t correlation = 0;
        std::vector<std::byte> request;
    };

    FsModule(Env& env, ModuleId device)
        : m_env(env),
          m_io(env, device, static_cast<std::uint64_t>(env.config().integer("timeout_ms")) * k_ms,
               static_cast<std::uint32_t>(env.config().integer("tries"))),
          m_max_data(static_cast<std::uint32_t>(env.config().integer("max_data"))) {}

    // A coroutine that failed (threw) fails the module, as a handler would.
    void check() {
        if (m_main.done()) m_main.get();
    }

    Task<void> mount_and_serve() {
        auto blocks = co_await m_io.info();
        if (!blocks) {
            throw std::runtime_error(
                fmt::format("the disk driver does not answer: {}", fs::to_string(blocks.error())));
        }
        m_io.set_blocks(*blocks);
        auto mounted = co_await fs::FileSystem::mount(m_io);
        if (!mounted && mounted.error() == fs::FsError::corrupt &&
            m_env.config().boolean("format")) {
            m_env.log(LogLevel::warn, fmt::format("no file system on the disk ({} blocks): "
                                                  "making one (format = true)",
                                                  *blocks));
            auto made = co_await fs::mkfs(m_io);
            if (!made) {
                throw std::runtime_error(
                    fmt::format("mkfs failed: {}", fs::to_string(made.error())));
            }
            mounted = co_await fs::FileSystem::mount(m_io);
        }
        if (!mounted) {
            throw std::runtime_error(
                fmt::format("cannot mount: {}", fs::to_string(mounted.error())));
        }
        m_fs = std::move(*mounted);
        m_env.log(LogLevel::info,
                  fmt::format("mounted: {} blocks, {} inodes{}", m_fs->geometry().blocks,
                              m_fs->geometry().inodes,
                              m_fs->replayed() ? ", a committed transaction replayed" : ""));
        co_await serve();
    }

    Task<void> serve() {
        m_serving = true;
        while (!m_queue.empty()) {
            Pending p = std::move(m_queue.front());
            m_queue.pop_front();
            co_await handle(std::move(p));
        }
        m_serving = false;
    }

    Task<void> handle(Pending p) {
        const pf::Request* req = flatbuffers::GetRoot<pf::Request>(p.request.data());
        const std::string_view path =
            req->path() != nullptr ? req->path()->string_view() : std::string_view();
        m_fs->set_now(m_env.now_ns());
        auto status = [](fs::FsError e) { return static_cast<pf::Status>(e); };
        auto done = [&](const Result<void, fs::FsError>& r) {
            if (r) {
                answer(p, pf::Status::Ok, {});
            } else {
                answer(p, status(r.error()), fs::to_string(r.error()));
            }
        };
        const auto create =
            req->create() ? fs::FileSystem::Create::yes : fs::FileSystem::Create::no;
        std::span<const std::byte> data;
        if (req->data() != nullptr) {
            data = {reinterpret_cast<const std::byte*>(req->data()->data()), req->data()->size()};
        }
        switch (req->op()) {
            case pf::Op::Stat: {
                auto r = co_await m_fs->stat(path);
                if (!r) {
                    done(Err{r.error()});
                } else {
                    reply_stat(p, *r);
                }
                break;
            }
            case pf::Op::List: {
                auto r = co_await m_fs->list(path);
                if (!r) {
                    done(Err{r.error()});
                } else {
                    reply_list(p, *r, req->offset());
                }
                break;
            }
            case pf::Op::Mkdir:
                done(co_await m_fs->mkdir(path));
                break;
            case pf::Op::Create:
                done(co_await m_fs->create(path));
                break;
            case pf::Op::Read: {
                const std::uint32_t length = std::min(req->length(), m_max_data);
                auto r = co_await m_fs->read(path, req->offset(), length);
                if (!r) {
                    done(Err{r.error()});
                } else {
                    reply_data(p, *r);
                }
                break;
            }
            case pf::Op::Write:
                done(co_await m_fs->write(path, req->offset(), data, create));
                break;
            case pf::Op::Append: {
                auto r = co_await m_fs->append(path, data, create);
                if (!r) {
                    done(Err{r.error()});
                } else {
                    reply_size(p, *r);
                }
                break;
            }
            case pf::Op::Truncate:
                done(co_await m_fs->truncate(path, req->size()));
                break;
            case pf::Op::Rename: {
                const std::string_view to =
                    req->to() != nullptr ? req->to()->string_view() : std::string_view();
                done(co_await m_fs->rename(path, to));
                break;
            }
            case pf::Op::Remove:
                done(co_await m_fs->remove(path));
                break;
            case pf::Op::Check: {
                const fs::FsckReport r = co_await m_fs->check();
                reply_check(p, r);
                break;
            }
            default:
                answer(p, pf::Status::BadRequest, "unknown operation");
                break;
        }
        if (m_io_failed) {
            // What the disk holds is known again only after a mount (which
            // replays the journal): the module fails, its parent restarts it.
            throw std::runtime_error("the disk failed under an operation: mounting again");
        }
    }

    // --- replies ------------------------------------------------------------

    void finish(const Pending& p, pf::Status status, flatbuffers::Offset<pf::Reply> reply) {
        m_builder.Finish(reply);
        Outgoing out;
        out.destination = p.client;
        out.type = k_fs_type;
        out.correlation = p.correlation;
        out.flags = status == pf::Status::Ok ? k_flag_reply : (k_flag_reply | k_flag_error);
        out.payload = bytes_of(m_builder);
        if (auto r = m_env.send(out); !r) {
            m_env.log(LogLevel::warn,
                      fmt::format("cannot answer {}: {}", p.client, to_string(r.error())));
        }
        if (status == pf::Status::Ok) {
            ++m_done;
        } else {
            ++m_failed;
        }
    }

    void answer(const Pending& p, pf::Status status, std::string_view why) {
        if (status == pf::Status::IoError) m_io_failed = true;
        m_builder.Clear();
        const auto text = why.empty() ? 0 : m_builder.CreateString(why.data(), why.size());
        pf::ReplyBuilder r(m_builder);
        r.add_status(status);
        if (!why.empty()) r.add_message(text);
        finish(p, status, r.Finish());
    }

    flatbuffers::Offset<pf::Entry> entry(const fs::DirEntry& e) {
        const auto name = m_builder.CreateString(e.name);
        return pf::CreateEntry(m_builder, name, static_cast<pf::Kind>(e.stat.kind), e.stat.size,
                               e.stat.inode, e.stat.mtime_ns);
    }

    void reply_stat(const Pending& p, const fs::Stat& s) {
        m_builder.Clear();
        const auto e = entry(fs::DirEntry{{}, s});
        pf::ReplyBuilder r(m_builder);
        r.add_status(pf::Status::Ok);
        r.add_stat(e);
        r.add_size(s.size);
        finish(p, pf::Status::Ok, r.Finish());
    }

    // Entries from `first` on, as many as fit one message; `size` says how
    // many there are in all, so a client asks again from where it got to.
    void reply_list(const Pending& p, const std::vector<fs::DirEntry>& all, std::uint64_t first) {
        m_builder.Clear();
        std::vector<flatbuffers::Offset<pf::Entry>> entries;
        std::size_t bytes = 0;
        for (std::size_t i = first; i < all.size(); ++i) {
            bytes += all[i].name.size() + 64;
            if (bytes + k_reply_room > m_max_data) break;
            entries.push_back(entry(all[i]));
        }
        const auto list = m_builder.CreateVector(entries);
        pf::ReplyBuilder r(m_builder);
        r.add_status(pf::Status::Ok);
        r.add_entries(list);
        r.add_size(all.size());
        finish(p, pf::Status::Ok, r.Finish());
    }

    void reply_data(const Pending& p, const std::vector<std::byte>& data) {
        m_builder.Clear();
        const auto bytes =
            m_builder.CreateVector(reinterpret_cast<const std::uint8_t*>(data.data()), data.size());
        pf::ReplyBuilder r(m_builder);
        r.add_status(pf::Status::Ok);
        r.add_data(bytes);
        r.add_size(data.size());
        finish(p, pf::Status::Ok, r.Finish());
    }

    void reply_size(const Pending& p, std::uint64_t size) {
        m_builder.Clear();
        pf::ReplyBuilder r(m_builder);
        r.add_status(pf::Status::Ok);
        r.add_size(size);
        finish(p, pf::Status::Ok, r.Finish());
    }

    void reply_check(const Pending& p, const fs::FsckReport& report) {
        m_builder.Clear();
        std::vector<flatbuffers::Offset<flatbuffers::String>> problems;
        std::size_t bytes = 0;
        for (const std::string& problem : report.problems) {
            bytes += problem.size() + 8;
            if (bytes + k_reply_room > m_max_data) break;
            problems.push_back(m_builder.CreateString(problem));
        }
        const auto list = m_builder.CreateVector(problems);
        const std::string summary =
            fmt::format("{} files, {} directories, {} blocks used of {}", report.files,
                        report.directories, report.used_blocks, report.geometry.blocks);
        const auto text = m_builder.CreateString(summary);
        const pf::Status status = report.problems.empty() ? pf::Status::Ok : pf::Status::Corrupt;
        pf::ReplyBuilder r(m_builder);
        r.add_status(status);
        r.add_message(text);
        r.add_problems(list);
        r.add_size(report.problems.size());
        finish(p, status, r.Finish());
    }

    Env& m_env;
    BusBlockIo m_io;
    std::uint32_t m_max_data;
    std::unique_ptr<fs::FileSystem> m_fs;
    std::deque<Pending> m_queue;
    bool m_serving = false;
    bool m_io_failed = false;
    Task<void> m_main;
    TimerId m_tick = 0;
    std::uint64_t m_done = 0;
    std::uint64_t m_failed = 0;
    std::uint64_t m_refused = 0;
    flatbuffers::FlatBufferBuilder m_builder{8192};
};

}  // namespace

void add_fs(Registry& registry) {
    registry.add<FsModule>(
        "fs",
        "hmkfs, a journaling file system, on the disk driver (schemas/fs.fbs, type 0x2001): "
        "stat, list, mkdir, create, read, write, append, truncate, rename, remove, check; "
        "answers 'stats'",
        Role::leaf,
        {ConfigKey("device", ConfigType::path, std::string("/drivers/disk"), "the disk driver"),
         ConfigKey("format", ConfigType::boolean, false,
                   "make a file system when the disk holds none"),
         ConfigKey("timeout_ms", ConfigType::integer, std::int64_t{200},
                   "a block request unanswered this long is sent again")
             .range(1, 60'000),
         ConfigKey("tries", ConfigType::integer, std::int64_t{50},
                   "sends of a block request before it fails")
             .range(1, 1000),
         ConfigKey("max_data", ConfigType::integer, std::int64_t{4096},
                   "bytes of data in one reply (read) at most; fit to the buses' max_payload")
             .range(1024, 1 << 20)});
}

}  // namespace hmk::services
