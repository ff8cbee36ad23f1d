// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "hmk/result.hpp"

namespace hmk::detail {

/// xoshiro256** (Blackman and Vigna): small state (32 bytes, so it fits in a
/// snapshot), fast, and good enough for modules' randomness.
class Xoshiro {
  public:
    explicit Xoshiro(std::uint64_t seed = 0) { reseed(seed); }
    /// Fills the state from `seed` with splitmix64, as the authors recommend.
    void reseed(std::uint64_t seed);
    std::uint64_t operator()();
    const std::array<std::uint64_t, 4>& state() const { return m_s; }
    void set_state(const std::array<std::uint64_t, 4>& s) { m_s = s; }

  private:
    std::array<std::uint64_t, 4> m_s{};
};

/// One timer of a module, as the runtime keeps it.
struct TimerState {
    std::uint64_t id = 0;
    std::uint64_t period_ns = 0;  ///< 0: once
    std::uint64_t delay_ns = 0;
    std::uint64_t deadline_ns = 0;
    bool in_flight = false;  ///< fired; its `timer` message is on the way
};

/// The runtime's part of a module snapshot, ahead of the module's own state
/// (docs/recovery.md, "Snapshot body").
struct Envelope {
    std::array<std::uint64_t, 4> random{};
    std::uint64_t next_timer = 1;
    std::uint64_t correlation = 0;
    std::uint64_t handled = 0;
    std::vector<TimerState> timers;
};

/// Body = envelope followed by `state`.
std::vector<std::byte> encode_body(const Envelope& envelope, std::span<const std::byte> state);
/// Splits an untrusted body into the envelope and a view of the module state.
Result<Envelope, std::string> decode_body(std::span<const std::byte> body,
                                          std::span<const std::byte>& state);

}  // namespace hmk::detail
