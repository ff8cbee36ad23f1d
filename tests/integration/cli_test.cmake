# SPDX-License-Identifier: Apache-2.0
# Runs the hmk binary as a user would and checks exit codes and output.
# Inputs: HMK (the binary), SRC (source tree), OUT (scratch directory).
cmake_minimum_required(VERSION 3.25)
file(REMOVE_RECURSE ${OUT})
file(MAKE_DIRECTORY ${OUT})

include(${CMAKE_CURRENT_LIST_DIR}/hmk_cli.cmake)

set(FIG ${SRC}/examples/figure1/system.toml)

# --help on every command.
foreach(cmd "" check tree run kinds ctl journal)
    run_hmk(0 ${cmd} --help)
    require("${OUT_TEXT}" "Usage")
endforeach()
run_hmk(2 nosuchcommand)

# check: ok, and a bad file with FILE:LINE:COL and exit 2.
run_hmk(0 check ${FIG})
require("${OUT_TEXT}" "ok: system 'figure1', 23 modules, 5 buses")
file(WRITE ${OUT}/bad.toml "[[module]]\npath = \"/a\"\nkind = \"echo\"\n[[module]]\npath = \"/a/b\"\nkind = \"echo\"\n")
run_hmk(2 check ${OUT}/bad.toml)
require("${ERR_TEXT}" "${OUT}/bad.toml:5:8: error: module /a/b: its parent /a is not a gateway")
run_hmk(2 check ${OUT}/missing.toml)
require("${ERR_TEXT}" "missing.toml: error: cannot open file")

# tree: one line per module, indented by level, with kind, bus and isolation.
run_hmk(0 tree ${FIG})
require("${OUT_TEXT}" "/ [microkernel] id=1 level=0 owns Bus 0")
require("${OUT_TEXT}" "\n    app1 [kv] id=7 level=2 on /apps, owns bus /apps/app1 inproc")
require("${OUT_TEXT}" "\n      shard0 [kvshard] id=8 level=3 on /apps/app1 process")
require("${OUT_TEXT}" "\n  fs [fs] id=16 level=1 on Bus 0 process")
require("${OUT_TEXT}" "\n  block [blockdev] id=2 level=1 on Bus 0 process")

# run: the Figure-1 demo passes; a failing expectation exits 1 naming its line.
# Under ThreadSanitizer (5-15 times slower) its load of 5000 requests/s
# outruns the 2048-slot buses it crosses, which have no journal: their slow
# readers lose messages, as designed. There the copy below has 1000
# requests/s and four times the slots. (Every run uses a copy in the scratch
# directory, so that its journals and disk image land there, not in the
# source tree.)
file(READ ${FIG} text)
if(SANITIZE STREQUAL "thread")
    string(REPLACE "rate = 5000.0" "rate = 1000.0" text "${text}")
    string(REPLACE "capacity = 2048" "capacity = 8192" text "${text}")
endif()
file(MAKE_DIRECTORY ${OUT}/figure1)
file(WRITE ${OUT}/figure1/system.toml "${text}")
set(FIG_RUN ${OUT}/figure1/system.toml)
run_hmk(0 run ${FIG_RUN} --script ${SRC}/examples/figure1/demo.hmks --stats)
require("${OUT_TEXT}" "Bus 0")
require("${ERR_TEXT}" "reply from /apps/app1/worker: \"hello app1\" (ok)")
# The storage part: files and pairs through the shell, fsck clean after the crashes.
require("${OUT_TEXT}" "file             39  hello.txt")
require("${OUT_TEXT}" "user:grace = Grace Hopper")
require("${OUT_TEXT}" "clean: ")
require("${OUT_TEXT}" "[console] /apps/app2/ticker: tick from app2")
require("${OUT_TEXT}" "[console] /apps/app2/shell: hello from the shell")
require("${OUT_TEXT}" " UTC (kernel clock ")
file(WRITE ${OUT}/fail.hmks "send /apps/app1/worker data one\nexpect reply one\ntimeout 300\nsend /apps/app1/worker data two\nexpect reply three\n")
run_hmk(1 run ${FIG_RUN} --script ${OUT}/fail.hmks)
require("${ERR_TEXT}" "fail.hmks:5: expect failed: reply to / -> /apps/app1/worker was \"two\", wanted \"three\"")
file(WRITE ${OUT}/syntax.hmks "send /apps/app1/worker data one\nexpect sometimes\n")
run_hmk(2 run ${FIG_RUN} --script ${OUT}/syntax.hmks)
require("${ERR_TEXT}" "syntax.hmks:2:8: error: unknown expectation 'sometimes'")

# --explain-sandbox names the layers around each process module.
run_hmk(0 run ${FIG_RUN} --for 0.2 --explain-sandbox --log-level warn)
require("${OUT_TEXT}" "sandbox of /drivers/disk:")
require("${OUT_TEXT}" "seccomp allowlist")
require("${OUT_TEXT}" "quota: 10000 msg/s")
require("${OUT_TEXT}" "sandbox of /block:")
require("${OUT_TEXT}" "grant: read-write file ${OUT}/figure1/state/disk.img (made when missing)")
require("${OUT_TEXT}" "landlock: its grants only")

# Named from another directory (make run's way), a sandboxed module's files
# are still found relative to its system file: the block device makes its
# granted image there.
file(MAKE_DIRECTORY ${OUT}/rel)
file(WRITE ${OUT}/rel/system.toml "[[module]]\npath = \"/b\"\nkind = \"blockdev\"\nisolation = \"process\"\nrestart = \"permanent\"\nconfig = { image = \"state/disk.img\", blocks = 1024 }\ngrants = { file_key = \"image\", write = true, create = true }\n")
execute_process(COMMAND ${HMK} run rel/system.toml --for 0.3 --no-control --log-level warn
    WORKING_DIRECTORY ${OUT} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT ${HMK_TIMEOUT})
if(NOT rc EQUAL 0 OR NOT EXISTS ${OUT}/rel/state/disk.img)
    die("a sandboxed block device named from another directory: exit ${rc}\n${out}\n${err}")
endif()
file(SIZE ${OUT}/rel/state/disk.img image_size)
if(NOT image_size EQUAL 4194304)
    die("the granted image has ${image_size} bytes, wanted 1024 blocks of 4096")
endif()

# Grants are checked with the description, naming the file, line and reason.
file(WRITE ${OUT}/grant.toml "[[module]]\npath = \"/b\"\nkind = \"blockdev\"\nisolation = \"process\"\nconfig = { image = \"disk.img\" }\ngrants = { file = \"../disk.img\", write = true }\n")
run_hmk(2 check ${OUT}/grant.toml)
require("${ERR_TEXT}" "grant.toml:6:19: error: module /b: grant \"../disk.img\" is not inside the system's directory")
file(WRITE ${OUT}/grant.toml "[[module]]\npath = \"/b\"\nkind = \"blockdev\"\nisolation = \"process\"\nconfig = { image = \"disk.img\" }\ngrants = { file = \"disk.img\", write = true }\n")
run_hmk(2 check ${OUT}/grant.toml)
require("${ERR_TEXT}" "grant.toml:6:19: error: module /b: granted file ${OUT}/disk.img does not exist (add create = true")

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

# ctl: a running system answers hmk ctl on its socket: tree, a swap and a
# move under load, and clear errors (exit 1) or no system (exit 2).
# (A copy of Figure 1, so that its journal is its own.)
set(SOCK ${OUT}/ctl.sock)
file(COPY ${FIG_RUN} DESTINATION ${OUT}/ctl-fig)
# It runs until the checks are done and a SIGTERM stops it (--for only bounds
# a run the test left behind): a sanitizer build on a loaded machine may take
# minutes over what takes seconds elsewhere.
execute_process(COMMAND sh -c "'${HMK}' run '${OUT}/ctl-fig/system.toml' --for 900 --control '${SOCK}' --log-level info > '${OUT}/ctl-run.log' 2>&1 & echo $! > '${OUT}/ctl-run.pid'")
file(READ ${OUT}/ctl-run.pid CTL_PID)
string(STRIP "${CTL_PID}" CTL_PID)
foreach(i RANGE 2400)
    if(EXISTS ${SOCK})
        break()
    endif()
    execute_process(COMMAND sleep 0.05)
endforeach()
run_hmk(0 ctl --socket ${SOCK} tree)
require("${OUT_TEXT}" "19 counter          process")
run_hmk(0 ctl --socket ${SOCK} send /apps/app2/load start)
run_hmk(0 ctl --socket ${SOCK} swap /drivers/blocks --kind counter)
require("${OUT_TEXT}" "swapped")
run_hmk(0 ctl --socket ${SOCK} move /apps/app2 --to /drivers)
run_hmk(0 ctl --socket ${SOCK} move /apps/app1/worker --to /apps/app1 --isolation inproc)
run_hmk(0 ctl --socket ${SOCK} tree)
require("${OUT_TEXT}" "    app2/                          12 gateway")
require("${OUT_TEXT}" "      worker                       10 echo             inproc")
run_hmk(1 ctl --socket ${SOCK} move /apps/app2 --to /drivers)
require("${ERR_TEXT}" "no module /apps/app2")
run_hmk(1 ctl --socket ${SOCK} move /drivers --to /drivers/app2)
require("${ERR_TEXT}" "lies in /drivers's own subtree")
run_hmk(1 ctl --socket ${SOCK} swap /drivers/blocks --kind nonesuch)
require("${ERR_TEXT}" "no module kind 'nonesuch'")
# (A sanitizer build may take longer than the default 2 s for the 10k replies.)
run_hmk(0 ctl --socket ${SOCK} --timeout 60000 expect stat /drivers/app2/load rx >= 10001)
run_hmk(0 ctl --socket ${SOCK} send /drivers/app2/load stats)
require("${OUT_TEXT}" "replied=10000 outstanding=0 lost=0 dup=0 late=0 count_errors=0")
run_hmk(1 ctl --socket ${SOCK} --timeout 100 expect stat /drivers/app2/load rx >= 99999999)
require("${ERR_TEXT}" ", wanted >= 99999999")
# hmk shell on the running system, commands on stdin.
file(WRITE ${OUT}/shell.in "mkdir /cli\nwrite /cli/t.txt written by the cli test\ncat /cli/t.txt\nkv put cli:key its value\nkv get cli:key\nbuses\ntap / 50\njournal verify ${OUT}/ctl-fig/journal/drivers\n")
execute_process(COMMAND sh -c "'${HMK}' shell --socket '${SOCK}' < '${OUT}/shell.in'"
    RESULT_VARIABLE shell_rc OUTPUT_VARIABLE shell_out ERROR_VARIABLE shell_err)
if(NOT shell_rc EQUAL 0)
    die("hmk shell: exit ${shell_rc}\n${shell_out}\n${shell_err}")
endif()
require("${shell_out}" "written by the cli test")
require("${shell_out}" "its value")
require("${shell_out}" "Bus 0")
require("${shell_out}" " -> /fs fs ")
# (the system is running: its journal is checked as one being written)
require("${shell_out}" ": ok: ")
require("${shell_out}" "(in use by a running system: checked what it had written")
file(WRITE ${OUT}/shell-bad.in "bogus\n")
execute_process(COMMAND sh -c "'${HMK}' shell --socket '${SOCK}' < '${OUT}/shell-bad.in'"
    RESULT_VARIABLE shell_rc OUTPUT_VARIABLE shell_out ERROR_VARIABLE shell_err)
if(NOT shell_rc EQUAL 1)
    die("hmk shell with a bad command: exit ${shell_rc}, wanted 1")
endif()
require("${shell_out}${shell_err}" "unknown command 'bogus' (help)")
run_hmk(2 ctl --socket ${OUT}/nobody.sock tree)
execute_process(COMMAND kill -TERM ${CTL_PID})
foreach(i RANGE 2400)
    file(READ ${OUT}/ctl-run.log run_log)
    string(FIND "${run_log}" "hmk: stopped" stopped)
    if(NOT stopped EQUAL -1)
        break()
    endif()
    execute_process(COMMAND sleep 0.05)
endforeach()
require("${run_log}" "hmk: stopped")
require("${run_log}" "/drivers/blocks: swapped")

# mkfs and fsck: a clean image, a refusal to overwrite, a damaged bitmap
# (exit 1, naming the block) and a damaged superblock (exit 2).
file(REMOVE ${OUT}/disk.img)
run_hmk(0 mkfs ${OUT}/disk.img --size 8)
require("${OUT_TEXT}" "hmkfs, 2048 blocks of 4096 bytes (8 MiB)")
run_hmk(1 mkfs ${OUT}/disk.img)
require("${ERR_TEXT}" "holds an hmkfs file system already")
run_hmk(0 fsck ${OUT}/disk.img)
require("${OUT_TEXT}" "clean: 0 files, 1 directories")
# Block 600's bit in the first bitmap block (block 513): marked used, but free.
execute_process(COMMAND sh -c "printf '\\001' | dd of='${OUT}/disk.img' bs=1 seek=$((513 * 4096 + 75)) conv=notrunc 2>/dev/null")
run_hmk(1 fsck ${OUT}/disk.img)
require("${OUT_TEXT}" "block 600 is free but marked used in the bitmap")
execute_process(COMMAND sh -c "printf 'X' | dd of='${OUT}/disk.img' bs=1 seek=2 conv=notrunc 2>/dev/null")
run_hmk(2 fsck ${OUT}/disk.img)
require("${ERR_TEXT}" "not an hmkfs image, or damaged")
run_hmk(0 mkfs ${OUT}/disk.img --force)

# run --for: boots, runs, stops cleanly.
run_hmk(0 run ${FIG_RUN} --for 0.3 --log-level warn)
message(STATUS "cli: all checks passed")
