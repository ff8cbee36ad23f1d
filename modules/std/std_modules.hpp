// SPDX-License-Identifier: Apache-2.0
#pragma once

#include "hmk/runtime/module.hpp"

namespace hmk::std_modules {

void add_gateway(Registry& registry);
void add_echo(Registry& registry);
void add_sink(Registry& registry);
void add_source(Registry& registry);
void add_tap(Registry& registry);
void add_monitor(Registry& registry);
void add_counter(Registry& registry);
void add_prober(Registry& registry);

/// Parses a scope name ("bus", "subtree", "up", "system").
std::optional<Scope> parse_scope(std::string_view text);

/// A printable rendering of a payload: text in quotes if printable, else hex.
std::string show_payload(std::span<const std::byte> payload, std::size_t limit = 64);

}  // namespace hmk::std_modules
