// SPDX-License-Identifier: Apache-2.0
// `blaster`: on an addressed message, sends `count` 64-byte broadcasts, each
// carrying the kernel clock at sending, `gap_ns` apart (0: as fast as the bus
// takes them). Used by hmk_ipc_bench in-process and in a process of its own.
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
        const auto count = static_cast<std::uint64_t>(m_env.config().integer("count"));
        const auto gap = static_cast<std::uint64_t>(m_env.config().integer("gap_ns"));
        const bool spin = m_env.config().string("pace") == "spin";
        std::byte payload[64] = {};
        Outgoing out;
        out.payload = std::span<const std::byte>(payload, 64);
        std::uint64_t next = now_ns();
        for (std::uint64_t i = 1; i <= count; ++i) {
            if (gap != 0) {
                wait_until(next, spin);
                next += gap;
            }
            const std::uint64_t t = now_ns();
            std::memcpy(payload, &t, 8);
            out.correlation = i;
            while (!m_env.send(out)) {
                // Uplink full: the owner is behind; try again (flat-out mode).
            }
        }
    }

  private:
    explicit Blaster(Env& env) : m_env(env) {}
    Env& m_env;
};

}  // namespace

extern "C" void hmk_register_modules(hmk::Registry& registry) {
    registry.add<Blaster>(
        "blaster", "sends timestamped 64-byte broadcasts for benchmarks", Role::leaf,
        {ConfigKey("count", ConfigType::integer, std::int64_t{10000}, "messages"),
         ConfigKey("gap_ns", ConfigType::integer, std::int64_t{0}, "pause between messages"),
         ConfigKey("pace", ConfigType::string, std::string("sleep"), "how to wait the gap")
             .one_of({"sleep", "spin"})});
}
