// SPDX-License-Identifier: Apache-2.0
// `monitor`: eavesdrops on its bus and journals every message (DESIGN.md section 7).
#include <fmt/core.h>

#include "hmk/runtime/journal.hpp"
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
        if (m_env.config().string("fsync") == "interval") {
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
    }
    void on_timer(TimerId /*id*/) override {
        if (auto r = m_writer.tick(m_env.now_ns()); !r) throw std::runtime_error(r.error());
    }
    void on_stop() override { (void)m_writer.sync(); }

  private:
    Monitor(Env& env, JournalWriter writer) : m_env(env), m_writer(std::move(writer)) {}
    Env& m_env;
    JournalWriter m_writer;
    std::vector<std::byte> m_record;
};

}  // namespace

void add_monitor(Registry& registry) {
    registry.add<Monitor>(
        "monitor",
        "eavesdrops on its bus and journals every message to segment files (inproc: it writes "
        "files)",
        Role::leaf,
        {ConfigKey("dir", ConfigType::string, std::string(), "journal directory").require(),
         ConfigKey("fsync", ConfigType::string, std::string("interval"),
                   "when records reach the disk")
             .one_of({"none", "interval", "always"}),
         ConfigKey("fsync_interval_ms", ConfigType::integer, std::int64_t{100},
                   "for fsync = interval")
             .range(1, 60000),
         ConfigKey("segment_bytes", ConfigType::integer, std::int64_t{64} << 20,
                   "segment size before rotation")
             .range(4096, std::int64_t{1} << 40),
         ConfigKey("keep_segments", ConfigType::integer, std::int64_t{0}, "segments kept (0: all)")
             .range(0, 1'000'000)},
        Eavesdrop::yes);
}

}  // namespace hmk::std_modules
