// SPDX-License-Identifier: Apache-2.0
#include "hmk/runtime/module.hpp"

#include <dlfcn.h>

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
        case SendError::full:
            return "no room: the parent is behind or throttling this module, or the bus waits for "
                   "a slow reader or its journal";
    }
    return "send error";
}

Header header_for(ModuleId sender, const Outgoing& out) {
    Header h;
    h.sender = sender;
    h.destination = out.destination;
    h.scope = out.scope;
    h.type = out.type;
    h.correlation = out.correlation;
    h.flags = static_cast<std::uint16_t>(out.flags & k_known_flags);
    h.payload_size = static_cast<std::uint32_t>(out.payload.size());
    return h;
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
    if (kind.version == 0 || find(kind.name, kind.version) != nullptr) return false;
    m_kinds.push_back(std::move(kind));
    return true;
}

const ModuleKind* Registry::find(std::string_view name) const {
    return find(name, 0);
}

const ModuleKind* Registry::find(std::string_view name, std::uint32_t version) const {
    const ModuleKind* best = nullptr;
    for (const ModuleKind& k : m_kinds) {
        if (k.name != name) continue;
        if (version != 0 ? k.version == version : (best == nullptr || k.version > best->version))
            best = &k;
    }
    return best;
}

std::vector<std::uint32_t> Registry::versions(std::string_view name) const {
    std::vector<std::uint32_t> out;
    for (const ModuleKind& k : m_kinds) {
        if (k.name == name) out.push_back(k.version);
    }
    std::sort(out.begin(), out.end());
    return out;
}

Result<void, std::string> Registry::load_plugin(const std::string& file) {
    if (std::find(m_plugins.begin(), m_plugins.end(), file) != m_plugins.end()) return {};
    // The handle is kept for the life of the process: kinds point into it.
    void* handle = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) return Err{std::string("cannot load plugin: ") + dlerror()};
    auto* fn = reinterpret_cast<RegisterModulesFn*>(dlsym(handle, k_register_symbol));
    if (fn == nullptr)
        return Err{file + ": no symbol " + k_register_symbol + " (not an hmk plugin)"};
    fn(*this);
    m_plugins.push_back(file);
    return {};
}

std::vector<std::string> Registry::names() const {
    std::vector<std::string> out;
    for (const auto& k : m_kinds) out.push_back(k.name);
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

}  // namespace hmk
