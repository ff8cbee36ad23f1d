# SPDX-License-Identifier: Apache-2.0
# Warnings and sanitizers shared by every hmk target: call hmk_target_options(target).

add_library(hmk_options INTERFACE)
# (-Wnull-dereference is left out: GCC 12 reports false positives inside std::variant at -O2.)
target_compile_options(hmk_options INTERFACE
    -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion
    -Wnon-virtual-dtor -Wold-style-cast -Wcast-align -Woverloaded-virtual
    -Wdouble-promotion -Wformat=2 -Wimplicit-fallthrough)
if(HMK_WERROR)
    target_compile_options(hmk_options INTERFACE -Werror)
endif()

if(HMK_SANITIZE STREQUAL "address")
    target_compile_options(hmk_options INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer
                                                 -fno-sanitize-recover=undefined)
    target_link_options(hmk_options INTERFACE -fsanitize=address,undefined)
elseif(HMK_SANITIZE STREQUAL "thread")
    target_compile_options(hmk_options INTERFACE -fsanitize=thread -fno-omit-frame-pointer)
    target_link_options(hmk_options INTERFACE -fsanitize=thread)
elseif(NOT HMK_SANITIZE STREQUAL "")
    message(FATAL_ERROR "HMK_SANITIZE must be address, thread or empty, not '${HMK_SANITIZE}'")
endif()
