// SPDX-License-Identifier: Apache-2.0
// `clock`: the kernel's clock and alarms on Bus 0 (schemas/clock.fbs,
// docs/services.md). `Now` is answered at once; an `Alarm` is answered when
// its time has come, so a module can wait without a timer of its own.
#include <fmt/core.h>
#include <time.h>

#include <unordered_map>

#include "hmk/proto/clock_generated.h"
#include "hmk/services/protocol.hpp"
#include "hmk/services/services.hpp"

namespace hmk::services {
namespace {

namespace pc = hmk::proto::clock;

class Clock final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        return std::unique_ptr<Module>(new Clock(env));
    }
    void on_message(const Message& m) override {
        const Header& h = m.header;
        if (h.destination != m_env.id() || h.is_reply()) return;
        if (h.type == msg::k_stats) {
            (void)m_env.reply(
                m, as_bytes(fmt::format("answered={} alarms={}", m_answered, m_alarms.size())));
            return;
        }
        if (h.type < msg::k_user_base) return;
        const pc::Request* req =
            h.type == k_clock_type ? verified<pc::Request>(m.payload) : nullptr;
        if (req == nullptr) {
            answer(h.sender, h.correlation, false,
                   "not a clock request (schemas/clock.fbs, type 0x2005)");
            return;
        }
        if (req->op() == pc::Op::Now) {
            answer(h.sender, h.correlation, true, {});
        } else if (req->op() == pc::Op::Alarm && req->after_ms() <= 3'600'000) {
            if (m_alarms.size() >= 4096) {
                answer(h.sender, h.correlation, false, "too many alarms set");
                return;
            }
            const TimerId t =
                m_env.set_timer(std::chrono::milliseconds(req->after_ms()), TimerMode::once);
            m_alarms[t] = Waiting{h.sender, h.correlation};
        } else {
            answer(h.sender, h.correlation, false, "unknown operation, or an alarm over an hour");
        }
    }
    void on_timer(TimerId id) override {
        const auto it = m_alarms.find(id);
        if (it == m_alarms.end()) return;
        const Waiting w = it->second;
        m_alarms.erase(it);
        answer(w.client, w.correlation, true, {});
    }

  private:
    struct Waiting {
        ModuleId client = k_no_module;
        std::uint64_t correlation = 0;
    };
    explicit Clock(Env& env) : m_env(env) {}

    void answer(ModuleId to, std::uint64_t correlation, bool ok, std::string_view why) {
        timespec wall{};
        ::clock_gettime(CLOCK_REALTIME, &wall);
        m_builder.Clear();
        const auto text = m_builder.CreateString(why.data(), why.size());
        m_builder.Finish(
            pc::CreateReply(m_builder, ok, text, m_env.now_ns(),
                            static_cast<std::uint64_t>(wall.tv_sec) * 1'000'000'000ULL +
                                static_cast<std::uint64_t>(wall.tv_nsec)));
        Outgoing out;
        out.destination = to;
        out.type = k_clock_type;
        out.correlation = correlation;
        out.flags = ok ? k_flag_reply : (k_flag_reply | k_flag_error);
        out.payload = bytes_of(m_builder);
        (void)m_env.send(out);
        ++m_answered;
    }

    Env& m_env;
    std::unordered_map<TimerId, Waiting> m_alarms;
    std::uint64_t m_answered = 0;
    flatbuffers::FlatBufferBuilder m_builder{256};
};

}  // namespace

void add_clock(Registry& registry) {
    registry.add<Clock>(
        "clock",
        "the kernel's clock (schemas/clock.fbs, type 0x2005): Now answers with the kernel and "
        "wall clocks; Alarm answers after_ms later; answers 'stats'",
        Role::leaf, {});
}

}  // namespace hmk::services
