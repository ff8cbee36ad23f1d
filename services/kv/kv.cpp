// SPDX-License-Identifier: Apache-2.0
// The key-value store (docs/kv.md): `kv`, a gateway that routes each key to
// one of its shards (its children named shard*) and merges scans; and
// `kvshard`, which keeps its pairs in memory and in a log file on the file
// system, one record per change, written before the change is answered.
// A restarted shard reads its log back; nothing answered is lost.
#include <fmt/core.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <stdexcept>
#include <unordered_map>

#include "hmk/crc32c.hpp"
#include "hmk/detail/endian.hpp"
#include "hmk/proto/fs_generated.h"
#include "hmk/proto/kv_generated.h"
#include "hmk/services/protocol.hpp"
#include "hmk/services/requester.hpp"
#include "hmk/services/services.hpp"

namespace hmk::services {
namespace {

namespace pk = hmk::proto::kv;
namespace pf = hmk::proto::fs;

constexpr std::uint64_t k_ms = 1'000'000;
constexpr std::size_t k_max_key = 512;
constexpr std::size_t k_max_value = 3000;     // a record fits one fs write: never torn
constexpr std::size_t k_reply_budget = 3500;  // bytes of pairs in one scan reply

std::vector<std::byte> copy_of(const flatbuffers::FlatBufferBuilder& b) {
    const auto s = bytes_of(b);
    return {s.begin(), s.end()};
}

/// Sends a kv reply built by `fill` (which adds fields after the status).
template <typename Fill>
void send_reply(Env& env, flatbuffers::FlatBufferBuilder& b, ModuleId to, std::uint64_t correlation,
                pk::Status status, std::string_view why, Fill fill) {
    b.Clear();
    const auto text = why.empty() ? 0 : b.CreateString(why.data(), why.size());
    auto extra = fill(b);
    pk::ReplyBuilder r(b);
    r.add_status(status);
    if (!why.empty()) r.add_message(text);
    extra(r);
    b.Finish(r.Finish());
    Outgoing out;
    out.destination = to;
    out.type = k_kv_type;
    out.correlation = correlation;
    out.flags = status == pk::Status::Ok ? k_flag_reply : (k_flag_reply | k_flag_error);
    out.payload = bytes_of(b);
    (void)env.send(out);
}

void send_error(Env& env, flatbuffers::FlatBufferBuilder& b, ModuleId to, std::uint64_t correlation,
                pk::Status status, std::string_view why) {
    send_reply(env, b, to, correlation, status, why,
               [](flatbuffers::FlatBufferBuilder&) { return [](pk::ReplyBuilder&) {}; });
}

// --- the shard --------------------------------------------------------------

class KvShard final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        const TopologyNode* fs = env.topology().find(env.config().string("fs"));
        if (fs == nullptr)
            return Err{fmt::format("no file system at {}", env.config().string("fs"))};
        return std::unique_ptr<Module>(new KvShard(env, fs->id));
    }

    void on_start() override {
        m_tick = m_env.set_timer(std::chrono::milliseconds(50), TimerMode::periodic);
        m_main = load_and_serve();
        check();
    }

    void on_message(const Message& m) override {
        const Header& h = m.header;
        if (h.destination != m_env.id()) return;
        if (h.is_reply()) {
            m_fs_calls.on_reply(m);
            check();
            return;
        }
        if (h.type == msg::k_stats) {
            const std::string text = fmt::format(
                "ready={} keys={} log_bytes={} queued={} writes={} loaded={}", m_ready ? 1 : 0,
                m_pairs.size(), m_log_size, m_queue.size(), m_writes, m_loaded);
            (void)m_env.reply(m, as_bytes(text));
            return;
        }
        if (h.type != k_kv_type) return;
        if (verified<pk::Request>(m.payload) == nullptr) {
            send_error(m_env, m_builder, h.sender, h.correlation, pk::Status::BadRequest,
                       "not a kv request (schemas/kv.fbs)");
            return;
        }
        m_queue.push_back(Pending{h.sender, h.correlation, {m.payload.begin(), m.payload.end()}});
        if (m_ready && !m_serving) {
            m_main = serve();
            check();
        }
    }

    void on_timer(TimerId id) override {
        if (id != m_tick) return;
        m_fs_calls.on_tick(m_env.now_ns());
        check();
    }

  private:
    struct Pending {
        ModuleId client = k_no_module;
        std::uint64_t correlation = 0;
        std::vector<std::byte> request;
    };

    KvShard(Env& env, ModuleId fs)
        : m_env(env),
          m_fs(fs),
          m_fs_calls(env, static_cast<std::uint64_t>(env.config().integer("timeout_ms")) * k_ms,
                     static_cast<std::uint32_t>(env.config().integer("tries"))) {
        const std::string& dir = env.config().string("dir");
        const std::string name = env.path().substr(env.path().rfind('/') + 1);
        m_dir = dir;
        m_log = (dir == "/" ? "" : dir) + "/" + name + ".log";
    }

    void check() {
        if (m_main.done()) m_main.get();
    }

    // One fs request; the verified reply (a copy), or why not.
    Task<Result<OwnedAnswer, std::string>> fs_call(flatbuffers::FlatBufferBuilder& b) {
        std::vector<std::byte> payload = copy_of(b);
        auto r = co_await m_fs_calls.call(m_fs, k_fs_type, std::move(payload));
        if (!r) co_return Err{fmt::format("the file system: {}", to_string(r.error()))};
        if (verified<pf::Reply>(r->payload) == nullptr)
            co_return Err{std::string("the file system answered garbage")};
        co_return std::move(*r);
    }
    static const pf::Reply* reply_of(const OwnedAnswer& a) {
        return flatbuffers::GetRoot<pf::Reply>(a.payload.data());
    }

    Task<void> load_and_serve() {
        // The directory (there already, after the first start) and the log.
        flatbuffers::FlatBufferBuilder b;
        {
            const auto path = b.CreateString(m_dir);
            b.Finish(pf::CreateRequest(b, pf::Op::Mkdir, path));
            auto r = co_await fs_call(b);
            if (!r) throw std::runtime_error(r.error());
            const auto status = reply_of(*r)->status();
            if (status != pf::Status::Ok && status != pf::Status::Exists) {
                throw std::runtime_error(
                    fmt::format("cannot make {}: status {}", m_dir, static_cast<int>(status)));
            }
        }
        std::vector<std::byte> log;
        for (;;) {
            b.Clear();
            const auto path = b.CreateString(m_log);
            b.Finish(pf::CreateRequest(b, pf::Op::Read, path, 0, log.size(), 4096));
            auto r = co_await fs_call(b);
            if (!r) throw std::runtime_error(r.error());
            const pf::Reply* reply = reply_of(*r);
            if (reply->status() == pf::Status::NotFound) break;  // a new shard
            if (reply->status() != pf::Status::Ok) {
                throw std::runtime_error(fmt::format("cannot read {}: status {}", m_log,
                                                     static_cast<int>(reply->status())));
            }
            if (reply->data() == nullptr || reply->data()->size() == 0) break;
            const auto* d = reinterpret_cast<const std::byte*>(reply->data()->data());
            log.insert(log.end(), d, d + reply->data()->size());
        }
        replay(log);
        m_ready = true;
        m_env.log(LogLevel::info, fmt::format("{}: {} keys from {} records ({} bytes)", m_log,
                                              m_pairs.size(), m_loaded, m_log_size));
        co_await serve();
    }

    // Record: u32 length of what follows the first 8 bytes, u32 CRC32C of
    // it, u8 op (1 put, 2 del), u32 key length, key, value.
    void replay(const std::vector<std::byte>& log) {
        std::size_t at = 0;
        while (at + 8 <= log.size()) {
            const auto len = hmk::detail::get_le<std::uint32_t>(log.data(), at);
            const auto crc = hmk::detail::get_le<std::uint32_t>(log.data(), at + 4);
            if (len < 5 || at + 8 + len > log.size() ||
                crc32c(std::span<const std::byte>(log.data() + at + 8, len)) != crc)
                break;
            const std::byte* p = log.data() + at + 8;
            const auto op = static_cast<std::uint8_t>(p[0]);
            const auto klen = hmk::detail::get_le<std::uint32_t>(p, 1);
            if (5 + std::size_t{klen} > len) break;
            std::string key(reinterpret_cast<const char*>(p + 5), klen);
            if (op == 1) {
                m_pairs[key].assign(reinterpret_cast<const char*>(p + 5 + klen), len - 5 - klen);
            } else {
                m_pairs.erase(key);
            }
            at += 8 + len;
            ++m_loaded;
        }
        if (at != log.size()) {
            m_env.log(LogLevel::warn,
                      fmt::format("{}: a damaged record at byte {}: the log goes on "
                                  "from there",
                                  m_log, at));
        }
        m_log_size = at;
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
        const pk::Request* req = flatbuffers::GetRoot<pk::Request>(p.request.data());
        const std::string key = req->key() != nullptr ? req->key()->str() : std::string();
        switch (req->op()) {
            case pk::Op::Get: {
                const auto it = m_pairs.find(key);
                if (it == m_pairs.end()) {
                    send_error(m_env, m_builder, p.client, p.correlation, pk::Status::NotFound,
                               "no such key");
                    break;
                }
                send_reply(m_env, m_builder, p.client, p.correlation, pk::Status::Ok, {},
                           [&](flatbuffers::FlatBufferBuilder& b) {
                               const auto v = b.CreateString(it->second);
                               return [v](pk::ReplyBuilder& r) { r.add_value(v); };
                           });
                break;
            }
            case pk::Op::Put:
            case pk::Op::Del: {
                const bool put = req->op() == pk::Op::Put;
                const std::string value =
                    put && req->value() != nullptr ? req->value()->str() : std::string();
                if (key.empty() || key.size() > k_max_key || value.size() > k_max_value) {
                    send_error(m_env, m_builder, p.client, p.correlation, pk::Status::TooBig,
                               fmt::format("keys are 1 to {} bytes, values at most {}", k_max_key,
                                           k_max_value));
                    break;
                }
                if (!put && m_pairs.count(key) == 0) {
                    send_error(m_env, m_builder, p.client, p.correlation, pk::Status::NotFound,
                               "no such key");
                    break;
                }
                const std::string why = co_await append(put, key, value);
                if (!why.empty()) {
                    send_error(m_env, m_builder, p.client, p.correlation, pk::Status::Unavailable,
                               why);
                    break;
                }
                if (put) {
                    m_pairs[key] = value;
                } else {
                    m_pairs.erase(key);
                }
                send_error(m_env, m_builder, p.client, p.correlation, pk::Status::Ok, {});
                break;
            }
            case pk::Op::Scan:
                scan(p, *req);
                break;
            default:
                send_error(m_env, m_builder, p.client, p.correlation, pk::Status::BadRequest,
                           "unknown operation");
                break;
        }
    }

    // Writes one record at the log's end (a write at an offset: sent twice,
    // it is the same write). Empty, or why it failed.
    Task<std::string> append(bool put, const std::string& key, const std::string& value) {
        std::vector<std::byte> rec(8 + 5 + key.size() + value.size());
        const auto len = static_cast<std::uint32_t>(rec.size() - 8);
        rec[8] = static_cast<std::byte>(put ? 1 : 2);
        hmk::detail::put_le<std::uint32_t>(rec.data(), 9, static_cast<std::uint32_t>(key.size()));
        std::memcpy(rec.data() + 13, key.data(), key.size());
        std::memcpy(rec.data() + 13 + key.size(), value.data(), value.size());
        hmk::detail::put_le<std::uint32_t>(rec.data(), 0, len);
        hmk::detail::put_le<std::uint32_t>(rec.data(), 4,
                                           crc32c(std::span<const std::byte>(rec).subspan(8)));
        flatbuffers::FlatBufferBuilder b(rec.size() + 256);
        const auto path = b.CreateString(m_log);
        const auto data =
            b.CreateVector(reinterpret_cast<const std::uint8_t*>(rec.data()), rec.size());
        b.Finish(pf::CreateRequest(b, pf::Op::Write, path, 0, m_log_size, 0, 0, data, true));
        auto r = co_await fs_call(b);
        if (!r) co_return r.error();
        const pf::Reply* reply = reply_of(*r);
        if (reply->status() != pf::Status::Ok) {
            co_return fmt::format("the log write failed: {}",
                                  reply->message() != nullptr ? reply->message()->str() : "?");
        }
        m_log_size += rec.size();
        ++m_writes;
        co_return std::string();
    }

    void scan(const Pending& p, const pk::Request& req) {
        const std::string from = req.key() != nullptr ? req.key()->str() : std::string();
        const std::string prefix = req.prefix() != nullptr ? req.prefix()->str() : std::string();
        const std::uint32_t limit = req.limit() == 0 ? UINT32_MAX : req.limit();
        std::vector<const std::pair<const std::string, std::string>*> found;
        bool more = false;
        std::size_t bytes = 0;
        for (auto it = m_pairs.lower_bound(std::max(from, prefix)); it != m_pairs.end(); ++it) {
            if (it->first.compare(0, prefix.size(), prefix) != 0) break;
            bytes += it->first.size() + it->second.size() + 16;
            if (found.size() >= limit || bytes > k_reply_budget) {
                more = true;
                break;
            }
            found.push_back(&*it);
        }
        send_reply(m_env, m_builder, p.client, p.correlation, pk::Status::Ok, {},
                   [&](flatbuffers::FlatBufferBuilder& b) {
                       std::vector<flatbuffers::Offset<pk::Pair>> pairs;
                       for (const auto* kv : found) {
                           const auto k = b.CreateString(kv->first);
                           const auto v = b.CreateString(kv->second);
                           pairs.push_back(pk::CreatePair(b, k, v));
                       }
                       const auto list = b.CreateVector(pairs);
                       return [list, more](pk::ReplyBuilder& r) {
                           r.add_pairs(list);
                           r.add_more(more);
                       };
                   });
    }

    Env& m_env;
    ModuleId m_fs;
    Requester m_fs_calls;
    std::string m_dir;
    std::string m_log;
    std::map<std::string, std::string> m_pairs;
    std::uint64_t m_log_size = 0;
    std::uint64_t m_loaded = 0;
    std::uint64_t m_writes = 0;
    bool m_ready = false;
    bool m_serving = false;
    std::deque<Pending> m_queue;
    TimerId m_tick = 0;
    flatbuffers::FlatBufferBuilder m_builder{8192};
    Task<void> m_main;  // last: its frame refers to everything above
};

// --- the router -------------------------------------------------------------

class KvRouter final : public Module {
  public:
    /// Its children named shard*, in name order.
    static std::vector<ModuleId> shards_of(const Topology& topology, const TopologyNode& self) {
        std::vector<std::pair<std::string, ModuleId>> shards;
        for (const ModuleId c : self.children) {
            const TopologyNode* n = topology.find(c);
            const std::string name = n->path.substr(n->path.rfind('/') + 1);
            if (name.rfind("shard", 0) == 0) shards.emplace_back(name, c);
        }
        std::sort(shards.begin(), shards.end());
        std::vector<ModuleId> ids;
        for (const auto& s : shards) ids.push_back(s.second);
        return ids;
    }
    static std::string check(const Topology& topology, const TopologyNode& self,
                             const ModuleConfig& /*config*/) {
        if (!shards_of(topology, self).empty()) return {};
        return "a kv store needs at least one shard (a child named shard*, kind kvshard)";
    }

    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        std::vector<ModuleId> ids = shards_of(env.topology(), *env.topology().find(env.id()));
        if (ids.empty())
            return Err{fmt::format("{} has no shards (children named shard*)", env.path())};
        return std::unique_ptr<Module>(new KvRouter(env, std::move(ids)));
    }

    void on_start() override {
        m_tick = m_env.set_timer(std::chrono::milliseconds(100), TimerMode::periodic);
    }

    void on_message(const Message& m) override {
        const Header& h = m.header;
        if (h.destination != m_env.id()) return;
        if (h.type == msg::k_stats && !h.is_reply()) {
            (void)m_env.reply(
                m, as_bytes(fmt::format("shards={} pending={} scans={} routed={}", m_shards.size(),
                                        m_pending.size(), m_scans.size(), m_routed)));
            return;
        }
        if (h.type == k_kv_type && h.is_reply()) return from_shard(m);
        if (h.is_reply() || h.type < msg::k_user_base) return;
        if (h.type != k_kv_type) {
            send_error(m_env, m_builder, h.sender, h.correlation, pk::Status::BadRequest,
                       fmt::format("type {:#x} is not the kv protocol ({:#x}, schemas/kv.fbs)",
                                   h.type, k_kv_type));
            return;
        }
        const pk::Request* req = verified<pk::Request>(m.payload);
        if (req == nullptr) {
            send_error(m_env, m_builder, h.sender, h.correlation, pk::Status::BadRequest,
                       "not a kv request (schemas/kv.fbs)");
            return;
        }
        if (req->op() == pk::Op::Scan) return start_scan(m);
        const std::string_view key =
            req->key() != nullptr ? req->key()->string_view() : std::string_view();
        const ModuleId shard = m_shards[fnv1a(key) % m_shards.size()];
        const std::uint64_t corr = m_env.next_correlation();
        m_pending[corr] = Route{h.sender, h.correlation, m_env.now_ns()};
        forward(shard, corr, m.payload);
        ++m_routed;
    }

    void on_timer(TimerId id) override {
        if (id != m_tick) return;
        // Requests whose shard never answered (it was restarting): the
        // client sends again; scans answer with what is missing.
        const std::uint64_t now = m_env.now_ns();
        std::erase_if(m_pending,
                      [&](const auto& e) { return now > e.second.at_ns + 10'000 * k_ms; });
        for (auto it = m_scans.begin(); it != m_scans.end();) {
            if (now > it->second.at_ns + 2'000 * k_ms) {
                send_error(m_env, m_builder, it->second.client, it->second.correlation,
                           pk::Status::Unavailable, "a shard did not answer");
                it = m_scans.erase(it);
            } else {
                ++it;
            }
        }
    }

  private:
    struct Route {
        ModuleId client = k_no_module;
        std::uint64_t correlation = 0;
        std::uint64_t at_ns = 0;
    };
    struct Scan {
        ModuleId client = k_no_module;
        std::uint64_t correlation = 0;
        std::uint64_t at_ns = 0;
        std::size_t waiting = 0;
        std::uint32_t limit = 0;
        bool more = false;
        std::map<std::string, std::string> pairs;
    };

    KvRouter(Env& env, std::vector<ModuleId> shards) : m_env(env), m_shards(std::move(shards)) {}

    static std::uint64_t fnv1a(std::string_view s) {
        std::uint64_t h = 1469598103934665603ULL;
        for (const char c : s) {
            h ^= static_cast<unsigned char>(c);
            h *= 1099511628211ULL;
        }
        return h;
    }

    void forward(ModuleId shard, std::uint64_t corr, std::span<const std::byte> payload) {
        Outgoing out;
        out.destination = shard;
        out.type = k_kv_type;
        out.correlation = corr;
        out.payload = payload;
        (void)m_env.send_child(out);
    }

    void start_scan(const Message& m) {
        const pk::Request* req = flatbuffers::GetRoot<pk::Request>(m.payload.data());
        Scan s;
        s.client = m.header.sender;
        s.correlation = m.header.correlation;
        s.at_ns = m_env.now_ns();
        s.waiting = m_shards.size();
        s.limit = req->limit() == 0 ? UINT32_MAX : req->limit();
        const std::uint64_t id = m_env.next_correlation();
        m_scans.emplace(id, std::move(s));
        for (const ModuleId shard : m_shards) {
            const std::uint64_t corr = m_env.next_correlation();
            m_scan_parts[corr] = id;
            forward(shard, corr, m.payload);
        }
    }

    void from_shard(const Message& m) {
        if (const auto part = m_scan_parts.find(m.header.correlation); part != m_scan_parts.end()) {
            const std::uint64_t id = part->second;
            m_scan_parts.erase(part);
            const auto it = m_scans.find(id);
            if (it == m_scans.end()) return;
            Scan& s = it->second;
            const pk::Reply* r = verified<pk::Reply>(m.payload);
            if (r == nullptr || r->status() != pk::Status::Ok) {
                send_error(m_env, m_builder, s.client, s.correlation, pk::Status::Unavailable,
                           "a shard failed the scan");
                m_scans.erase(it);
                return;
            }
            if (r->pairs() != nullptr) {
                for (const auto* p : *r->pairs()) s.pairs[p->key()->str()] = p->value()->str();
            }
            s.more = s.more || r->more();
            if (--s.waiting == 0) {
                finish_scan(s);
                m_scans.erase(it);
            }
            return;
        }
        const auto it = m_pending.find(m.header.correlation);
        if (it == m_pending.end()) return;
        const Route route = it->second;
        m_pending.erase(it);
        Outgoing out;
        out.destination = route.client;
        out.type = k_kv_type;
        out.correlation = route.correlation;
        out.flags = m.header.flags & (k_flag_reply | k_flag_error);
        out.payload = m.payload;
        (void)m_env.send(out);
    }

    // The first pairs in key order over every shard; `more` if any shard
    // had more, or the merge cut.
    void finish_scan(const Scan& s) {
        send_reply(m_env, m_builder, s.client, s.correlation, pk::Status::Ok, {},
                   [&](flatbuffers::FlatBufferBuilder& b) {
                       std::vector<flatbuffers::Offset<pk::Pair>> pairs;
                       bool more = s.more;
                       std::size_t bytes = 0;
                       for (const auto& [k, v] : s.pairs) {
                           bytes += k.size() + v.size() + 16;
                           if (pairs.size() >= s.limit || bytes > k_reply_budget) {
                               more = true;
                               break;
                           }
                           const auto ko = b.CreateString(k);
                           const auto vo = b.CreateString(v);
                           pairs.push_back(pk::CreatePair(b, ko, vo));
                       }
                       const auto list = b.CreateVector(pairs);
                       return [list, more](pk::ReplyBuilder& r) {
                           r.add_pairs(list);
                           r.add_more(more);
                       };
                   });
    }

    Env& m_env;
    std::vector<ModuleId> m_shards;
    std::unordered_map<std::uint64_t, Route> m_pending;
    std::unordered_map<std::uint64_t, Scan> m_scans;
    std::unordered_map<std::uint64_t, std::uint64_t> m_scan_parts;
    std::uint64_t m_routed = 0;
    TimerId m_tick = 0;
    flatbuffers::FlatBufferBuilder m_builder{8192};
};

}  // namespace

void add_kv(Registry& registry) {
    ModuleKind router{"kv",
                      "a key-value store (schemas/kv.fbs, type 0x2002): a gateway that sends each "
                      "key to one of its children named shard* (kind kvshard) and merges scans",
                      Role::gateway,
                      Eavesdrop::no,
                      {},
                      [](Env& env) { return KvRouter::create(env); }};
    router.check = &KvRouter::check;
    registry.add(std::move(router));
    registry.add<KvShard>(
        "kvshard",
        "one shard of a kv store: its pairs in memory and in a log file on the file system, "
        "written before a change is answered; read back when it starts",
        Role::leaf,
        {ConfigKey("fs", ConfigType::path, std::string("/fs"), "the file system"),
         ConfigKey("dir", ConfigType::string, std::string("/kv"),
                   "directory of the shard's log (the log is NAME.log)"),
         ConfigKey("timeout_ms", ConfigType::integer, std::int64_t{200},
                   "an fs request unanswered this long is sent again")
             .range(1, 60'000),
         ConfigKey("tries", ConfigType::integer, std::int64_t{100},
                   "sends of an fs request before the change fails")
             .range(1, 10'000)});
}

}  // namespace hmk::services
