// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace hmk {

/// Types a module's config key may have. `path` is a string that must name a
/// module of the same system (checked when the system is loaded). `file` is a
/// file-system path; a relative one is taken relative to the system file.
enum class ConfigType : std::uint8_t { integer, number, boolean, string, path, file };
const char* to_string(ConfigType type);

using ConfigValue = std::variant<std::int64_t, double, bool, std::string>;

/// One key a module kind accepts in its `config` table. Build with the
/// constructor and refine: ConfigKey("count", ConfigType::integer, 10, "...").range(0, 100).
struct ConfigKey {
    ConfigKey(std::string key, ConfigType key_type, ConfigValue default_value, std::string text)
        : name(std::move(key)),
          type(key_type),
          fallback(std::move(default_value)),
          help(std::move(text)) {}
    ConfigKey& require() {
        required = true;
        return *this;
    }
    ConfigKey& range(std::int64_t lo, std::int64_t hi) {
        min = lo;
        max = hi;
        return *this;
    }
    ConfigKey& one_of(std::vector<std::string> values) {
        choices = std::move(values);
        return *this;
    }
    /// For strings: `fn(value)` is empty if the value is good, else why not
    /// (reported as "'KEY': WHY" at the value).
    ConfigKey& check(std::function<std::string(const std::string&)> fn) {
        validate = std::move(fn);
        return *this;
    }

    std::string name;
    ConfigType type;
    ConfigValue fallback;  ///< used when the key is absent (ignored if required)
    std::string help;
    bool required = false;
    std::int64_t min = INT64_MIN;  ///< for integers
    std::int64_t max = INT64_MAX;
    std::vector<std::string> choices;  ///< for strings: allowed values, empty = any
    std::function<std::string(const std::string&)> validate;  ///< for strings (check())
};

/// A module's checked configuration: every key of its kind's schema is present
/// with the declared type (absent keys hold their fallback). Read-only at run time.
class ModuleConfig {
  public:
    std::int64_t integer(std::string_view key) const;
    double number(std::string_view key) const;
    bool boolean(std::string_view key) const;
    const std::string& string(std::string_view key) const;
    bool has(std::string_view key) const { return m_values.find(key) != m_values.end(); }

    void set(std::string key, ConfigValue value) {
        m_values.insert_or_assign(std::move(key), std::move(value));
    }
    const std::map<std::string, ConfigValue, std::less<>>& values() const { return m_values; }

  private:
    const ConfigValue& at(std::string_view key) const;
    std::map<std::string, ConfigValue, std::less<>> m_values;
};

}  // namespace hmk
