// SPDX-License-Identifier: Apache-2.0
// hmk shell: an interactive shell on a running system (docs/shell.md). The
// system's own commands (tree, stats, kill, swap, move, snapshot) go to its
// control socket; files and pairs go, through the same socket, to the shell
// service, which asks the file system and the key-value store like any
// module would. Line editing and history through readline.
#include "shell_client.hpp"

#include <fmt/core.h>
#include <readline/history.h>
#include <readline/readline.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "hmk/runtime/control.hpp"

namespace hmk::tools {
namespace {

constexpr const char* k_help = R"(The system (through its control socket):
  tree                      the modules as they are attached now
  stats                     module and bus counters
  buses                     the bus counters only
  tap BUS [N]               the last N messages on the bus owned by BUS (/ for Bus 0)
  kill PATH                 the operator's kill (its parent restarts it, if it should)
  snapshot PATH             ask a module for a snapshot now
  swap PATH --kind KIND     hot swap (docs/swap.md)
  move PATH --to GATEWAY [--isolation inproc|process]   relocation (docs/relocation.md)
  send DEST TYPE [PAYLOAD]  a message from the microkernel; prints the answer
  journal verify|dump|stats|snapshots DIR   a bus journal on this machine (hmk journal)
Files and pairs (through the shell service):
  ls [PATH]  cat PATH  write PATH TEXT...  append PATH TEXT...  mkdir PATH  rm PATH
  mv FROM TO  stat PATH  fsck
  kv get KEY | kv put KEY VALUE... | kv del KEY | kv scan [PREFIX] [LIMIT]
  help  quit)";

std::string first_word(const std::string& line) {
    const std::size_t start = line.find_first_not_of(' ');
    if (start == std::string::npos) return {};
    const std::size_t end = line.find(' ', start);
    return line.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

// A quoted script word: the line as one payload.
std::string quoted(const std::string& text) {
    std::string out = "\"";
    for (const char c : text) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    return out + "\"";
}

class ShellClient {
  public:
    explicit ShellClient(const ShellOptions& o) : m_o(o) {}

    // One command line; false to quit.
    bool run(const std::string& line) {
        const std::string cmd = first_word(line);
        if (cmd.empty()) return true;
        if (cmd == "quit" || cmd == "exit") return false;
        if (cmd == "help") {
            fmt::print("{}\n", k_help);
            return true;
        }
        if (cmd == "journal") {
            std::vector<std::string> words;
            std::size_t at = line.find("journal") + 7;
            while (at < line.size()) {
                const std::size_t start = line.find_first_not_of(' ', at);
                if (start == std::string::npos) break;
                const std::size_t end = std::min(line.find(' ', start), line.size());
                words.push_back(line.substr(start, end - start));
                at = end;
            }
            if (words.size() < 2 || !m_o.journal) {
                fmt::print(stderr, "journal verify|dump|stats|snapshots DIR\n");
                ++m_failures;
            } else if (m_o.journal(words) != 0) {
                ++m_failures;
            }
            return true;
        }
        if (cmd == "tree" || cmd == "stats" || cmd == "kill" || cmd == "snapshot" ||
            cmd == "swap" || cmd == "move" || cmd == "send" || cmd == "tap") {
            ctl(line, false);
            return true;
        }
        if (cmd == "buses") {
            ctl("stats", true);
            return true;
        }
        const std::string service = m_o.service.empty() ? find_service() : m_o.service;
        if (service.empty()) {
            fmt::print(stderr, "error: the system has no shell service (a module of kind shell)\n");
            ++m_failures;
            return true;
        }
        ctl(fmt::format("timeout {} call {} shell {}", m_o.timeout_ms, service, quoted(line)),
            false);
        return true;
    }

    int failures() const { return m_failures; }

  private:
    // The path of the first module of kind `shell`, from the system's tree as
    // it is now (a move changes it): each line is NAME (a gateway's ends in
    // /), indented two spaces a level, then id and kind.
    std::string find_service() {
        std::vector<std::string> stack;
        std::string found;
        (void)control_request(m_o.socket, "tree", [&](std::string_view l) {
            if (!found.empty() || l.empty() || l.front() == '/' || l.rfind("module", 0) == 0)
                return;
            const std::size_t indent = l.find_first_not_of(' ');
            if (indent == std::string_view::npos) return;
            const std::size_t depth = indent / 2;
            std::string_view rest = l.substr(indent);
            std::string_view name = rest.substr(0, rest.find(' '));
            if (!name.empty() && name.back() == '/') name.remove_suffix(1);
            stack.resize(depth > 0 ? depth - 1 : 0);
            stack.emplace_back(name);
            // id, then kind
            rest.remove_prefix(std::min(rest.size(), rest.find(' ')));
            const std::size_t id_at = rest.find_first_not_of(' ');
            if (id_at == std::string_view::npos) return;
            rest.remove_prefix(id_at);
            rest.remove_prefix(std::min(rest.size(), rest.find(' ')));
            const std::size_t kind_at = rest.find_first_not_of(' ');
            if (kind_at == std::string_view::npos) return;
            rest.remove_prefix(kind_at);
            if (rest.substr(0, rest.find(' ')) != "shell") return;
            for (const std::string& part : stack) found += "/" + part;
        });
        return found;
    }

    void ctl(const std::string& request, bool buses_only) {
        bool in_buses = false;
        bool printed = false;
        const auto reply = control_request(m_o.socket, request, [&](std::string_view l) {
            if (buses_only) {
                if (l.rfind("bus ", 0) == 0) in_buses = true;
                if (!in_buses) return;
            }
            fmt::print("{}\n", l);
            printed = true;
        });
        if (!reply) {
            fmt::print(stderr, "hmk shell: {}\n", reply.error());
            ++m_failures;
            return;
        }
        if (!reply->ok) {
            // (A service's own error text came as the output already.)
            if (!printed) fmt::print(stderr, "error: {}\n", reply->message);
            ++m_failures;
        } else if (!printed && !reply->message.empty()) {
            fmt::print("{}\n", reply->message);
        }
    }

    const ShellOptions& m_o;
    int m_failures = 0;
};

}  // namespace

int run_shell(const ShellOptions& o) {
    ShellClient client(o);
    if (::isatty(STDIN_FILENO) == 0) {
        // A script on stdin: the commands one a line, the exit status says
        // whether any failed.
        std::string line;
        while (std::getline(std::cin, line)) {
            if (!line.empty() && line[0] == '#') continue;
            if (!client.run(line)) break;
        }
        return client.failures() == 0 ? 0 : 1;
    }
    const char* home = std::getenv("HOME");
    const std::string history = home != nullptr ? std::string(home) + "/.hmk_history" : "";
    if (!history.empty()) (void)read_history(history.c_str());
    fmt::print("hmk shell on {} (help for the commands, quit or Ctrl-D to leave)\n", o.socket);
    for (;;) {
        char* raw = readline("hmk> ");
        if (raw == nullptr) {
            fmt::print("\n");
            break;
        }
        const std::string line(raw);
        std::free(raw);
        if (!first_word(line).empty()) add_history(line.c_str());
        if (!client.run(line)) break;
    }
    if (!history.empty()) (void)write_history(history.c_str());
    return 0;
}

}  // namespace hmk::tools
