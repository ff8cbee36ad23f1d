// SPDX-License-Identifier: Apache-2.0
// The OS services' module kinds (docs/services.md).
#pragma once

#include "hmk/runtime/module.hpp"

namespace hmk::services {

/// `blockdev`: the kernel's block device on an image file.
void add_block_device(Registry& registry);
/// `disk`: the disk driver, queueing its clients' block requests to the device.
void add_disk_driver(Registry& registry);
/// `fs`: hmkfs on the disk driver.
void add_fs(Registry& registry);

/// `kv` (the store's gateway) and `kvshard`.
void add_kv(Registry& registry);

/// `shell`: the shell service (a command line in, text out).
void add_shell(Registry& registry);

/// `logsink`: the kernel's log file.
void add_log_sink(Registry& registry);

/// `console` (the kernel's) and `consoledrv` (the console driver).
void add_console(Registry& registry);
/// `clock`: the kernel's clock and alarms.
void add_clock(Registry& registry);

/// Every service kind.
void register_service_modules(Registry& registry);

}  // namespace hmk::services
