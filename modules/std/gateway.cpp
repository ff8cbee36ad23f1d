// SPDX-License-Identifier: Apache-2.0
// `gateway`: owns a child bus and forwards along the tree; nothing else.
#include "std_modules.hpp"

namespace hmk::std_modules {
namespace {

class Gateway final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        return std::unique_ptr<Module>(new Gateway(env));
    }
    void on_message(const Message& /*message*/) override {}

  private:
    explicit Gateway(Env& env) : m_env(env) {}
    [[maybe_unused]] Env& m_env;
};

}  // namespace

void add_gateway(Registry& registry) {
    registry.add<Gateway>("gateway",
                          "owns a child bus and forwards messages along the tree (no translation)",
                          Role::gateway, {});
}

}  // namespace hmk::std_modules
