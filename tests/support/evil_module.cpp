// SPDX-License-Identifier: Apache-2.0
// `evil`: a hostile module for isolation tests. When it gets an addressed
// message it attacks, in the way its `mode` says. It runs in a module host,
// so "raw" attacks reach for the host's file descriptors the way real
// hostile code in that process could.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "hmk/message_types.hpp"
#include "hmk/runtime/module.hpp"
#include "hmk/runtime/module_host.hpp"
#include "hmk/uplink_ring.hpp"
#include "ledger_module.hpp"
#include "tally_module.hpp"

namespace {

using namespace hmk;

class Evil final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        return std::unique_ptr<Module>(new Evil(env));
    }

    void on_message(const Message& m) override {
        if (m.header.destination != m_env.id() || m.header.is_reply()) return;
        if (m.header.type == msg::k_stats) {
            // Between attacks it answers, so a test can tell it is back.
            const std::string text = "attacks=" + std::to_string(m_attacks);
            (void)m_env.reply(m, std::as_bytes(std::span(text.data(), text.size())));
            return;
        }
        ++m_attacks;
        const std::string& mode = m_env.config().string("mode");
        m_env.log(LogLevel::info, "attacking: " + mode);
        if (mode == "crash") {
            volatile int* p = nullptr;
            *p = 1;
        } else if (mode == "abort") {
            std::abort();
        } else if (mode == "exit") {
            std::_Exit(3);
        } else if (mode == "exit0") {
            std::_Exit(0);
        } else if (mode == "sleep") {
            for (;;) usleep(100000);  // hangs without burning a core
        } else if (mode == "stall") {
            // Slow, not dead: it leaves once the test lets it.
            const std::string& release = m_env.config().string("release");
            while (::access(release.c_str(), F_OK) != 0) usleep(10000);
        } else if (mode == "pause") {
            // Slow, not dead, and inside the sandbox: back after pause_ms.
            usleep(static_cast<useconds_t>(m_env.config().integer("pause_ms") * 1000));
        } else if (mode == "stdio") {
            // At the operator's terminal: escape sequences, a line posing as
            // another module's log, then a flood.
            const char hello[] =
                "\x1b[2J\x1b]0;pwned\x07"
                "EVIL-STDIO\n";
            (void)!::write(1, hello, sizeof(hello) - 1);
            const char forged[] = "L3 /g/victim\tforged by evil\n";
            (void)!::write(2, forged, sizeof(forged) - 1);
            std::string line(99, 'x');
            line += '\n';
            for (int i = 0; i < 40000; ++i) (void)!::write(i % 2 + 1, line.data(), line.size());
        } else if (mode == "throw") {
            throw std::runtime_error("evil throws");
        } else if (mode == "hang") {
            volatile unsigned long spins = 0;
            for (;;) spins = spins + 1;
        } else if (mode == "flood") {
            const std::string text(64, 'f');
            Outgoing out;
            out.scope = Scope::bus;
            out.payload = as_bytes(text);
            for (;;) (void)m_env.send(out);
        } else if (mode == "forge_sender") {
            raw_records([&](Header& h, std::vector<std::byte>&) { h.sender = victim(); });
        } else if (mode == "forge_forward") {
            raw_records([&](Header& h, std::vector<std::byte>&) {
                h.sender = victim();
                h.hops = 1;  // poses as a gateway forwarding up
            });
        } else if (mode == "garbage") {
            raw_records([&](Header&, std::vector<std::byte>& bytes) {
                for (auto& b : bytes) b = static_cast<std::byte>(m_env.random());
            });
        } else if (mode == "huge_length") {
            auto up = map_uplink();
            // A record whose size field is far beyond the slot.
            auto* base = static_cast<std::byte*>(up.first);
            std::uint32_t huge = 0x7fffffff;
            std::memcpy(base + 512, &huge, 4);
            auto* write_pos = reinterpret_cast<std::atomic<std::uint64_t>*>(base + 64);
            write_pos->fetch_add(1);
        } else if (mode == "scribble") {
            auto up = map_uplink();
            auto* base = static_cast<std::byte*>(up.first);
            for (std::size_t i = 0; i < up.second; ++i)
                base[i] = static_cast<std::byte>(m_env.random());
            for (;;) usleep(1000);
        } else if (mode == "write_bus") {
            const off_t size = lseek(k_host_fd_bus, 0, SEEK_END);
            void* rw = mmap(nullptr, static_cast<std::size_t>(size), PROT_READ | PROT_WRITE,
                            MAP_SHARED, k_host_fd_bus, 0);
            m_env.log(LogLevel::info,
                      rw == MAP_FAILED ? "writable mapping refused" : "got a writable mapping!");
            void* ro = mmap(nullptr, static_cast<std::size_t>(size), PROT_READ, MAP_SHARED,
                            k_host_fd_bus, 0);
            const int rc = mprotect(ro, static_cast<std::size_t>(size), PROT_READ | PROT_WRITE);
            m_env.log(LogLevel::info,
                      rc != 0 ? "mprotect to writable refused" : "mprotect to writable worked!");
            static_cast<volatile char*>(ro)[200] = 'X';  // must fault
        } else if (mode == "syscall_open") {
            (void)!open("/etc/passwd", O_RDONLY);
        } else if (mode == "syscall_socket") {
            (void)!socket(AF_INET, SOCK_STREAM, 0);
        } else if (mode == "syscall_fork") {
            (void)!fork();
        } else if (mode == "syscall_execve") {
            char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
            execve("/bin/true", argv, nullptr);
        } else if (mode == "syscall_ptrace") {
            ptrace(PTRACE_TRACEME, 0, nullptr, nullptr);
        } else if (mode == "files") {
            // Writes and reads back its granted file, then reaches for
            // another: the answer says what the sandbox let it do.
            std::string answer = try_file(m_env.config().string("file"), true);
            answer += "; " + try_file(m_env.config().string("other"), false);
            (void)m_env.reply(m, std::as_bytes(std::span(answer.data(), answer.size())));
            return;
        } else if (mode == "alloc") {
            std::vector<char*> hoard;
            for (;;) {
                char* p = new char[64 << 20];
                std::memset(p, 1, 64 << 20);
                hoard.push_back(p);
            }
        }
        m_env.log(LogLevel::error, "survived the attack: " + mode);
    }

  private:
    explicit Evil(Env& env) : m_env(env) {}

    ModuleId victim() const { return m_env.topology().find(m_env.config().string("victim"))->id; }

    std::pair<void*, std::size_t> map_uplink() {
        const off_t size = lseek(k_host_fd_uplink, 0, SEEK_END);
        void* p = mmap(nullptr, static_cast<std::size_t>(size), PROT_READ | PROT_WRITE, MAP_SHARED,
                       k_host_fd_uplink, 0);
        if (p == MAP_FAILED) std::abort();
        return {p, static_cast<std::size_t>(size)};
    }

    // Writes 100 records straight into the uplink, each a 'data' message the
    // runtime would never send, as `tamper` makes it.
    template <typename F>
    void raw_records(F tamper) {
        auto up = map_uplink();
        auto ring = UplinkRing::attach({static_cast<std::byte*>(up.first), up.second});
        if (!ring) std::abort();
        for (int i = 0; i < 100; ++i) {
            Header h;
            h.sender = m_env.id();
            h.type = msg::k_data;
            h.payload_size = 8;
            std::vector<std::byte> bytes(k_header_size + 8);
            encode_header(h, std::span<std::byte, k_header_size>(bytes.data(), k_header_size));
            tamper(h, bytes);
            if (h.sender != m_env.id() || h.hops != 0) {
                encode_header(h, std::span<std::byte, k_header_size>(bytes.data(), k_header_size));
            }
            while (!ring->try_push(bytes)) pause_briefly();
        }
        const std::uint64_t one = 1;
        (void)!write(k_host_fd_event, &one, sizeof(one));
    }
    static void pause_briefly() { usleep(100); }

    // "PATH: wrote and read back" or "PATH: open refused (REASON)".
    static std::string try_file(const std::string& path, bool write) {
        const int fd = ::open(path.c_str(), (write ? O_RDWR : O_RDONLY) | O_CLOEXEC);
        if (fd < 0) return path + ": open refused (" + std::strerror(errno) + ")";
        std::string result = path + ": opened";
        if (write) {
            const char text[] = "granted";
            char back[sizeof(text)] = {};
            const bool ok = ::pwrite(fd, text, sizeof(text), 0) == sizeof(text) &&
                            ::pread(fd, back, sizeof(back), 0) == sizeof(back) &&
                            std::memcmp(text, back, sizeof(text)) == 0;
            result = path + (ok ? ": wrote and read back" : ": opened, but not usable");
        }
        ::close(fd);
        return result;
    }

    Env& m_env;
    std::uint64_t m_attacks = 0;
};

// `evilgw`: a hostile gateway, in a process of its own with its subtree.
// When it gets an addressed message it attacks its parent, its bus or its
// own children, as `mode` says.
class EvilGateway final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        return std::unique_ptr<Module>(new EvilGateway(env));
    }

    void on_message(const Message& m) override {
        if (m.header.destination != m_env.id() || m.header.is_reply()) return;
        const std::string& mode = m_env.config().string("mode");
        m_env.log(LogLevel::info, "attacking: " + mode);
        if (mode == "crash") {
            volatile int* p = nullptr;
            *p = 1;
        } else if (mode == "flood") {
            const std::string text(64, 'f');
            Outgoing out;
            out.scope = Scope::bus;
            out.payload = as_bytes(text);
            for (;;) (void)m_env.send(out);
        } else if (mode == "forge_sender") {
            // Records in its uplink as the victim (outside its subtree) and
            // as the root, each posing as a forward.
            const off_t size = lseek(k_host_fd_uplink, 0, SEEK_END);
            void* p = mmap(nullptr, static_cast<std::size_t>(size), PROT_READ | PROT_WRITE,
                           MAP_SHARED, k_host_fd_uplink, 0);
            if (p == MAP_FAILED) std::abort();
            auto ring =
                UplinkRing::attach({static_cast<std::byte*>(p), static_cast<std::size_t>(size)});
            if (!ring) std::abort();
            const ModuleId victim = m_env.topology().find(m_env.config().string("victim"))->id;
            for (int i = 0; i < 100; ++i) {
                Header h;
                h.sender = i % 2 == 0 ? victim : k_root_id;
                h.hops = 1;
                h.type = msg::k_data;
                h.payload_size = 8;
                std::vector<std::byte> bytes(k_header_size + 8);
                encode_header(h, std::span<std::byte, k_header_size>(bytes.data(), k_header_size));
                while (!ring->try_push(bytes)) usleep(100);
            }
            const std::uint64_t one = 1;
            (void)!write(k_host_fd_event, &one, sizeof(one));
        } else if (mode == "stop_forwarding") {
            m_drop = true;
        } else if (mode == "scribble") {
            // Every shared mapping it can make writable: its own bus, its
            // children's uplinks and feeds, and its own uplink to its parent.
            for (int fd = 3; fd < 1024; ++fd) {
                const off_t size = lseek(fd, 0, SEEK_END);
                if (size <= 0) continue;
                void* p = mmap(nullptr, static_cast<std::size_t>(size), PROT_READ | PROT_WRITE,
                               MAP_SHARED, fd, 0);
                if (p == MAP_FAILED) continue;
                auto* bytes = static_cast<std::byte*>(p);
                for (off_t i = 0; i < size; i += 7)
                    bytes[i] = static_cast<std::byte>(m_env.random());
            }
            for (;;) usleep(1000);
        } else if (mode == "fork") {
            // Children of its own, which try to outlive it.
            for (int i = 0; i < 3; ++i) {
                if (::fork() == 0) {
                    for (;;) usleep(100000);
                }
            }
            const std::string text = "forked";
            (void)m_env.reply(m, std::as_bytes(std::span(text.data(), text.size())));
        }
    }

    Verdict on_forward(Direction /*direction*/, const Message& /*message*/,
                       Translation& /*out*/) override {
        return m_drop ? Verdict::drop : Verdict::forward;
    }

  private:
    explicit EvilGateway(Env& env) : m_env(env) {}
    Env& m_env;
    bool m_drop = false;
};

}  // namespace

extern "C" void hmk_register_modules(hmk::Registry& registry) {
    registry.add<EvilGateway>(
        "evilgw",
        "a hostile gateway for isolation tests: attacks when it gets an addressed message",
        Role::gateway,
        {ConfigKey("mode", ConfigType::string, std::string("crash"), "the attack")
             .one_of({"crash", "flood", "forge_sender", "stop_forwarding", "scribble", "fork"}),
         ConfigKey("victim", ConfigType::path, std::string(), "whom forge_sender poses as")});
    hmk::testing::add_ledger(registry);
    hmk::testing::add_tally(registry);
    registry.add<Evil>(
        "evil", "a hostile module for isolation tests: attacks when it gets an addressed message",
        Role::leaf,
        {ConfigKey("mode", ConfigType::string, std::string("crash"), "the attack")
             .one_of({"crash",        "abort",          "exit",           "exit0",
                      "sleep",        "throw",          "hang",           "flood",
                      "forge_sender", "forge_forward",  "garbage",        "huge_length",
                      "scribble",     "write_bus",      "syscall_open",   "syscall_socket",
                      "syscall_fork", "syscall_execve", "syscall_ptrace", "alloc",
                      "stall",        "pause",          "stdio",          "files"}),
         ConfigKey("victim", ConfigType::path, std::string(), "whom forge_* poses as"),
         ConfigKey("release", ConfigType::string, std::string(),
                   "stall: the handler returns once this file exists"),
         ConfigKey("pause_ms", ConfigType::integer, std::int64_t{1000},
                   "pause: how long the handler takes"),
         ConfigKey("file", ConfigType::string, std::string(), "files: the file to write"),
         ConfigKey("other", ConfigType::string, std::string(), "files: a file to read")});
}
