// SPDX-License-Identifier: Apache-2.0
// `logsink`: the kernel's log, a kernel service on Bus 0 (docs/services.md).
// Every message of a service type addressed to it, and every broadcast that
// reaches Bus 0, becomes one line of its file: the kernel time, the sender's
// path, the text (bytes that are not printable as \xNN). Runs in the
// kernel's process (it writes a file).
#include <fcntl.h>
#include <fmt/core.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "hmk/services/services.hpp"

namespace hmk::services {
namespace {

class LogSink final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        const std::string& file = env.config().string("file");
        std::error_code ec;
        const auto dir = std::filesystem::path(file).parent_path();
        if (!dir.empty()) std::filesystem::create_directories(dir, ec);
        const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) return Err{fmt::format("{}: cannot open: {}", file, std::strerror(errno))};
        return std::unique_ptr<Module>(new LogSink(env, fd));
    }
    ~LogSink() override { ::close(m_fd); }
    LogSink(const LogSink&) = delete;
    LogSink& operator=(const LogSink&) = delete;

    void on_message(const Message& m) override {
        const Header& h = m.header;
        if (h.is_reply() || h.type < msg::k_user_base) {
            if (h.destination == m_env.id() && h.type == msg::k_stats && !h.is_reply()) {
                (void)m_env.reply(m, as_bytes(fmt::format("lines={} bytes={} failed={}", m_lines,
                                                          m_bytes, m_failed)));
            }
            return;
        }
        if (h.destination != m_env.id() && !h.is_broadcast()) return;
        const TopologyNode* from = m_env.topology().find(h.sender);
        std::string line = fmt::format("{:.6f} {}: ", static_cast<double>(h.timestamp_ns) / 1e9,
                                       from != nullptr ? from->path : fmt::format("#{}", h.sender));
        for (const std::byte b : m.payload) {
            const auto c = static_cast<unsigned char>(b);
            if (c >= 0x20 && c < 0x7f) {
                line += static_cast<char>(c);
            } else {
                line += fmt::format("\\x{:02x}", c);
            }
        }
        line += '\n';
        if (::write(m_fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
            ++m_failed;
            return;
        }
        ++m_lines;
        m_bytes += line.size();
        if (h.destination == m_env.id()) (void)m_env.reply(m, as_bytes("logged"));
    }

  private:
    LogSink(Env& env, int fd) : m_env(env), m_fd(fd) {}
    Env& m_env;
    int m_fd;
    std::uint64_t m_lines = 0;
    std::uint64_t m_bytes = 0;
    std::uint64_t m_failed = 0;
};

}  // namespace

void add_log_sink(Registry& registry) {
    registry.add<LogSink>(
        "logsink",
        "the kernel's log: each message of a service type (0x1000 and up) addressed to it, and "
        "each broadcast that reaches it, becomes a line of its file (time, sender, text); answers "
        "'stats'; runs in the kernel's process",
        Role::leaf,
        {ConfigKey("file", ConfigType::file, std::string(),
                   "the log file (relative: to the system file), appended to")
             .require()});
}

}  // namespace hmk::services
