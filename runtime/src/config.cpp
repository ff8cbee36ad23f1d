// SPDX-License-Identifier: Apache-2.0
#include "hmk/runtime/config.hpp"

#include <fmt/core.h>

#include <toml++/toml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include "hmk/broadcast_ring.hpp"
#include "hmk/snapshot_format.hpp"

namespace hmk {
namespace {

using Where = SourceLocation;

// Parsing state: the file name, plus a tiny helper to build errors.
struct Loader {
    std::string file;
    Registry& registry;
    Plugins plugins;

    Where at(const toml::node& node) const {
        const auto& src = node.source();
        return Where{file, static_cast<std::uint32_t>(src.begin.line),
                     static_cast<std::uint32_t>(src.begin.column)};
    }
    Err<ConfigError> fail(const toml::node& node, std::string message) const {
        return Err{ConfigError{at(node), std::move(message)}};
    }
};

const char* type_name(const toml::node& node) {
    switch (node.type()) {
        case toml::node_type::table:
            return "a table";
        case toml::node_type::array:
            return "an array";
        case toml::node_type::string:
            return "a string";
        case toml::node_type::integer:
            return "an integer";
        case toml::node_type::floating_point:
            return "a number";
        case toml::node_type::boolean:
            return "a boolean";
        default:
            return "a date or time";
    }
}

// Absolute file names stay; others are taken relative to the system file's
// directory, and made absolute: a sandboxed module host opens them from a
// working directory of its own.
std::string resolve_plugin(const std::string& system_file, const std::string& plugin) {
    if (!plugin.empty() && plugin.front() == '/') return plugin;
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::path base = fs::absolute(fs::path(system_file), ec).parent_path();
    if (ec) base = fs::path(system_file).parent_path();
    return (base / plugin).lexically_normal().string();
}

// Rejects keys of `table` that are not in `allowed`.
Result<void, ConfigError> only_keys(const Loader& ld, const toml::table& table,
                                    std::initializer_list<std::string_view> allowed,
                                    std::string_view where) {
    for (const auto& [key, node] : table) {
        if (std::find(allowed.begin(), allowed.end(), key.str()) == allowed.end()) {
            std::string list;
            for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
            return ld.fail(node, fmt::format("unknown key '{}' in {} (expected one of: {})",
                                             key.str(), where, list));
        }
    }
    return {};
}

template <typename T>
Result<T, ConfigError> get_as(const Loader& ld, const toml::node& node, std::string_view key,
                              const char* expected) {
    if (auto v = node.value_exact<T>()) return *v;
    return ld.fail(node, fmt::format("'{}' must be {}, not {}", key, expected, type_name(node)));
}

Result<std::uint32_t, ConfigError> get_u32(const Loader& ld, const toml::node& node,
                                           std::string_view key, std::int64_t lo, std::int64_t hi) {
    const std::int64_t v = HMK_TRY(get_as<std::int64_t>(ld, node, key, "an integer"));
    if (v < lo || v > hi) {
        return ld.fail(node, fmt::format("'{}' is {}, must be between {} and {}", key, v, lo, hi));
    }
    return static_cast<std::uint32_t>(v);
}

Result<BusSpec, ConfigError> parse_bus(const Loader& ld, const toml::node& node, bool is_root) {
    const toml::table* t = node.as_table();
    if (t == nullptr)
        return ld.fail(node, fmt::format("'bus' must be a table, not {}", type_name(node)));
    if (is_root) {
        HMK_TRY(only_keys(ld, *t, {"capacity", "max_payload", "delivery", "reader_deadline_ms"},
                          "[bus] (Bus 0 has no parent, so no 'up' policy)"));
    } else {
        HMK_TRY(only_keys(ld, *t,
                          {"capacity", "max_payload", "up", "delivery", "reader_deadline_ms"},
                          "a module's 'bus' table"));
    }
    BusSpec bus;
    if (const toml::node* n = t->get("capacity")) {
        bus.capacity = HMK_TRY(get_u32(ld, *n, "capacity", 2, 1 << 20));
        if ((bus.capacity & (bus.capacity - 1)) != 0) {
            return ld.fail(*n,
                           fmt::format("'capacity' is {}, must be a power of two", bus.capacity));
        }
    }
    if (const toml::node* n = t->get("max_payload")) {
        bus.max_payload = HMK_TRY(get_u32(ld, *n, "max_payload", 0, k_max_payload));
    }
    if (const toml::node* n = t->get("delivery")) {
        const auto text = HMK_TRY(get_as<std::string>(ld, *n, "delivery", "a string"));
        if (text == "reliable") {
            bus.delivery = Delivery::reliable;
        } else if (text == "best_effort") {
            bus.delivery = Delivery::best_effort;
        } else {
            return ld.fail(
                *n,
                fmt::format("'delivery' is \"{}\", must be one of: reliable, best_effort", text));
        }
    }
    if (const toml::node* n = t->get("reader_deadline_ms")) {
        bus.reader_deadline_ms = HMK_TRY(get_u32(ld, *n, "reader_deadline_ms", 10, 3'600'000));
    }
    if (const toml::node* n = t->get("up")) {
        const toml::table* up = n->as_table();
        if (up == nullptr)
            return ld.fail(*n, fmt::format("'up' must be a table, not {}", type_name(*n)));
        HMK_TRY(only_keys(ld, *up, {"addressed", "up", "system"}, "an 'up' policy"));
        if (const toml::node* v = up->get("addressed"))
            bus.up.addressed = HMK_TRY(get_as<bool>(ld, *v, "addressed", "a boolean"));
        if (const toml::node* v = up->get("up"))
            bus.up.up = HMK_TRY(get_as<bool>(ld, *v, "up", "a boolean"));
        if (const toml::node* v = up->get("system"))
            bus.up.system = HMK_TRY(get_as<bool>(ld, *v, "system", "a boolean"));
    }
    return bus;
}

// Checks a module's `config` table against its kind's schema and fills defaults.
// Path-typed keys are checked later, once the tree is known.
Result<ModuleConfig, ConfigError> parse_module_config(const Loader& ld, const ModuleKind& kind,
                                                      const toml::table* table,
                                                      const toml::node& owner) {
    ModuleConfig config;
    if (table != nullptr) {
        for (const auto& [key, node] : *table) {
            const std::string_view name = key.str();  // (clang 14 cannot capture bindings)
            const auto it = std::find_if(kind.config.begin(), kind.config.end(),
                                         [&](const ConfigKey& k) { return k.name == name; });
            if (it == kind.config.end()) {
                std::string list;
                for (const auto& k : kind.config) list += (list.empty() ? "" : ", ") + k.name;
                return ld.fail(node,
                               fmt::format("module kind '{}' has no config key '{}' (it takes: {})",
                                           kind.name, key.str(), list.empty() ? "none" : list));
            }
            const ConfigKey& k = *it;
            switch (k.type) {
                case ConfigType::integer: {
                    const auto v = HMK_TRY(get_as<std::int64_t>(ld, node, k.name, "an integer"));
                    if (v < k.min || v > k.max) {
                        return ld.fail(node, fmt::format("'{}' is {}, must be between {} and {}",
                                                         k.name, v, k.min, k.max));
                    }
                    config.set(k.name, v);
                    break;
                }
                case ConfigType::number: {
                    if (auto i = node.value_exact<std::int64_t>()) {
                        config.set(k.name, static_cast<double>(*i));
                    } else {
                        config.set(k.name, HMK_TRY(get_as<double>(ld, node, k.name, "a number")));
                    }
                    break;
                }
                case ConfigType::boolean:
                    config.set(k.name, HMK_TRY(get_as<bool>(ld, node, k.name, "a boolean")));
                    break;
                case ConfigType::string:
                case ConfigType::path:
                case ConfigType::file: {
                    auto v = HMK_TRY(
                        get_as<std::string>(ld, node, k.name,
                                            k.type == ConfigType::path   ? "a module path string"
                                            : k.type == ConfigType::file ? "a file name"
                                                                         : "a string"));
                    if (k.type == ConfigType::file) {
                        if (v.empty())
                            return ld.fail(
                                node, fmt::format("'{}' is empty: it needs a file name", k.name));
                        v = resolve_plugin(ld.file, v);
                    }
                    if (!k.choices.empty() &&
                        std::find(k.choices.begin(), k.choices.end(), v) == k.choices.end()) {
                        std::string list;
                        for (const auto& c : k.choices) list += (list.empty() ? "" : ", ") + c;
                        return ld.fail(node, fmt::format("'{}' is \"{}\", must be one of: {}",
                                                         k.name, v, list));
                    }
                    if (k.validate) {
                        if (const std::string why = k.validate(v); !why.empty())
                            return ld.fail(node, fmt::format("'{}': {}", k.name, why));
                    }
                    config.set(k.name, std::move(v));
                    break;
                }
            }
        }
    }
    for (const ConfigKey& k : kind.config) {
        if (config.has(k.name)) continue;
        if (k.required) {
            return ld.fail(owner, fmt::format("module kind '{}' needs config key '{}' ({})",
                                              kind.name, k.name, k.help));
        }
        config.set(k.name, k.fallback);
    }
    return config;
}

Result<Isolation, ConfigError> parse_isolation(const Loader& ld, const toml::node& node) {
    const auto text = HMK_TRY(get_as<std::string>(ld, node, "isolation", "a string"));
    if (text == "inproc") return Isolation::inproc;
    if (text == "process") return Isolation::process;
    return ld.fail(node,
                   fmt::format("'isolation' is \"{}\", must be one of: inproc, process", text));
}

Result<QuotaSpec, ConfigError> parse_quota(const Loader& ld, const toml::node& node) {
    const toml::table* t = node.as_table();
    if (t == nullptr)
        return ld.fail(node, fmt::format("'quota' must be a table, not {}", type_name(node)));
    HMK_TRY(only_keys(ld, *t,
                      {"messages_per_s", "bytes_per_s", "uplink_slots", "memory", "open_files",
                       "grace_ms", "cpu"},
                      "a 'quota' table"));
    QuotaSpec q;
    auto positive = [&](const char* key, double& out) -> Result<void, ConfigError> {
        const toml::node* n = t->get(key);
        if (n == nullptr) return {};
        double v = 0;
        if (auto i = n->value_exact<std::int64_t>()) {
            v = static_cast<double>(*i);
        } else {
            v = HMK_TRY(get_as<double>(ld, *n, key, "a number"));
        }
        if (!(v > 0)) return ld.fail(*n, fmt::format("'{}' must be above 0", key));
        out = v;
        return {};
    };
    HMK_TRY(positive("messages_per_s", q.messages_per_s));
    HMK_TRY(positive("bytes_per_s", q.bytes_per_s));
    if (const toml::node* n = t->get("uplink_slots")) {
        q.uplink_slots = HMK_TRY(get_u32(ld, *n, "uplink_slots", 2, 1 << 16));
        if ((q.uplink_slots & (q.uplink_slots - 1)) != 0) {
            return ld.fail(
                *n, fmt::format("'uplink_slots' is {}, must be a power of two", q.uplink_slots));
        }
    }
    if (const toml::node* n = t->get("memory")) {
        const auto v = HMK_TRY(get_as<std::int64_t>(ld, *n, "memory", "an integer (bytes)"));
        if (v < (64 << 20))
            return ld.fail(
                *n, "'memory' must be at least 67108864 (64 MiB: a module host needs that much)");
        q.memory = static_cast<std::uint64_t>(v);
    }
    if (const toml::node* n = t->get("open_files"))
        q.open_files = HMK_TRY(get_u32(ld, *n, "open_files", 16, 65536));
    if (const toml::node* n = t->get("grace_ms"))
        q.grace_ms = HMK_TRY(get_u32(ld, *n, "grace_ms", 0, 3'600'000));
    if (const toml::node* n = t->get("cpu")) {
        HMK_TRY(positive("cpu", q.cpu));
        if (q.cpu < 0.01 || q.cpu > 1024) {
            return ld.fail(*n, fmt::format("'cpu' is {}, must be from 0.01 to 1024 (cores: 0.25 "
                                           "is a quarter of one)",
                                           q.cpu));
        }
    }
    return q;
}

Result<SupervisorSpec, ConfigError> parse_supervisor(const Loader& ld, const toml::node& node) {
    const toml::table* t = node.as_table();
    if (t == nullptr)
        return ld.fail(node, fmt::format("'supervisor' must be a table, not {}", type_name(node)));
    HMK_TRY(only_keys(ld, *t,
                      {"strategy", "intensity", "period_ms", "backoff_ms", "heartbeat_ms",
                       "heartbeat_misses", "stop_grace_ms"},
                      "a 'supervisor' table"));
    SupervisorSpec s;
    if (const toml::node* v = t->get("strategy")) {
        const auto text = HMK_TRY(get_as<std::string>(ld, *v, "strategy", "a string"));
        if (text == "one_for_one") {
            s.strategy = Strategy::one_for_one;
        } else if (text == "one_for_all") {
            s.strategy = Strategy::one_for_all;
        } else if (text == "rest_for_one") {
            s.strategy = Strategy::rest_for_one;
        } else {
            return ld.fail(*v, fmt::format("'strategy' is \"{}\", must be one of: one_for_one, "
                                           "one_for_all, rest_for_one",
                                           text));
        }
    }
    if (const toml::node* v = t->get("heartbeat_ms"))
        s.heartbeat_ms = HMK_TRY(get_u32(ld, *v, "heartbeat_ms", 0, 3'600'000));
    if (const toml::node* v = t->get("heartbeat_misses"))
        s.heartbeat_misses = HMK_TRY(get_u32(ld, *v, "heartbeat_misses", 1, 1000));
    if (const toml::node* v = t->get("intensity"))
        s.intensity = HMK_TRY(get_u32(ld, *v, "intensity", 0, 1000000));
    if (const toml::node* v = t->get("period_ms"))
        s.period_ms = HMK_TRY(get_u32(ld, *v, "period_ms", 1, 86400000));
    if (const toml::node* v = t->get("backoff_ms"))
        s.backoff_ms = HMK_TRY(get_u32(ld, *v, "backoff_ms", 0, 60000));
    if (const toml::node* v = t->get("stop_grace_ms"))
        s.stop_grace_ms = HMK_TRY(get_u32(ld, *v, "stop_grace_ms", 0, 600'000));
    return s;
}

// One grant: { file = "NAME" } or { dir = "NAME" }, with `write` and
// `create` (docs/system-toml.md). Names are relative to the system file's
// directory and must stay inside it, whatever symbolic links they pass.
Result<Grant, ConfigError> parse_grant(const Loader& ld, const toml::node& node,
                                       const std::string& module, const ModuleKind& kind,
                                       const ModuleConfig& config) {
    const toml::table* t = node.as_table();
    if (t == nullptr) {
        return ld.fail(node, fmt::format("a grant must be a table ({{ file = \"NAME\" }} or "
                                         "{{ dir = \"NAME\" }}), not {}",
                                         type_name(node)));
    }
    HMK_TRY(
        only_keys(ld, *t, {"file", "dir", "file_key", "dir_key", "write", "create"}, "a grant"));
    Grant g;
    g.where = ld.at(node);
    // The path itself (file, dir), or the config key that names it
    // (file_key, dir_key: what the module opens is then what it may open).
    const toml::node* named = nullptr;
    int names = 0;
    for (const char* k : {"file", "dir", "file_key", "dir_key"}) {
        if (const toml::node* n = t->get(k)) {
            named = n;
            ++names;
            g.type = k[0] == 'f' ? Grant::Type::file : Grant::Type::dir;
        }
    }
    if (names != 1)
        return ld.fail(node, "a grant names one 'file', 'dir', 'file_key' or 'dir_key'");
    const bool by_key = t->get("file_key") != nullptr || t->get("dir_key") != nullptr;
    const toml::node& name_node = *named;
    std::string name = HMK_TRY(
        get_as<std::string>(ld, name_node, "the grant", by_key ? "a config key" : "a file name"));
    if (name.empty()) return ld.fail(name_node, "the grant's name is empty");
    if (by_key) {
        const auto key = std::find_if(kind.config.begin(), kind.config.end(),
                                      [&](const ConfigKey& c) { return c.name == name; });
        if (key == kind.config.end() || key->type != ConfigType::file) {
            std::string list;
            for (const ConfigKey& c : kind.config)
                if (c.type == ConfigType::file) list += (list.empty() ? "" : ", ") + c.name;
            return ld.fail(name_node,
                           fmt::format("module {}: kind '{}' has no file config key '{}' (its file "
                                       "keys: {})",
                                       module, kind.name, name, list.empty() ? "none" : list));
        }
        name = config.string(name);
        if (name.empty())
            return ld.fail(name_node, fmt::format("module {}: its config key '{}' is empty", module,
                                                  key->name));
    }
    if (const toml::node* w = t->get("write"))
        g.write = HMK_TRY(get_as<bool>(ld, *w, "write", "a boolean"));
    if (const toml::node* c = t->get("create"))
        g.create = HMK_TRY(get_as<bool>(ld, *c, "create", "a boolean"));
    if (g.create && !g.write) {
        return ld.fail(*t->get("create"),
                       fmt::format("module {}: a grant that creates its {} needs write = true",
                                   module, to_string(g.type)));
    }
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path base = fs::absolute(fs::path(ld.file), ec).lexically_normal().parent_path();
    fs::path p = fs::path(name).is_absolute() ? fs::path(name) : base / name;
    p = p.lexically_normal();
    if (!p.empty() && p.filename().empty()) p = p.parent_path();  // "dir/" names dir
    g.path = p.string();
    // A module host gets its grants from its parent, which checked them.
    if (ld.plugins == Plugins::already_loaded) return g;
    auto inside = [&](const fs::path& q) {
        const auto rel = q.lexically_relative(base);
        return !rel.empty() && *rel.begin() != "..";
    };
    if (!inside(p) || p == base) {
        return ld.fail(name_node,
                       fmt::format("module {}: grant \"{}\" is not inside the system's directory "
                                   "{} (a module may be granted only what lies beneath it)",
                                   module, name, base.string()));
    }
    // Symbolic links resolved: the grant must not lead out either.
    const fs::path real_base = fs::weakly_canonical(base, ec);
    const fs::path real = fs::weakly_canonical(p, ec);
    if (!ec && !real_base.empty()) {
        const auto rel = real.lexically_relative(real_base);
        if (rel.empty() || *rel.begin() == ".." || real == real_base) {
            return ld.fail(name_node,
                           fmt::format("module {}: grant \"{}\" leads out of the system's "
                                       "directory (to {})",
                                       module, name, real.string()));
        }
    }
    const fs::file_status st = fs::status(p, ec);
    if (!fs::exists(st)) {
        if (g.create) return g;
        return ld.fail(name_node,
                       fmt::format("module {}: granted {} {} does not exist (add create = true "
                                   "to make it when the module starts)",
                                   module, to_string(g.type), p.string()));
    }
    if (g.type == Grant::Type::file && !fs::is_regular_file(st)) {
        return ld.fail(name_node, fmt::format("module {}: granted file {} is not a regular file",
                                              module, p.string()));
    }
    if (g.type == Grant::Type::dir && !fs::is_directory(st)) {
        return ld.fail(name_node, fmt::format("module {}: granted dir {} is not a directory",
                                              module, p.string()));
    }
    return g;
}

// `grants = [ {...}, ... ]`, or one table alone.
Result<std::vector<Grant>, ConfigError> parse_grants(const Loader& ld, const toml::node& node,
                                                     const std::string& module,
                                                     const ModuleKind& kind,
                                                     const ModuleConfig& config) {
    std::vector<Grant> grants;
    if (node.is_table()) {
        grants.push_back(HMK_TRY(parse_grant(ld, node, module, kind, config)));
        return grants;
    }
    const toml::array* arr = node.as_array();
    if (arr == nullptr) {
        return ld.fail(node, fmt::format("'grants' must be an array of tables (grants = [{{ file "
                                         "= \"NAME\" }}]), not {}",
                                         type_name(node)));
    }
    if (arr->size() > 64) return ld.fail(node, "at most 64 grants a module");
    for (const toml::node& item : *arr) {
        Grant g = HMK_TRY(parse_grant(ld, item, module, kind, config));
        for (const Grant& other : grants) {
            if (other.path == g.path)
                return ld.fail(item, fmt::format("module {}: {} is granted twice", module, g.path));
        }
        grants.push_back(std::move(g));
    }
    return grants;
}

struct PendingModule {
    ModuleSpec spec;
    const toml::node* node;
    const toml::node* path_node;
    const toml::node* id_node;
    const ModuleKind* kind;
    const toml::table* config_table;
    const toml::node* recover_node;
};

// The name of the directory that holds `file`, however the path is spelt
// ("x.toml", "./x.toml", "../d/x.toml"); "system" for the root directory.
std::string default_system_name(const std::string& file) {
    std::error_code ec;
    std::filesystem::path p = std::filesystem::absolute(file, ec);
    if (ec) p = std::filesystem::path("/") / file;
    const std::string dir = p.lexically_normal().parent_path().filename().string();
    return dir.empty() ? std::string("system") : dir;
}

Result<SystemSpec, ConfigError> build_spec(const Loader& ld, const toml::table& root) {
    HMK_TRY(only_keys(ld, root, {"system", "bus", "supervisor", "module"}, "the top level"));
    SystemSpec spec;
    spec.file = ld.file;
    std::uint32_t isolate_from_level = 0;  // 0: everything inproc unless a module says otherwise
    spec.name = default_system_name(ld.file);

    if (const toml::node* n = root.get("system")) {
        const toml::table* t = n->as_table();
        if (t == nullptr)
            return ld.fail(*n, fmt::format("'system' must be a table, not {}", type_name(*n)));
        HMK_TRY(only_keys(ld, *t, {"name", "description", "plugins", "isolate_from_level"},
                          "[system]"));
        if (const toml::node* v = t->get("isolate_from_level")) {
            isolate_from_level = HMK_TRY(get_u32(ld, *v, "isolate_from_level", 1, 64));
        }
        if (const toml::node* v = t->get("name"))
            spec.name = HMK_TRY(get_as<std::string>(ld, *v, "name", "a string"));
        if (const toml::node* v = t->get("plugins")) {
            const toml::array* list = v->as_array();
            if (list == nullptr)
                return ld.fail(*v, fmt::format("'plugins' must be an array of file names, not {}",
                                               type_name(*v)));
            for (const toml::node& item : *list) {
                const auto name = HMK_TRY(get_as<std::string>(ld, item, "plugins", "a file name"));
                const std::string file = resolve_plugin(ld.file, name);
                if (ld.plugins == Plugins::load) {
                    if (auto loaded = ld.registry.load_plugin(file); !loaded)
                        return ld.fail(item, loaded.error());
                }
                spec.plugins.push_back(file);
            }
        }
        if (const toml::node* v = t->get("description"))
            (void)HMK_TRY(get_as<std::string>(ld, *v, "description", "a string"));
    }
    if (const toml::node* n = root.get("bus")) spec.root_bus = HMK_TRY(parse_bus(ld, *n, true));
    if (const toml::node* n = root.get("supervisor"))
        spec.root_supervisor = HMK_TRY(parse_supervisor(ld, *n));

    std::vector<PendingModule> pending;
    if (const toml::node* n = root.get("module")) {
        const toml::array* arr = n->as_array();
        if (arr == nullptr) {
            return ld.fail(*n,
                           fmt::format("'module' must be an array of tables ([[module]]), not {}",
                                       type_name(*n)));
        }
        for (const toml::node& item : *arr) {
            const toml::table* t = item.as_table();
            if (t == nullptr)
                return ld.fail(item,
                               fmt::format("each module must be a table, not {}", type_name(item)));
            HMK_TRY(
                only_keys(ld, *t,
                          {"path", "kind", "version", "id", "isolation", "bus", "config", "quota",
                           "restart", "recover", "snapshot_every", "supervisor", "grants"},
                          "a [[module]] table"));
            PendingModule pm{};
            pm.node = &item;
            pm.spec.where = ld.at(item);
            const toml::node* path = t->get("path");
            if (path == nullptr)
                return ld.fail(item, "a module needs a 'path' (e.g. path = \"/apps\")");
            pm.path_node = path;
            pm.spec.path = HMK_TRY(get_as<std::string>(ld, *path, "path", "a string"));
            PathError why{};
            if (!is_valid_path(pm.spec.path, &why)) {
                return ld.fail(
                    *path, fmt::format("bad module path \"{}\": {}", pm.spec.path, to_string(why)));
            }
            const toml::node* kind = t->get("kind");
            if (kind == nullptr)
                return ld.fail(item, fmt::format("module {} needs a 'kind'", pm.spec.path));
            pm.spec.kind = HMK_TRY(get_as<std::string>(ld, *kind, "kind", "a string"));
            pm.kind = ld.registry.find(pm.spec.kind);
            if (pm.kind == nullptr) {
                std::string list;
                for (const auto& k : ld.registry.names()) list += (list.empty() ? "" : ", ") + k;
                return ld.fail(*kind, fmt::format("no module kind '{}' (known kinds: {})",
                                                  pm.spec.kind, list));
            }
            if (const toml::node* v = t->get("version")) {
                const std::uint32_t version = HMK_TRY(get_u32(ld, *v, "version", 1, UINT32_MAX));
                pm.kind = ld.registry.find(pm.spec.kind, version);
                if (pm.kind == nullptr) {
                    std::string list;
                    for (auto x : ld.registry.versions(pm.spec.kind))
                        list += (list.empty() ? "" : ", ") + std::to_string(x);
                    return ld.fail(*v, fmt::format("kind '{}' has no version {} (it has {})",
                                                   pm.spec.kind, version, list));
                }
            }
            pm.spec.version = pm.kind->version;
            if (const toml::node* id = t->get("id")) {
                pm.id_node = id;
                pm.spec.id = HMK_TRY(get_u32(ld, *id, "id", 2, k_max_module_id));
            }
            // Isolation grows with level: leaves from `isolate_from_level` down get a
            // process of their own unless they say otherwise.
            const auto level = static_cast<std::uint32_t>(
                std::count(pm.spec.path.begin(), pm.spec.path.end(), '/'));
            // (A journal writes files: it stays in the kernel's process.)
            if (isolate_from_level != 0 && level >= isolate_from_level &&
                pm.kind->role == Role::leaf && pm.kind->journals == Journals::no) {
                pm.spec.isolation = Isolation::process;
            }
            if (const toml::node* iso = t->get("isolation"))
                pm.spec.isolation = HMK_TRY(parse_isolation(ld, *iso));
            if (pm.spec.isolation == Isolation::process && pm.kind->journals == Journals::yes) {
                return ld.fail(*t->get("isolation"),
                               fmt::format("module {} of kind '{}' journals its bus into files: it "
                                           "runs inproc (a sandboxed process has no file access)",
                                           pm.spec.path, pm.spec.kind));
            }

            if (const toml::node* r = t->get("restart")) {
                const auto text = HMK_TRY(get_as<std::string>(ld, *r, "restart", "a string"));
                if (text == "permanent") {
                    pm.spec.restart = RestartPolicy::permanent;
                } else if (text == "transient") {
                    pm.spec.restart = RestartPolicy::transient;
                } else if (text == "temporary") {
                    pm.spec.restart = RestartPolicy::temporary;
                } else {
                    return ld.fail(
                        *r,
                        fmt::format(
                            "'restart' is \"{}\", must be one of: permanent, transient, temporary",
                            text));
                }
            } else if (pm.kind->journals == Journals::yes) {
                // A monitor is what its bus's modules recover from: by
                // default it comes back, whatever ended it.
                pm.spec.restart = RestartPolicy::permanent;
            }
            if (const toml::node* r = t->get("recover")) {
                pm.recover_node = r;
                const auto text = HMK_TRY(get_as<std::string>(ld, *r, "recover", "a string"));
                if (text == "journal") {
                    pm.spec.recovery = Recovery::journal;
                } else if (text != "none") {
                    return ld.fail(
                        *r,
                        fmt::format("'recover' is \"{}\", must be one of: none, journal", text));
                }
                if (pm.spec.recovery == Recovery::journal &&
                    (pm.kind->role != Role::leaf || pm.kind->journals == Journals::yes)) {
                    return ld.fail(*r, fmt::format("module {}: only leaves that do not journal "
                                                   "recover from the journal",
                                                   pm.spec.path));
                }
            }
            if (const toml::node* every = t->get("snapshot_every")) {
                pm.spec.snapshot_every =
                    HMK_TRY(get_u32(ld, *every, "snapshot_every", 0, 1'000'000'000));
                if (pm.spec.recovery != Recovery::journal && pm.spec.snapshot_every != 0) {
                    return ld.fail(*every, fmt::format("module {}: snapshots are for recovery: add "
                                                       "recover = \"journal\"",
                                                       pm.spec.path));
                }
            }
            if (const toml::node* sv = t->get("supervisor")) {
                if (pm.kind->role != Role::gateway) {
                    return ld.fail(
                        *sv,
                        fmt::format("module {} is not a gateway and has no children to supervise",
                                    pm.spec.path));
                }
                pm.spec.supervisor = HMK_TRY(parse_supervisor(ld, *sv));
            }
            if (const toml::node* quota = t->get("quota")) {
                // (An inproc leaf may have one: it applies once the module is
                // moved into a process. Gateways always run in their parent's.)
                if (pm.kind->role == Role::gateway && pm.spec.isolation != Isolation::process) {
                    return ld.fail(*quota,
                                   fmt::format("module {} is a gateway, which runs in its "
                                               "parent's process: a quota applies to modules in "
                                               "processes of their own",
                                               pm.spec.path));
                }
                pm.spec.quota = HMK_TRY(parse_quota(ld, *quota));
            }
            if (const toml::node* bus = t->get("bus")) {
                if (pm.kind->role != Role::gateway) {
                    return ld.fail(
                        *bus, fmt::format("module {} of kind '{}' is not a gateway and owns no bus",
                                          pm.spec.path, pm.spec.kind));
                }
                pm.spec.bus = HMK_TRY(parse_bus(ld, *bus, false));
            }
            if (const toml::node* cfg = t->get("config")) {
                pm.config_table = cfg->as_table();
                if (pm.config_table == nullptr) {
                    return ld.fail(
                        *cfg, fmt::format("'config' must be a table, not {}", type_name(*cfg)));
                }
            }
            pm.spec.config = HMK_TRY(parse_module_config(ld, *pm.kind, pm.config_table, item));
            if (const toml::node* g = t->get("grants")) {
                if (pm.kind->role == Role::gateway) {
                    return ld.fail(*g, fmt::format("module {} is a gateway: grants are for the "
                                                   "modules that use files, not for gateways",
                                                   pm.spec.path));
                }
                pm.spec.grants =
                    HMK_TRY(parse_grants(ld, *g, pm.spec.path, *pm.kind, pm.spec.config));
            }
            pending.push_back(std::move(pm));
        }
    }

    // The tree: core checks the invariants; errors are mapped back to the file.
    std::vector<ModuleDecl> decls;
    for (const auto& pm : pending) decls.push_back({pm.spec.id, pm.spec.path, pm.kind->role});
    auto topo = Topology::build(decls);
    if (!topo) {
        const TopologyError& e = topo.error();
        const PendingModule* culprit = nullptr;
        for (const auto& pm : pending) {
            if (pm.spec.path == e.path) culprit = &pm;  // the later one, for duplicates
        }
        const toml::node& where =
            culprit != nullptr ? (e.kind == TopologyError::Kind::duplicate_id && culprit->id_node
                                      ? *culprit->id_node
                                      : *culprit->path_node)
                               : static_cast<const toml::node&>(root);
        std::string message = fmt::format("module {}: {}", e.path, e.detail);
        if (e.kind == TopologyError::Kind::duplicate_path) {
            for (const auto& pm : pending) {
                if (pm.spec.path == e.path) {
                    message += fmt::format(" (first declared at {}:{}:{})", pm.spec.where.file,
                                           pm.spec.where.line, pm.spec.where.column);
                    break;
                }
            }
        }
        return Err{ConfigError{ld.at(where), std::move(message)}};
    }
    spec.topology = std::move(topo).value();

    // Every bus ring is shared memory the system maps and fills at boot:
    // their sum is capped, so that a typo in a capacity cannot take the
    // machine's memory.
    {
        std::uint64_t total = 0;
        auto add_ring = [&](const BusSpec& bus, const toml::node& where,
                            const std::string& name) -> Result<void, ConfigError> {
            const std::uint64_t bytes = BroadcastRing::region_size(bus.capacity, bus.max_payload);
            total += bytes;
            if (total <= k_max_bus_ring_bytes) return {};
            return ld.fail(
                where, fmt::format("the ring of {} ({} slots of up to {} bytes) takes {} MiB, "
                                   "and the system's bus rings {} MiB in all: at most {} MiB "
                                   "(lower 'capacity' or 'max_payload')",
                                   name, bus.capacity, bus.max_payload, bytes >> 20, total >> 20,
                                   k_max_bus_ring_bytes >> 20));
        };
        const toml::node* root_bus = root.get("bus");
        HMK_TRY(add_ring(spec.root_bus,
                         root_bus != nullptr ? *root_bus : static_cast<const toml::node&>(root),
                         "Bus 0"));
        for (const auto& pm : pending) {
            if (!spec.topology.find(pm.spec.path)->is_gateway()) continue;
            const toml::node* bus = pm.node->as_table()->get("bus");
            HMK_TRY(add_ring(pm.spec.bus, bus != nullptr ? *bus : *pm.node, "bus " + pm.spec.path));
        }
    }

    // Journals: at most one per bus, on a bus that can hold a batch of them.
    std::map<BusId, const PendingModule*> journal_of;
    auto bus_spec = [&](BusId bus) -> const BusSpec& {
        if (bus == k_root_id) return spec.root_bus;
        for (const auto& pm : pending) {
            if (spec.topology.find(pm.spec.path)->id == bus) return pm.spec.bus;
        }
        return spec.root_bus;
    };
    for (const auto& pm : pending) {
        if (pm.kind->journals != Journals::yes) continue;
        const TopologyNode* n = spec.topology.find(pm.spec.path);
        if (const auto it = journal_of.find(n->parent); it != journal_of.end()) {
            return ld.fail(
                *pm.node,
                fmt::format("bus {} has a journal already ({}); one is enough",
                            n->parent == k_root_id ? "Bus 0" : spec.topology.find(n->parent)->path,
                            it->second->spec.path));
        }
        if (bus_spec(n->parent).capacity < 256) {
            return ld.fail(*pm.node,
                           fmt::format("module {} journals a bus of capacity {}: a journaled bus "
                                       "needs a capacity of at least 256",
                                       pm.spec.path, bus_spec(n->parent).capacity));
        }
        // A journal's writer is its bus's owner, which opens files: not yet
        // inside a gateway's own sandboxed process.
        for (ModuleId up = n->parent; up != k_root_id; up = spec.topology.find(up)->parent) {
            const auto g =
                std::find_if(pending.begin(), pending.end(), [&](const PendingModule& o) {
                    return o.spec.path == spec.topology.find(up)->path;
                });
            if (g != pending.end() && g->spec.isolation == Isolation::process) {
                return ld.fail(*pm.node,
                               fmt::format("module {} journals its bus inside gateway {}, which "
                                           "runs in a process of its own: journals are written "
                                           "by the system's own process for now (make {} inproc)",
                                           pm.spec.path, g->spec.path, g->spec.path));
            }
        }
        journal_of[n->parent] = &pm;
        spec.journals.push_back(n->id);
    }
    for (const auto& pm : pending) {
        if (pm.spec.recovery != Recovery::journal) continue;
        const TopologyNode* n = spec.topology.find(pm.spec.path);
        if (journal_of.find(n->parent) == journal_of.end()) {
            return ld.fail(
                *pm.recover_node,
                fmt::format(
                    "module {} recovers from the journal, but its bus {} has "
                    "none: add a monitor module on it",
                    pm.spec.path,
                    n->parent == k_root_id ? "Bus 0" : spec.topology.find(n->parent)->path));
        }
        if (pm.spec.snapshot_every != 0 &&
            bus_spec(n->parent).max_payload < k_snapshot_chunk_header + 64) {
            return ld.fail(*pm.recover_node,
                           fmt::format("module {} takes snapshots, which travel in messages of at "
                                       "least {} bytes: its bus's max_payload is {}",
                                       pm.spec.path, k_snapshot_chunk_header + 64,
                                       bus_spec(n->parent).max_payload));
        }
    }

    for (auto& pm : pending) {
        pm.spec.id = spec.topology.find(pm.spec.path)->id;
        // Config keys that name modules must name modules of this system.
        for (const ConfigKey& k : pm.kind->config) {
            if (k.type != ConfigType::path || !pm.spec.config.has(k.name)) continue;
            const std::string& target = pm.spec.config.string(k.name);
            if (target.empty() && !k.required) continue;
            if (spec.topology.find(target) == nullptr) {
                const toml::node* n =
                    pm.config_table != nullptr ? pm.config_table->get(k.name) : nullptr;
                return ld.fail(n != nullptr ? *n : *pm.node,
                               fmt::format("'{}' names {}, which is not a module of this system",
                                           k.name, target));
            }
        }
        if (pm.kind->check) {
            const TopologyNode& self = *spec.topology.find(pm.spec.id);
            if (const std::string why = pm.kind->check(spec.topology, self, pm.spec.config);
                !why.empty())
                return ld.fail(*pm.node, fmt::format("module {}: {}", pm.spec.path, why));
        }
        spec.modules.push_back(std::move(pm.spec));
    }
    return spec;
}

}  // namespace

std::string ConfigError::to_string() const {
    if (where.line == 0) return fmt::format("{}: error: {}", where.file, message);
    return fmt::format("{}:{}:{}: error: {}", where.file, where.line, where.column, message);
}

Result<SystemSpec, ConfigError> parse_system(std::string_view text, const std::string& file_name,
                                             Registry& registry, Plugins plugins) {
    const Loader ld{file_name, registry, plugins};
    toml::table root;
    try {
        root = toml::parse(text, file_name);
    } catch (const toml::parse_error& e) {
        const auto& src = e.source();
        return Err{ConfigError{Where{file_name, static_cast<std::uint32_t>(src.begin.line),
                                     static_cast<std::uint32_t>(src.begin.column)},
                               std::string(e.description())}};
    }
    return build_spec(ld, root);
}

Result<SystemSpec, ConfigError> load_system_file(const std::string& path, Registry& registry) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return Err{ConfigError{Where{path, 0, 0}, "cannot open file"}};
    std::ostringstream text;
    text << in.rdbuf();
    return parse_system(text.str(), path, registry);
}

Result<ModuleConfig, std::string> carry_config(const ModuleConfig& config, const ModuleKind& kind) {
    ModuleConfig out;
    for (const ConfigKey& k : kind.config) {
        const auto it = config.values().find(k.name);
        bool fits = false;
        if (it != config.values().end()) {
            const ConfigValue& v = it->second;
            switch (k.type) {
                case ConfigType::integer:
                    fits = std::holds_alternative<std::int64_t>(v) &&
                           std::get<std::int64_t>(v) >= k.min && std::get<std::int64_t>(v) <= k.max;
                    break;
                case ConfigType::number:
                    fits = std::holds_alternative<double>(v);
                    break;
                case ConfigType::boolean:
                    fits = std::holds_alternative<bool>(v);
                    break;
                case ConfigType::string:
                case ConfigType::path:
                case ConfigType::file:
                    fits = std::holds_alternative<std::string>(v) &&
                           (k.choices.empty() ||
                            std::find(k.choices.begin(), k.choices.end(),
                                      std::get<std::string>(v)) != k.choices.end());
                    break;
            }
        }
        if (fits) {
            out.set(k.name, it->second);
        } else if (k.required) {
            return Err{
                fmt::format("kind '{}' needs config key '{}' ({}), which the module's "
                            "config has not{}",
                            kind.name, k.name, k.help,
                            it != config.values().end() ? " in the right form" : "")};
        } else {
            out.set(k.name, k.fallback);
        }
    }
    return out;
}

}  // namespace hmk
