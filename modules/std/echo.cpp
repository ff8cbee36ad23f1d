// SPDX-License-Identifier: Apache-2.0
// `echo`: replies to every message addressed to it with the same payload.
#include "std_modules.hpp"

namespace hmk::std_modules {
namespace {

class Echo final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        return std::unique_ptr<Module>(new Echo(env));
    }
    void on_message(const Message& m) override {
        // Only requests addressed to us: broadcasts and replies would echo forever.
        if (m.header.destination != m_env.id() || m.header.is_reply()) return;
        if (auto r = m_env.reply(m, m.payload); !r) {
            m_env.log(LogLevel::warn, std::string("cannot reply: ") + to_string(r.error()));
        }
    }

  private:
    explicit Echo(Env& env) : m_env(env) {}
    Env& m_env;
};

}  // namespace

void add_echo(Registry& registry) {
    registry.add<Echo>("echo", "replies to each message addressed to it with its payload",
                       Role::leaf, {});
}

}  // namespace hmk::std_modules
