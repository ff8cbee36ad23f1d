// SPDX-License-Identifier: Apache-2.0
// `blaster`: on an addressed message, sends `count` 64-byte broadcasts (or,
// with `to`, messages addressed to that module), each carrying the kernel
// clock at sending, `gap_ns` apart (0: as fast as the bus takes them),
// numbered 1..count in the correlation. Used by hmk_ipc_bench and
// hmk_delivery_bench, in-process and in a process of its own.
#include <time.h>
#include <cstring>

#include "bench_clock.hpp"
#include "hmk/runtime/module.hpp"

namespace {

using namespace hmk;

using hmk::bench::now_ns;
using hmk::bench::wait_until;

class Blaster final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        return std::unique_ptr<Module>(new Blaster(env));
    }
    void on_message(const Message& m) override {
        if (m.header.destination != m_env.id() || m.header.is_reply()) return;
        m_count = static_cast<std::uint64_t>(m_env.config().integer("count"));
        m_gap = static_cast<std::uint64_t>(m_env.config().integer("gap_ns"));
        m_spin = m_env.config().string("pace") == "spin";
        const std::string& to = m_env.config().string("to");
        m_to = to.empty() ? k_no_module : m_env.topology().find(to)->id;
        m_next_ns = now_ns();
        m_sent = 0;
        blast();
    }
    void on_timer(TimerId /*id*/) override { blast(); }

  private:
    explicit Blaster(Env& env) : m_env(env) {}

    void blast() {
        std::byte payload[64] = {};
        Outgoing out;
        out.destination = m_to;
        out.payload = std::span<const std::byte>(payload, 64);
        while (m_sent < m_count) {
            if (m_gap != 0) wait_until(m_next_ns, m_spin);
            const std::uint64_t t = now_ns();
            std::memcpy(payload, &t, 8);
            out.correlation = m_sent + 1;
            if (auto sent = m_env.send(out); !sent) {
                // Back-pressure (its uplink, or a reliable bus waiting for a
                // reader): return, so its runtime reads on, and go on at once.
                m_env.set_timer(std::chrono::nanoseconds(0), TimerMode::once);
                return;
            }
            ++m_sent;
            m_next_ns += m_gap;
        }
    }

    Env& m_env;
    std::uint64_t m_count = 0, m_gap = 0, m_sent = 0, m_next_ns = 0;
    ModuleId m_to = k_no_module;
    bool m_spin = false;
};

}  // namespace

extern "C" void hmk_register_modules(hmk::Registry& registry) {
    registry.add<Blaster>(
        "blaster", "sends timestamped 64-byte broadcasts for benchmarks", Role::leaf,
        {ConfigKey("count", ConfigType::integer, std::int64_t{10000}, "messages"),
         ConfigKey("gap_ns", ConfigType::integer, std::int64_t{0}, "pause between messages"),
         ConfigKey("pace", ConfigType::string, std::string("sleep"), "how to wait the gap")
             .one_of({"sleep", "spin"}),
         ConfigKey("to", ConfigType::path, std::string(),
                   "the module to address them to (default: broadcasts on its bus)")});
}
