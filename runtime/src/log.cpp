// SPDX-License-Identifier: Apache-2.0
#include "hmk/runtime/log.hpp"

#include <fmt/core.h>

#include "hmk/platform/clock.hpp"

namespace hmk {

const char* to_string(LogLevel level) {
    switch (level) {
        case LogLevel::debug:
            return "DEBUG";
        case LogLevel::info:
            return "INFO";
        case LogLevel::warn:
            return "WARN";
        case LogLevel::error:
            return "ERROR";
    }
    return "?";
}

std::optional<LogLevel> parse_log_level(std::string_view text) {
    if (text == "debug") return LogLevel::debug;
    if (text == "info") return LogLevel::info;
    if (text == "warn") return LogLevel::warn;
    if (text == "error") return LogLevel::error;
    return std::nullopt;
}

Logger::Logger(std::FILE* out, LogLevel threshold, LogFormat format, std::FILE* console)
    : m_out(out),
      m_format(format),
      m_console(console),
      m_threshold(threshold),
      m_start_ns(platform::monotonic_ns()) {}

namespace {
std::string relay_text(std::string_view text) {
    std::string out(text);
    for (char& c : out) {
        if (c == '\n') c = '\x1f';
    }
    return out;
}
}  // namespace

void Logger::log(LogLevel level, std::string_view source, std::string_view text) {
    if (!enabled(level)) return;
    if (m_format == LogFormat::relay) {
        const std::lock_guard lock(m_mutex);
        fmt::print(m_out, "L{} {}\t{}\n", static_cast<int>(level), source, relay_text(text));
        std::fflush(m_out);
        return;
    }
    const double t = static_cast<double>(platform::monotonic_ns() - m_start_ns) / 1e9;
    const std::lock_guard lock(m_mutex);
    fmt::print(m_out, "{:12.6f} {:<5} {}: {}\n", t, to_string(level), source, text);
    std::fflush(m_out);
}

void Logger::print(std::string_view line) {
    const std::lock_guard lock(m_mutex);
    if (m_format == LogFormat::relay) {
        fmt::print(m_out, "P\t{}\n", relay_text(line));
        std::fflush(m_out);
        return;
    }
    fmt::print(m_console, "{}\n", line);
    std::fflush(m_console);
}

}  // namespace hmk
