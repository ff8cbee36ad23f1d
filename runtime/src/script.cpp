// SPDX-License-Identifier: Apache-2.0
#include "hmk/runtime/script.hpp"

#include <fmt/core.h>

#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

namespace hmk {
namespace {

struct Token {
    std::string text;
    std::uint32_t column;
    bool quoted;
};

using Op = ScriptCommand::Op;

Err<ConfigError> fail(const std::string& file, std::uint32_t line, std::uint32_t column,
                      std::string message) {
    return Err{ConfigError{SourceLocation{file, line, column}, std::move(message)}};
}

int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Splits a line into words; "double quoted" words may hold spaces and
// the escapes \" \\ \n \t \xHH. A '#' outside quotes starts a comment.
Result<std::vector<Token>, ConfigError> tokenize(const std::string& file, std::uint32_t line_no,
                                                 std::string_view line) {
    std::vector<Token> tokens;
    std::size_t i = 0;
    while (i < line.size()) {
        if (line[i] == ' ' || line[i] == '\t' || line[i] == '\r') {
            ++i;
            continue;
        }
        if (line[i] == '#') break;
        Token t{{}, static_cast<std::uint32_t>(i + 1), false};
        if (line[i] == '"') {
            t.quoted = true;
            ++i;
            bool closed = false;
            while (i < line.size()) {
                const char c = line[i++];
                if (c == '"') {
                    closed = true;
                    break;
                }
                if (c != '\\') {
                    t.text += c;
                    continue;
                }
                if (i >= line.size()) break;
                const char e = line[i++];
                switch (e) {
                    case 'n':
                        t.text += '\n';
                        break;
                    case 't':
                        t.text += '\t';
                        break;
                    case '"':
                        t.text += '"';
                        break;
                    case '\\':
                        t.text += '\\';
                        break;
                    case 'x': {
                        const int hi = i < line.size() ? hex_digit(line[i]) : -1;
                        const int lo = i + 1 < line.size() ? hex_digit(line[i + 1]) : -1;
                        if (hi < 0 || lo < 0)
                            return fail(file, line_no, static_cast<std::uint32_t>(i),
                                        "\\x needs two hex digits");
                        t.text += static_cast<char>(hi * 16 + lo);
                        i += 2;
                        break;
                    }
                    default:
                        return fail(file, line_no, static_cast<std::uint32_t>(i),
                                    fmt::format("unknown escape \\{}", e));
                }
            }
            if (!closed) return fail(file, line_no, t.column, "unterminated string");
        } else {
            while (i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != '\r')
                t.text += line[i++];
        }
        tokens.push_back(std::move(t));
    }
    return tokens;
}

// Payload words: "text", a bare word, or hex:0a0b...
Result<std::string, ConfigError> payload_of(const std::string& file, std::uint32_t line,
                                            const Token& t) {
    if (t.quoted || t.text.rfind("hex:", 0) != 0) return t.text;
    std::string out;
    const std::string_view hex = std::string_view(t.text).substr(4);
    if (hex.size() % 2 != 0)
        return fail(file, line, t.column, "hex payload needs an even number of digits");
    for (std::size_t i = 0; i < hex.size(); i += 2) {
        const int hi = hex_digit(hex[i]), lo = hex_digit(hex[i + 1]);
        if (hi < 0 || lo < 0) return fail(file, line, t.column, "bad hex digit in payload");
        out += static_cast<char>(hi * 16 + lo);
    }
    return out;
}

std::optional<std::uint64_t> parse_number(std::string_view s) {
    if (s.empty()) return std::nullopt;
    std::uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9' || v > (UINT64_MAX - 9) / 10) return std::nullopt;
        v = v * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return v;
}

constexpr std::string_view k_stat_keys[] = {
    "rx",        "tx",         "seen",      "fwd_up",      "fwd_down", "fwd",
    "denied",    "lost",       "invalid",   "send_errors", "restarts", "epoch",
    "caught_up", "suppressed", "snapshots", "read_ahead",  "waited_ms"};
constexpr std::string_view k_states[] = {"running",    "failed",     "stopped",
                                         "restarting", "recovering", "created"};
constexpr std::string_view k_bus_keys[] = {"published", "bytes", "rejected", "evicted",
                                           "pressure_ms"};
constexpr std::string_view k_comparisons[] = {"==", "!=", "<", "<=", ">", ">="};

template <std::size_t N>
bool one_of(std::string_view s, const std::string_view (&list)[N]) {
    for (auto x : list)
        if (x == s) return true;
    return false;
}
template <std::size_t N>
std::string join(const std::string_view (&list)[N]) {
    std::string out;
    for (auto x : list) out += (out.empty() ? "" : ", ") + std::string(x);
    return out;
}

bool compare(std::uint64_t a, const std::string& op, std::uint64_t b) {
    if (op == "==") return a == b;
    if (op == "!=") return a != b;
    if (op == "<") return a < b;
    if (op == "<=") return a <= b;
    if (op == ">") return a > b;
    return a >= b;
}

std::uint64_t stat_value(const ModuleStats& s, const std::string& key) {
    if (key == "rx") return s.rx;
    if (key == "tx") return s.tx;
    if (key == "seen") return s.seen;
    if (key == "fwd_up") return s.fwd_up;
    if (key == "fwd_down") return s.fwd_down;
    if (key == "fwd") return s.fwd_up + s.fwd_down;
    if (key == "denied") return s.denied;
    if (key == "lost") return s.lost;
    if (key == "invalid") return s.invalid;
    if (key == "restarts") return s.restarts;
    if (key == "epoch") return s.epoch;
    if (key == "caught_up") return s.caught_up;
    if (key == "suppressed") return s.suppressed;
    if (key == "snapshots") return s.snapshots;
    if (key == "read_ahead") return s.read_ahead;
    if (key == "waited_ms") return s.waited_ns / 1'000'000;
    return s.send_errors;
}

std::uint64_t bus_value(const BusStats& b, const std::string& key) {
    if (key == "published") return b.published;
    if (key == "bytes") return b.bytes;
    if (key == "evicted") return b.evicted;
    if (key == "pressure_ms") return b.pressure_ns / 1'000'000;
    return b.rejected;
}

}  // namespace

Result<Script, ConfigError> parse_script(std::string_view text, const std::string& file,
                                         const Topology& system_tree) {
    // Paths are checked against the tree as the script's moves leave it.
    Topology topology = system_tree;
    Script script;
    script.file = file;
    std::uint32_t line_no = 0;
    std::size_t pos = 0;
    while (pos <= text.size()) {
        const std::size_t end = std::min(text.find('\n', pos), text.size());
        const std::string_view line = text.substr(pos, end - pos);
        pos = end + 1;
        ++line_no;
        const auto tokens = HMK_TRY(tokenize(file, line_no, line));
        if (tokens.empty()) continue;
        const std::string& word = tokens[0].text;
        ScriptCommand c;
        c.line = line_no;
        auto need = [&](std::size_t n, const char* usage) -> Result<void, ConfigError> {
            if (tokens.size() < n)
                return fail(file, line_no, tokens.back().column,
                            fmt::format("too few words; usage: {}", usage));
            return {};
        };
        auto module_path = [&](const Token& t) -> Result<std::string, ConfigError> {
            if (topology.find(t.text) == nullptr) {
                return fail(file, line_no, t.column,
                            fmt::format("no module {} in this system", t.text));
            }
            return t.text;
        };
        auto bus_path = [&](const Token& t) -> Result<std::string, ConfigError> {
            const TopologyNode* n = topology.find(t.text);
            if (n == nullptr || !n->is_gateway()) {
                return fail(file, line_no, t.column,
                            fmt::format("{} owns no bus (name a gateway, or / for Bus 0)", t.text));
            }
            return t.text;
        };
        // `--flag value` pairs from token 2 on, each handed to `take`.
        auto options = [&](const char* usage, auto&& take) -> Result<void, ConfigError> {
            for (std::size_t i = 2; i < tokens.size(); i += 2) {
                const Token& flag = tokens[i];
                if (i + 1 >= tokens.size())
                    return fail(file, line_no, flag.column,
                                fmt::format("{} needs a value; usage: {}", flag.text, usage));
                auto known = take(flag, tokens[i + 1]);
                if (!known) return Err{std::move(known).error()};
                if (!*known)
                    return fail(file, line_no, flag.column,
                                fmt::format("unknown option {}; usage: {}", flag.text, usage));
            }
            return {};
        };
        auto deadline = [&](const Token& value) -> Result<std::uint64_t, ConfigError> {
            const auto n = parse_number(value.text);
            if (!n || *n == 0 || *n > 3'600'000)
                return fail(file, line_no, value.column,
                            "--deadline needs a whole number of ms, 1 to 3600000");
            return *n;
        };
        std::size_t consumed = 0;
        if (word == "send" || word == "call") {
            static constexpr const char* usage =
                "send [--from PATH] [--scope bus|subtree|up|system] DEST|* TYPE [PAYLOAD]";
            c.op = word == "send" ? Op::send : Op::call;
            std::size_t i = 1;
            while (i < tokens.size() && !tokens[i].quoted && tokens[i].text.rfind("--", 0) == 0) {
                const Token& flag = tokens[i];
                if (i + 1 >= tokens.size())
                    return fail(file, line_no, flag.column,
                                fmt::format("{} needs a value", flag.text));
                if (flag.text == "--from") {
                    c.from = HMK_TRY(module_path(tokens[i + 1]));
                } else if (flag.text == "--scope") {
                    const std::string& s = tokens[i + 1].text;
                    if (s == "bus")
                        c.scope = Scope::bus;
                    else if (s == "subtree")
                        c.scope = Scope::subtree;
                    else if (s == "up")
                        c.scope = Scope::up;
                    else if (s == "system")
                        c.scope = Scope::system;
                    else
                        return fail(
                            file, line_no, tokens[i + 1].column,
                            fmt::format("unknown scope '{}' (bus, subtree, up, system)", s));
                } else {
                    return fail(file, line_no, flag.column,
                                fmt::format("unknown option {}; usage: {}", flag.text, usage));
                }
                i += 2;
            }
            if (tokens.size() < i + 2)
                return fail(file, line_no, tokens.back().column,
                            fmt::format("too few words; usage: {}", usage));
            if (tokens[i].text != "*") {
                c.path = HMK_TRY(module_path(tokens[i]));
            } else if (c.op == Op::call) {
                return fail(file, line_no, tokens[i].column, "call asks one module: DEST, not *");
            }
            const auto type = msg::parse_type(tokens[i + 1].text);
            if (!type)
                return fail(file, line_no, tokens[i + 1].column,
                            fmt::format("unknown message type '{}'", tokens[i + 1].text));
            c.type = *type;
            if (tokens.size() > i + 2)
                c.payload = HMK_TRY(payload_of(file, line_no, tokens[i + 2]));
            consumed = std::min(tokens.size(), i + 3);
        } else if (word == "expect") {
            HMK_TRY(need(2, "expect reply|reply~|no-reply|stat|bus|state ..."));
            const std::string& what = tokens[1].text;
            if (what == "reply" || what == "reply~") {
                HMK_TRY(need(3, "expect reply PAYLOAD"));
                c.op = what == "reply" ? Op::expect_reply : Op::expect_reply_contains;
                c.payload = HMK_TRY(payload_of(file, line_no, tokens[2]));
                consumed = 3;
            } else if (what == "no-reply") {
                c.op = Op::expect_no_reply;
                consumed = 2;
            } else if (what == "stat" || what == "bus") {
                const bool bus = what == "bus";
                HMK_TRY(need(6, bus ? "expect bus PATH published|bytes|rejected OP N"
                                    : "expect stat PATH KEY OP N"));
                c.op = bus ? Op::expect_bus : Op::expect_stat;
                c.path = bus ? HMK_TRY(bus_path(tokens[2])) : HMK_TRY(module_path(tokens[2]));
                c.key = tokens[3].text;
                if (bus ? !one_of(c.key, k_bus_keys) : !one_of(c.key, k_stat_keys)) {
                    return fail(file, line_no, tokens[3].column,
                                fmt::format("unknown counter '{}' (one of: {})", c.key,
                                            bus ? join(k_bus_keys) : join(k_stat_keys)));
                }
                c.comparison = tokens[4].text;
                if (!one_of(c.comparison, k_comparisons)) {
                    return fail(file, line_no, tokens[4].column,
                                fmt::format("unknown comparison '{}' (one of: {})", c.comparison,
                                            join(k_comparisons)));
                }
                const auto n = parse_number(tokens[5].text);
                if (!n)
                    return fail(file, line_no, tokens[5].column,
                                fmt::format("'{}' is not a whole number", tokens[5].text));
                c.number = *n;
                consumed = 6;
            } else if (what == "state") {
                HMK_TRY(need(4, "expect state PATH STATE"));
                c.op = Op::expect_state;
                c.path = HMK_TRY(module_path(tokens[2]));
                c.key = tokens[3].text;
                if (!one_of(c.key, k_states)) {
                    return fail(
                        file, line_no, tokens[3].column,
                        fmt::format("unknown state '{}' (one of: {})", c.key, join(k_states)));
                }
                consumed = 4;
            } else {
                return fail(
                    file, line_no, tokens[1].column,
                    fmt::format(
                        "unknown expectation '{}' (reply, reply~, no-reply, stat, bus, state)",
                        what));
            }
        } else if (word == "wait" || word == "timeout") {
            HMK_TRY(need(2, word == "wait" ? "wait MS" : "timeout MS"));
            c.op = word == "wait" ? Op::wait : Op::timeout;
            const auto n = parse_number(tokens[1].text);
            if (!n || *n > 3'600'000)
                return fail(file, line_no, tokens[1].column, "needs milliseconds, 0 to 3600000");
            c.number = *n;
            consumed = 2;
        } else if (word == "stats" || word == "tree") {
            c.op = word == "stats" ? Op::stats : Op::tree;
            consumed = 1;
        } else if (word == "kill" || word == "snapshot") {
            HMK_TRY(need(2, word == "kill" ? "kill PATH" : "snapshot PATH"));
            c.op = word == "kill" ? Op::kill : Op::snapshot;
            c.path = HMK_TRY(module_path(tokens[1]));
            if (c.path == "/") {
                return fail(file, line_no, tokens[1].column,
                            fmt::format("the microkernel cannot be {}",
                                        word == "kill" ? "killed" : "snapshotted"));
            }
            consumed = 2;
        } else if (word == "tap") {
            HMK_TRY(need(2, "tap BUS-OWNER [COUNT]"));
            c.op = Op::tap;
            c.path = HMK_TRY(module_path(tokens[1]));
            c.number = 20;
            consumed = 2;
            if (tokens.size() > 2) {
                const auto n = parse_number(tokens[2].text);
                if (!n || *n == 0 || *n > 10000)
                    return fail(file, line_no, tokens[2].column, "COUNT is 1 to 10000");
                c.number = *n;
                consumed = 3;
            }
        } else if (word == "swap") {
            static constexpr const char* usage =
                "swap PATH --kind KIND [--version N] [--deadline MS]";
            HMK_TRY(need(2, usage));
            c.op = Op::swap;
            c.path = HMK_TRY(module_path(tokens[1]));
            c.number = 5000;
            auto taken = options(
                usage, [&](const Token& flag, const Token& value) -> Result<bool, ConfigError> {
                    if (flag.text == "--kind") {
                        c.kind = value.text;
                    } else if (flag.text == "--version") {
                        const auto n = parse_number(value.text);
                        if (!n || *n == 0 || *n > UINT32_MAX)
                            return fail(file, line_no, value.column,
                                        "--version needs a whole number from 1");
                        c.version = static_cast<std::uint32_t>(*n);
                    } else if (flag.text == "--deadline") {
                        c.number = HMK_TRY(deadline(value));
                    } else {
                        return false;
                    }
                    return true;
                });
            if (!taken) return Err{std::move(taken).error()};
            if (c.kind.empty())
                return fail(file, line_no, tokens[1].column,
                            fmt::format("which kind? usage: {}", usage));
            if (c.path == "/")
                return fail(file, line_no, tokens[1].column, "the microkernel cannot be swapped");
            consumed = tokens.size();
        } else if (word == "move") {
            static constexpr const char* usage =
                "move PATH --to GATEWAY [--isolation inproc|process] [--deadline MS]";
            HMK_TRY(need(2, usage));
            c.op = Op::move;
            c.path = HMK_TRY(module_path(tokens[1]));
            c.number = 5000;
            std::uint32_t to_column = tokens[1].column;
            auto taken = options(
                usage, [&](const Token& flag, const Token& value) -> Result<bool, ConfigError> {
                    if (flag.text == "--to") {
                        c.to = HMK_TRY(bus_path(value));
                        to_column = value.column;
                    } else if (flag.text == "--isolation") {
                        if (value.text != "inproc" && value.text != "process")
                            return fail(file, line_no, value.column,
                                        "--isolation is inproc or process");
                        c.isolation = value.text;
                    } else if (flag.text == "--deadline") {
                        c.number = HMK_TRY(deadline(value));
                    } else {
                        return false;
                    }
                    return true;
                });
            if (!taken) return Err{std::move(taken).error()};
            if (c.to.empty())
                return fail(file, line_no, tokens[1].column,
                            fmt::format("where to? usage: {}", usage));
            // (To the gateway it is on: only its isolation changes, checked when it runs.)
            const TopologyNode* node = topology.find(c.path);
            const TopologyNode* to = topology.find(c.to);
            if (node->parent != to->id || c.isolation.empty()) {
                auto moved = topology.moved(node->id, to->id);
                if (!moved) return fail(file, line_no, to_column, "cannot move: " + moved.error());
                topology = std::move(moved).value();
            }
            consumed = tokens.size();
        } else if (word == "print") {
            c.op = Op::print;
            for (std::size_t i = 1; i < tokens.size(); ++i)
                c.payload += (i > 1 ? " " : "") + tokens[i].text;
            consumed = tokens.size();
        } else {
            return fail(file, line_no, tokens[0].column,
                        fmt::format("unknown command '{}' (send, expect, wait, timeout, stats, "
                                    "tree, print, kill, snapshot, swap, move, call, tap)",
                                    word));
        }
        if (consumed < tokens.size()) {
            return fail(file, line_no, tokens[consumed].column,
                        fmt::format("unexpected '{}'", tokens[consumed].text));
        }
        script.commands.push_back(std::move(c));
    }
    return script;
}

Result<Script, ConfigError> load_script_file(const std::string& path, const Topology& topology) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return Err{ConfigError{SourceLocation{path, 0, 0}, "cannot open file"}};
    std::ostringstream text;
    text << in.rdbuf();
    return parse_script(text.str(), path, topology);
}

void CommandSession::cancel() {
    {
        const std::lock_guard lock(m_mutex);
        m_cancelled.store(true);
    }
    m_cv.notify_all();
}

bool CommandSession::sleep(std::chrono::milliseconds duration) {
    std::unique_lock lock(m_mutex);
    return !m_cv.wait_for(lock, duration, [&] { return m_cancelled.load(); });
}

template <typename F>
bool CommandSession::poll(F&& holds) {
    const auto deadline = std::chrono::steady_clock::now() + m_timeout;
    while (!holds()) {
        if (std::chrono::steady_clock::now() >= deadline) return false;
        if (!sleep(std::chrono::milliseconds(1))) return false;
    }
    return true;
}

CommandOutcome CommandSession::run(const ScriptCommand& c) {
    System& system = m_system;
    // Paths are looked up now: a module that moved has a new one.
    const Topology& topo = system.topology();
    auto failed = [](std::string why) { return CommandOutcome{false, std::move(why), {}}; };
    auto done = [](std::string what) { return CommandOutcome{true, std::move(what), {}}; };
    const TopologyNode* node = c.path.empty() ? nullptr : topo.find(c.path);
    if (!c.path.empty() && node == nullptr)
        return failed(fmt::format("no module {} in the system now", c.path));
    switch (c.op) {
        case Op::send: {
            Outgoing out;
            out.destination = node != nullptr ? node->id : k_no_module;
            out.scope = c.scope;
            out.type = c.type;
            out.payload = as_bytes(c.payload);
            const TopologyNode* from = c.from.empty() ? &topo.root() : topo.find(c.from);
            if (from == nullptr)
                return failed(fmt::format("no module {} in the system now", c.from));
            auto sent = system.inject(out, from->id);
            m_last_send = fmt::format("{} -> {}", c.from.empty() ? "/" : c.from,
                                      c.path.empty() ? "*" : c.path);
            if (!sent)
                return failed(
                    fmt::format("send {} failed: {}", m_last_send, to_string(sent.error())));
            m_last_correlation = *sent;
            return done(fmt::format("sent {} ({}{})", m_last_send,
                                    c.path.empty() ? to_string(c.scope) : "addressed",
                                    c.payload.empty() ? "" : ", \"" + c.payload + "\""));
        }
        case Op::call: {
            ScriptCommand send = c;
            send.op = Op::send;
            CommandOutcome sent = run(send);
            if (!sent.ok) return sent;
            std::optional<OwnedMessage> reply;
            const auto deadline = std::chrono::steady_clock::now() + m_timeout;
            while (!reply && !m_cancelled.load() && std::chrono::steady_clock::now() < deadline) {
                reply = system.wait_for_root(m_last_correlation, std::chrono::milliseconds(50));
            }
            if (!reply)
                return failed(
                    fmt::format("no reply to {} within {} ms", m_last_send, m_timeout.count()));
            // The answer is what the operator asked for: its text, as it is.
            CommandOutcome r;
            r.ok = (reply->header.flags & k_flag_error) == 0;
            r.output = std::string(reply->text());
            r.text = r.ok ? fmt::format("{} answered", c.path)
                          : fmt::format("{} answered with an error", c.path);
            return r;
        }
        case Op::expect_reply:
        case Op::expect_reply_contains: {
            std::optional<OwnedMessage> reply;
            const auto deadline = std::chrono::steady_clock::now() + m_timeout;
            while (!reply && !m_cancelled.load() && std::chrono::steady_clock::now() < deadline) {
                reply = system.wait_for_root(m_last_correlation, std::chrono::milliseconds(50));
            }
            if (!reply)
                return failed(
                    fmt::format("no reply to {} within {} ms", m_last_send, m_timeout.count()));
            const std::string got(reply->text());
            const bool ok = c.op == Op::expect_reply ? got == c.payload
                                                     : got.find(c.payload) != std::string::npos;
            if (!ok) {
                return failed(fmt::format("reply to {} was \"{}\", wanted {}\"{}\"", m_last_send,
                                          got, c.op == Op::expect_reply ? "" : "text containing ",
                                          c.payload));
            }
            const TopologyNode* from = topo.find(reply->header.sender);
            return done(fmt::format("reply from {}: \"{}\" (ok)", from ? from->path : "?", got));
        }
        case Op::expect_no_reply: {
            const auto deadline = std::chrono::steady_clock::now() + m_timeout;
            while (!m_cancelled.load() && std::chrono::steady_clock::now() < deadline) {
                if (auto reply =
                        system.wait_for_root(m_last_correlation, std::chrono::milliseconds(50))) {
                    return failed(fmt::format("unexpected reply to {}: \"{}\"", m_last_send,
                                              std::string(reply->text())));
                }
            }
            if (m_cancelled.load()) return failed("cancelled");
            return done(fmt::format("no reply to {} (ok)", m_last_send));
        }
        case Op::expect_stat: {
            std::uint64_t v = 0;
            const bool ok = poll([&] {
                v = stat_value(system.module_stats(node->id), c.key);
                return compare(v, c.comparison, c.number);
            });
            if (!ok)
                return failed(fmt::format("{} {} is {}, wanted {} {}", c.path, c.key, v,
                                          c.comparison, c.number));
            return done(fmt::format("{} {} = {} (ok)", c.path, c.key, v));
        }
        case Op::expect_bus: {
            std::uint64_t v = 0;
            const bool ok = poll([&] {
                for (const BusStats& b : system.bus_stats()) {
                    if (b.id == node->id) v = bus_value(b, c.key);
                }
                return compare(v, c.comparison, c.number);
            });
            const std::string name = node->id == k_root_id ? "Bus 0" : "bus " + c.path;
            if (!ok)
                return failed(fmt::format("{} {} is {}, wanted {} {}", name, c.key, v, c.comparison,
                                          c.number));
            return done(fmt::format("{} {} = {} (ok)", name, c.key, v));
        }
        case Op::expect_state: {
            ModuleState s{};
            const bool ok = poll([&] {
                s = system.module_stats(node->id).state;
                return c.key == to_string(s);
            });
            if (!ok) return failed(fmt::format("{} is {}, wanted {}", c.path, to_string(s), c.key));
            return done(fmt::format("{} is {} (ok)", c.path, c.key));
        }
        case Op::wait:
            if (!sleep(std::chrono::milliseconds(c.number))) return failed("cancelled");
            return {};
        case Op::timeout:
            m_timeout = std::chrono::milliseconds(c.number);
            return {};
        case Op::stats:
            return CommandOutcome{true, {}, format_stats(system)};
        case Op::tree:
            return CommandOutcome{true, {}, format_tree(system)};
        case Op::tap: {
            if (node->role != Role::gateway && node->id != k_root_id)
                return failed(fmt::format("{} owns no bus", c.path));
            std::string out;
            auto name = [&](ModuleId id) {
                const TopologyNode* n = topo.find(id);
                return n != nullptr ? n->path : fmt::format("#{}", id);
            };
            for (const OwnedMessage& m : system.bus_tail(node->id, c.number)) {
                const Header& h = m.header;
                const std::string_view tn = msg::type_name(h.type);
                std::string payload;
                for (std::size_t i = 0; i < std::min<std::size_t>(m.payload.size(), 60); ++i) {
                    const auto ch = static_cast<unsigned char>(m.payload[i]);
                    payload += ch >= 0x20 && ch < 0x7f ? std::string(1, static_cast<char>(ch))
                                                       : fmt::format("\\x{:02x}", ch);
                }
                if (m.payload.size() > 60)
                    payload += fmt::format("...({} bytes)", m.payload.size());
                out += fmt::format("seq={} {} -> {} {}{} \"{}\"\n", h.seq, name(h.sender),
                                   h.is_broadcast() ? fmt::format("*({})", to_string(h.scope))
                                                    : name(h.destination),
                                   tn.empty() ? fmt::format("{:#x}", h.type) : std::string(tn),
                                   h.is_reply() ? " reply" : "", payload);
            }
            if (!out.empty()) out.pop_back();
            return CommandOutcome{true, {}, out.empty() ? std::string("(no messages)") : out};
        }
        case Op::print:
            return CommandOutcome{true, {}, c.payload};
        case Op::kill: {
            if (auto killed = system.kill(node->id); !killed)
                return failed(fmt::format("cannot kill {}: {}", c.path, killed.error()));
            return done(fmt::format("killed {}", c.path));
        }
        case Op::move: {
            const TopologyNode* to = topo.find(c.to);
            if (to == nullptr) return failed(fmt::format("no gateway {} in the system now", c.to));
            std::optional<Isolation> isolation;
            if (!c.isolation.empty())
                isolation = c.isolation == "process" ? Isolation::process : Isolation::inproc;
            auto r = system.move(node->id, to->id, isolation, std::chrono::milliseconds(c.number));
            if (!r) return failed(fmt::format("move of {}: {}", c.path, r.error()));
            return done(r->what);
        }
        case Op::swap: {
            auto r = system.swap(node->id, c.kind, c.version, std::chrono::milliseconds(c.number));
            if (!r) return failed(fmt::format("swap of {}: {}", c.path, r.error()));
            return done(r->what);
        }
        case Op::snapshot: {
            // Asked by its parent, the only one a module takes that from.
            Outgoing ask;
            ask.destination = node->id;
            ask.type = msg::k_snapshot_request;
            if (auto sent = system.inject(ask, node->parent); !sent) {
                return failed(fmt::format("cannot ask {} for a snapshot: {}", c.path,
                                          to_string(sent.error())));
            }
            return done(fmt::format("asked {} for a snapshot", c.path));
        }
    }
    return failed("unknown command");
}

int run_script(System& system, const Script& script, Logger& logger) {
    CommandSession session(system);
    for (const ScriptCommand& c : script.commands) {
        const std::string where = fmt::format("{}:{}", script.file, c.line);
        const CommandOutcome r = session.run(c);
        if (!r.ok) {
            if (!r.output.empty()) logger.print(r.output);
            logger.log(LogLevel::error, "script",
                       fmt::format("{}: {} failed: {}", where,
                                   c.op == ScriptCommand::Op::call ? "call" : "expect", r.text));
            return 1;
        }
        if (!r.text.empty())
            logger.log(LogLevel::info, "script", fmt::format("{}: {}", where, r.text));
        if (!r.output.empty()) logger.print(r.output);
    }
    return 0;
}

std::string format_stats(const System& system) {
    std::string out =
        fmt::format("{:<28} {:<12} {:<10} {:>8} {:>8} {:>8} {:>7} {:>7} {:>6} {:>5} {:>8} {:>9}\n",
                    "module", "kind", "state", "rx", "tx", "seen", "fwd_up", "fwd_dn", "denied",
                    "lost", "restarts", "waited_ms");
    for (const TopologyNode& n : system.topology().nodes()) {
        const ModuleStats s = system.module_stats(n.id);
        const ModuleSpec* spec = system.spec().module(n.id);
        const std::string name = std::string(n.level * 2, ' ') +
                                 (n.id == k_root_id ? "/" : std::string(base_name(n.path)));
        out += fmt::format(
            "{:<28} {:<12} {:<10} {:>8} {:>8} {:>8} {:>7} {:>7} {:>6} {:>5} {:>8} {:>9}\n", name,
            spec ? spec->kind : "microkernel", to_string(s.state), s.rx, s.tx, s.seen, s.fwd_up,
            s.fwd_down, s.denied, s.lost, s.restarts, s.waited_ns / 1'000'000);
    }
    out += fmt::format("\n{:<28} {:<11} {:>10} {:>12} {:>9} {:>9} {:>10} {:>8} {:>11}\n", "bus",
                       "delivery", "published", "bytes", "rejected", "capacity", "last seq",
                       "evicted", "pressure_ms");
    for (const BusStats& b : system.bus_stats()) {
        out += fmt::format("{:<28} {:<11} {:>10} {:>12} {:>9} {:>9} {:>10} {:>8} {:>11}\n", b.name,
                           to_string(b.delivery), b.published, b.bytes, b.rejected, b.capacity,
                           b.head, b.evicted, b.pressure_ns / 1'000'000);
    }
    if (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
}

std::string format_tree(const System& system) {
    const Topology& topo = system.topology();
    std::string out = fmt::format("{:<32} {:>4} {:<16} {:<8} {:<10} {:>5} {:>8} {:>7}\n", "module",
                                  "id", "kind", "runs", "state", "epoch", "restarts", "pid");
    for (const TopologyNode& n : topo.nodes()) {
        const ModuleStats s = system.module_stats(n.id);
        const ModuleSpec* spec = system.spec().module(n.id);
        std::string name = std::string(n.level * 2, ' ') +
                           (n.id == k_root_id ? "/" : std::string(base_name(n.path)));
        if (n.is_gateway()) name += n.id == k_root_id ? " (Bus 0)" : "/";
        out += fmt::format("{:<32} {:>4} {:<16} {:<8} {:<10} {:>5} {:>8} {:>7}\n", name, n.id,
                           spec ? spec->kind : "microkernel",
                           spec ? to_string(spec->isolation) : "inproc", to_string(s.state),
                           s.epoch, s.restarts, s.pid != 0 ? std::to_string(s.pid) : "-");
    }
    out.pop_back();
    return out;
}

}  // namespace hmk
