// SPDX-License-Identifier: Apache-2.0
// `shell`: the shell service (docs/shell.md). A command line in (message
// type 0x2003, plain text), its output back as text: files through the file
// system, pairs through the key-value store, as any client of theirs would.
// `hmk shell` and scripts (`call /apps/app2/shell shell "ls /"`) use it.
#include <fmt/core.h>

#include <deque>
#include <stdexcept>

#include "hmk/proto/clock_generated.h"
#include "hmk/proto/fs_generated.h"
#include "hmk/proto/kv_generated.h"
#include "hmk/services/protocol.hpp"
#include "hmk/services/requester.hpp"
#include "hmk/services/services.hpp"

namespace hmk::services {
namespace {

namespace pc = hmk::proto::clock;
namespace pf = hmk::proto::fs;
namespace pk = hmk::proto::kv;

constexpr std::uint64_t k_ms = 1'000'000;
constexpr std::size_t k_max_output = 3500;
constexpr std::uint32_t k_chunk = 3000;

constexpr const char* k_help =
    "ls [PATH]               list a directory (default /)\n"
    "cat PATH                print a file\n"
    "write PATH TEXT...      make PATH hold TEXT (and a newline)\n"
    "append PATH TEXT...     add TEXT (and a newline) at the end of PATH\n"
    "mkdir PATH              make a directory\n"
    "rm PATH                 remove a file or an empty directory\n"
    "mv FROM TO              rename\n"
    "stat PATH               kind, size, inode, time\n"
    "fsck                    check the file system\n"
    "date                    the kernel's clock\n"
    "sleep MS                wait for an alarm from the clock\n"
    "echo TEXT...            a line on the console, through the console driver\n"
    "kv get KEY | kv put KEY VALUE... | kv del KEY | kv scan [PREFIX] [LIMIT]\n"
    "help                    this";

struct Outcome {
    bool ok = true;
    std::string text;
};

class Shell final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        const TopologyNode* fs = env.topology().find(env.config().string("fs"));
        const TopologyNode* kv = env.topology().find(env.config().string("kv"));
        if (fs == nullptr)
            return Err{fmt::format("no file system at {}", env.config().string("fs"))};
        auto id_of = [&](const char* key) {
            const TopologyNode* n = env.topology().find(env.config().string(key));
            return n != nullptr ? n->id : k_no_module;
        };
        auto shell =
            std::unique_ptr<Shell>(new Shell(env, fs->id, kv != nullptr ? kv->id : k_no_module));
        shell->m_clock = id_of("clock");
        shell->m_console = id_of("console");
        return std::unique_ptr<Module>(std::move(shell));
    }

    void on_start() override {
        m_tick = m_env.set_timer(std::chrono::milliseconds(50), TimerMode::periodic);
    }

    void on_message(const Message& m) override {
        const Header& h = m.header;
        if (h.destination != m_env.id()) return;
        if (h.is_reply()) {
            m_calls.on_reply(m);
            check();
            return;
        }
        if (h.type != k_shell_type) {
            if (h.type >= msg::k_user_base) {
                answer(h.sender, h.correlation,
                       Outcome{false, fmt::format("type {:#x} is not the shell ({:#x}: a command "
                                                  "line as text)",
                                                  h.type, k_shell_type)});
            }
            return;
        }
        m_queue.push_back(Pending{h.sender, h.correlation, std::string(m.text())});
        if (!m_serving) {
            m_main = serve();
            check();
        }
    }

    void on_timer(TimerId id) override {
        if (id != m_tick) return;
        m_calls.on_tick(m_env.now_ns());
        check();
    }

  private:
    struct Pending {
        ModuleId client = k_no_module;
        std::uint64_t correlation = 0;
        std::string line;
    };

    Shell(Env& env, ModuleId fs, ModuleId kv)
        : m_env(env), m_fs(fs), m_kv(kv), m_calls(env, 200 * k_ms, 25) {}

    void check() {
        if (m_main.done()) m_main.get();
    }

    Task<void> serve() {
        m_serving = true;
        while (!m_queue.empty()) {
            Pending p = std::move(m_queue.front());
            m_queue.pop_front();
            Outcome o = co_await run(p.line);
            answer(p.client, p.correlation, o);
        }
        m_serving = false;
    }

    void answer(ModuleId to, std::uint64_t correlation, Outcome o) {
        if (o.text.size() > k_max_output) {
            const std::size_t all = o.text.size();
            o.text.resize(k_max_output);
            o.text += fmt::format("\n... ({} bytes in all)", all);
        }
        Outgoing out;
        out.destination = to;
        out.type = k_shell_type;
        out.correlation = correlation;
        out.flags = o.ok ? k_flag_reply : (k_flag_reply | k_flag_error);
        out.payload = as_bytes(o.text);
        (void)m_env.send(out);
    }

    // Splits off the first word of `rest`.
    static std::string word(std::string_view& rest) {
        while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
        const std::size_t end = std::min(rest.find(' '), rest.size());
        std::string w(rest.substr(0, end));
        rest.remove_prefix(end);
        while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
        return w;
    }

    // --- the file system ----------------------------------------------------

    struct FsAnswer {
        pf::Status status = pf::Status::IoError;
        std::string message;
        OwnedAnswer raw;
        const pf::Reply* reply() const {
            return flatbuffers::GetRoot<pf::Reply>(raw.payload.data());
        }
    };

    Task<FsAnswer> fs(pf::Op op, std::string_view path, std::string_view to = {},
                      std::uint64_t offset = 0, std::uint32_t length = 0, std::uint64_t size = 0,
                      std::string_view data = {}, bool create = false) {
        flatbuffers::FlatBufferBuilder b(data.size() + 512);
        const auto p = b.CreateString(path.data(), path.size());
        const auto t = b.CreateString(to.data(), to.size());
        const auto d =
            b.CreateVector(reinterpret_cast<const std::uint8_t*>(data.data()), data.size());
        b.Finish(pf::CreateRequest(b, op, p, t, offset, length, size, d, create));
        const auto bytes = bytes_of(b);
        std::vector<std::byte> payload(bytes.begin(), bytes.end());
        auto r = co_await m_calls.call(m_fs, k_fs_type, std::move(payload));
        FsAnswer a;
        if (!r) {
            a.message = fmt::format("the file system: {}", to_string(r.error()));
            co_return a;
        }
        if (verified<pf::Reply>(r->payload) == nullptr) {
            a.message = "the file system answered garbage";
            co_return a;
        }
        a.raw = std::move(*r);
        a.status = a.reply()->status();
        if (a.reply()->message() != nullptr) a.message = a.reply()->message()->str();
        co_return a;
    }

    static Outcome failed(std::string_view what, const FsAnswer& a) {
        return Outcome{false, fmt::format("{}: {}", what, a.message)};
    }

    Task<Outcome> ls(std::string path) {
        std::string out;
        for (std::uint64_t first = 0;;) {
            FsAnswer a = co_await fs(pf::Op::List, path, {}, first);
            if (a.status != pf::Status::Ok) co_return failed(path, a);
            const pf::Reply* r = a.reply();
            if (r->entries() == nullptr || r->entries()->size() == 0) break;
            for (const auto* e : *r->entries()) {
                const bool dir = e->kind() == pf::Kind::Directory;
                out += fmt::format("{:<8} {:>10}  {}{}\n", dir ? "dir" : "file",
                                   dir ? std::string("-") : std::to_string(e->size()),
                                   e->name()->str(), dir ? "/" : "");
            }
            first += r->entries()->size();
            if (first >= r->size()) break;
        }
        if (out.empty()) out = "(empty)\n";
        out.pop_back();
        co_return Outcome{true, out};
    }

    Task<Outcome> cat(std::string path) {
        std::string out;
        for (;;) {
            FsAnswer a = co_await fs(pf::Op::Read, path, {}, out.size(), k_chunk);
            if (a.status != pf::Status::Ok) co_return failed(path, a);
            const pf::Reply* r = a.reply();
            if (r->data() == nullptr || r->data()->size() == 0) break;
            out.append(reinterpret_cast<const char*>(r->data()->data()), r->data()->size());
            if (out.size() > k_max_output) break;
        }
        if (!out.empty() && out.back() == '\n') out.pop_back();
        co_return Outcome{true, out};
    }

    Task<Outcome> write(std::string path, std::string text, bool append) {
        text += '\n';
        std::uint64_t at = 0;
        if (append) {
            FsAnswer st = co_await fs(pf::Op::Stat, path);
            if (st.status == pf::Status::Ok) {
                at = st.reply()->size();
            } else if (st.status != pf::Status::NotFound) {
                co_return failed(path, st);
            }
        }
        for (std::size_t done = 0; done < text.size(); done += k_chunk) {
            const std::string_view piece = std::string_view(text).substr(done, k_chunk);
            FsAnswer a = co_await fs(pf::Op::Write, path, {}, at + done, 0, 0, piece, true);
            if (a.status != pf::Status::Ok) co_return failed(path, a);
        }
        if (!append) {
            FsAnswer t = co_await fs(pf::Op::Truncate, path, {}, 0, 0, text.size());
            if (t.status != pf::Status::Ok) co_return failed(path, t);
        }
        co_return Outcome{true, fmt::format("{}: {} bytes {}", path, text.size(),
                                            append ? "appended" : "written")};
    }

    Task<Outcome> simple(pf::Op op, std::string path, std::string to, std::string done) {
        FsAnswer a = co_await fs(op, path, to);
        if (a.status != pf::Status::Ok) co_return failed(path, a);
        co_return Outcome{true, done};
    }

    Task<Outcome> stat(std::string path) {
        FsAnswer a = co_await fs(pf::Op::Stat, path);
        if (a.status != pf::Status::Ok) co_return failed(path, a);
        const pf::Entry* e = a.reply()->stat();
        if (e == nullptr) co_return Outcome{false, "the file system sent no stat"};
        co_return Outcome{
            true, fmt::format("{}: {}, {} bytes, inode {}, modified at {:.3f} s", path,
                              e->kind() == pf::Kind::Directory ? "directory" : "file", e->size(),
                              e->inode(), static_cast<double>(e->mtime_ns()) / 1e9)};
    }

    Task<Outcome> fsck() {
        FsAnswer a = co_await fs(pf::Op::Check, "");
        if (a.raw.payload.empty()) co_return Outcome{false, a.message};
        std::string out = a.message;
        if (a.reply()->problems() != nullptr) {
            for (const auto* p : *a.reply()->problems()) out += "\n" + p->str();
        }
        co_return Outcome{a.status == pf::Status::Ok,
                          (a.status == pf::Status::Ok ? "clean: " : "problems: ") + out};
    }

    // --- the clock ------------------------------------------------------------

    // "YYYY-MM-DD HH:MM:SS UTC" by arithmetic: the C library's time formatting
    // may read /etc/localtime, which a sandboxed module may not open.
    static std::string utc_text(std::uint64_t wall_ns) {
        const auto secs = static_cast<std::int64_t>(wall_ns / 1'000'000'000ULL);
        std::int64_t days = secs / 86400;
        const std::int64_t in_day = secs % 86400;
        // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
        days += 719468;
        const std::int64_t era = days / 146097;
        const std::int64_t doe = days - era * 146097;
        const std::int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        const std::int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        const std::int64_t mp = (5 * doy + 2) / 153;
        const std::int64_t day = doy - (153 * mp + 2) / 5 + 1;
        const std::int64_t month = mp < 10 ? mp + 3 : mp - 9;
        const std::int64_t year = yoe + era * 400 + (month <= 2 ? 1 : 0);
        return fmt::format("{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC", year, month, day,
                           in_day / 3600, in_day % 3600 / 60, in_day % 60);
    }

    Task<Outcome> clock(bool alarm, std::string ms) {
        if (m_clock == k_no_module) co_return Outcome{false, "no clock configured"};
        const unsigned long after = std::strtoul(ms.c_str(), nullptr, 10);
        if (alarm && (ms.empty() || after > 60'000))
            co_return Outcome{false, "sleep MS (at most 60000)"};
        flatbuffers::FlatBufferBuilder b(128);
        b.Finish(pc::CreateRequest(b, alarm ? pc::Op::Alarm : pc::Op::Now,
                                   static_cast<std::uint32_t>(after)));
        const auto bytes = bytes_of(b);
        std::vector<std::byte> payload(bytes.begin(), bytes.end());
        auto r = co_await m_calls.call(m_clock, k_clock_type, std::move(payload));
        if (!r) co_return Outcome{false, fmt::format("the clock: {}", to_string(r.error()))};
        const pc::Reply* reply = verified<pc::Reply>(r->payload);
        if (reply == nullptr || !reply->ok()) co_return Outcome{false, "the clock refused"};
        if (alarm) co_return Outcome{true, fmt::format("slept {} ms", after)};
        co_return Outcome{true,
                          fmt::format("{} (kernel clock {:.6f} s)", utc_text(reply->wall_ns()),
                                      static_cast<double>(reply->now_ns()) / 1e9)};
    }

    // --- the key-value store ------------------------------------------------

    Task<Outcome> kv(std::string_view rest) {
        if (m_kv == k_no_module) co_return Outcome{false, "no key-value store configured"};
        const std::string sub = word(rest);
        flatbuffers::FlatBufferBuilder b(rest.size() + 512);
        pk::Op op{};
        std::string key;
        std::string value;
        std::string prefix;
        std::uint32_t limit = 0;
        if (sub == "get" || sub == "del") {
            op = sub == "get" ? pk::Op::Get : pk::Op::Del;
            key = word(rest);
        } else if (sub == "put") {
            op = pk::Op::Put;
            key = word(rest);
            value = std::string(rest);
        } else if (sub == "scan") {
            op = pk::Op::Scan;
            prefix = word(rest);
            const std::string n = word(rest);
            limit =
                n.empty() ? 20 : static_cast<std::uint32_t>(std::strtoul(n.c_str(), nullptr, 10));
        } else {
            co_return Outcome{
                false, "kv get KEY | kv put KEY VALUE... | kv del KEY | kv scan [PREFIX] [LIMIT]"};
        }
        if (op != pk::Op::Scan && key.empty())
            co_return Outcome{false, fmt::format("kv {}: which key?", sub)};
        const auto k = b.CreateString(key);
        const auto v = b.CreateString(value);
        const auto p = b.CreateString(prefix);
        b.Finish(pk::CreateRequest(b, op, k, v, p, limit));
        const auto bytes = bytes_of(b);
        // A put or del sent twice does the same; a get or scan only reads.
        std::vector<std::byte> payload(bytes.begin(), bytes.end());
        auto r = co_await m_calls.call(m_kv, k_kv_type, std::move(payload));
        if (!r) co_return Outcome{false, fmt::format("the kv store: {}", to_string(r.error()))};
        const pk::Reply* reply = verified<pk::Reply>(r->payload);
        if (reply == nullptr) co_return Outcome{false, "the kv store answered garbage"};
        const std::string why = reply->message() != nullptr ? reply->message()->str() : "";
        if (reply->status() != pk::Status::Ok)
            co_return Outcome{false, fmt::format("kv {} {}: {}", sub, key, why)};
        if (op == pk::Op::Get)
            co_return Outcome{true, reply->value() != nullptr ? reply->value()->str() : ""};
        if (op == pk::Op::Scan) {
            std::string out;
            if (reply->pairs() != nullptr) {
                for (const auto* pair : *reply->pairs())
                    out += fmt::format("{} = {}\n", pair->key()->str(), pair->value()->str());
            }
            out += reply->more()
                       ? "(more)"
                       : fmt::format("({} pairs)",
                                     reply->pairs() != nullptr ? reply->pairs()->size() : 0);
            co_return Outcome{true, out};
        }
        co_return Outcome{true, "ok"};
    }

    Task<Outcome> run(std::string line) {
        std::string_view rest = line;
        const std::string cmd = word(rest);
        if (cmd.empty() || cmd == "help") co_return Outcome{true, k_help};
        // (Only named values go into a co_await: GCC 12 destroys some
        // temporaries of a co_await expression twice.)
        if (cmd == "ls") {
            std::string dir = word(rest);
            if (dir.empty()) dir = "/";
            Outcome o = co_await ls(std::move(dir));
            co_return o;
        }
        if (cmd == "kv") {
            Outcome o = co_await kv(rest);
            co_return o;
        }
        if (cmd == "fsck") {
            Outcome o = co_await fsck();
            co_return o;
        }
        if (cmd == "date" || cmd == "sleep") {
            const std::string ms = word(rest);
            Outcome o = co_await clock(cmd == "sleep", ms);
            co_return o;
        }
        if (cmd == "echo") {
            if (m_console == k_no_module) co_return Outcome{false, "no console driver configured"};
            Outgoing out;
            out.destination = m_console;
            out.payload = as_bytes(rest);
            if (auto r = m_env.send(out); !r)
                co_return Outcome{false, fmt::format("echo: {}", to_string(r.error()))};
            co_return Outcome{true, "ok"};
        }
        if (cmd != "cat" && cmd != "write" && cmd != "append" && cmd != "mkdir" && cmd != "rm" &&
            cmd != "stat" && cmd != "mv")
            co_return Outcome{false, fmt::format("unknown command '{}' (help)", cmd)};
        std::string path = word(rest);
        if (path.empty()) co_return Outcome{false, fmt::format("{}: which path? (help)", cmd)};
        Outcome o{false, fmt::format("unknown command '{}' (help)", cmd)};
        std::string to;
        std::string done;
        if (cmd == "cat") {
            o = co_await cat(std::move(path));
        } else if (cmd == "write" || cmd == "append") {
            std::string text(rest);
            const bool append = cmd == "append";
            o = co_await write(std::move(path), std::move(text), append);
        } else if (cmd == "mkdir") {
            done = path + ": made";
            o = co_await simple(pf::Op::Mkdir, std::move(path), std::move(to), std::move(done));
        } else if (cmd == "rm") {
            done = path + ": removed";
            o = co_await simple(pf::Op::Remove, std::move(path), std::move(to), std::move(done));
        } else if (cmd == "stat") {
            o = co_await stat(std::move(path));
        } else if (cmd == "mv") {
            to = word(rest);
            if (to.empty()) co_return Outcome{false, "mv FROM TO"};
            done = fmt::format("{} -> {}", path, to);
            o = co_await simple(pf::Op::Rename, std::move(path), std::move(to), std::move(done));
        }
        co_return o;
    }

    Env& m_env;
    ModuleId m_fs;
    ModuleId m_kv;
    ModuleId m_clock = k_no_module;
    ModuleId m_console = k_no_module;
    Requester m_calls;
    std::deque<Pending> m_queue;
    bool m_serving = false;
    TimerId m_tick = 0;
    Task<void> m_main;  // last: its frame refers to everything above
};

}  // namespace

void add_shell(Registry& registry) {
    registry.add<Shell>(
        "shell",
        "the shell service: a command line in (type 0x2003, text), its output back: ls, cat, "
        "write, append, mkdir, rm, mv, stat, fsck, kv get|put|del|scan, help",
        Role::leaf,
        {ConfigKey("fs", ConfigType::path, std::string("/fs"), "the file system"),
         ConfigKey("kv", ConfigType::string, std::string("/apps/app1"),
                   "the key-value store (none if no such module)"),
         ConfigKey("clock", ConfigType::string, std::string("/clock"),
                   "the kernel's clock (none if no such module)"),
         ConfigKey("console", ConfigType::string, std::string("/drivers/console"),
                   "the console driver (none if no such module)")});
}

}  // namespace hmk::services
