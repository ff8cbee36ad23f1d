// SPDX-License-Identifier: Apache-2.0
// `disk`: the disk driver (docs/services.md). Its clients (the file system)
// send it block requests; it keeps them in its own queue and passes at most
// `depth` at a time to the kernel's block device, then relays each answer to
// whoever asked. It holds no file and no state worth keeping: a driver that
// crashes is restarted by its parent, and its clients send again what it
// had not answered.
#include <fmt/core.h>

#include <deque>
#include <unordered_map>

#include "hmk/proto/block_generated.h"
#include "hmk/services/protocol.hpp"
#include "hmk/services/services.hpp"

namespace hmk::services {
namespace {

namespace pb = hmk::proto::block;

class DiskDriver final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        const TopologyNode* device = env.topology().find(env.config().string("device"));
        if (device == nullptr)
            return Err{fmt::format("no block device at {}", env.config().string("device"))};
        return std::unique_ptr<Module>(new DiskDriver(env, device->id));
    }

    void on_message(const Message& m) override {
        const Header& h = m.header;
        if (h.destination != m_env.id()) return;
        if (h.type == msg::k_stats && !h.is_reply()) {
            const std::string text =
                fmt::format("queued={} in_flight={} done={} refused={} busy={}", m_queue.size(),
                            m_in_flight.size(), m_done, m_refused, m_busy);
            (void)m_env.reply(m, as_bytes(text));
            return;
        }
        if (h.type == k_block_type && h.is_reply()) return from_device(m);
        if (h.is_reply() || h.type < msg::k_user_base) return;
        if (h.type != k_block_type) {
            ++m_refused;
            refuse(h.sender, h.correlation, pb::Status::BadRequest,
                   fmt::format("type {:#x} is not the block protocol ({:#x}, schemas/block.fbs)",
                               h.type, k_block_type));
            return;
        }
        if (verified<pb::Request>(m.payload) == nullptr) {
            ++m_refused;
            refuse(h.sender, h.correlation, pb::Status::BadRequest,
                   "not a block request (schemas/block.fbs)");
            return;
        }
        if (m_queue.size() >= m_queue_limit) {
            ++m_busy;
            refuse(h.sender, h.correlation, pb::Status::Busy,
                   fmt::format("the queue is full ({} requests)", m_queue_limit));
            return;
        }
        m_queue.push_back(Pending{h.sender, h.correlation, {m.payload.begin(), m.payload.end()}});
        pump();
    }

  private:
    struct Pending {
        ModuleId client = k_no_module;
        std::uint64_t correlation = 0;
        std::vector<std::byte> request;
    };
    struct Kept {
        ModuleId client = k_no_module;
        std::uint64_t correlation = 0;
        std::uint16_t flags = 0;
        std::vector<std::byte> payload;
    };

    DiskDriver(Env& env, ModuleId device)
        : m_env(env),
          m_device(device),
          m_depth(static_cast<std::size_t>(env.config().integer("depth"))),
          m_queue_limit(static_cast<std::size_t>(env.config().integer("queue"))) {}

    // Passes queued requests to the device while fewer than `depth` are out.
    void pump() {
        while (!m_queue.empty() && m_in_flight.size() < m_depth) {
            Pending& p = m_queue.front();
            Outgoing out;
            out.destination = m_device;
            out.type = k_block_type;
            out.correlation = m_env.next_correlation();
            out.payload = p.request;
            if (auto r = m_env.send(out); !r) {
                if (r.error() == SendError::full) {
                    // The next answer pumps again, or the tick does.
                    if (m_retry == 0)
                        m_retry =
                            m_env.set_timer(std::chrono::milliseconds(1), TimerMode::periodic);
                    return;
                }
                refuse(p.client, p.correlation, pb::Status::IoError,
                       fmt::format("cannot reach the block device: {}", to_string(r.error())));
                m_queue.pop_front();
                continue;
            }
            m_in_flight.emplace(out.correlation, std::move(p));
            m_queue.pop_front();
        }
    }

    void from_device(const Message& m) {
        const auto it = m_in_flight.find(m.header.correlation);
        if (m.header.sender != m_device || it == m_in_flight.end()) return;
        const Pending p = std::move(it->second);
        m_in_flight.erase(it);
        const pb::Reply* reply = verified<pb::Reply>(m.payload);
        if (reply == nullptr) {
            refuse(p.client, p.correlation, pb::Status::IoError, "the device answered garbage");
        } else {
            Outgoing out;
            out.destination = p.client;
            out.type = k_block_type;
            out.correlation = p.correlation;
            out.flags =
                reply->status() == pb::Status::Ok ? k_flag_reply : (k_flag_reply | k_flag_error);
            out.payload = m.payload;
            deliver(out);
            ++m_done;
        }
        pump();
    }

    void refuse(ModuleId client, std::uint64_t correlation, pb::Status status,
                std::string_view why) {
        m_builder.Clear();
        const auto text = m_builder.CreateString(why.data(), why.size());
        pb::ReplyBuilder r(m_builder);
        r.add_status(status);
        r.add_message(text);
        m_builder.Finish(r.Finish());
        Outgoing out;
        out.destination = client;
        out.type = k_block_type;
        out.correlation = correlation;
        out.flags = k_flag_reply | k_flag_error;
        out.payload = bytes_of(m_builder);
        deliver(out);
    }

    // An answer to a client: sent now, or kept (in order) while the uplink
    // is full and sent on the next tick; never dropped.
    void deliver(const Outgoing& out) {
        if (m_outbox.empty()) {
            const auto r = m_env.send(out);
            if (r || r.error() != SendError::full) return;
        }
        m_outbox.push_back(Kept{
            out.destination, out.correlation, out.flags, {out.payload.begin(), out.payload.end()}});
        if (m_retry == 0)
            m_retry = m_env.set_timer(std::chrono::milliseconds(1), TimerMode::periodic);
    }

    void on_timer(TimerId id) override {
        if (id != m_retry) return;
        while (!m_outbox.empty()) {
            const Kept& k = m_outbox.front();
            Outgoing out;
            out.destination = k.client;
            out.type = k_block_type;
            out.correlation = k.correlation;
            out.flags = k.flags;
            out.payload = k.payload;
            const auto r = m_env.send(out);
            if (!r && r.error() == SendError::full) break;
            m_outbox.pop_front();
        }
        pump();
        if (m_outbox.empty() && (m_queue.empty() || m_in_flight.size() >= m_depth)) {
            m_env.cancel_timer(m_retry);
            m_retry = 0;
        }
    }

    Env& m_env;
    ModuleId m_device;
    std::size_t m_depth;
    std::size_t m_queue_limit;
    std::deque<Pending> m_queue;
    std::deque<Kept> m_outbox;
    TimerId m_retry = 0;
    std::unordered_map<std::uint64_t, Pending> m_in_flight;
    std::uint64_t m_done = 0;
    std::uint64_t m_refused = 0;
    std::uint64_t m_busy = 0;
    flatbuffers::FlatBufferBuilder m_builder{1024};
};

}  // namespace

void add_disk_driver(Registry& registry) {
    registry.add<DiskDriver>(
        "disk",
        "the disk driver: queues block requests (schemas/block.fbs) from its clients and passes "
        "them to the kernel's block device, at most `depth` at a time; answers 'stats'",
        Role::leaf,
        {ConfigKey("device", ConfigType::path, std::string("/block"), "the block device"),
         ConfigKey("depth", ConfigType::integer, std::int64_t{32}, "requests at the device at once")
             .range(1, 4096),
         ConfigKey("queue", ConfigType::integer, std::int64_t{4096},
                   "requests waiting at most (more are refused: busy)")
             .range(1, 1 << 20)});
}

}  // namespace hmk::services
