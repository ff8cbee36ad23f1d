// SPDX-License-Identifier: Apache-2.0
// The standard module kinds as a plugin (see Registry::load_plugin).
#include "hmk/runtime/module.hpp"

extern "C" void hmk_register_modules(hmk::Registry& registry) {
    hmk::register_standard_modules(registry);
}
