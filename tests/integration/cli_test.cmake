# SPDX-License-Identifier: Apache-2.0
# Runs the hmk binary as a user would and checks exit codes and output.
# Inputs: HMK (the binary), SRC (source tree), OUT (scratch directory).
cmake_minimum_required(VERSION 3.25)
file(REMOVE_RECURSE ${OUT})
file(MAKE_DIRECTORY ${OUT})

function(run_hmk expected_rc)
    execute_process(COMMAND ${HMK} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 60)
    if(NOT rc STREQUAL "${expected_rc}")
        message(FATAL_ERROR "hmk ${ARGN}: exit ${rc}, wanted ${expected_rc}\nstdout:\n${out}\nstderr:\n${err}")
    endif()
    set(OUT_TEXT "${out}" PARENT_SCOPE)
    set(ERR_TEXT "${err}" PARENT_SCOPE)
endfunction()

function(require text pattern)
    string(FIND "${text}" "${pattern}" at)
    if(at EQUAL -1)
        message(FATAL_ERROR "expected to find '${pattern}' in:\n${text}")
    endif()
endfunction()

set(FIG ${SRC}/examples/figure1/system.toml)

# --help on every command.
foreach(cmd "" check tree run kinds)
    run_hmk(0 ${cmd} --help)
    require("${OUT_TEXT}" "Usage")
endforeach()
run_hmk(2 nosuchcommand)

# check: ok, and a bad file with FILE:LINE:COL and exit 2.
run_hmk(0 check ${FIG})
require("${OUT_TEXT}" "ok: system 'figure1', 15 modules, 5 buses")
file(WRITE ${OUT}/bad.toml "[[module]]\npath = \"/a\"\nkind = \"echo\"\n[[module]]\npath = \"/a/b\"\nkind = \"echo\"\n")
run_hmk(2 check ${OUT}/bad.toml)
require("${ERR_TEXT}" "${OUT}/bad.toml:5:8: error: module /a/b: its parent /a is not a gateway")
run_hmk(2 check ${OUT}/missing.toml)
require("${ERR_TEXT}" "missing.toml: error: cannot open file")

# tree: one line per module, indented by level, with kind, bus and isolation.
run_hmk(0 tree ${FIG})
require("${OUT_TEXT}" "/ [microkernel] id=1 level=0 owns Bus 0")
require("${OUT_TEXT}" "\n    app1 [gateway] id=3 level=2 on /apps, owns bus /apps/app1 inproc")
require("${OUT_TEXT}" "\n      worker [echo] id=4 level=3 on /apps/app1 process")
require("${OUT_TEXT}" "\n  fs [echo] id=9 level=1 on Bus 0 inproc")

# run: the Figure-1 demo passes; a failing expectation exits 1 naming its line.
run_hmk(0 run ${FIG} --script ${SRC}/examples/figure1/demo.hmks --stats)
require("${OUT_TEXT}" "Bus 0")
require("${ERR_TEXT}" "reply from /apps/app1/worker: \"hello app1\" (ok)")
file(WRITE ${OUT}/fail.hmks "send /fs data one\nexpect reply one\ntimeout 300\nsend /fs data two\nexpect reply three\n")
run_hmk(1 run ${FIG} --script ${OUT}/fail.hmks)
require("${ERR_TEXT}" "fail.hmks:5: expect failed: reply to / -> /fs was \"two\", wanted \"three\"")
file(WRITE ${OUT}/syntax.hmks "send /fs data one\nexpect sometimes\n")
run_hmk(2 run ${FIG} --script ${OUT}/syntax.hmks)
require("${ERR_TEXT}" "syntax.hmks:2:8: error: unknown expectation 'sometimes'")

# --explain-sandbox names the layers around each process module.
run_hmk(0 run ${FIG} --for 0.2 --explain-sandbox --log-level warn)
require("${OUT_TEXT}" "sandbox of /drivers/disk:")
require("${OUT_TEXT}" "seccomp allowlist")
require("${OUT_TEXT}" "quota: 10000 msg/s")

# journal: a monitor journals a bus; verify, dump, stats; damage is named.
file(WRITE ${OUT}/journal.toml "[[module]]\npath = \"/g\"\nkind = \"gateway\"\n[[module]]\npath = \"/g/src\"\nkind = \"source\"\nconfig = { to = \"/g/sink\", count = 50, rate = 0 }\n[[module]]\npath = \"/g/sink\"\nkind = \"sink\"\n[[module]]\npath = \"/g/mon\"\nkind = \"monitor\"\nconfig = { dir = \"${OUT}/jr\", fsync = \"always\" }\n")
run_hmk(0 run ${OUT}/journal.toml --for 0.3 --log-level warn)
# 50 data messages, and the parent's 'started' events of the source and the sink.
run_hmk(0 journal verify ${OUT}/jr)
require("${OUT_TEXT}" "ok: 52 records in 1 segments, seq 1..52")
run_hmk(0 journal dump ${OUT}/jr --from 3 --to 3)
require("${OUT_TEXT}" "seq=3 ")
require("${OUT_TEXT}" "type=data")
run_hmk(0 journal dump ${OUT}/jr --from 1 --to 1)
require("${OUT_TEXT}" "type=lifecycle")
run_hmk(0 journal stats ${OUT}/jr)
require("${OUT_TEXT}" "records  52")
require("${OUT_TEXT}" "type lifecycle 2")
file(GLOB segs ${OUT}/jr/seg-*.hmkj)
file(SIZE ${segs} seg_size)
math(EXPR cut "${seg_size} - 5")
execute_process(COMMAND truncate -s ${cut} ${segs})   # a torn last record
run_hmk(1 journal verify ${OUT}/jr)
require("${ERR_TEXT}" "record truncated (expected seq 52); valid up to seq 51")
require("${OUT_TEXT}" "BAD: 51 records")
run_hmk(2 journal nosuch ${OUT}/jr)
run_hmk(1 journal verify ${OUT}/missing-dir)
require("${ERR_TEXT}" "cannot open journal directory")

# recovery: a sandboxed counter killed from a script comes back with its counts.
file(WRITE ${OUT}/rec.toml "[[module]]\npath = \"/g\"\nkind = \"gateway\"\nsupervisor = { backoff_ms = 1 }\n[[module]]\npath = \"/g/mon\"\nkind = \"monitor\"\nconfig = { dir = \"${OUT}/rj\", fsync = \"none\" }\n[[module]]\npath = \"/g/src\"\nkind = \"source\"\nconfig = { to = \"/g/count\", count = 100, rate = 0 }\n[[module]]\npath = \"/g/count\"\nkind = \"counter\"\nisolation = \"process\"\nrestart = \"permanent\"\nrecover = \"journal\"\nsnapshot_every = 30\n")
file(WRITE ${OUT}/rec.hmks "expect stat /g/count rx >= 100\nkill /g/count\nexpect stat /g/count restarts == 1\nexpect state /g/count running\nsend /g/count stats\nexpect reply~ \"total=100 senders=1\"\nsnapshot /g/count\nexpect stat /g/count snapshots == 1\n")
run_hmk(0 run ${OUT}/rec.toml --script ${OUT}/rec.hmks)
require("${ERR_TEXT}" "killed /g/count")
require("${ERR_TEXT}" "recovering from snapshot at seq")
require("${ERR_TEXT}" "reply from /g/count: \"total=100 senders=1 /g/src=100\" (ok)")
run_hmk(0 journal snapshots ${OUT}/rj)
require("${OUT_TEXT}" "state_version=1 ok")
run_hmk(0 journal dump ${OUT}/rj --from 1 --to 2)
require("${OUT_TEXT}" "[started module=")
require("${OUT_TEXT}" "epoch=1 from=1 seed=")
file(WRITE ${OUT}/badkill.hmks "kill /\n")
run_hmk(2 run ${OUT}/rec.toml --script ${OUT}/badkill.hmks)
require("${ERR_TEXT}" "badkill.hmks:1:6: error: the microkernel cannot be killed")

# run --for: boots, runs, stops cleanly.
run_hmk(0 run ${FIG} --for 0.3 --log-level warn)
message(STATUS "cli: all checks passed")
