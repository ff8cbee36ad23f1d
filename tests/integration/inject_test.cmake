# SPDX-License-Identifier: Apache-2.0
# The short fault-injection campaign of `make test` (docs/inject.md): hmk
# inject over a copy of Figure 1 must report no escape; and its bad input.
# Inputs: HMK (the binary), SRC (source tree), OUT (scratch directory),
# SANITIZE (a sanitizer build is slower: more time to settle), FAULTS.
cmake_minimum_required(VERSION 3.25)
file(REMOVE_RECURSE ${OUT})
file(MAKE_DIRECTORY ${OUT})

set(HMK_TIMEOUT 1200)
include(${CMAKE_CURRENT_LIST_DIR}/hmk_cli.cmake)

# Bad input: exit 2, with the reason.
run_hmk(2 inject ${OUT}/missing.toml)
require("${ERR_TEXT}" "missing.toml")
run_hmk(2 inject ${SRC}/examples/figure1/system.toml --classes crash,typo)
require("${ERR_TEXT}" "unknown fault class 'typo'")
# A system that passes the check but cannot boot: its journal directory is a file.
file(WRITE ${OUT}/noboot/journal "not a directory\n")
file(WRITE ${OUT}/noboot/system.toml "[[module]]\npath = \"/g\"\nkind = \"gateway\"\n[[module]]\npath = \"/g/mon\"\nkind = \"monitor\"\nconfig = { dir = \"journal\" }\n")
run_hmk(2 inject ${OUT}/noboot/system.toml)
require("${ERR_TEXT}" "does not boot")

# The campaign, on a copy (its journals and disk image land in the scratch
# directory). Under TSan Figure 1's load is lightened as in the cli test.
file(READ ${SRC}/examples/figure1/system.toml text)
set(settle 5000)
if(SANITIZE)
    set(settle 30000)
endif()
if(SANITIZE STREQUAL "thread")
    string(REPLACE "rate = 5000.0" "rate = 1000.0" text "${text}")
    string(REPLACE "capacity = 2048" "capacity = 8192" text "${text}")
endif()
file(MAKE_DIRECTORY ${OUT}/figure1)
file(WRITE ${OUT}/figure1/system.toml "${text}")
run_hmk(0 inject ${OUT}/figure1/system.toml --seed 1 --faults ${FAULTS} --settle-ms ${settle}
        --json --log ${OUT}/campaign.log)
require("${OUT_TEXT}" "\"escapes\": 0,")
require("${OUT_TEXT}" "\"faults\": ${FAULTS},")
