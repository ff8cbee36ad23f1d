// SPDX-License-Identifier: Apache-2.0
// `monitor`: eavesdrops on its bus and journals every message; stores the
// snapshots modules send; tracks what happens to the bus's modules
// (DESIGN.md section 7, docs/recovery.md).
#include <fmt/core.h>

#include <map>

#include "hmk/crc32c.hpp"
#include "hmk/runtime/journal.hpp"
#include "hmk/snapshot_format.hpp"
#include "std_modules.hpp"

namespace hmk::std_modules {
namespace {

class Monitor final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        const ModuleConfig& c = env.config();
        JournalOptions o;
        o.dir = c.string("dir");
        o.bus = env.topology().find(env.id())->parent;
        const std::string& policy = c.string("fsync");
        o.fsync = policy == "always" ? FsyncPolicy::always
                  : policy == "none" ? FsyncPolicy::none
                                     : FsyncPolicy::interval;
        o.fsync_interval_ms = static_cast<std::uint32_t>(c.integer("fsync_interval_ms"));
        o.segment_bytes = static_cast<std::uint64_t>(c.integer("segment_bytes"));
        o.keep_segments = static_cast<std::uint32_t>(c.integer("keep_segments"));
        auto writer = JournalWriter::open(o);
        if (!writer) return Err{writer.error()};
        if (!writer->repaired().empty()) env.log(LogLevel::warn, writer->repaired());
        return std::unique_ptr<Module>(new Monitor(env, std::move(writer).value()));
    }

    void on_start() override {
        if (m_writer.options().fsync == FsyncPolicy::interval) {
            m_env.set_timer(std::chrono::milliseconds(m_env.config().integer("fsync_interval_ms")),
                            TimerMode::periodic);
        }
    }

    void on_message(const Message& m) override {
        // The whole message as it was on the bus: header (re-encoded, it is
        // the same bytes) and payload.
        m_record.resize(k_header_size + m.payload.size());
        encode_header(m.header,
                      std::span<std::byte, k_header_size>(m_record.data(), k_header_size));
        std::copy(m.payload.begin(), m.payload.end(), m_record.begin() + k_header_size);
        if (m.header.seq != m_writer.last_seq() + 1 && m_writer.last_seq() != 0) {
            m_env.log(LogLevel::warn, fmt::format("journal gap: seq {}..{} were not seen",
                                                  m_writer.last_seq() + 1, m.header.seq - 1));
        }
        if (auto r = m_writer.append(m_record, m.header.seq); !r)
            throw std::runtime_error(r.error());

        const Header& h = m.header;
        if (h.type == msg::k_snapshot && h.hops == 0 && h.via == h.sender) {
            collect(h, m.payload);
        } else if (h.type == msg::k_lifecycle && h.hops == 0 && h.sender == m_bus &&
                   h.via == m_bus) {
            track(h, m.payload);
        } else if (h.destination == m_env.id() && !h.is_reply() && h.type == msg::k_stats) {
            (void)m_env.reply(m, as_bytes(summary()));
        }
    }

    void on_batch() override { commit(); }

    void on_timer(TimerId /*id*/) override {
        if (auto r = m_writer.tick(m_env.now_ns()); !r) throw std::runtime_error(r.error());
        commit();
    }

    void on_stop() override {
        (void)m_writer.sync();
        store_snapshots();
        m_env.acknowledge(m_writer.last_seq());
    }

  private:
    struct Assembly {
        std::uint64_t id = 0;
        SnapshotChunk first;
        std::vector<std::byte> body;
    };
    struct Complete {
        SnapshotFileHeader header;
        std::vector<std::byte> body;
    };
    struct Tracked {
        LifecycleKind kind = LifecycleKind::started;
        std::uint64_t epoch = 0;
        std::uint64_t seq = 0;
    };

    Monitor(Env& env, JournalWriter writer)
        : m_env(env),
          m_writer(std::move(writer)),
          m_bus(env.topology().find(env.id())->parent),
          m_keep_snapshots(static_cast<std::uint32_t>(env.config().integer("keep_snapshots"))) {}

    // Makes what was appended as durable as the policy says, tells the bus
    // (which may then overwrite it, and with durable visibility show it), and
    // stores the snapshots the journal now covers.
    void commit() {
        if (auto r = m_writer.commit(); !r) throw std::runtime_error(r.error());
        store_snapshots();
        m_env.acknowledge(m_writer.last_seq());
    }

    void collect(const Header& h, std::span<const std::byte> payload) {
        std::span<const std::byte> data;
        const auto chunk = decode_snapshot_chunk(payload, data);
        if (!chunk) {
            m_env.log(LogLevel::warn, fmt::format("bad snapshot chunk from #{}: {}", h.sender,
                                                  to_string(chunk.error())));
            return;
        }
        Assembly& a = m_assembling[h.sender];
        if (chunk->offset == 0) {
            a.id = chunk->snapshot_id;
            a.first = *chunk;
            a.body.clear();
            a.body.reserve(chunk->total_size);
        } else if (chunk->snapshot_id != a.id || chunk->offset != a.body.size() ||
                   chunk->total_size != a.first.total_size) {
            a.body.clear();  // a chunk went missing: this snapshot is incomplete
            a.id = 0;
            return;
        }
        if (a.id != chunk->snapshot_id) return;
        a.body.insert(a.body.end(), data.begin(), data.end());
        if (a.body.size() < a.first.total_size) return;
        if (crc32c(a.body) != a.first.body_crc) {
            m_env.log(LogLevel::warn,
                      fmt::format("snapshot {} of #{} has a bad CRC: dropped", a.id, h.sender));
            m_assembling.erase(h.sender);
            return;
        }
        Complete c;
        c.header.module = h.sender;
        c.header.input_seq = a.first.input_seq;
        c.header.output_seq = h.seq;
        const auto hint = m_writer.locate(a.first.input_seq + 1);
        c.header.hint_segment = hint.first;
        c.header.hint_offset = hint.second;
        c.header.state_version = a.first.state_version;
        c.header.body_size = a.first.total_size;
        c.header.body_crc = a.first.body_crc;
        c.body = std::move(a.body);
        m_assembling.erase(h.sender);
        // A newer one of the same module replaces one not yet stored.
        m_complete[c.header.module] = std::move(c);
    }

    // A snapshot file is written only once the journal holds the messages it
    // was taken after: recovery replays the journal from its input seq.
    void store_snapshots() {
        for (auto it = m_complete.begin(); it != m_complete.end();) {
            if (it->second.header.output_seq > m_writer.written_seq()) {
                ++it;
                continue;
            }
            auto written =
                write_snapshot_file(m_writer.options().dir, it->second.header, it->second.body,
                                    m_writer.options().fsync, m_keep_snapshots);
            if (!written) {
                m_env.log(LogLevel::error, "cannot store a snapshot: " + written.error());
            } else {
                ++m_snapshots;
            }
            it = m_complete.erase(it);
        }
    }

    void track(const Header& h, std::span<const std::byte> payload) {
        std::span<const std::byte> text;
        const auto e = decode_lifecycle(payload, text);
        if (!e) return;
        Tracked& t = m_modules[e->module];
        t.kind = e->kind;
        t.epoch = e->epoch;
        t.seq = h.seq;
    }

    std::string summary() const {
        std::string out = fmt::format("journal={} last={} written={} synced={} snapshots={}",
                                      m_writer.options().dir, m_writer.last_seq(),
                                      m_writer.written_seq(), m_writer.synced_seq(), m_snapshots);
        for (const auto& [id, t] : m_modules) {
            const TopologyNode* n = m_env.topology().find(id);
            out += fmt::format(" {}={}#{}", n != nullptr ? n->path : fmt::format("#{}", id),
                               to_string(t.kind), t.epoch);
        }
        return out;
    }

    Env& m_env;
    JournalWriter m_writer;
    BusId m_bus;
    std::uint32_t m_keep_snapshots;
    std::vector<std::byte> m_record;
    std::map<ModuleId, Assembly> m_assembling;
    std::map<ModuleId, Complete> m_complete;
    std::map<ModuleId, Tracked> m_modules;
    std::uint64_t m_snapshots = 0;
};

}  // namespace

void add_monitor(Registry& registry) {
    ModuleKind kind{
        "monitor",
        "eavesdrops on its bus, journals every message to segment files, stores the modules' "
        "snapshots and tracks their lifecycle (inproc: it writes files); the bus's modules "
        "recover from its journal",
        Role::leaf,
        Eavesdrop::yes,
        {ConfigKey("dir", ConfigType::file, std::string(),
                   "journal directory (relative: to the system file)")
             .require(),
         ConfigKey("fsync", ConfigType::string, std::string("interval"),
                   "when records reach the disk")
             .one_of({"none", "interval", "always"}),
         ConfigKey("fsync_interval_ms", ConfigType::integer, std::int64_t{100},
                   "for fsync = interval")
             .range(1, 60000),
         ConfigKey("segment_bytes", ConfigType::integer, std::int64_t{16} << 20,
                   "segment size before rotation")
             .range(4096, std::int64_t{1} << 40),
         ConfigKey("keep_segments", ConfigType::integer, std::int64_t{0},
                   "segments kept (0: all); keep enough for the oldest snapshot a module needs")
             .range(0, 1'000'000),
         ConfigKey("keep_snapshots", ConfigType::integer, std::int64_t{2},
                   "snapshots kept per module (0: all)")
             .range(0, 1'000'000),
         ConfigKey("visibility", ConfigType::string, std::string("immediate"),
                   "durable: the bus's modules see a message only once it is journaled (and "
                   "fsynced, with fsync = always)")
             .one_of({"immediate", "durable"}),
         ConfigKey("stall_ms", ConfigType::integer, std::int64_t{2000},
                   "longest the bus waits for a journal that fell a whole ring behind")
             .range(1, 600000)},
        [](Env& env) { return Monitor::create(env); }};
    kind.journals = Journals::yes;
    registry.add(std::move(kind));
}

}  // namespace hmk::std_modules
