// SPDX-License-Identifier: Apache-2.0
// `counter`: a small stateful module. It counts the data messages addressed
// to it, per sender, answers `stats` with its counts, and keeps snapshots, so
// that with `recover = "journal"` it comes back from a crash with its counts.
#include <fmt/core.h>

#include <map>

#include "hmk/detail/endian.hpp"
#include "std_modules.hpp"

namespace hmk::std_modules {
namespace {

class Counter final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        return std::unique_ptr<Module>(new Counter(env));
    }

    void on_message(const Message& m) override {
        const Header& h = m.header;
        if (h.destination != m_env.id() || h.is_reply()) return;
        if (h.type == msg::k_stats) {
            std::string text = fmt::format("total={} senders={}", m_total, m_by_sender.size());
            for (const auto& [sender, n] : m_by_sender) {
                const TopologyNode* node = m_env.topology().find(sender);
                text += fmt::format(" {}={}",
                                    node != nullptr ? node->path : fmt::format("#{}", sender), n);
            }
            (void)m_env.reply(m, as_bytes(text));
            return;
        }
        if (h.type == msg::k_reset) {
            m_total = 0;
            m_by_sender.clear();
            (void)m_env.reply(m, as_bytes("ok"));
            return;
        }
        if (h.type < msg::k_user_base) return;
        ++m_total;
        ++m_by_sender[h.sender];
        if (m_env.config().boolean("ack")) (void)m_env.reply(m, as_bytes(std::to_string(m_total)));
    }

    bool snapshot(std::vector<std::byte>& out) override {
        out.resize(12 + 12 * m_by_sender.size());
        detail::put_le<std::uint64_t>(out.data(), 0, m_total);
        detail::put_le<std::uint32_t>(out.data(), 8,
                                      static_cast<std::uint32_t>(m_by_sender.size()));
        std::size_t at = 12;
        for (const auto& [sender, n] : m_by_sender) {
            detail::put_le<std::uint32_t>(out.data(), at, sender);
            detail::put_le<std::uint64_t>(out.data(), at + 4, n);
            at += 12;
        }
        return true;
    }

    Result<void, std::string> restore(std::span<const std::byte> state,
                                      std::uint32_t version) override {
        if (version != 1) return Err{fmt::format("unknown state version {}", version)};
        if (state.size() < 12) return Err{std::string("state too short")};
        const std::uint32_t senders = detail::get_le<std::uint32_t>(state.data(), 8);
        if (state.size() != 12 + 12 * std::size_t{senders})
            return Err{std::string("state size does not match its sender count")};
        m_total = detail::get_le<std::uint64_t>(state.data(), 0);
        m_by_sender.clear();
        for (std::size_t i = 0; i < senders; ++i) {
            m_by_sender[detail::get_le<std::uint32_t>(state.data(), 12 + 12 * i)] =
                detail::get_le<std::uint64_t>(state.data(), 16 + 12 * i);
        }
        return {};
    }

  private:
    explicit Counter(Env& env) : m_env(env) {}
    Env& m_env;
    std::uint64_t m_total = 0;
    std::map<ModuleId, std::uint64_t> m_by_sender;
};

}  // namespace

void add_counter(Registry& registry) {
    registry.add<Counter>(
        "counter",
        "counts the messages (types 0x1000 and up) addressed to it, by sender; answers 'stats' "
        "with total=N senders=K PATH=N..., 'reset' with ok; keeps snapshots (recover = "
        "\"journal\" brings its counts back after a crash)",
        Role::leaf,
        {ConfigKey("ack", ConfigType::boolean, false, "reply to each message with the total")});
}

}  // namespace hmk::std_modules
