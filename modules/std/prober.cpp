// SPDX-License-Identifier: Apache-2.0
// `prober`: sends numbered requests to `to` at `rate` per second and checks
// every reply: each arrives once, in order, and (with `check_count`) carries
// a number one greater than the last. It measures the longest gap between two
// replies: the pause a swap or a move costs the module's clients.
#include <fmt/core.h>

#include <algorithm>
#include <charconv>
#include <set>

#include "std_modules.hpp"

namespace hmk::std_modules {
namespace {

class Prober final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        const ModuleConfig& c = env.config();
        auto type = msg::parse_type(c.string("type"));
        if (!type || msg::is_runtime_type(*type))
            return Err{
                fmt::format("'type' is \"{}\", not a type a module may send", c.string("type"))};
        const TopologyNode* to = env.topology().find(c.string("to"));
        if (to == nullptr) return Err{fmt::format("no module {}", c.string("to"))};
        return std::unique_ptr<Module>(new Prober(env, *type, to->id));
    }

    void on_start() override {
        if (!m_env.config().boolean("on_demand")) begin();
    }

    void on_message(const Message& m) override {
        const Header& h = m.header;
        if (h.destination != m_env.id()) return;
        if (h.is_reply()) {
            if (h.type == m_type && h.sender == m_to) replied(m);
            return;
        }
        if (h.type == msg::k_start) {
            begin();
            (void)m_env.reply(m, as_bytes("started"));
        } else if (h.type == msg::k_reset) {
            // A new measuring window: the counters start over, the numbering goes on.
            m_replied = m_lost = m_duplicates = m_late = m_count_errors = 0;
            m_sent_at_reset = m_sent;
            m_max_gap_ns = 0;
            m_last_reply_ns = 0;
            (void)m_env.reply(m, as_bytes("ok"));
        } else if (h.type == msg::k_stats) {
            const std::uint64_t sent = m_sent - m_sent_at_reset;
            (void)m_env.reply(
                m, as_bytes(fmt::format("sent={} replied={} outstanding={} lost={} dup={} late={} "
                                        "count_errors={} max_gap_us={} last={} failed={}",
                                        sent, m_replied, m_sent - (m_expected - 1),
                                        m_missing.size(), m_duplicates, m_late, m_count_errors,
                                        m_max_gap_ns / 1000, m_last_value, m_failed)));
        }
    }

    void on_timer(TimerId /*id*/) override {
        const double rate = m_env.config().number("rate");
        const auto count = static_cast<std::uint64_t>(m_env.config().integer("count"));
        const double elapsed = static_cast<double>(m_env.now_ns() - m_started_ns) / 1e9;
        std::uint64_t due = static_cast<std::uint64_t>(elapsed * rate) + 1;
        // After a stall, catch up gradually rather than in one flood.
        due = std::min(due, m_sent + k_max_burst);
        if (count != 0) due = std::min(due, count);
        const std::string& text = m_env.config().string("payload");
        while (m_sent < due) {
            Outgoing out;
            out.destination = m_to;
            out.type = m_type;
            out.correlation = m_sent + 1;
            out.payload = as_bytes(text);
            if (!m_env.send(out)) {
                ++m_failed;
                break;  // the bus is full for now: the next tick tries again
            }
            ++m_sent;
        }
        if (count != 0 && m_sent >= count) m_env.cancel_timer(m_timer);
    }

  private:
    static constexpr std::uint64_t k_max_burst = 10000;

    Prober(Env& env, std::uint32_t type, ModuleId to) : m_env(env), m_type(type), m_to(to) {}

    void begin() {
        if (m_timer != 0) return;
        m_started_ns = m_env.now_ns();
        const auto period = std::chrono::microseconds(m_env.config().integer("period_us"));
        m_timer = m_env.set_timer(period, TimerMode::periodic);
    }

    void replied(const Message& m) {
        const std::uint64_t c = m.header.correlation;
        if (c == m_expected) {
            ++m_expected;
        } else if (c > m_expected) {
            // Skipped ones are missing until they come (late) or for good.
            for (std::uint64_t k = m_expected; k < c && m_missing.size() < k_max_missing; ++k)
                m_missing.insert(k);
            m_expected = c + 1;
        } else if (m_missing.erase(c) != 0) {
            ++m_late;
        } else {
            ++m_duplicates;
            return;
        }
        ++m_replied;
        const std::uint64_t now = m_env.now_ns();
        if (m_last_reply_ns != 0 && now > m_last_reply_ns)
            m_max_gap_ns = std::max(m_max_gap_ns, now - m_last_reply_ns);
        m_last_reply_ns = now;
        if (m_env.config().boolean("check_count")) {
            std::uint64_t v = 0;
            const auto text = m.text();
            const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
            if (ec != std::errc() || end != text.data() + text.size() ||
                (m_last_value != 0 && v != m_last_value + 1)) {
                ++m_count_errors;
                if (m_count_errors <= 5) {
                    m_env.log(LogLevel::warn, fmt::format("reply {} says \"{}\", expected {}", c,
                                                          text, m_last_value + 1));
                }
            }
            m_last_value = v;
        }
    }

    static constexpr std::size_t k_max_missing = 1 << 20;

    Env& m_env;
    std::uint32_t m_type;
    ModuleId m_to;
    TimerId m_timer = 0;
    std::uint64_t m_started_ns = 0;
    std::uint64_t m_sent = 0, m_sent_at_reset = 0, m_failed = 0;
    std::uint64_t m_expected = 1;
    std::set<std::uint64_t> m_missing;
    std::uint64_t m_replied = 0, m_lost = 0, m_duplicates = 0, m_late = 0, m_count_errors = 0;
    std::uint64_t m_last_value = 0;
    std::uint64_t m_last_reply_ns = 0, m_max_gap_ns = 0;
};

}  // namespace

void add_prober(Registry& registry) {
    registry.add<Prober>(
        "prober",
        "sends numbered requests to 'to' at 'rate' per second and checks each reply (once, in "
        "order; with check_count, a number one greater than the last); answers 'stats' with "
        "sent replied outstanding lost dup late count_errors max_gap_us last failed, 'reset' "
        "with ok (a new measuring window), 'start' when on_demand",
        Role::leaf,
        {
            ConfigKey("to", ConfigType::path, std::string(), "the module to probe").require(),
            ConfigKey("rate", ConfigType::number, 1000.0, "requests per second"),
            ConfigKey("count", ConfigType::integer, std::int64_t{0}, "requests to send (0: no end)")
                .range(0, 1'000'000'000'000),
            ConfigKey("period_us", ConfigType::integer, std::int64_t{200},
                      "how often it sends what is due")
                .range(20, 1'000'000),
            ConfigKey("type", ConfigType::string, std::string("data"), "request type"),
            ConfigKey("payload", ConfigType::string, std::string("probe"), "request payload"),
            ConfigKey("check_count", ConfigType::boolean, false,
                      "each reply is a number one greater than the last (a counter with ack)"),
            ConfigKey("on_demand", ConfigType::boolean, false, "wait for a 'start' message"),
        });
}

}  // namespace hmk::std_modules
