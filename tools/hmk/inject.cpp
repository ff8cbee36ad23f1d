// SPDX-License-Identifier: Apache-2.0
// `hmk inject`: boots a system and injects faults into it one after
// another, each drawn from the seed and its index alone (so that `--only K`
// replays fault K exactly), checking after each that the system contained
// it: the system did not fail, every module outside the region its
// supervision tree put in charge is running, answers a ping and was not
// restarted, and no module host process is left over.
#include "inject.hpp"

#include <fmt/core.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "hmk/message_types.hpp"
#include "hmk/runtime/config.hpp"
#include "hmk/runtime/system.hpp"

namespace hmk::tools {
namespace {

enum class FaultClass : std::uint8_t { crash, garbage, flood };
constexpr const char* k_class_names[] = {"crash", "garbage", "flood"};

struct Fault {
    std::uint64_t index = 0;
    FaultClass cls = FaultClass::crash;
    ModuleId target = k_no_module;
    std::uint32_t type = 0;
    std::vector<std::byte> payload;
    std::uint32_t count = 1;  // messages (flood)
};

// splitmix64: each fault from (seed, index) alone.
struct Random {
    std::uint64_t state;
    std::uint64_t next() {
        std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    std::uint64_t below(std::uint64_t n) { return n == 0 ? 0 : next() % n; }
};

Fault draw(std::uint64_t seed, std::uint64_t index, const std::vector<FaultClass>& classes,
           const std::vector<ModuleId>& targets) {
    Random r{seed * 0x2545F4914F6CDD1Dull ^ (index + 1) * 0x9E3779B97F4A7C15ull};
    Fault f;
    f.index = index;
    f.cls = classes[r.below(classes.size())];
    f.target = targets[r.below(targets.size())];
    // A message no protocol expects, or one of the services' with a payload
    // that is not what the schema says; never one of the runtime's own types
    // (the operator's authority would make those commands, not faults).
    do {
        f.type = r.below(2) == 0 ? 0x2000 + static_cast<std::uint32_t>(r.below(6))
                                 : 0x1000 + static_cast<std::uint32_t>(r.below(0xF000));
    } while (msg::is_runtime_type(f.type));
    f.payload.resize(r.below(600));
    for (std::byte& b : f.payload) b = static_cast<std::byte>(r.next());
    f.count = f.cls == FaultClass::flood ? 200 + static_cast<std::uint32_t>(r.below(800)) : 1;
    return f;
}

std::string describe(const Fault& f, const Topology& topology) {
    const std::string& path = topology.find(f.target)->path;
    switch (f.cls) {
        case FaultClass::crash:
            return "crash " + path;
        case FaultClass::garbage:
            return fmt::format("garbage {} (type {:#x}, {} bytes)", path, f.type, f.payload.size());
        case FaultClass::flood:
            return fmt::format("flood {} ({} messages of type {:#x})", path, f.count, f.type);
    }
    return "?";
}

std::string json_text(std::string_view s) {
    std::string out = "\"";
    for (const char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            out += fmt::format("\\u{:04x}", static_cast<unsigned char>(c));
        } else {
            out += c;
        }
    }
    return out + "\"";
}

// Module hosts among this process's children, by pid.
std::set<std::int64_t> host_processes() {
    std::set<std::int64_t> out;
    std::error_code ec;
    const auto self = static_cast<long>(::getpid());
    for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
        const std::string name = e.path().filename().string();
        if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
        std::ifstream stat(e.path() / "stat");
        std::string line;
        if (!std::getline(stat, line)) continue;
        // pid (comm) state ppid ...: comm may hold spaces, so from the last ')'.
        const std::size_t close = line.rfind(')');
        const std::size_t open = line.find('(');
        if (close == std::string::npos || open == std::string::npos) continue;
        const std::string comm = line.substr(open + 1, close - open - 1);
        std::istringstream rest(line.substr(close + 2));
        char state = 0;
        long ppid = 0;
        rest >> state >> ppid;
        if (ppid == self && comm.rfind("hmk-host", 0) == 0) out.insert(std::stol(name));
    }
    return out;
}

bool in_subtree(const Topology& t, ModuleId node, ModuleId root) {
    for (const TopologyNode* n = t.find(node); n != nullptr; n = t.find(n->parent)) {
        if (n->id == root) return true;
        if (n->id == k_root_id) break;
    }
    return root == k_root_id;
}

class Campaign {
  public:
    Campaign(System& system, const InjectOptions& o)
        : m_system(system), m_topology(system.topology()), m_options(o) {
        for (const TopologyNode& n : m_topology.nodes())
            if (n.id != k_root_id) m_targets.push_back(n.id);
    }
    const std::vector<ModuleId>& targets() const { return m_targets; }

    /// Injects `f` and checks the system afterwards; the escapes it found.
    std::vector<std::string> run(const Fault& f) {
        pace(f.target);
        std::map<ModuleId, ModuleStats> before;
        for (const ModuleId id : m_targets) before[id] = m_system.module_stats(id);
        // What happened since the last check: a late effect of the last fault
        // (a client that gave up on a server only after the check, say).
        std::vector<std::string> late;
        for (const auto& [id, was] : m_last) {
            if (before.at(id).restarts == was.restarts) continue;
            late.push_back(
                fmt::format("{} was restarted after the check of fault {} (a late "
                            "effect, outside what that fault hit)",
                            m_topology.find(id)->path, m_last_fault));
            for (std::uint64_t i = was.restarts; i < before.at(id).restarts; ++i)
                m_restarts[m_topology.find(id)->parent].push_back(std::chrono::steady_clock::now());
        }
        m_last.clear();
        if (before[f.target].state != ModuleState::running) {
            ++m_skipped;  // down already (a temporary module an earlier fault ended)
            return late;
        }
        const std::uint32_t sent = apply(f);
        took_effect(f, before.at(f.target), sent);
        auto escapes = check(f, before);
        escapes.insert(escapes.begin(), late.begin(), late.end());
        // The restarts it caused, on their supervisors' windows.
        const auto now = std::chrono::steady_clock::now();
        for (const ModuleId id : m_targets) {
            const ModuleStats is = m_system.module_stats(id);
            for (std::uint64_t i = before.at(id).restarts; i < is.restarts; ++i)
                m_restarts[m_topology.find(id)->parent].push_back(now);
            m_last[id] = is;
        }
        m_last_fault = f.index;
        return escapes;
    }
    std::uint64_t skipped() const { return m_skipped; }

    std::uint64_t paced_ms() const { return m_paced_ms; }

  private:
    // A supervisor gives up past `intensity` restarts of its children within
    // `period_ms`, and its parent decides, up to the microkernel, which stops
    // the system: a campaign that outran every supervisor would only measure
    // that. So a fault waits until its target's supervisor has room for one
    // more restart and one to spare (the faults stay those of the seed).
    void pace(ModuleId target) {
        const ModuleId parent = m_topology.find(target)->parent;
        const ModuleSpec* owner = m_system.spec().module(parent);
        const SupervisorSpec& sup =
            owner != nullptr ? owner->supervisor : m_system.spec().root_supervisor;
        const auto period = std::chrono::milliseconds(sup.period_ms);
        const std::size_t allowed = sup.intensity > 1 ? sup.intensity - 1 : 1;
        auto& window = m_restarts[parent];
        const auto began = std::chrono::steady_clock::now();
        for (;;) {
            const auto now = std::chrono::steady_clock::now();
            while (!window.empty() && now - window.front() > period) window.pop_front();
            if (window.size() + 1 <= allowed) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        m_paced_ms +=
            static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                           std::chrono::steady_clock::now() - began)
                                           .count());
    }

    /// The messages it injected (crash: 0).
    std::uint32_t apply(const Fault& f) {
        if (f.cls == FaultClass::crash) {
            (void)m_system.kill(f.target);
            return 0;
        }
        Outgoing m;
        m.destination = f.target;
        m.type = f.type;
        const ModuleId parent = m_topology.find(f.target)->parent;
        const ModuleSpec* owner = m_system.spec().module(parent);
        const std::uint32_t max =
            owner != nullptr ? owner->bus.max_payload : m_system.spec().root_bus.max_payload;
        m.payload = std::span<const std::byte>(f.payload.data(),
                                               std::min<std::size_t>(f.payload.size(), max));
        std::uint32_t sent = 0;
        for (std::uint32_t i = 0; i < f.count; ++i) sent += m_system.inject(m) ? 1u : 0u;
        return sent;
    }

    // A kill and a message take effect later, on the threads in charge:
    // until they have, the old state would pass for the settled one.
    void took_effect(const Fault& f, const ModuleStats& was, std::uint32_t sent) {
        const auto deadline =
            std::chrono::steady_clock::now() + std::chrono::milliseconds(m_options.settle_ms);
        auto done = [&] {
            const ModuleStats now = m_system.module_stats(f.target);
            if (now.state != ModuleState::running || now.epoch != was.epoch) return true;
            return f.cls != FaultClass::crash && now.rx >= was.rx + sent;
        };
        while (!done() && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }

    bool expected_up(ModuleId id, const Fault& f, const std::map<ModuleId, ModuleStats>& before,
                     bool hit) const {
        if (before.at(id).state != ModuleState::running) return false;
        if (!hit || !in_subtree(m_topology, id, f.target)) return true;
        // What was hit comes back, its subtree with it, if its policy says so.
        const ModuleSpec* spec = m_system.spec().module(f.target);
        return spec == nullptr || spec->restart != RestartPolicy::temporary;
    }

    std::vector<std::string> check(const Fault& f, const std::map<ModuleId, ModuleStats>& before) {
        std::vector<std::string> escapes;
        const auto began = std::chrono::steady_clock::now();
        const auto deadline = began + std::chrono::milliseconds(m_options.settle_ms);
        // Whether the fault ended the target's instance (a crash does; a
        // message may).
        const ModuleStats target = m_system.module_stats(f.target);
        const bool hit =
            target.state != ModuleState::running || target.epoch != before.at(f.target).epoch;
        auto settled = [&] {
            for (const ModuleId id : m_targets) {
                if (!expected_up(id, f, before, hit)) continue;
                const ModuleStats now = m_system.module_stats(id);
                if (now.state != ModuleState::running) return false;
                // A subtree restarted with what was hit: new instances.
                if (hit && in_subtree(m_topology, id, f.target) && now.epoch == before.at(id).epoch)
                    return false;
            }
            return true;
        };
        while (!settled() && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        if (const auto failed = m_system.failure()) {
            escapes.push_back("the system failed: " + *failed);
            return escapes;
        }
        // The region in charge: the target's parent's subtree, and further up
        // as far as supervision escalated (each ancestor that restarted).
        ModuleId region = m_topology.find(f.target)->parent;
        while (region != k_root_id &&
               m_system.module_stats(region).restarts != before.at(region).restarts)
            region = m_topology.find(region)->parent;
        for (const ModuleId id : m_targets) {
            const std::string& path = m_topology.find(id)->path;
            const ModuleStats now = m_system.module_stats(id);
            if (expected_up(id, f, before, hit) && now.state != ModuleState::running) {
                escapes.push_back(fmt::format("{} is {}, not running, {} ms after the fault", path,
                                              to_string(now.state),
                                              std::chrono::duration_cast<std::chrono::milliseconds>(
                                                  std::chrono::steady_clock::now() - began)
                                                  .count()));
                continue;
            }
            if (!in_subtree(m_topology, id, region) && now.restarts != before.at(id).restarts) {
                escapes.push_back(fmt::format(
                    "{} was restarted, outside the subtree of {}", path,
                    region == k_root_id ? std::string("/") : m_topology.find(region)->path));
            }
            // Only what should be up is asked (what was hit and stays down may
            // still be on its way down).
            if (now.state != ModuleState::running || !expected_up(id, f, before, hit)) continue;
            Outgoing ping;
            ping.destination = id;
            ping.type = msg::k_ping;
            const auto corr = m_system.inject(ping);
            const std::uint32_t wait_ms = std::max<std::uint32_t>(2000, m_options.settle_ms / 2);
            if (!corr || !m_system.wait_for_root(*corr, std::chrono::milliseconds(wait_ms))) {
                escapes.push_back(
                    fmt::format("{} did not answer a ping within {} ms", path, wait_ms));
            }
        }
        // Every module host process is one the system knows of.
        std::set<std::int64_t> known;
        for (const ModuleId id : m_targets)
            if (const std::int64_t pid = m_system.module_stats(id).pid; pid != 0) known.insert(pid);
        const auto leak_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
        for (;;) {
            std::vector<std::int64_t> strays;
            for (const std::int64_t pid : host_processes())
                if (known.count(pid) == 0) strays.push_back(pid);
            if (strays.empty()) break;
            if (std::chrono::steady_clock::now() >= leak_deadline) {
                escapes.push_back(fmt::format("{} module host process(es) left over (pid {})",
                                              strays.size(), strays.front()));
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return escapes;
    }

    System& m_system;
    const Topology& m_topology;
    const InjectOptions& m_options;
    std::vector<ModuleId> m_targets;
    std::uint64_t m_skipped = 0;
    std::map<ModuleId, std::deque<std::chrono::steady_clock::time_point>> m_restarts;
    std::map<ModuleId, ModuleStats> m_last;  // after the last check
    std::uint64_t m_last_fault = 0;
    std::uint64_t m_paced_ms = 0;
};

std::string log_tail(std::FILE* log, std::size_t lines) {
    if (log == nullptr) return {};
    std::fflush(log);
    const long end = std::ftell(log);
    std::string text;
    std::rewind(log);
    char buf[8192];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof(buf), log)) > 0) text.append(buf, n);
    std::fseek(log, end, SEEK_SET);
    std::size_t at = text.size();
    for (std::size_t i = 0; i <= lines && at != std::string::npos && at > 0; ++i)
        at = text.rfind('\n', at - 1);
    return at == std::string::npos ? text : text.substr(at + 1);
}

}  // namespace

int run_inject(const InjectOptions& o, Registry& registry) {
    std::vector<FaultClass> classes;
    {
        std::string_view list = o.classes;
        while (!list.empty()) {
            const std::size_t end = std::min(list.find(','), list.size());
            const std::string_view word = list.substr(0, end);
            bool known = false;
            for (std::size_t i = 0; i < std::size(k_class_names); ++i) {
                if (word == k_class_names[i]) {
                    classes.push_back(static_cast<FaultClass>(i));
                    known = true;
                }
            }
            if (!known) {
                fmt::print(stderr, "hmk inject: unknown fault class '{}' (crash, garbage, flood)\n",
                           word);
                return 2;
            }
            list.remove_prefix(std::min(end + 1, list.size()));
        }
        if (classes.empty()) {
            fmt::print(stderr, "hmk inject: no fault class given\n");
            return 2;
        }
    }
    auto spec = load_system_file(o.file, registry);
    if (!spec) {
        fmt::print(stderr, "{}\n", spec.error().to_string());
        return 2;
    }
    std::FILE* log = o.log.empty() ? std::tmpfile() : std::fopen(o.log.c_str(), "w+");
    if (log == nullptr) {
        fmt::print(stderr, "hmk inject: cannot write the log {}: {}\n", o.log,
                   std::strerror(errno));
        return 2;
    }
    // The Logger and the log outlive the system (an abandoned thread may log late).
    static Logger* logger = nullptr;
    logger = new Logger(log, LogLevel::info, LogFormat::text, log);  // prints too
    auto created = System::create(*spec, registry, *logger);
    if (!created) {
        fmt::print(stderr, "hmk inject: {} does not boot: {}\n", o.file, created.error());
        return 2;
    }
    std::unique_ptr<System> system = std::move(created).value();
    if (auto started = system->start(); !started) {
        fmt::print(stderr, "hmk inject: {} does not boot: {}\n", o.file, started.error());
        fmt::print(stderr, "{}", log_tail(log, 20));
        return 2;
    }
    Campaign campaign(*system, o);
    if (campaign.targets().empty()) {
        fmt::print(stderr, "hmk inject: {} has no module to inject faults into\n", o.file);
        system->stop();
        return 2;
    }
    const bool progress = ::isatty(2) != 0 && !o.json;
    const auto began = std::chrono::steady_clock::now();
    std::uint64_t done = 0;
    std::uint64_t by_class[3] = {0, 0, 0};
    std::vector<std::string> escapes;  // as JSON objects
    const std::uint64_t first = o.only >= 0 ? static_cast<std::uint64_t>(o.only) : 0;
    const std::uint64_t last = o.only >= 0 ? first + 1 : o.faults;
    for (std::uint64_t i = first; i < last; ++i) {
        const double elapsed =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
        if (o.duration_s > 0 && elapsed >= o.duration_s) break;
        const Fault f = draw(o.seed, i, classes, campaign.targets());
        const std::string what = describe(f, system->topology());
        if (progress) {
            fmt::print(stderr, "\r\x1b[Kinject: fault {}/{}  {:.1f}/s  escapes {}  {}", i + 1, last,
                       elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0, escapes.size(),
                       what);
        }
        const std::vector<std::string> found = campaign.run(f);
        ++done;
        ++by_class[static_cast<int>(f.cls)];
        for (const std::string& e : found) {
            if (progress) fmt::print(stderr, "\n");
            fmt::print(stderr,
                       "escape: fault {} ({}): {}\n  reproduce: hmk inject {} --seed {} --only {} "
                       "--classes {}\n",
                       i, what, e, o.file, o.seed, i, o.classes);
            fmt::print(stderr, "  the log's last lines:\n{}", log_tail(log, 12));
            escapes.push_back(fmt::format("{{\"fault\": {}, \"what\": {}, \"escape\": {}}}", i,
                                          json_text(what), json_text(e)));
        }
        if (!found.empty() && system->failure()) break;  // nothing left to inject into
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
    if (progress) fmt::print(stderr, "\n");
    system->stop();
    const double per_hour = seconds > 0 ? static_cast<double>(done) / seconds * 3600 : 0;
    if (o.json) {
        std::string list;
        for (const auto& e : escapes) list += (list.empty() ? "" : ", ") + e;
        fmt::print(
            "{{\"system\": {}, \"seed\": {}, \"faults\": {}, \"skipped\": {}, \"paced_ms\": {}, "
            "\"by_class\": "
            "{{\"crash\": {}, \"garbage\": {}, \"flood\": {}}}, \"escapes\": {}, \"seconds\": "
            "{:.1f}, \"faults_per_hour\": {:.0f}, \"escape_list\": [{}]}}\n",
            json_text(o.file), o.seed, done, campaign.skipped(), campaign.paced_ms(), by_class[0],
            by_class[1], by_class[2], escapes.size(), seconds, per_hour, list);
    } else {
        fmt::print(
            "inject: {} faults ({} crash, {} garbage, {} flood; {} on a module already "
            "down) in {:.1f} s ({:.0f} faults/hour; {:.1f} s waiting for supervisors' "
            "restart windows), seed {}: {} escape{}\n",
            done, by_class[0], by_class[1], by_class[2], campaign.skipped(), seconds, per_hour,
            static_cast<double>(campaign.paced_ms()) / 1000.0, o.seed, escapes.size(),
            escapes.size() == 1 ? "" : "s");
    }
    return escapes.empty() ? 0 : 1;
}

}  // namespace hmk::tools
