// SPDX-License-Identifier: Apache-2.0
// `ledger`: a deterministic stateful module for recovery tests. Everything
// it keeps and says can be computed again, independently, from the bus
// journal (see ledger_reference.hpp), so a test can tell whether a recovered
// instance lost, repeated or changed anything.
#include <fmt/core.h>

#include <time.h>

#include <map>

#include "hmk/crc32c.hpp"
#include "hmk/detail/endian.hpp"
#include "hmk/runtime/module.hpp"
#include "ledger_module.hpp"

namespace hmk::testing {
namespace {

class Ledger final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        return std::unique_ptr<Module>(new Ledger(env));
    }

    void on_start() override {
        const auto tick = m_env.config().integer("tick_ms");
        if (tick > 0) m_env.set_timer(std::chrono::milliseconds(tick), TimerMode::periodic);
    }

    void on_message(const Message& m) override {
        const Header& h = m.header;
        if (h.destination != m_env.id() || h.is_reply()) return;
        if (h.type == msg::k_stats) {
            (void)m_env.reply(m, as_bytes(fmt::format("count={} sum={} dups={} digest={:08x} "
                                                      "ticks={}",
                                                      m_count, m_sum, m_dups, m_digest, m_ticks)));
            return;
        }
        if (h.type != msg::k_data) return;
        if (const auto slow = m_env.config().integer("slow_us"); slow > 0) {
            // A slow consumer (nanosleep is allowed in the sandbox).
            const timespec pause{0, static_cast<long>(slow) * 1000};
            nanosleep(&pause, nullptr);
        }
        const std::uint64_t r = m_env.random();
        ++m_count;
        m_sum += h.correlation;
        auto& last = m_last[h.sender];
        if (h.correlation <= last) ++m_dups;
        last = std::max(last, h.correlation);
        m_digest = ledger_step(m_digest, h.sender, h.correlation, m_env.now_ns(), m.payload);
        if (m.text() == "crash") throw std::runtime_error("the ledger was told to fail");
        (void)m_env.reply(m, as_bytes(fmt::format("ok {} {} {}", h.correlation, m_count, r)));
    }

    void on_timer(TimerId /*id*/) override {
        ++m_ticks;
        m_digest = ledger_tick(m_digest, m_env.now_ns());
    }

    bool snapshot(std::vector<std::byte>& out) override {
        if (!m_env.config().boolean("snapshots")) return false;
        out.resize(40 + 16 * m_last.size());
        std::byte* p = out.data();
        detail::put_le<std::uint64_t>(p, 0, m_count);
        detail::put_le<std::uint64_t>(p, 8, m_sum);
        detail::put_le<std::uint64_t>(p, 16, m_dups);
        detail::put_le<std::uint32_t>(p, 24, m_digest);
        detail::put_le<std::uint32_t>(p, 28, static_cast<std::uint32_t>(m_last.size()));
        detail::put_le<std::uint64_t>(p, 32, m_ticks);
        std::size_t at = 40;
        for (const auto& [sender, corr] : m_last) {
            detail::put_le<std::uint64_t>(p, at, sender);
            detail::put_le<std::uint64_t>(p, at + 8, corr);
            at += 16;
        }
        return true;
    }

    Result<void, std::string> restore(std::span<const std::byte> state,
                                      std::uint32_t version) override {
        if (version != 1) return Err{fmt::format("state version {} is not 1", version)};
        if (state.size() < 40) return Err{std::string("state too short")};
        const std::byte* p = state.data();
        const std::uint32_t senders = detail::get_le<std::uint32_t>(p, 28);
        if (state.size() != 40 + 16 * std::size_t{senders})
            return Err{std::string("state size does not match its sender count")};
        m_count = detail::get_le<std::uint64_t>(p, 0);
        m_sum = detail::get_le<std::uint64_t>(p, 8);
        m_dups = detail::get_le<std::uint64_t>(p, 16);
        m_digest = detail::get_le<std::uint32_t>(p, 24);
        m_ticks = detail::get_le<std::uint64_t>(p, 32);
        m_last.clear();
        for (std::size_t i = 0; i < senders; ++i) {
            m_last[static_cast<ModuleId>(detail::get_le<std::uint64_t>(p, 40 + 16 * i))] =
                detail::get_le<std::uint64_t>(p, 48 + 16 * i);
        }
        return {};
    }

  private:
    explicit Ledger(Env& env) : m_env(env) {}

    Env& m_env;
    std::uint64_t m_count = 0, m_sum = 0, m_dups = 0, m_ticks = 0;
    std::uint32_t m_digest = 0;
    std::map<ModuleId, std::uint64_t> m_last;
};

/// Prints "ack CORR SEQ TO" for each reply of module `of` it sees on its bus.
class Acks final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        return std::unique_ptr<Module>(new Acks(env));
    }
    void on_message(const Message& m) override {
        const Header& h = m.header;
        if (h.sender == m_of && h.via == m_of && h.hops == 0 && h.is_reply() &&
            h.type == msg::k_data) {
            m_env.print(fmt::format("ack {} {} {}", h.correlation, h.seq, h.destination));
        }
    }

  private:
    explicit Acks(Env& env)
        : m_env(env), m_of(env.topology().find(env.config().string("of"))->id) {}
    Env& m_env;
    ModuleId m_of;
};

}  // namespace

std::uint32_t ledger_step(std::uint32_t digest, ModuleId sender, std::uint64_t correlation,
                          std::uint64_t time_ns, std::span<const std::byte> payload) {
    std::byte fixed[20];
    detail::put_le<std::uint32_t>(fixed, 0, sender);
    detail::put_le<std::uint64_t>(fixed, 4, correlation);
    detail::put_le<std::uint64_t>(fixed, 12, time_ns);
    return crc32c(payload, crc32c(fixed, digest));
}

std::uint32_t ledger_tick(std::uint32_t digest, std::uint64_t time_ns) {
    std::byte fixed[12] = {std::byte{'t'}, std::byte{'i'}, std::byte{'c'}, std::byte{'k'}};
    detail::put_le<std::uint64_t>(fixed, 4, time_ns);
    return crc32c(fixed, digest);
}

void add_ledger(Registry& registry) {
    registry.add<Ledger>(
        "ledger",
        "test: a deterministic stateful module; replies 'ok CORR COUNT RANDOM' to data, "
        "answers stats with count, sum, dups, digest, ticks",
        Role::leaf,
        {ConfigKey("tick_ms", ConfigType::integer, std::int64_t{0},
                   "a periodic timer, folded into the digest (0: none)")
             .range(0, 60000),
         ConfigKey("snapshots", ConfigType::boolean, true, "whether it keeps snapshots"),
         ConfigKey("slow_us", ConfigType::integer, std::int64_t{0},
                   "pause per data message, to fall behind its bus")
             .range(0, 999'999)});
    registry.add<Acks>(
        "acks", "test: prints 'ack CORR SEQ TO' for each reply of `of` on its bus", Role::leaf,
        {ConfigKey("of", ConfigType::path, std::string(), "whose replies").require()},
        Eavesdrop::yes);
}

}  // namespace hmk::testing
