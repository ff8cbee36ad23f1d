// SPDX-License-Identifier: Apache-2.0
// `tap`: eavesdrops on its bus and prints every message, addressed to it or not.
#include <fmt/core.h>

#include "std_modules.hpp"

namespace hmk::std_modules {
namespace {

class Tap final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        return std::unique_ptr<Module>(new Tap(env));
    }
    void on_message(const Message& m) override {
        const Header& h = m.header;
        const Topology& t = m_env.topology();
        auto name = [&](ModuleId id) -> std::string {
            const TopologyNode* n = t.find(id);
            return n != nullptr ? n->path : fmt::format("#{}", id);
        };
        const std::string_view tn = msg::type_name(h.type);
        const std::string type = tn.empty() ? fmt::format("{:#x}", h.type) : std::string(tn);
        const std::string to =
            h.is_broadcast() ? fmt::format("*({})", to_string(h.scope)) : name(h.destination);
        m_env.print(fmt::format("[tap {}] bus={} seq={} {} -> {} {}{} {}", m_env.path(),
                                h.bus == k_root_id ? "Bus0" : name(h.bus), h.seq, name(h.sender),
                                to, type, h.is_reply() ? " reply" : "", show_payload(m.payload)));
    }

  private:
    explicit Tap(Env& env) : m_env(env) {}
    Env& m_env;
};

}  // namespace

void add_tap(Registry& registry) {
    registry.add<Tap>("tap", "prints every message seen on its bus, addressed to it or not",
                      Role::leaf, {}, Eavesdrop::yes);
}

}  // namespace hmk::std_modules
