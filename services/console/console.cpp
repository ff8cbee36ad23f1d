// SPDX-License-Identifier: Apache-2.0
// The terminal (docs/services.md): `console`, the kernel's console on Bus 0,
// prints lines (schemas/console.fbs) on the system's stdout; `consoledrv`,
// the console driver under /drivers, takes text from any module and passes
// it on as lines, with who wrote it.
#include <fmt/core.h>

#include "hmk/proto/console_generated.h"
#include "hmk/services/protocol.hpp"
#include "hmk/services/services.hpp"

namespace hmk::services {
namespace {

namespace pc = hmk::proto::console;

void send_console_reply(Env& env, flatbuffers::FlatBufferBuilder& b, ModuleId to,
                        std::uint64_t correlation, bool ok, std::string_view why) {
    b.Clear();
    const auto text = b.CreateString(why.data(), why.size());
    b.Finish(pc::CreateReply(b, ok, text));
    Outgoing out;
    out.destination = to;
    out.type = k_console_type;
    out.correlation = correlation;
    out.flags = ok ? k_flag_reply : (k_flag_reply | k_flag_error);
    out.payload = bytes_of(b);
    (void)env.send(out);
}

// Printable, one line: control bytes as \xNN.
std::string printable(std::string_view text, std::size_t limit) {
    std::string out;
    for (const char ch : text.substr(0, limit)) {
        const auto c = static_cast<unsigned char>(ch);
        out += c >= 0x20 && c < 0x7f ? std::string(1, ch) : fmt::format("\\x{:02x}", c);
    }
    if (text.size() > limit) out += "...";
    return out;
}

class Console final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        return std::unique_ptr<Module>(new Console(env));
    }
    void on_message(const Message& m) override {
        const Header& h = m.header;
        if (h.destination != m_env.id() || h.is_reply()) return;
        if (h.type == msg::k_stats) {
            (void)m_env.reply(m, as_bytes(fmt::format("lines={}", m_lines)));
            return;
        }
        if (h.type < msg::k_user_base) return;
        const pc::Line* line = h.type == k_console_type ? verified<pc::Line>(m.payload) : nullptr;
        if (line == nullptr) {
            send_console_reply(m_env, m_builder, h.sender, h.correlation, false,
                               "not a console line (schemas/console.fbs, type 0x2004)");
            return;
        }
        const std::string from = line->from() != nullptr ? line->from()->str() : "?";
        const std::string text = line->text() != nullptr ? line->text()->str() : "";
        m_env.print(fmt::format("[console] {}: {}", printable(from, 128), printable(text, 1024)));
        ++m_lines;
        // Correlation 0: the writer wants no acknowledgement (the driver's lines).
        if (h.correlation != 0)
            send_console_reply(m_env, m_builder, h.sender, h.correlation, true, {});
    }

  private:
    explicit Console(Env& env) : m_env(env) {}
    Env& m_env;
    std::uint64_t m_lines = 0;
    flatbuffers::FlatBufferBuilder m_builder{256};
};

class ConsoleDriver final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        const TopologyNode* console = env.topology().find(env.config().string("console"));
        if (console == nullptr)
            return Err{fmt::format("no console at {}", env.config().string("console"))};
        return std::unique_ptr<Module>(new ConsoleDriver(env, console->id));
    }
    void on_message(const Message& m) override {
        const Header& h = m.header;
        if (h.is_reply()) return;  // the console's acknowledgements
        if (h.destination == m_env.id() && h.type == msg::k_stats) {
            (void)m_env.reply(m, as_bytes(fmt::format("count={} bytes={} broadcast={} lines={}",
                                                      m_count, m_bytes, m_broadcast, m_lines)));
            return;
        }
        if (h.type < msg::k_user_base) return;
        ++m_count;
        m_bytes += m.payload.size();
        // Broadcasts are counted, not printed: only what is written to it.
        if (h.is_broadcast()) {
            ++m_broadcast;
            return;
        }
        if (h.destination != m_env.id()) return;
        const TopologyNode* from = m_env.topology().find(h.sender);
        const std::string who = from != nullptr ? from->path : fmt::format("#{}", h.sender);
        m_builder.Clear();
        const auto f = m_builder.CreateString(who);
        const auto t = m_builder.CreateString(reinterpret_cast<const char*>(m.payload.data()),
                                              m.payload.size());
        m_builder.Finish(pc::CreateLine(m_builder, f, t));
        Outgoing out;
        out.destination = m_console;
        out.type = k_console_type;
        out.payload = bytes_of(m_builder);
        if (m_env.send(out)) ++m_lines;
    }

  private:
    ConsoleDriver(Env& env, ModuleId console) : m_env(env), m_console(console) {}
    Env& m_env;
    ModuleId m_console;
    std::uint64_t m_count = 0;
    std::uint64_t m_bytes = 0;
    std::uint64_t m_broadcast = 0;
    std::uint64_t m_lines = 0;
    flatbuffers::FlatBufferBuilder m_builder{1024};
};

}  // namespace

void add_console(Registry& registry) {
    registry.add<Console>(
        "console",
        "the kernel's console: prints lines (schemas/console.fbs, type 0x2004) on the system's "
        "stdout as [console] FROM: TEXT; answers 'stats'",
        Role::leaf, {});
    registry.add<ConsoleDriver>(
        "consoledrv",
        "the console driver: text addressed to it (any type from 0x1000) goes to the kernel's "
        "console as a line with its writer's path; counts broadcasts without printing them; "
        "answers 'stats' (count= bytes= broadcast= lines=)",
        Role::leaf,
        {ConfigKey("console", ConfigType::path, std::string("/console"), "the kernel's console")});
}

}  // namespace hmk::services
