// SPDX-License-Identifier: Apache-2.0
#include "runner_state.hpp"

#include "hmk/detail/endian.hpp"

namespace hmk::detail {
namespace {

using detail::get_le;
using detail::put_le;

constexpr std::uint32_t k_envelope_magic = 0x564E4548;  // "HENV"
constexpr std::uint32_t k_envelope_version = 1;
constexpr std::size_t k_fixed = 72;  // magic, version, timer count, 0, rng, next timer, ...
constexpr std::size_t k_timer = 40;  // id, period, delay, deadline, flags
constexpr std::uint32_t k_max_timers = 1u << 20;

std::uint64_t rotl(std::uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

}  // namespace

void Xoshiro::reseed(std::uint64_t seed) {
    for (auto& word : m_s) {
        seed += 0x9E3779B97F4A7C15ull;
        std::uint64_t z = seed;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        word = z ^ (z >> 31);
    }
}

std::uint64_t Xoshiro::operator()() {
    const std::uint64_t result = rotl(m_s[1] * 5, 7) * 9;
    const std::uint64_t t = m_s[1] << 17;
    m_s[2] ^= m_s[0];
    m_s[3] ^= m_s[1];
    m_s[1] ^= m_s[2];
    m_s[0] ^= m_s[3];
    m_s[2] ^= t;
    m_s[3] = rotl(m_s[3], 45);
    return result;
}

std::vector<std::byte> encode_body(const Envelope& e, std::span<const std::byte> state) {
    std::vector<std::byte> out(k_fixed + k_timer * e.timers.size() + state.size());
    std::byte* p = out.data();
    put_le<std::uint32_t>(p, 0, k_envelope_magic);
    put_le<std::uint32_t>(p, 4, k_envelope_version);
    put_le<std::uint32_t>(p, 8, static_cast<std::uint32_t>(e.timers.size()));
    put_le<std::uint32_t>(p, 12, 0);
    for (std::size_t i = 0; i < 4; ++i) put_le<std::uint64_t>(p, 16 + 8 * i, e.random[i]);
    put_le<std::uint64_t>(p, 48, e.next_timer);
    put_le<std::uint64_t>(p, 56, e.correlation);
    put_le<std::uint64_t>(p, 64, e.handled);
    std::size_t at = k_fixed;
    for (const TimerState& t : e.timers) {
        put_le<std::uint64_t>(p, at, t.id);
        put_le<std::uint64_t>(p, at + 8, t.period_ns);
        put_le<std::uint64_t>(p, at + 16, t.delay_ns);
        put_le<std::uint64_t>(p, at + 24, t.deadline_ns);
        put_le<std::uint64_t>(p, at + 32, t.in_flight ? 1 : 0);
        at += k_timer;
    }
    std::copy(state.begin(), state.end(), out.begin() + static_cast<std::ptrdiff_t>(at));
    return out;
}

Result<Envelope, std::string> decode_body(std::span<const std::byte> body,
                                          std::span<const std::byte>& state) {
    if (body.size() < k_fixed) return Err{std::string("snapshot body too short")};
    const std::byte* p = body.data();
    if (get_le<std::uint32_t>(p, 0) != k_envelope_magic ||
        get_le<std::uint32_t>(p, 4) != k_envelope_version) {
        return Err{std::string("snapshot body has no runtime envelope of version 1")};
    }
    const std::uint32_t timers = get_le<std::uint32_t>(p, 8);
    if (timers > k_max_timers || get_le<std::uint32_t>(p, 12) != 0 ||
        body.size() - k_fixed < std::size_t{timers} * k_timer) {
        return Err{std::string("snapshot body: bad timer table")};
    }
    Envelope e;
    for (std::size_t i = 0; i < 4; ++i) e.random[i] = get_le<std::uint64_t>(p, 16 + 8 * i);
    e.next_timer = get_le<std::uint64_t>(p, 48);
    e.correlation = get_le<std::uint64_t>(p, 56);
    e.handled = get_le<std::uint64_t>(p, 64);
    e.timers.resize(timers);
    for (std::size_t i = 0; i < timers; ++i) {
        const std::size_t t = k_fixed + i * k_timer;
        e.timers[i].id = get_le<std::uint64_t>(p, t);
        e.timers[i].period_ns = get_le<std::uint64_t>(p, t + 8);
        e.timers[i].delay_ns = get_le<std::uint64_t>(p, t + 16);
        e.timers[i].deadline_ns = get_le<std::uint64_t>(p, t + 24);
        e.timers[i].in_flight = get_le<std::uint64_t>(p, t + 32) != 0;
    }
    state = body.subspan(k_fixed + std::size_t{timers} * k_timer);
    return e;
}

}  // namespace hmk::detail
