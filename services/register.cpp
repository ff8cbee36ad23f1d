// SPDX-License-Identifier: Apache-2.0
#include "hmk/services/services.hpp"

namespace hmk::services {

void register_service_modules(Registry& registry) {
    add_block_device(registry);
    add_disk_driver(registry);
    add_fs(registry);
    add_kv(registry);
    add_shell(registry);
    add_log_sink(registry);
    add_console(registry);
    add_clock(registry);
}

}  // namespace hmk::services
