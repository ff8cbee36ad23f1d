// SPDX-License-Identifier: Apache-2.0
#include "hmk/runtime/module_config.hpp"

#include <cstdio>
#include <cstdlib>

namespace hmk {

const char* to_string(ConfigType type) {
    switch (type) {
        case ConfigType::integer:
            return "integer";
        case ConfigType::number:
            return "number";
        case ConfigType::boolean:
            return "boolean";
        case ConfigType::string:
            return "string";
        case ConfigType::path:
            return "module path";
        case ConfigType::file:
            return "file";
    }
    return "?";
}

const ConfigValue& ModuleConfig::at(std::string_view key) const {
    const auto it = m_values.find(key);
    if (it == m_values.end()) {
        // A kind reads only keys its schema declares, and the loader fills every
        // declared key, so this is a bug in the module kind, not bad input.
        std::fprintf(stderr, "hmk: module reads config key '%.*s' its schema does not declare\n",
                     static_cast<int>(key.size()), key.data());
        std::abort();
    }
    return it->second;
}

std::int64_t ModuleConfig::integer(std::string_view key) const {
    return std::get<std::int64_t>(at(key));
}
double ModuleConfig::number(std::string_view key) const {
    const ConfigValue& v = at(key);
    if (const auto* i = std::get_if<std::int64_t>(&v)) return static_cast<double>(*i);
    return std::get<double>(v);
}
bool ModuleConfig::boolean(std::string_view key) const {
    return std::get<bool>(at(key));
}
const std::string& ModuleConfig::string(std::string_view key) const {
    return std::get<std::string>(at(key));
}

}  // namespace hmk
