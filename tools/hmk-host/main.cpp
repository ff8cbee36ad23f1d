// SPDX-License-Identifier: Apache-2.0
// hmk-host: runs one module in a sandboxed process of its own. Started by the
// module's parent, never by hand (it expects its shared memory on fds 3-6).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "hmk/runtime/module_host.hpp"

int main(int argc, char** argv) {
    hmk::HostOptions o;
    CLI::App app{
        "hmk-host: runs one hmk module in a sandboxed process of its own.\n"
        "Started by the module's parent, which hands it the bus ring, the uplink region,\n"
        "an eventfd and the system description on fds 3, 4, 5 and 6."};
    app.add_option("--module", o.module, "path of the module to run")->required();
    app.add_option("--plugin", o.plugins, "shared object with module kinds (repeatable)")
        ->required();
    app.add_option("--from-seq", o.from_seq, "first bus sequence number to read");
    app.add_option("--text-size", o.text_size, "bytes of the system description on fd 6")
        ->required();
    app.add_option("--log-level", o.log_level, "debug, info, warn or error");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    }
    const int rc = hmk::run_module_host(o);
    // The process is done: no destructors, no exit handlers. (A sanitizer's
    // exit-time leak check would need system calls the sandbox forbids.)
    std::fflush(nullptr);
    _exit(rc);
}
