# SPDX-License-Identifier: Apache-2.0
# Helpers of the scripts that run the hmk binary as a user would
# (cli_test.cmake, inject_test.cmake): HMK is the binary; HMK_TIMEOUT, in
# seconds, bounds each run (default 120).
if(NOT DEFINED HMK_TIMEOUT)
    set(HMK_TIMEOUT 120)
endif()

# Fails the test; a system the test left running in the background goes too.
function(die text)
    if(DEFINED CTL_PID)
        execute_process(COMMAND kill -KILL ${CTL_PID})
    endif()
    message(FATAL_ERROR "${text}")
endfunction()

function(run_hmk expected_rc)
    execute_process(COMMAND ${HMK} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT ${HMK_TIMEOUT})
    if(NOT rc STREQUAL "${expected_rc}")
        die("hmk ${ARGN}: exit ${rc}, wanted ${expected_rc}\nstdout:\n${out}\nstderr:\n${err}")
    endif()
    set(OUT_TEXT "${out}" PARENT_SCOPE)
    set(ERR_TEXT "${err}" PARENT_SCOPE)
endfunction()

function(require text pattern)
    string(FIND "${text}" "${pattern}" at)
    if(at EQUAL -1)
        die("expected to find '${pattern}' in:\n${text}")
    endif()
endfunction()
