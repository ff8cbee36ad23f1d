// SPDX-License-Identifier: Apache-2.0
// `tally`: a stateful test kind in several versions, for hot swaps. It
// counts the data messages addressed to it and answers each with the total
// (a `prober` with check_count checks the count goes on by one across a
// swap). Version 2 keeps its state in another format and upgrades version
// 1's; versions 3 to 5 are replicas that go wrong in a swap; version 6 is
// slow to start, so that a replica of it starts behind a busy bus.
#include <fmt/core.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>

#include "hmk/detail/endian.hpp"
#include "tally_module.hpp"

namespace hmk::testing {
namespace {

class Tally final : public Module {
  public:
    Tally(Env& env, std::uint32_t version) : m_env(env), m_version(version) {}

    void on_message(const Message& m) override {
        const Header& h = m.header;
        if (h.destination != m_env.id() || h.is_reply()) return;
        if (h.type == msg::k_stats) {
            (void)m_env.reply(m, as_bytes(fmt::format("total={} version={} upgraded={}", m_total,
                                                      m_version, m_upgraded)));
            return;
        }
        if (h.type < msg::k_user_base) return;
        if (m_version == 3) {
            // A replica that crashes as soon as it handles a message.
            if (m_env.config().boolean("abort")) std::abort();
            throw std::runtime_error("tally version 3 fails");
        }
        if (m_version == 5) ::usleep(2000);  // too slow to keep up with a busy bus
        ++m_total;
        (void)m_env.reply(m, as_bytes(std::to_string(m_total)));
    }

    bool snapshot(std::vector<std::byte>& out) override {
        if (const std::int64_t ms = m_env.config().integer("snapshot_delay_ms"); ms > 0)
            ::usleep(static_cast<useconds_t>(ms) * 1000);
        if (m_version == 1) {
            out.resize(8);
            detail::put_le<std::uint64_t>(out.data(), 0, m_total);
        } else {
            // Format 2: a tag, the total, how often it was upgraded.
            out.resize(20);
            detail::put_le<std::uint32_t>(out.data(), 0, 0x32594c54);  // "TLY2"
            detail::put_le<std::uint64_t>(out.data(), 4, m_total);
            detail::put_le<std::uint64_t>(out.data(), 12, m_upgraded);
        }
        return true;
    }

    Result<void, std::string> restore(std::span<const std::byte> state,
                                      std::uint32_t version) override {
        if (m_version == 4) return Err{std::string("tally version 4 reads no state")};
        if (version == 1 && state.size() == 8) {
            m_total = detail::get_le<std::uint64_t>(state.data(), 0);
            if (m_version != 1) ++m_upgraded;  // the upgrade: format 1 to format 2
            return {};
        }
        if (version == 2 && m_version != 1 && state.size() == 20 &&
            detail::get_le<std::uint32_t>(state.data(), 0) == 0x32594c54) {
            m_total = detail::get_le<std::uint64_t>(state.data(), 4);
            m_upgraded = detail::get_le<std::uint64_t>(state.data(), 12);
            return {};
        }
        return Err{fmt::format("tally version {} cannot read state format {} ({} bytes)", m_version,
                               version, state.size())};
    }

  private:
    Env& m_env;
    std::uint32_t m_version;
    std::uint64_t m_total = 0;
    std::uint64_t m_upgraded = 0;
};

}  // namespace

void add_tally(Registry& registry) {
    for (std::uint32_t v = 1; v <= 6; ++v) {
        ModuleKind k;
        k.name = "tally";
        k.help = "counts data messages and answers each with the total (test kind, versions 1-6)";
        k.role = Role::leaf;
        k.config = {ConfigKey("abort", ConfigType::boolean, false,
                              "version 3: abort the process rather than throw"),
                    ConfigKey("snapshot_delay_ms", ConfigType::integer, 0,
                              "sleep this long in each snapshot (the bus moves on meanwhile)")
                        .range(0, 10'000)};
        k.create = [v](Env& env) -> Result<std::unique_ptr<Module>, std::string> {
            if (v == 6) ::usleep(300'000);  // the bus moves on meanwhile
            return std::unique_ptr<Module>(new Tally(env, v));
        };
        k.state_version = v == 1 ? 1 : 2;
        k.version = v;
        registry.add(std::move(k));
    }
}

}  // namespace hmk::testing
