// SPDX-License-Identifier: Apache-2.0
// `source`: sends `count` messages at `rate` per second to `to`, or broadcasts them within `scope`.
#include <fmt/core.h>

#include <algorithm>

#include "std_modules.hpp"

namespace hmk::std_modules {
namespace {

class Source final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        const ModuleConfig& c = env.config();
        auto type = msg::parse_type(c.string("type"));
        if (!type)
            return Err{
                fmt::format("'type' is \"{}\", not a type name or number", c.string("type"))};
        ModuleId to = k_no_module;
        if (!c.string("to").empty()) to = env.topology().find(c.string("to"))->id;
        return std::unique_ptr<Module>(new Source(env, *type, to, *parse_scope(c.string("scope"))));
    }

    void on_start() override {
        if (!m_env.config().boolean("on_demand")) arm(m_env.config().integer("delay_ms"));
    }

    void on_message(const Message& m) override {
        if (m.header.destination != m_env.id() || m.header.is_reply()) return;
        if (m.header.type == msg::k_start) {
            m_sent = 0;
            arm(0);
            (void)m_env.reply(m, as_bytes("started"));
        } else if (m.header.type == msg::k_stats) {
            (void)m_env.reply(m, as_bytes(fmt::format("sent={} failed={}", m_sent, m_failed)));
        }
    }

    void on_timer(TimerId /*id*/) override {
        const std::uint64_t count = static_cast<std::uint64_t>(m_env.config().integer("count"));
        const double rate = m_env.config().number("rate");
        std::uint64_t due = count;
        if (rate > 0) {
            const double elapsed = static_cast<double>(m_env.now_ns() - m_started_ns) / 1e9;
            due = std::min<std::uint64_t>(count, static_cast<std::uint64_t>(elapsed * rate) + 1);
        } else {
            due = std::min<std::uint64_t>(count, m_sent + k_burst);
        }
        const std::string& text = m_env.config().string("payload");
        bool full = false;
        while (m_sent < due) {
            Outgoing out;
            out.destination = m_to;
            out.scope = m_scope;
            out.type = m_type;
            out.correlation = m_sent + 1;  // numbered 1..count so a sink can spot gaps
            out.payload = as_bytes(text);
            if (auto sent = m_env.send(out); !sent) {
                if (sent.error() == SendError::full) {
                    // Back-pressure: it waits (returning from the handler
                    // lets its runtime read on), it does not drop.
                    full = true;
                    break;
                }
                ++m_failed;
            }
            ++m_sent;
        }
        if (full) {
            m_env.set_timer(std::chrono::milliseconds(1), TimerMode::once);
        } else if (m_sent < count) {
            const auto period = rate > 0 ? std::chrono::nanoseconds(std::max<std::int64_t>(
                                               1'000'000, static_cast<std::int64_t>(1e9 / rate)))
                                         : std::chrono::nanoseconds(0);
            m_env.set_timer(period, TimerMode::once);
        } else {
            m_env.log(LogLevel::info,
                      fmt::format("sent {} messages ({} failed)", m_sent, m_failed));
        }
    }

  private:
    static constexpr std::uint64_t k_burst = 256;

    Source(Env& env, std::uint32_t type, ModuleId to, Scope scope)
        : m_env(env), m_type(type), m_to(to), m_scope(scope) {}

    void arm(std::int64_t delay_ms) {
        m_started_ns = m_env.now_ns() + static_cast<std::uint64_t>(delay_ms) * 1'000'000u;
        m_env.set_timer(std::chrono::milliseconds(delay_ms), TimerMode::once);
    }

    Env& m_env;
    std::uint32_t m_type;
    ModuleId m_to;
    Scope m_scope;
    std::uint64_t m_sent = 0;
    std::uint64_t m_failed = 0;
    std::uint64_t m_started_ns = 0;
};

}  // namespace

void add_source(Registry& registry) {
    registry.add<Source>(
        "source",
        "sends 'count' messages at 'rate' per second to 'to', or broadcasts them within 'scope'",
        Role::leaf,
        {
            ConfigKey("to", ConfigType::path, std::string(),
                      "destination path; empty to broadcast"),
            ConfigKey("scope", ConfigType::string, std::string("bus"), "broadcast scope")
                .one_of({"bus", "subtree", "up", "system"}),
            ConfigKey("type", ConfigType::string, std::string("data"),
                      "message type, name or number"),
            ConfigKey("count", ConfigType::integer, std::int64_t{10}, "messages to send")
                .range(0, 1'000'000'000),
            ConfigKey("rate", ConfigType::number, 100.0,
                      "messages per second; 0 = as fast as possible"),
            ConfigKey("payload", ConfigType::string, std::string("tick"), "payload text"),
            ConfigKey("delay_ms", ConfigType::integer, std::int64_t{0}, "wait before sending")
                .range(0, 3'600'000),
            ConfigKey("on_demand", ConfigType::boolean, false, "wait for a 'start' message"),
        });
}

}  // namespace hmk::std_modules
