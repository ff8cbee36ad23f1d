// SPDX-License-Identifier: Apache-2.0
// hmk: check, show and run hmk systems.
#include <fmt/core.h>

#include <unistd.h>
#include <CLI/CLI.hpp>

#include <csignal>
#include <ctime>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>

#include "fs_commands.hpp"
#include "hmk/runtime/config.hpp"
#include "hmk/runtime/control.hpp"
#include "hmk/runtime/journal.hpp"
#include "hmk/runtime/script.hpp"
#include "hmk/runtime/system.hpp"
#include "hmk/snapshot_format.hpp"
#include "inject.hpp"
#include "shell_client.hpp"

namespace {

// Exit codes, documented in `hmk --help` and docs/cli.md.
constexpr int k_exit_ok = 0;
constexpr int k_exit_failed = 1;   // an expectation failed, or the system failed at run time
constexpr int k_exit_invalid = 2;  // bad system description, script or command line

std::optional<hmk::SystemSpec> load(const std::string& file, hmk::Registry& registry) {
    auto spec = hmk::load_system_file(file, registry);
    if (!spec) {
        fmt::print(stderr, "{}\n", spec.error().to_string());
        return std::nullopt;
    }
    return std::move(spec).value();
}

int cmd_check(const std::string& file, hmk::Registry& registry) {
    const auto spec = load(file, registry);
    if (!spec) return k_exit_invalid;
    std::size_t buses = 0;
    for (const auto& n : spec->topology.nodes()) buses += n.is_gateway() ? 1u : 0u;
    fmt::print("{}: ok: system '{}', {} modules, {} buses\n", file, spec->name,
               spec->topology.size(), buses);
    return k_exit_ok;
}

int cmd_tree(const std::string& file, hmk::Registry& registry) {
    const auto spec = load(file, registry);
    if (!spec) return k_exit_invalid;
    const hmk::Topology& t = spec->topology;
    auto bus_name = [&](hmk::BusId id) {
        return id == hmk::k_root_id ? std::string("Bus 0") : t.find(id)->path;
    };
    for (const hmk::TopologyNode& n : t.nodes()) {
        const std::string indent(n.level * 2, ' ');
        if (n.id == hmk::k_root_id) {
            fmt::print("/ [microkernel] id={} level=0 owns Bus 0\n", n.id);
            continue;
        }
        const hmk::ModuleSpec* m = spec->module(n.id);
        fmt::print("{}{} [{}] id={} level={} on {}{} {}\n", indent, hmk::base_name(n.path), m->kind,
                   n.id, n.level, bus_name(n.parent),
                   n.is_gateway() ? ", owns bus " + n.path : std::string(),
                   hmk::to_string(m->isolation));
    }
    return k_exit_ok;
}

int cmd_kinds(hmk::Registry& registry) {
    for (const std::string& name : registry.names()) {
        const auto versions = registry.versions(name);
        for (const std::uint32_t v : versions) {
            const hmk::ModuleKind* k = registry.find(name, v);
            fmt::print("{}{}{}: {}\n", name,
                       versions.size() > 1 ? fmt::format(" version {}", v) : std::string(),
                       k->role == hmk::Role::gateway ? " (gateway)" : "", k->help);
            for (const hmk::ConfigKey& key : k->config) {
                fmt::print("    {} ({}{}): {}\n", key.name, hmk::to_string(key.type),
                           key.required ? ", required" : "", key.help);
            }
        }
    }
    return k_exit_ok;
}

// Waits for SIGINT/SIGTERM, at most `seconds` (negative: no limit), or
// until the system fails (its root gave up).
void wait_for_signal(double seconds, hmk::System& system) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                              std::chrono::duration<double>(seconds < 0 ? 0 : seconds));
    for (;;) {
        if (system.failure()) return;
        double left = 0.1;
        if (seconds >= 0) {
            const double remaining =
                std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
            if (remaining <= 0) return;
            left = std::min(left, remaining);
        }
        timespec ts{};
        ts.tv_sec = static_cast<time_t>(left);
        ts.tv_nsec = static_cast<long>((left - static_cast<double>(ts.tv_sec)) * 1e9);
        if (sigtimedwait(&set, nullptr, &ts) > 0) return;
    }
}

// A journal a running system holds is read as one its monitor may be
// appending to (hmk::ScanMode::live); the line says so.
std::string live_note(const hmk::JournalScan& scan, hmk::ScanMode mode) {
    if (mode != hmk::ScanMode::live) return {};
    std::string note = " (in use by a running system: checked what it had written";
    if (scan.tail_in_progress) note += "; its newest record was still being written";
    if (scan.vanished != 0)
        note += fmt::format("; {} old segments were deleted meanwhile", scan.vanished);
    return note + ")";
}

int cmd_journal_verify(const std::string& dir) {
    const hmk::ScanMode mode = hmk::scan_mode_of(dir);
    const hmk::JournalScan scan = hmk::scan_journal(dir, {}, mode);
    if (!scan.clean) {
        fmt::print(stderr, "{}\n", scan.problem);
        fmt::print(
            "{}: BAD: {} records in {} segments are valid (seq {}..{}); recovery would stop "
            "there{}\n",
            dir, scan.records, scan.segments, scan.first_seq, scan.last_seq, live_note(scan, mode));
        return k_exit_failed;
    }
    fmt::print("{}: ok: {} records in {} segments, seq {}..{}, {} bytes{}\n", dir, scan.records,
               scan.segments, scan.first_seq, scan.last_seq, scan.bytes, live_note(scan, mode));
    return k_exit_ok;
}

// What the runtime's own messages say, decoded (empty for others).
std::string runtime_detail(const hmk::Header& h, std::span<const std::byte> payload) {
    if (h.type == hmk::msg::k_lifecycle) {
        std::span<const std::byte> text;
        const auto e = hmk::decode_lifecycle(payload, text);
        if (!e) return fmt::format(" [bad lifecycle event: {}]", hmk::to_string(e.error()));
        std::string out =
            fmt::format(" [{} module={} epoch={}", hmk::to_string(e->kind), e->module, e->epoch);
        if (e->kind == hmk::LifecycleKind::started)
            out += fmt::format(" from={} seed={}", e->from_seq, e->seed);
        if (e->kind == hmk::LifecycleKind::recovering) {
            out += fmt::format(" from={} snapshot_at={} already_sent={}", e->from_seq, e->base_seq,
                               e->suppressed);
        }
        if (!text.empty())
            out += ": " + std::string(reinterpret_cast<const char*>(text.data()), text.size());
        return out + "]";
    }
    if (h.type == hmk::msg::k_snapshot) {
        std::span<const std::byte> data;
        const auto c = hmk::decode_snapshot_chunk(payload, data);
        if (!c) return fmt::format(" [bad snapshot chunk: {}]", hmk::to_string(c.error()));
        return fmt::format(" [snapshot {} of state at seq {}: bytes {}..{} of {}]", c->snapshot_id,
                           c->input_seq, c->offset, c->offset + data.size(), c->total_size);
    }
    if (h.type == hmk::msg::k_timer && payload.size() == 8) {
        std::uint64_t id = 0;
        for (std::size_t i = 0; i < 8; ++i) id |= static_cast<std::uint64_t>(payload[i]) << (8 * i);
        return fmt::format(" [timer {}]", id);
    }
    return {};
}

int cmd_journal_dump(const std::string& dir, std::uint64_t from, std::uint64_t to) {
    const auto print = [&](const hmk::JournalRecord& r) {
        const hmk::Header& h = r.header;
        if (h.seq < from || h.seq > to) return;
        const std::string_view tn = hmk::msg::type_name(h.type);
        fmt::print(
            "seq={} t={} bus={} sender={} via={} to={} scope={} type={} hops={} flags={:#x} "
            "corr={} gen={} len={}{}\n",
            h.seq, h.timestamp_ns, h.bus, h.sender, h.via,
            h.is_broadcast() ? std::string("*") : std::to_string(h.destination),
            hmk::to_string(h.scope), tn.empty() ? fmt::format("{:#x}", h.type) : std::string(tn),
            h.hops, h.flags, h.correlation, h.generation, h.payload_size,
            runtime_detail(h, r.message.subspan(hmk::k_header_size)));
    };
    const hmk::JournalScan scan = hmk::scan_journal(dir, print, hmk::scan_mode_of(dir));
    if (!scan.clean) {
        fmt::print(stderr, "{}\n", scan.problem);
        return k_exit_failed;
    }
    return k_exit_ok;
}

int cmd_journal_stats(const std::string& dir) {
    std::map<std::uint32_t, std::uint64_t> by_type;
    const hmk::ScanMode mode = hmk::scan_mode_of(dir);
    const hmk::JournalScan scan = hmk::scan_journal(
        dir, [&](const hmk::JournalRecord& r) { ++by_type[r.header.type]; }, mode);
    fmt::print("segments {}\nrecords  {}\nbytes    {}\nfirst    {}\nlast     {}\nclean    {}{}\n",
               scan.segments, scan.records, scan.bytes, scan.first_seq, scan.last_seq,
               scan.clean ? "yes" : "no: " + scan.problem, live_note(scan, mode));
    for (const auto& [type, n] : by_type) {
        const std::string_view tn = hmk::msg::type_name(type);
        fmt::print("type {:<8} {}\n", tn.empty() ? fmt::format("{:#x}", type) : std::string(tn), n);
    }
    return scan.clean ? k_exit_ok : k_exit_failed;
}

int cmd_journal_snapshots(const std::string& dir) {
    auto files = hmk::list_snapshots(dir);
    if (!files) {
        fmt::print(stderr, "{}\n", files.error());
        return k_exit_failed;
    }
    int bad = 0;
    for (const auto& f : *files) {
        std::ifstream in(f.path, std::ios::binary);
        std::vector<char> raw((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
        const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(raw.data()),
                                               raw.size());
        std::span<const std::byte> body;
        const auto h = hmk::check_snapshot_file(bytes, body);
        if (!h) {
            ++bad;
            fmt::print("module={} state_at={} BAD: {} ({})\n", f.module, f.input_seq,
                       hmk::to_string(h.error()), f.path);
            continue;
        }
        fmt::print("module={} state_at={} sent_at={} bytes={} state_version={} ok ({})\n",
                   h->module, h->input_seq, h->output_seq, h->body_size, h->state_version, f.path);
    }
    if (files->empty()) fmt::print("{}: no snapshots\n", dir);
    return bad == 0 ? k_exit_ok : k_exit_failed;
}

struct RunOptions {
    std::string file;
    std::string script;
    double for_seconds = -1;
    std::string log_level = "info";
    bool stats = false;
    bool explain_sandbox = false;
    std::string control;  ///< socket path; "" = the default for the system's name
    bool no_control = false;
    bool shell = false;  ///< once booted (and after the script), an interactive shell
    std::function<int(const std::vector<std::string>&)> journal;  ///< the shell's `journal`
};

int cmd_run(const RunOptions& o, hmk::Registry& registry) {
    const auto spec = load(o.file, registry);
    if (!spec) return k_exit_invalid;
    std::optional<hmk::Script> script;
    if (!o.script.empty()) {
        auto s = hmk::load_script_file(o.script, spec->topology);
        if (!s) {
            fmt::print(stderr, "{}\n", s.error().to_string());
            return k_exit_invalid;
        }
        script = std::move(s).value();
    }
    hmk::Logger logger(stderr, *hmk::parse_log_level(o.log_level));

    // Signals are taken synchronously by this thread; module threads inherit the mask.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);

    auto system = hmk::System::create(*spec, registry, logger);
    if (!system) {
        logger.log(hmk::LogLevel::error, "hmk", system.error());
        return k_exit_invalid;
    }
    if (auto started = (*system)->start(); !started) {
        logger.log(hmk::LogLevel::error, "hmk", started.error());
        return k_exit_failed;
    }
    if (o.explain_sandbox) {
        const auto report = (*system)->sandbox_report();
        if (report.empty())
            logger.print("sandbox: no module runs in a process of its own (all inproc)");
        for (const auto& [path, layers] : report) {
            logger.print(fmt::format("sandbox of {}:", path));
            for (const auto& l : layers) logger.print("    " + l);
        }
    }
    // The control endpoint, for `hmk ctl`: closed before the system stops.
    std::unique_ptr<hmk::ControlServer> control;
    if (!o.no_control) {
        const std::string path =
            o.control.empty() ? hmk::default_control_path(spec->name) : o.control;
        auto opened = hmk::ControlServer::open(**system, logger, path);
        if (!opened && o.control.empty()) {
            // The same system runs twice: this one gets a socket of its own.
            const std::string mine = hmk::default_control_path(
                fmt::format("{}.{}", spec->name, static_cast<long>(::getpid())));
            logger.log(hmk::LogLevel::warn, "hmk",
                       fmt::format("{}; this one listens on {}", opened.error(), mine));
            opened = hmk::ControlServer::open(**system, logger, mine);
        }
        if (!opened) {
            logger.log(hmk::LogLevel::error, "hmk", "no control endpoint: " + opened.error());
            (*system)->stop();
            return k_exit_invalid;
        }
        control = std::move(opened).value();
    }
    int rc = k_exit_ok;
    if (o.shell) {
        if (script && hmk::run_script(**system, *script, logger) != 0) rc = k_exit_failed;
        if (rc == k_exit_ok && control) {
            hmk::tools::ShellOptions so;
            so.socket = control->path();
            so.journal = o.journal;
            rc = hmk::tools::run_shell(so) == 0 ? k_exit_ok : k_exit_failed;
        }
    } else if (script) {
        rc = hmk::run_script(**system, *script, logger) == 0 ? k_exit_ok : k_exit_failed;
        if (o.for_seconds > 0) wait_for_signal(o.for_seconds, **system);
    } else {
        if (o.for_seconds < 0) logger.log(hmk::LogLevel::info, "hmk", "running; Ctrl-C stops");
        wait_for_signal(o.for_seconds, **system);
    }
    control.reset();
    (*system)->stop();
    if (o.stats) logger.print(hmk::format_stats(**system));
    if (const auto failure = (*system)->failure()) {
        logger.log(hmk::LogLevel::error, "hmk", "stopped: the system failed: " + *failure);
        return k_exit_failed;
    }
    logger.log(hmk::LogLevel::info, "hmk",
               rc == k_exit_ok ? "stopped" : "stopped after a failed expectation");
    return rc;
}

struct CtlOptions {
    std::string socket;
    std::string system;
    std::vector<std::string> words;
    std::uint32_t timeout_ms = 0;  // 0: the system's defaults
};

// The running system to talk to: the one named, or the only one there is.
std::optional<std::string> find_socket(const CtlOptions& o) {
    if (!o.socket.empty()) return o.socket;
    if (!o.system.empty()) return hmk::default_control_path(o.system);
    const std::string dir = hmk::default_control_dir();
    std::vector<std::string> found;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
        if (entry.path().extension() == ".sock" && entry.is_socket(ec))
            found.push_back(entry.path().string());
    }
    std::sort(found.begin(), found.end());
    if (found.size() == 1) return found.front();
    if (found.empty()) {
        fmt::print(stderr,
                   "hmk ctl: no running system found in {} (is `hmk run` running? name its socket "
                   "with --socket PATH)\n",
                   dir);
    } else {
        fmt::print(stderr, "hmk ctl: several systems run; pick one with --system NAME:\n");
        for (const auto& f : found) {
            const std::filesystem::path p(f);
            fmt::print(stderr, "    {}\n", p.stem().string());
        }
    }
    return std::nullopt;
}

int cmd_ctl(const CtlOptions& o) {
    const auto path = find_socket(o);
    if (!path) return k_exit_invalid;
    const auto reply =
        hmk::control_request(*path,
                             (o.timeout_ms != 0 ? fmt::format("timeout {} ", o.timeout_ms) : "") +
                                 hmk::join_command_words(o.words),
                             [](std::string_view line) { fmt::print("{}\n", line); });
    if (!reply) {
        fmt::print(stderr, "hmk ctl: {}\n", reply.error());
        return k_exit_invalid;  // no system to talk to
    }
    if (!reply->ok) {
        fmt::print(stderr, "hmk ctl: {}\n", reply->message);
        return k_exit_failed;
    }
    if (!reply->message.empty()) fmt::print("{}\n", reply->message);
    return k_exit_ok;
}

}  // namespace

int main(int argc, char** argv) {
    hmk::Registry registry;
    hmk::register_standard_modules(registry);

    CLI::App app{
        "hmk: a hierarchical microkernel system, hosted on Linux.\n"
        "Exit status: 0 ok, 1 a run or expectation failed, 2 invalid input."};
    app.require_subcommand(1);
    app.set_version_flag("--version", "hmk 0.1.0");

    std::string file;
    auto* check = app.add_subcommand(
        "check", "Validate a system description (exit 0, or 2 with FILE:LINE:COL: error)");
    check->add_option("FILE", file, "system.toml")->required();

    auto* tree =
        app.add_subcommand("tree", "Print the module hierarchy: kind, id, level, bus, isolation");
    tree->add_option("FILE", file, "system.toml")->required();

    app.add_subcommand("kinds", "List the module kinds and their config keys");

    RunOptions run_opts;
    auto* run =
        app.add_subcommand("run", "Boot a system; run a script against it or run until Ctrl-C");
    run->add_option("FILE", run_opts.file, "system.toml")->required();
    run->add_option("--script", run_opts.script,
                    "commands to run against the booted system (docs/scripts.md)");
    run->add_option("--for", run_opts.for_seconds, "seconds to run (after the script, if any)")
        ->check(CLI::NonNegativeNumber);
    run->add_option("--log-level", run_opts.log_level, "debug, info, warn or error")
        ->check(CLI::IsMember({"debug", "info", "warn", "error"}));
    run->add_flag("--stats", run_opts.stats, "print module and bus counters at the end");
    run->add_flag(
        "--explain-sandbox", run_opts.explain_sandbox,
        "once booted, print the isolation layers around each module in a process of its own");
    run->add_option("--control", run_opts.control,
                    "control socket for `hmk ctl` (default: $XDG_RUNTIME_DIR/hmk/NAME.sock, or "
                    "/tmp/hmk-UID/NAME.sock)");
    run->add_flag("--no-control", run_opts.no_control, "no control socket");
    run->add_flag("--shell", run_opts.shell,
                  "once booted (and after the script, if any), an interactive shell on the "
                  "system; leaving it stops the system (docs/shell.md)");

    hmk::tools::ShellOptions shell_opts;
    std::string shell_system;
    auto* shell = app.add_subcommand(
        "shell",
        "An interactive shell on a running system (docs/shell.md): tree, stats, kill, swap, "
        "move through its control socket; ls, cat, write, mkdir, rm, kv ... through its shell "
        "service. Reads commands from stdin when it is not a terminal.");
    shell->add_option("--socket", shell_opts.socket, "the system's control socket");
    shell->add_option("--system", shell_system,
                      "the system's name (its socket in the default directory)");
    shell->add_option("--service", shell_opts.service,
                      "the shell service's path (default: the module of kind shell)");
    shell
        ->add_option("--timeout", shell_opts.timeout_ms,
                     "ms a command waits for its answer (default 10000)")
        ->check(CLI::Range(1, 3'600'000));

    CtlOptions ctl_opts;
    auto* ctl = app.add_subcommand(
        "ctl",
        "Run one command against a running system, through its control socket (only the user "
        "running it may): hmk ctl [OPTIONS] COMMAND [WORDS...]. COMMAND is a script command "
        "(docs/scripts.md), e.g.:\n"
        "  tree | stats | kill PATH | snapshot PATH | send DEST TYPE [PAYLOAD]\n"
        "  swap PATH --kind KIND [--version N] [--deadline MS]\n"
        "  move PATH --to GATEWAY [--isolation inproc|process] [--deadline MS]\n"
        "Exit status: 0 the command succeeded, 1 it failed (the reason on stderr), 2 no system "
        "answered on the socket, or a bad command line.");
    ctl->add_option("--socket", ctl_opts.socket, "the system's control socket");
    ctl->add_option("--system", ctl_opts.system,
                    "the system's name (its socket in the default directory)");
    ctl->add_option("--timeout", ctl_opts.timeout_ms,
                    "how long `expect` waits for its condition, and `send` for a reply, in ms "
                    "(default: 2000 and 1000)")
        ->check(CLI::Range(1, 3'600'000));
    // Everything from the first word on is the command, passed as typed.
    ctl->prefix_command();

    auto* journal =
        app.add_subcommand("journal", "Inspect a bus journal directory (written by a monitor)");
    journal->require_subcommand(1);
    std::string dir;
    std::uint64_t from = 0, to = UINT64_MAX;
    auto* verify = journal->add_subcommand(
        "verify", "Check CRCs and sequence continuity; exit 0, or 1 naming the first bad record");
    verify->add_option("DIR", dir, "journal directory")->required();
    auto* dump = journal->add_subcommand("dump", "One line per message, decoded header");
    dump->add_option("DIR", dir, "journal directory")->required();
    dump->add_option("--from", from, "first sequence number");
    dump->add_option("--to", to, "last sequence number");
    auto* jstats = journal->add_subcommand(
        "stats", "Segments, records, bytes, sequence range, messages by type");
    jstats->add_option("DIR", dir, "journal directory")->required();
    auto* snapshots = journal->add_subcommand(
        "snapshots",
        "The module snapshots stored with the journal, each checked (exit 1 if one is bad)");
    snapshots->add_option("DIR", dir, "journal directory")->required();

    hmk::tools::InjectOptions inject_opts;
    auto* inject = app.add_subcommand(
        "inject",
        "A fault-injection campaign (docs/inject.md): boots the system, injects faults one after "
        "another (each drawn from the seed and its index), and checks after each that only the "
        "subtree in charge of it was affected. Exit status: 0 no escape, 1 escapes (each printed "
        "with how to reproduce it), 2 bad input or a system that does not boot.");
    inject->add_option("SYSTEM", inject_opts.file, "the system description")->required();
    inject->add_option("--seed", inject_opts.seed, "the campaign's seed (default 1)");
    inject->add_option("--faults", inject_opts.faults, "how many faults (default 100)")
        ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 40));
    inject
        ->add_option("--duration", inject_opts.duration_s,
                     "stop after this many seconds, whatever is left")
        ->check(CLI::PositiveNumber);
    inject->add_option("--only", inject_opts.only, "fault K alone (to reproduce an escape)")
        ->check(CLI::NonNegativeNumber);
    inject->add_option("--classes", inject_opts.classes,
                       "fault classes, comma-separated: crash, garbage, flood (default: all)");
    inject
        ->add_option("--settle-ms", inject_opts.settle_ms,
                     "how long the system may take to recover from a fault (default 5000)")
        ->check(CLI::Range(10, 600000));
    inject->add_option("--log", inject_opts.log, "the system's log (default: kept in memory)");
    inject->add_flag("--json", inject_opts.json, "a JSON summary on stdout");

    hmk::tools::MkfsOptions mkfs_opts;
    auto* mkfs = app.add_subcommand(
        "mkfs",
        "Make an empty hmkfs file system on an image file (docs/fs.md); a new image is 64 MiB "
        "unless --size says otherwise. Refuses to overwrite a file system without --force.");
    mkfs->add_option("IMAGE", mkfs_opts.image, "the image file")->required();
    mkfs->add_option("--size", mkfs_opts.size_mib, "size of a new image, in MiB")
        ->check(CLI::Range(4, 1 << 20));
    mkfs->add_option("--inodes", mkfs_opts.inodes, "number of inodes (default: one per 4 blocks)");
    mkfs->add_flag("--force", mkfs_opts.force, "replace a file system that is there");
    std::string fsck_image;
    auto* fsck = app.add_subcommand(
        "fsck",
        "Check an hmkfs image: replays a committed transaction left in its journal, then walks "
        "the tree, the block pointers and the bitmap; exit 0 clean, 1 problems, 2 not hmkfs");
    fsck->add_option("IMAGE", fsck_image, "the image file")->required();

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int rc = app.exit(e);
        return rc == 0 ? k_exit_ok : k_exit_invalid;
    }
    // The shell's `journal` runs hmk journal's commands here.
    const auto journal_words = [](const std::vector<std::string>& w) {
        const std::string& sub = w[0];
        if (sub == "verify") return cmd_journal_verify(w[1]);
        if (sub == "stats") return cmd_journal_stats(w[1]);
        if (sub == "snapshots") return cmd_journal_snapshots(w[1]);
        if (sub == "dump") {
            std::uint64_t first = 0;
            std::uint64_t last = UINT64_MAX;
            if (w.size() > 2) first = std::strtoull(w[2].c_str(), nullptr, 10);
            if (w.size() > 3) last = std::strtoull(w[3].c_str(), nullptr, 10);
            return cmd_journal_dump(w[1], first, last);
        }
        fmt::print(stderr, "journal verify|dump|stats|snapshots DIR\n");
        return k_exit_invalid;
    };
    shell_opts.journal = journal_words;
    if (check->parsed()) return cmd_check(file, registry);
    if (tree->parsed()) return cmd_tree(file, registry);
    if (run->parsed()) {
        run_opts.journal = journal_words;
        return cmd_run(run_opts, registry);
    }
    if (ctl->parsed()) {
        ctl_opts.words = ctl->remaining();
        if (ctl_opts.words.empty()) {
            fmt::print(stderr, "hmk ctl: which command? (hmk ctl --help)\n");
            return k_exit_invalid;
        }
        return cmd_ctl(ctl_opts);
    }
    if (shell->parsed()) {
        CtlOptions where;
        where.socket = shell_opts.socket;
        where.system = shell_system;
        const auto path = find_socket(where);
        if (!path) return k_exit_invalid;
        shell_opts.socket = *path;
        return hmk::tools::run_shell(shell_opts);
    }
    if (mkfs->parsed()) return hmk::tools::cmd_mkfs(mkfs_opts);
    if (fsck->parsed()) return hmk::tools::cmd_fsck(fsck_image);
    if (inject->parsed()) return hmk::tools::run_inject(inject_opts, registry);
    if (verify->parsed()) return cmd_journal_verify(dir);
    if (dump->parsed()) return cmd_journal_dump(dir, from, to);
    if (jstats->parsed()) return cmd_journal_stats(dir);
    if (snapshots->parsed()) return cmd_journal_snapshots(dir);
    return cmd_kinds(registry);
}
