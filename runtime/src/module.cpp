// SPDX-License-Identifier: Apache-2.0
#include "hmk/runtime/module.hpp"

#include <algorithm>

namespace hmk {

const char* to_string(SendError error) {
    switch (error) {
        case SendError::payload_too_large:
            return "payload larger than the bus allows";
        case SendError::unknown_destination:
            return "no such destination module";
        case SendError::no_child_bus:
            return "only a gateway has a child bus";
        case SendError::rejected:
            return "rejected by the bus owner";
        case SendError::stopped:
            return "system is stopping";
    }
    return "send error";
}

Result<void, SendError> Env::reply(const Message& request, std::span<const std::byte> payload,
                                   std::uint16_t extra_flags) {
    Outgoing out;
    out.destination = request.header.sender;
    out.type = request.header.type;
    out.correlation = request.header.correlation;
    out.flags = static_cast<std::uint16_t>(k_flag_reply | extra_flags);
    out.payload = payload;
    return send(out);
}

bool Registry::add(ModuleKind kind) {
    if (find(kind.name) != nullptr) return false;
    m_kinds.push_back(std::move(kind));
    return true;
}

const ModuleKind* Registry::find(std::string_view name) const {
    const auto it = std::find_if(m_kinds.begin(), m_kinds.end(),
                                 [&](const ModuleKind& k) { return k.name == name; });
    return it == m_kinds.end() ? nullptr : &*it;
}

std::vector<std::string> Registry::names() const {
    std::vector<std::string> out;
    for (const auto& k : m_kinds) out.push_back(k.name);
    std::sort(out.begin(), out.end());
    return out;
}

}  // namespace hmk
