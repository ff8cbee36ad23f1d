// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <string>
#include <string_view>

#include "hmk/result.hpp"
#include "hmk/runtime/module.hpp"
#include "hmk/runtime/system_spec.hpp"

namespace hmk {

/// A problem in a system description, with where it is.
struct ConfigError {
    SourceLocation where;
    std::string message;

    /// "FILE:LINE:COL: error: message", the form compilers use.
    std::string to_string() const;
};

/// Reads and checks a system description (docs/system-toml.md), loading the
/// plugins it names into `registry`. Every module's
/// kind must be in `registry` and its config must match the kind's schema.
/// Nothing is started; the first problem found is returned.
Result<SystemSpec, ConfigError> load_system_file(const std::string& path, Registry& registry);

/// Whether plugins named in `[system] plugins` are loaded into the registry
/// while parsing (a module host loads them itself beforehand).
enum class Plugins : std::uint8_t { load, already_loaded };

/// The same, from text; `file_name` is used in error locations.
Result<SystemSpec, ConfigError> parse_system(std::string_view text, const std::string& file_name,
                                             Registry& registry, Plugins plugins = Plugins::load);

/// A module's config carried over to another kind (a swap, docs/swap.md):
/// each key of `kind` keeps its value if `config` has one of the right type
/// within the key's limits, and gets its default otherwise; keys `kind`
/// does not take are dropped. Error: a required key without a value.
Result<ModuleConfig, std::string> carry_config(const ModuleConfig& config, const ModuleKind& kind);

}  // namespace hmk
