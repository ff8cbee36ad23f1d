// SPDX-License-Identifier: Apache-2.0
#include <fmt/core.h>

#include "hmk/services/services.hpp"
#include "std_modules.hpp"

namespace hmk {

void register_standard_modules(Registry& registry) {
    std_modules::add_gateway(registry);
    std_modules::add_echo(registry);
    std_modules::add_sink(registry);
    std_modules::add_source(registry);
    std_modules::add_tap(registry);
    std_modules::add_monitor(registry);
    std_modules::add_counter(registry);
    std_modules::add_prober(registry);
    services::register_service_modules(registry);
}

namespace std_modules {

std::optional<Scope> parse_scope(std::string_view text) {
    if (text == "bus") return Scope::bus;
    if (text == "subtree") return Scope::subtree;
    if (text == "up") return Scope::up;
    if (text == "system") return Scope::system;
    return std::nullopt;
}

std::string show_payload(std::span<const std::byte> payload, std::size_t limit) {
    bool printable = true;
    for (std::byte b : payload) {
        const auto c = static_cast<unsigned char>(b);
        if (c < 0x20 || c > 0x7e) printable = false;
    }
    const std::size_t n = std::min(payload.size(), limit);
    std::string out;
    if (printable) {
        out = "\"" + std::string(reinterpret_cast<const char*>(payload.data()), n) + "\"";
    } else {
        out = "hex:";
        for (std::size_t i = 0; i < n; ++i)
            out += fmt::format("{:02x}", static_cast<unsigned>(payload[i]));
    }
    if (payload.size() > limit) out += fmt::format("...(+{} bytes)", payload.size() - limit);
    return out;
}

}  // namespace std_modules
}  // namespace hmk
