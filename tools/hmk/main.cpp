// SPDX-License-Identifier: Apache-2.0
// hmk: check, show and run hmk systems.
#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <ctime>

#include <map>

#include "hmk/runtime/config.hpp"
#include "hmk/runtime/journal.hpp"
#include "hmk/runtime/script.hpp"
#include "hmk/runtime/system.hpp"

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
        const hmk::ModuleKind* k = registry.find(name);
        fmt::print("{}{}: {}\n", name, k->role == hmk::Role::gateway ? " (gateway)" : "", k->help);
        for (const hmk::ConfigKey& key : k->config) {
            fmt::print("    {} ({}{}): {}\n", key.name, hmk::to_string(key.type),
                       key.required ? ", required" : "", key.help);
        }
    }
    return k_exit_ok;
}

// Waits for SIGINT/SIGTERM, at most `seconds` (negative: no limit).
void wait_for_signal(double seconds) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    if (seconds < 0) {
        int sig = 0;
        sigwait(&set, &sig);
        return;
    }
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(seconds);
    ts.tv_nsec = static_cast<long>((seconds - static_cast<double>(ts.tv_sec)) * 1e9);
    sigtimedwait(&set, nullptr, &ts);
}

int cmd_journal_verify(const std::string& dir) {
    const hmk::JournalScan scan = hmk::scan_journal(dir);
    if (!scan.clean) {
        fmt::print(stderr, "{}\n", scan.problem);
        fmt::print(
            "{}: BAD: {} records in {} segments are valid (seq {}..{}); recovery would stop "
            "there\n",
            dir, scan.records, scan.segments, scan.first_seq, scan.last_seq);
        return k_exit_failed;
    }
    fmt::print("{}: ok: {} records in {} segments, seq {}..{}, {} bytes\n", dir, scan.records,
               scan.segments, scan.first_seq, scan.last_seq, scan.bytes);
    return k_exit_ok;
}

int cmd_journal_dump(const std::string& dir, std::uint64_t from, std::uint64_t to) {
    const hmk::JournalScan scan = hmk::scan_journal(dir, [&](const hmk::JournalRecord& r) {
        const hmk::Header& h = r.header;
        if (h.seq < from || h.seq > to) return;
        const std::string_view tn = hmk::msg::type_name(h.type);
        fmt::print(
            "seq={} t={} bus={} sender={} via={} to={} scope={} type={} hops={} flags={:#x} "
            "corr={} len={}\n",
            h.seq, h.timestamp_ns, h.bus, h.sender, h.via,
            h.is_broadcast() ? std::string("*") : std::to_string(h.destination),
            hmk::to_string(h.scope), tn.empty() ? fmt::format("{:#x}", h.type) : std::string(tn),
            h.hops, h.flags, h.correlation, h.payload_size);
    });
    if (!scan.clean) {
        fmt::print(stderr, "{}\n", scan.problem);
        return k_exit_failed;
    }
    return k_exit_ok;
}

int cmd_journal_stats(const std::string& dir) {
    std::map<std::uint32_t, std::uint64_t> by_type;
    const hmk::JournalScan scan =
        hmk::scan_journal(dir, [&](const hmk::JournalRecord& r) { ++by_type[r.header.type]; });
    fmt::print("segments {}\nrecords  {}\nbytes    {}\nfirst    {}\nlast     {}\nclean    {}\n",
               scan.segments, scan.records, scan.bytes, scan.first_seq, scan.last_seq,
               scan.clean ? "yes" : "no: " + scan.problem);
    for (const auto& [type, n] : by_type) {
        const std::string_view tn = hmk::msg::type_name(type);
        fmt::print("type {:<8} {}\n", tn.empty() ? fmt::format("{:#x}", type) : std::string(tn), n);
    }
    return scan.clean ? k_exit_ok : k_exit_failed;
}

struct RunOptions {
    std::string file;
    std::string script;
    double for_seconds = -1;
    std::string log_level = "info";
    bool stats = false;
    bool explain_sandbox = false;
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
    int rc = k_exit_ok;
    if (script) {
        rc = hmk::run_script(**system, *script, logger) == 0 ? k_exit_ok : k_exit_failed;
        if (o.for_seconds > 0) wait_for_signal(o.for_seconds);
    } else {
        if (o.for_seconds < 0) logger.log(hmk::LogLevel::info, "hmk", "running; Ctrl-C stops");
        wait_for_signal(o.for_seconds);
    }
    (*system)->stop();
    if (o.stats) logger.print(hmk::format_stats(**system));
    logger.log(hmk::LogLevel::info, "hmk",
               rc == k_exit_ok ? "stopped" : "stopped after a failed expectation");
    return rc;
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

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int rc = app.exit(e);
        return rc == 0 ? k_exit_ok : k_exit_invalid;
    }
    if (check->parsed()) return cmd_check(file, registry);
    if (tree->parsed()) return cmd_tree(file, registry);
    if (run->parsed()) return cmd_run(run_opts, registry);
    if (verify->parsed()) return cmd_journal_verify(dir);
    if (dump->parsed()) return cmd_journal_dump(dir, from, to);
    if (jstats->parsed()) return cmd_journal_stats(dir);
    return cmd_kinds(registry);
}
