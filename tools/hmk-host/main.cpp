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
        "an eventfd, the system description and its journal feed on fds 3 to 7, and\n"
        "a snapshot to restore on fd 8 (with --snapshot-size)."};
    app.add_option("--module", o.module, "path of the module to run")->required();
    app.add_option("--plugin", o.plugins, "shared object with module kinds (repeatable)")
        ->required();
    app.add_option("--from-seq", o.from_seq, "first bus sequence number to read");
    app.add_option("--text-size", o.text_size, "bytes of the system description on fd 6")
        ->required();
    app.add_option("--log-level", o.log_level, "debug, info, warn or error");
    app.add_option("--epoch", o.epoch, "number of this instance of the module");
    app.add_option("--seed", o.seed, "seed of the module's randomness");
    app.add_option("--suppress", o.suppress,
                   "its first N messages are on the bus already (recovery)");
    app.add_option("--live-at", o.live_at, "timers and snapshots resume after this seq (recovery)");
    app.add_option("--start-ns", o.start_ns, "the time on_start sees");
    app.add_option("--snapshot-size", o.snapshot_size, "bytes of the snapshot on fd 8 to restore");
    app.add_option("--state-version", o.state_version, "state format of that snapshot");
    app.add_option("--handoff", o.handoff, "take over from the running instance (handoff id)");
    app.add_flag("--handoff-move", o.handoff_move, "the handoff is a move to another bus");
    app.add_option("--min-generation", o.min_generation,
                   "a move: parent-bus messages of older routing generations are not ours");
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
