// SPDX-License-Identifier: Apache-2.0
// `sink`: counts what it receives; answers `stats` with its counts and `reset` by zeroing them.
#include <fmt/core.h>

#include <map>

#include "std_modules.hpp"

namespace hmk::std_modules {
namespace {

class Sink final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        return std::unique_ptr<Module>(new Sink(env));
    }
    void on_message(const Message& m) override {
        const Header& h = m.header;
        if (h.destination == m_env.id() && !h.is_reply()) {
            if (h.type == msg::k_stats) {
                const std::string text = fmt::format("count={} bytes={} broadcast={} gaps={}",
                                                     m_count, m_bytes, m_broadcast, m_gaps);
                (void)m_env.reply(m, as_bytes(text));
                return;
            }
            if (h.type == msg::k_reset) {
                m_count = m_bytes = m_broadcast = m_gaps = 0;
                m_last_seq.clear();
                (void)m_env.reply(m, as_bytes("ok"));
                return;
            }
        }
        ++m_count;
        m_bytes += m.payload.size();
        if (h.is_broadcast()) ++m_broadcast;
        // A jump in a sender's own correlation numbering means a message went missing
        // (the `source` kind numbers its messages 1, 2, 3...).
        auto& last = m_last_seq[h.sender];
        if (h.correlation != 0 && last != 0 && h.correlation != last + 1) ++m_gaps;
        last = h.correlation;
        if (m_env.config().boolean("verbose")) {
            m_env.log(LogLevel::info, fmt::format("got type {:#x} from {} ({} bytes)", h.type,
                                                  h.sender, m.payload.size()));
        }
    }

  private:
    explicit Sink(Env& env) : m_env(env) {}
    Env& m_env;
    std::uint64_t m_count = 0, m_bytes = 0, m_broadcast = 0, m_gaps = 0;
    std::map<ModuleId, std::uint64_t> m_last_seq;
};

}  // namespace

void add_sink(Registry& registry) {
    registry.add<Sink>(
        "sink",
        "counts messages it receives; answers 'stats' with count=N bytes=N broadcast=N "
        "gaps=N and 'reset' with ok",
        Role::leaf, {ConfigKey("verbose", ConfigType::boolean, false, "log every message")});
}

}  // namespace hmk::std_modules
