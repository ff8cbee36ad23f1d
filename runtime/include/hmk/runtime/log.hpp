// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string_view>

namespace hmk {

enum class LogLevel : std::uint8_t { debug, info, warn, error };
const char* to_string(LogLevel level);
std::optional<LogLevel> parse_log_level(std::string_view text);

/// How a Logger writes. `text`: for people. `relay`: for the parent of a
/// module host, which reads its child's output from a pipe, and logs it as
/// its own, under the child's name ("L<level> SOURCE<tab>TEXT" and
/// "P<tab>LINE", newlines in TEXT as 0x1f; docs/isolation.md).
enum class LogFormat : std::uint8_t { text, relay };

/// Line-oriented, thread-safe log: "  12.345678 WARN  /drivers/disk: text".
/// Owned by whoever builds the system and passed down; there is no global logger.
class Logger {
  public:
    /// `console`: where print() goes (text format).
    explicit Logger(std::FILE* out = stderr, LogLevel threshold = LogLevel::info,
                    LogFormat format = LogFormat::text, std::FILE* console = stdout);
    Logger(const Logger&) = delete;
    Logger& operator=(const Logger&) = delete;

    /// Any thread. `source` names who speaks: a module path, "hmk", "script".
    void log(LogLevel level, std::string_view source, std::string_view text);
    bool enabled(LogLevel level) const { return level >= m_threshold; }
    LogLevel threshold() const { return m_threshold; }
    void set_threshold(LogLevel level) { m_threshold = level; }

    /// Console output (stdout), serialised with the log so lines never interleave.
    void print(std::string_view line);

  private:
    std::FILE* m_out;
    LogFormat m_format;
    std::FILE* m_console;
    LogLevel m_threshold;
    std::uint64_t m_start_ns;
    std::mutex m_mutex;
};

}  // namespace hmk
