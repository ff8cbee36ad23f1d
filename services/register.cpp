// SPDX-License-Identifier: Apache-2.0
#include "hmk/services/services.hpp"

namespace hmk::services {

void register_service_modules(Registry& registry) {
    add_block_device(registry);
    add_disk_driver(registry);
    add_fs(registry);
    add_kv(registry);
}

}  // namespace hmk::services
