// SPDX-License-Identifier: Apache-2.0
// A system of standard modules booted from TOML text, for the benchmark
// programs (not the plugin): what it needs lives as long as it does.
#pragma once

#include <fmt/core.h>

#include <memory>
#include <string>

#include "hmk/runtime/config.hpp"
#include "hmk/runtime/system.hpp"

namespace hmk::bench {

struct BenchSystem {
    Registry registry;
    Logger logger{stderr, LogLevel::error};
    std::unique_ptr<System> system;
};

/// Parses, creates and starts; null (the reason on stderr) if any step fails.
inline std::unique_ptr<BenchSystem> boot(const std::string& toml, const char* file_name) {
    auto b = std::make_unique<BenchSystem>();
    register_standard_modules(b->registry);
    auto spec = parse_system(toml, file_name, b->registry);
    if (!spec) {
        fmt::print(stderr, "{}\n", spec.error().to_string());
        return nullptr;
    }
    auto system = System::create(*spec, b->registry, b->logger);
    if (!system) {
        fmt::print(stderr, "{}: {}\n", file_name, system.error());
        return nullptr;
    }
    b->system = std::move(system).value();
    if (auto started = b->system->start(); !started) {
        fmt::print(stderr, "{}: {}\n", file_name, started.error());
        return nullptr;
    }
    return b;
}

}  // namespace hmk::bench
