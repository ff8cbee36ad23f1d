// SPDX-License-Identifier: Apache-2.0
// Test module kinds that record what they see, for assertions on real systems.
#pragma once

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "hmk/routing.hpp"
#include "hmk/runtime/config.hpp"
#include "hmk/runtime/module.hpp"
#include "hmk/runtime/system.hpp"

namespace hmk::testing {

struct Record {
    ModuleId module;
    Header header;
    bool addressed_to_me;
};

/// Everything recorders saw, by module. Thread-safe.
class RecordBook {
  public:
    void add(const Record& r) {
        const std::lock_guard lock(m_mutex);
        m_records[r.module].push_back(r);
    }
    std::vector<Record> of(ModuleId id) const {
        const std::lock_guard lock(m_mutex);
        const auto it = m_records.find(id);
        return it == m_records.end() ? std::vector<Record>{} : it->second;
    }
    std::map<ModuleId, std::vector<Record>> all() const {
        const std::lock_guard lock(m_mutex);
        return m_records;
    }

  private:
    mutable std::mutex m_mutex;
    std::map<ModuleId, std::vector<Record>> m_records;
};

class Recorder final : public Module {
  public:
    Recorder(Env& env, RecordBook& book) : m_env(env), m_book(book) {}
    void on_message(const Message& m) override {
        m_book.add(Record{m_env.id(), m.header, m.header.destination == m_env.id()});
        if (m_env.config().integer("sleep_us") > 0) {
            std::this_thread::sleep_for(
                std::chrono::microseconds(m_env.config().integer("sleep_us")));
        }
    }

  private:
    Env& m_env;
    RecordBook& m_book;
};

/// A module that throws from its handler on any message addressed to it.
class Thrower final : public Module {
  public:
    explicit Thrower(Env& env) : m_env(env) {}
    void on_message(const Message& m) override {
        if (m.header.destination == m_env.id())
            throw std::runtime_error("thrower was told to fail");
    }

  private:
    Env& m_env;
};

/// A journal that never keeps up: it takes `sleep_ms` per message and never
/// acknowledges anything (to test the bus's bound on waiting for its journal).
class StuckJournal final : public Module {
  public:
    explicit StuckJournal(Env& env) : m_env(env) {}
    void on_message(const Message& /*m*/) override {
        std::this_thread::sleep_for(std::chrono::milliseconds(m_env.config().integer("sleep_ms")));
    }

  private:
    Env& m_env;
};

/// Standard kinds plus `rec` (eavesdropping leaf), `recgw` (eavesdropping
/// gateway), `thrower` and `stuckjournal`, recording into `book`.
inline Registry test_registry(RecordBook& book) {
    Registry r;
    register_standard_modules(r);
    const std::vector<ConfigKey> keys{
        ConfigKey("sleep_us", ConfigType::integer, std::int64_t{0}, "pause after each message")};
    auto make = [&book](Env& env) -> Result<std::unique_ptr<Module>, std::string> {
        return std::unique_ptr<Module>(std::make_unique<Recorder>(env, book));
    };
    r.add(ModuleKind{"rec", "records every message", Role::leaf, Eavesdrop::yes, keys, make});
    r.add(ModuleKind{"recgw", "records every message, owns a bus", Role::gateway, Eavesdrop::yes,
                     keys, make});
    r.add(ModuleKind{"thrower",
                     "throws on addressed messages",
                     Role::leaf,
                     Eavesdrop::no,
                     {},
                     [](Env& env) -> Result<std::unique_ptr<Module>, std::string> {
                         return std::unique_ptr<Module>(std::make_unique<Thrower>(env));
                     }});
    ModuleKind stuck{
        "stuckjournal",
        "a journal that never keeps up",
        Role::leaf,
        Eavesdrop::yes,
        {ConfigKey("dir", ConfigType::string, std::string(), "journal directory").require(),
         ConfigKey("visibility", ConfigType::string, std::string("immediate"), "visibility"),
         ConfigKey("stall_ms", ConfigType::integer, std::int64_t{100}, "stall deadline"),
         ConfigKey("sleep_ms", ConfigType::integer, std::int64_t{20}, "time per message")},
        [](Env& env) -> Result<std::unique_ptr<Module>, std::string> {
            return std::unique_ptr<Module>(std::make_unique<StuckJournal>(env));
        }};
    stuck.journals = Journals::yes;
    r.add(std::move(stuck));
    return r;
}

/// Everything written to `f` so far (a log in a tmpfile).
inline std::string read_all(std::FILE* f) {
    std::fflush(f);
    // Read through a file description of its own: the log's writers (module
    // processes too) share the stream's offset, and a rewind here would put
    // their next lines over the first ones.
    std::ifstream in("/proc/self/fd/" + std::to_string(::fileno(f)), std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// Waits until `done()` holds, polling; false after `limit`.
template <typename F>
bool eventually(F&& done, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
}

/// A booted system from TOML text; fails the test on any error.
struct Booted {
    explicit Booted(std::FILE* log = stderr, LogLevel level = LogLevel::warn)
        : logger(*new Logger(log, level)) {}
    ~Booted() {
        if (system) system->stop();
        // A module left behind hung in a handler may still log: its logger
        // then stays for the life of the process (System::abandoned).
        const bool keep = system && system->abandoned() != 0;
        system.reset();
        if (keep) {
            // Reachable from here, and never destroyed (not even at exit).
            static auto* kept = new std::vector<Logger*>();
            kept->push_back(&logger);
        } else {
            delete &logger;
        }
    }
    Booted(const Booted&) = delete;
    Booted& operator=(const Booted&) = delete;
    Logger& logger;
    std::unique_ptr<System> system;
    const Topology& topology() const { return system->topology(); }
    ModuleId id(const std::string& path) const { return topology().find(path)->id; }
};

/// `file`: where the description is said to come from (relative names in
/// it, grants among them, are taken from its directory).
inline std::unique_ptr<Booted> boot(const std::string& toml, Registry& registry,
                                    std::FILE* log = stderr, LogLevel level = LogLevel::warn,
                                    const std::string& file = "test.toml") {
    auto spec = parse_system(toml, file, registry);
    if (!spec) throw std::runtime_error(spec.error().to_string());
    auto b = std::make_unique<Booted>(log, level);
    auto sys = System::create(*spec, registry, b->logger);
    if (!sys) throw std::runtime_error(sys.error());
    b->system = std::move(sys).value();
    if (auto started = b->system->start(); !started) throw std::runtime_error(started.error());
    return b;
}

}  // namespace hmk::testing
