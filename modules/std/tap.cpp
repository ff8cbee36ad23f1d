// SPDX-License-Identifier: Apache-2.0
// `tap`: eavesdrops on its bus and prints every message, addressed to it or not.
#include <fmt/core.h>

#include <algorithm>
#include <vector>

#include "std_modules.hpp"

namespace hmk::std_modules {
namespace {

class Tap final : public Module {
  public:
    /// The types of a "block,fs" list; the reason if a word is not one.
    static Result<std::vector<std::uint32_t>, std::string> parse_skip(std::string_view list) {
        std::vector<std::uint32_t> skip;
        while (!list.empty()) {
            const std::size_t end = std::min(list.find(','), list.size());
            std::string_view word = list.substr(0, end);
            while (!word.empty() && word.front() == ' ') word.remove_prefix(1);
            while (!word.empty() && word.back() == ' ') word.remove_suffix(1);
            const auto type = msg::parse_type(word);
            if (!type)
                return Err{
                    fmt::format("unknown message type '{}' (a type name or number, as in "
                                "\"block,fs\")",
                                word)};
            skip.push_back(*type);
            list.remove_prefix(std::min(end + 1, list.size()));
        }
        return skip;
    }
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        auto skip = parse_skip(env.config().string("skip"));
        if (!skip) return Err{"skip: " + skip.error()};
        return std::unique_ptr<Module>(new Tap(env, std::move(skip).value()));
    }
    void on_message(const Message& m) override {
        const Header& h = m.header;
        if (std::find(m_skip.begin(), m_skip.end(), h.type) != m_skip.end()) return;
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
    Tap(Env& env, std::vector<std::uint32_t> skip) : m_env(env), m_skip(std::move(skip)) {}
    Env& m_env;
    std::vector<std::uint32_t> m_skip;
};

}  // namespace

void add_tap(Registry& registry) {
    registry.add<Tap>("tap", "prints every message seen on its bus, addressed to it or not",
                      Role::leaf,
                      {ConfigKey("skip", ConfigType::string, std::string(),
                                 "message types not printed, comma-separated (e.g. \"block,fs\")")
                           .check([](const std::string& list) {
                               auto skip = Tap::parse_skip(list);
                               return skip ? std::string() : skip.error();
                           })},
                      Eavesdrop::yes);
}

}  // namespace hmk::std_modules
