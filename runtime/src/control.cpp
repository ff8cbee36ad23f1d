// SPDX-License-Identifier: Apache-2.0
// The control endpoint: a Unix socket that runs script commands against a
// running system, for its own user only (docs/control.md).
#include "hmk/runtime/control.hpp"

#include <fmt/core.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <tuple>
#include <utility>

#include "hmk/platform/shm.hpp"
#include "hmk/runtime/script.hpp"

namespace hmk {
namespace {

constexpr std::size_t k_max_request = 64 * 1024;
constexpr int k_max_clients = 16;
constexpr int k_request_timeout_ms = 5000;             // to send the request line, once connected
constexpr std::uint64_t k_max_timeout_ms = 3'600'000;  // as a script's `timeout`

std::string errno_text(const std::string& what) {
    return what + ": " + std::strerror(errno);
}

Result<sockaddr_un, std::string> socket_address(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof(a.sun_path)) {
        return Err{fmt::format("control socket path '{}' is {} (at most {} bytes)", path,
                               path.empty() ? "empty" : "too long", sizeof(a.sun_path) - 1)};
    }
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    return a;
}

// The directory must be ours and closed to everyone else: a socket in a
// directory another user controls could be swapped under us.
Result<void, std::string> private_directory(const std::string& dir) {
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
        return Err{errno_text("cannot create " + dir)};
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0) return Err{errno_text("cannot stat " + dir)};
    if (!S_ISDIR(st.st_mode)) return Err{fmt::format("{} is not a directory", dir)};
    if (st.st_uid != ::geteuid())
        return Err{fmt::format(
            "{} belongs to uid {}, not to us (uid {}): set XDG_RUNTIME_DIR, or give the system "
            "--control PATH",
            dir, st.st_uid, ::geteuid())};
    if ((st.st_mode & 077) != 0 && ::chmod(dir.c_str(), 0700) != 0)
        return Err{errno_text("cannot make " + dir + " private")};
    return {};
}

bool write_all(int fd, std::string_view text) {
    while (!text.empty()) {
        const ssize_t n = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        text.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

// "a\nb" as "| a\n| b\n": every output line is marked, so none can pass for
// the final line.
std::string output_lines(std::string_view text) {
    std::string out;
    while (!text.empty()) {
        const std::size_t end = std::min(text.find('\n'), text.size());
        out += "| ";
        out += text.substr(0, end);
        out += '\n';
        text.remove_prefix(std::min(text.size(), end + 1));
    }
    return out;
}

std::string one_line(std::string text) {
    std::replace(text.begin(), text.end(), '\n', ' ');
    return text;
}

// "timeout MS COMMAND...": MS and the command; nullopt for any other line
// (a lone "timeout MS" is the script command itself).
std::optional<std::pair<std::uint64_t, std::string>> split_timeout(std::string_view line) {
    constexpr std::string_view k_word = "timeout ";
    if (!line.starts_with(k_word)) return std::nullopt;
    line.remove_prefix(k_word.size());
    std::uint64_t ms = 0;
    std::size_t digits = 0;
    while (digits < line.size() && digits < 10 && line[digits] >= '0' && line[digits] <= '9') {
        ms = ms * 10 + static_cast<std::uint64_t>(line[digits] - '0');
        ++digits;
    }
    if (digits == 0 || ms == 0 || digits >= line.size() || line[digits] != ' ') return std::nullopt;
    line.remove_prefix(digits);
    while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
    if (line.empty()) return std::nullopt;
    return std::pair{ms, std::string(line)};
}

// Whether `dir` can be our private directory: absent (we make it), or a
// directory of ours (not a link to one).
bool could_be_ours(const std::string& dir) {
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0) return errno == ENOENT;
    return S_ISDIR(st.st_mode) && st.st_uid == ::geteuid();
}

std::string usable_dir(const char* variable) {
    const char* value = std::getenv(variable);
    struct stat st {};
    if (value == nullptr || value[0] != '/' || ::stat(value, &st) != 0 || !S_ISDIR(st.st_mode))
        return {};
    std::string dir(value);
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    return dir;
}

}  // namespace

std::string default_control_dir() {
    if (std::string xdg = usable_dir("XDG_RUNTIME_DIR"); !xdg.empty()) return xdg + "/hmk";
    // In the shared temporary directory another user may have taken our
    // name first: then the home directory, which nobody else can write.
    std::string tmp = usable_dir("TMPDIR");
    if (tmp.empty()) tmp = "/tmp";
    const std::string shared = fmt::format("{}/hmk-{}", tmp == "/" ? "" : tmp, ::geteuid());
    if (could_be_ours(shared)) return shared;
    if (std::string home = usable_dir("HOME"); !home.empty()) {
        const std::string own = (home == "/" ? "" : home) + "/.hmk";
        if (could_be_ours(own)) return own;
    }
    return shared;  // its owner is named when a system tries to use it
}

std::string default_control_path(std::string_view system_name) {
    std::string name(system_name.empty() ? "system" : system_name);
    for (char& c : name) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
        if (!ok) c = '_';
    }
    if (name[0] == '.') name[0] = '_';
    return default_control_dir() + "/" + name + ".sock";
}

std::string join_command_words(const std::vector<std::string>& words) {
    std::string line;
    for (const std::string& w : words) {
        if (!line.empty()) line += ' ';
        const bool plain = !w.empty() && w.find_first_of(" \t\r\n\"\\#") == std::string::npos;
        if (plain) {
            line += w;
            continue;
        }
        line += '"';
        for (char c : w) {
            switch (c) {
                case '"':
                    line += "\\\"";
                    break;
                case '\\':
                    line += "\\\\";
                    break;
                case '\n':
                    line += "\\n";
                    break;
                case '\t':
                    line += "\\t";
                    break;
                default:
                    if (static_cast<unsigned char>(c) < 0x20) {
                        line += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
                    } else {
                        line += c;
                    }
            }
        }
        line += '"';
    }
    return line;
}

namespace detail {

class ControlServerImpl {
  public:
    ControlServerImpl(System& system, Logger& logger, std::string path, platform::UniqueFd listener)
        : m_system(system),
          m_logger(logger),
          m_path(std::move(path)),
          m_listener(std::move(listener)),
          m_wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
        m_thread = std::thread([this] { accept_loop(); });
    }

    ~ControlServerImpl() {
        m_stop.store(true);
        wake();
        if (m_thread.joinable()) m_thread.join();
        {
            const std::lock_guard lock(m_mutex);
            for (Client& c : m_clients) {
                if (c.session != nullptr) c.session->cancel();
                ::shutdown(c.fd.get(), SHUT_RDWR);
            }
        }
        for (Client& c : m_clients) {
            if (c.thread.joinable()) c.thread.join();
        }
        ::unlink(m_path.c_str());
    }

    const std::string& path() const { return m_path; }

  private:
    struct Client {
        platform::UniqueFd fd;
        std::thread thread;
        pid_t pid = 0;
        CommandSession* session = nullptr;  // while a command runs; guarded by m_mutex
        bool cancelled = false;             // it hung up (guarded by m_mutex)
        std::atomic<bool> done{false};
    };

    void accept_loop() {
        std::vector<pollfd> fds;
        std::vector<Client*> watched;
        while (!m_stop.load()) {
            // The listener, the wake-up, and every client whose command runs:
            // one that hangs up has its command cancelled (nobody waits an
            // hour for a `wait` whose asker has gone).
            fds.assign({{m_listener.get(), POLLIN, 0}, {m_wake.get(), POLLIN, 0}});
            watched.clear();
            {
                const std::lock_guard lock(m_mutex);
                for (Client& c : m_clients) {
                    if (c.session == nullptr || c.cancelled) continue;
                    fds.push_back({c.fd.get(), 0, 0});  // POLLHUP is always reported
                    watched.push_back(&c);
                }
            }
            if (::poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) break;
            if ((fds[1].revents & POLLIN) != 0) {
                std::uint64_t n = 0;
                (void)!::read(m_wake.get(), &n, sizeof(n));
            }
            {
                const std::lock_guard lock(m_mutex);
                for (std::size_t i = 0; i < watched.size(); ++i) {
                    Client& c = *watched[i];
                    if ((fds[i + 2].revents & (POLLHUP | POLLERR)) == 0 || c.session == nullptr)
                        continue;
                    c.cancelled = true;
                    c.session->cancel();
                    m_logger.log(LogLevel::info, "ctl",
                                 fmt::format("pid {} hung up: its command is cancelled", c.pid));
                }
            }
            reap_clients();
            if (m_stop.load()) break;
            if ((fds[0].revents & POLLIN) == 0) continue;
            platform::UniqueFd fd(::accept4(m_listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
            if (!fd.valid()) continue;
            ucred peer{};
            socklen_t len = sizeof(peer);
            if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0 ||
                peer.uid != ::geteuid()) {
                const std::string why = fmt::format(
                    "refused: uid {} is not the system's user (uid {})", peer.uid, ::geteuid());
                m_logger.log(LogLevel::warn, "ctl",
                             fmt::format("connection from pid {}: {}", peer.pid, why));
                (void)write_all(fd.get(), "error: " + why + "\n");
                continue;
            }
            const std::lock_guard lock(m_mutex);
            if (m_clients.size() >= k_max_clients) {
                (void)write_all(fd.get(), "error: busy: too many control connections\n");
                continue;
            }
            Client& c = m_clients.emplace_back();
            c.fd = std::move(fd);
            c.pid = peer.pid;
            c.thread = std::thread([this, &c] { serve(c); });
        }
    }

    void wake() {
        const std::uint64_t one = 1;
        (void)!::write(m_wake.get(), &one, sizeof(one));
    }

    void reap_clients() {
        const std::lock_guard lock(m_mutex);
        for (auto it = m_clients.begin(); it != m_clients.end();) {
            if (it->done.load()) {
                it->thread.join();
                it = m_clients.erase(it);
            } else {
                ++it;
            }
        }
    }

    // Reads the request line: nothing past its newline, at most
    // k_max_request bytes before it. The reason when there is none.
    Result<std::string, std::string> read_request(int fd) {
        std::string line;
        char buf[4096];
        const auto deadline =
            std::chrono::steady_clock::now() + std::chrono::milliseconds(k_request_timeout_ms);
        for (;;) {
            const std::size_t nl = line.find('\n');
            if (nl != std::string::npos && nl <= k_max_request) {
                line.resize(nl);
                return line;
            }
            if (line.size() > k_max_request)
                return Err{
                    fmt::format("the request line is longer than {} KiB", k_max_request / 1024)};
            if (m_stop.load()) return Err{std::string("the system is stopping")};
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0)
                return Err{fmt::format("no request line within {} s", k_request_timeout_ms / 1000)};
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
            const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
            if (n <= 0) return Err{std::string("the connection closed before a request line")};
            line.append(buf, static_cast<std::size_t>(n));
        }
    }

    void serve(Client& c) {
        const int fd = c.fd.get();
        const auto request = read_request(fd);
        const std::string reply =
            request ? run(c, *request, c.pid)
                    : "error: " + request.error() + " (one line, at most 64 KiB, in 5 s)\n";
        (void)write_all(fd, reply);
        // Answered: the asker sees the end at once, and the connection goes.
        ::shutdown(fd, SHUT_RDWR);
        c.done.store(true);
        wake();
    }

    std::string run(Client& c, const std::string& request, pid_t pid) {
        // "timeout MS COMMAND...": the command with that timeout (hmk ctl --timeout).
        std::string line = request;
        std::uint64_t timeout_ms = 0;
        if (const auto t = split_timeout(request)) std::tie(timeout_ms, line) = *t;
        if (timeout_ms > k_max_timeout_ms)
            return fmt::format("error: timeout is {} ms, must be between 1 and {}\n", timeout_ms,
                               k_max_timeout_ms);
        auto script = parse_script(line, "ctl", m_system.topology());
        if (!script) {
            const ConfigError& e = script.error();
            const std::string why = fmt::format("{} (column {})", e.message, e.where.column);
            m_logger.log(LogLevel::warn, "ctl",
                         fmt::format("'{}' from pid {}: {}", one_line(line), pid, why));
            return "error: " + why + "\n";
        }
        if (script->commands.empty()) return "error: no command\n";
        CommandSession session(m_system);
        {
            const std::lock_guard lock(m_mutex);
            if (m_stop.load()) return "error: the system is stopping\n";
            c.session = &session;
        }
        wake();  // its connection is watched for a hang-up while it runs
        const ScriptCommand& command = script->commands.front();
        ScriptCommand set_timeout;
        set_timeout.op = ScriptCommand::Op::timeout;
        if (timeout_ms != 0) {
            set_timeout.number = timeout_ms;
            (void)session.run(set_timeout);
        }
        CommandOutcome r = session.run(command);
        if (r.ok && command.op == ScriptCommand::Op::send && !command.path.empty()) {
            // A request to one module: its answer, if it gives one soon, is
            // what the operator wants to see.
            const std::uint64_t wait_ms = timeout_ms != 0 ? timeout_ms : k_reply_wait_ms;
            set_timeout.number = wait_ms;
            (void)session.run(set_timeout);
            ScriptCommand wait;
            wait.op = ScriptCommand::Op::expect_reply_contains;
            const CommandOutcome reply = session.run(wait);
            r.output += reply.ok ? reply.text.substr(0, reply.text.rfind(" (ok)"))
                                 : fmt::format("no reply within {} ms", wait_ms);
            r.output += '\n';
        }
        {
            const std::lock_guard lock(m_mutex);
            c.session = nullptr;
        }
        m_logger.log(r.ok ? LogLevel::info : LogLevel::warn, "ctl",
                     fmt::format("'{}' from pid {}: {}{}", one_line(line), pid,
                                 r.ok ? "ok" : "failed", r.text.empty() ? "" : ": " + r.text));
        std::string out = output_lines(r.output);
        if (r.ok) {
            out += r.text.empty() ? "ok\n" : "ok: " + one_line(r.text) + "\n";
        } else {
            out += "error: " + one_line(r.text) + "\n";
        }
        return out;
    }

    static constexpr std::uint64_t k_reply_wait_ms = 1000;

    System& m_system;
    Logger& m_logger;
    std::string m_path;
    platform::UniqueFd m_listener;
    platform::UniqueFd m_wake;
    std::atomic<bool> m_stop{false};
    std::thread m_thread;
    std::mutex m_mutex;
    std::list<Client> m_clients;
};

}  // namespace detail

Result<std::unique_ptr<ControlServer>, std::string> ControlServer::open(System& system,
                                                                        Logger& logger,
                                                                        const std::string& path) {
    const sockaddr_un address = HMK_TRY(socket_address(path));
    const std::size_t slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? std::string() : path.substr(0, slash);
    // The default directory is made, and kept, ours alone; one the user
    // names is the user's business.
    if (dir == default_control_dir()) HMK_TRY(private_directory(dir));
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) return Err{fmt::format("{} exists and is not a socket", path)};
        // Someone listening there? Then it is not ours to take.
        platform::UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) ==
            0) {
            return Err{fmt::format(
                "another system listens on {} (stop it, or give this one --control PATH)", path)};
        }
        ::unlink(path.c_str());
    }
    platform::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return Err{errno_text("socket")};
    // Created 0600 from the start: no moment in which others could connect.
    const mode_t old_mask = ::umask(0177);
    const int bound =
        ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address));
    const int bind_errno = errno;
    ::umask(old_mask);
    if (bound != 0) {
        errno = bind_errno;
        return Err{errno_text("cannot bind " + path)};
    }
    if (::listen(fd.get(), k_max_clients) != 0) return Err{errno_text("cannot listen on " + path)};
    logger.log(LogLevel::info, "ctl", fmt::format("control socket {} (hmk ctl)", path));
    return std::unique_ptr<ControlServer>(new ControlServer(
        std::make_unique<detail::ControlServerImpl>(system, logger, path, std::move(fd))));
}

ControlServer::ControlServer(std::unique_ptr<detail::ControlServerImpl> impl)
    : m_impl(std::move(impl)) {}
ControlServer::~ControlServer() = default;

const std::string& ControlServer::path() const {
    return m_impl->path();
}

Result<ControlReply, std::string> control_request(
    const std::string& path, std::string_view command,
    const std::function<void(std::string_view)>& output) {
    const sockaddr_un address = HMK_TRY(socket_address(path));
    platform::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return Err{errno_text("socket")};
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
        if (errno == ENOENT || errno == ECONNREFUSED)
            return Err{errno_text(fmt::format("no system listens on {}", path))};
        return Err{errno_text("cannot connect to " + path)};
    }
    std::string line(command);
    line += '\n';
    if (!write_all(fd.get(), line)) return Err{errno_text("cannot send the command")};
    std::string pending;
    char buf[4096];
    for (;;) {
        const ssize_t n = ::recv(fd.get(), buf, sizeof(buf), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        pending.append(buf, static_cast<std::size_t>(n));
        std::size_t nl = 0;
        while ((nl = pending.find('\n')) != std::string::npos) {
            const std::string l = pending.substr(0, nl);
            pending.erase(0, nl + 1);
            if (l.rfind("| ", 0) == 0) {
                output(std::string_view(l).substr(2));
            } else if (l == "ok" || l.rfind("ok: ", 0) == 0) {
                return ControlReply{true, l.size() > 4 ? l.substr(4) : std::string()};
            } else if (l.rfind("error: ", 0) == 0) {
                return ControlReply{false, l.substr(7)};
            } else {
                return Err{fmt::format("unexpected answer from {}: '{}'", path, l)};
            }
        }
    }
    return Err{fmt::format("{} closed the connection before answering", path)};
}

}  // namespace hmk
