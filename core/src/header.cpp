// SPDX-License-Identifier: Apache-2.0
#include "hmk/header.hpp"

#include <cstring>

#include "hmk/detail/endian.hpp"

namespace hmk {
namespace {

// Field offsets; docs/message-header.md is the reference and must match.
constexpr std::size_t k_off_magic = 0;
constexpr std::size_t k_off_version = 4;
constexpr std::size_t k_off_header_size = 6;
constexpr std::size_t k_off_seq = 8;
constexpr std::size_t k_off_correlation = 16;
constexpr std::size_t k_off_timestamp = 24;
constexpr std::size_t k_off_bus = 32;
constexpr std::size_t k_off_sender = 36;
constexpr std::size_t k_off_via = 40;
constexpr std::size_t k_off_destination = 44;
constexpr std::size_t k_off_type = 48;
constexpr std::size_t k_off_payload_size = 52;
constexpr std::size_t k_off_scope = 56;
constexpr std::size_t k_off_hops = 57;
constexpr std::size_t k_off_flags = 58;
constexpr std::size_t k_off_generation = 60;
static_assert(k_off_generation + 4 == k_header_size);

template <typename T>
void put(std::byte* out, std::size_t offset, T value) {
    detail::put_le(out, offset, value);
}
template <typename T>
T get(const std::byte* in, std::size_t offset) {
    return detail::get_le<T>(in, offset);
}

}  // namespace

const char* to_string(Scope scope) {
    switch (scope) {
        case Scope::bus:
            return "bus";
        case Scope::subtree:
            return "subtree";
        case Scope::up:
            return "up";
        case Scope::system:
            return "system";
    }
    return "invalid";
}

const char* to_string(HeaderError error) {
    switch (error) {
        case HeaderError::truncated:
            return "buffer shorter than a message header";
        case HeaderError::bad_magic:
            return "bad magic";
        case HeaderError::bad_version:
            return "unsupported header version";
        case HeaderError::bad_header_size:
            return "bad header size";
        case HeaderError::bad_scope:
            return "bad scope";
        case HeaderError::unknown_flags:
            return "unknown flag bits";
        case HeaderError::payload_too_large:
            return "payload larger than allowed";
        case HeaderError::payload_truncated:
            return "payload truncated";
        case HeaderError::trailing_bytes:
            return "bytes after the payload";
    }
    return "unknown header error";
}

void encode_header(const Header& h, std::span<std::byte, k_header_size> out_span) {
    std::byte* out = out_span.data();
    put<std::uint32_t>(out, k_off_magic, k_header_magic);
    put<std::uint16_t>(out, k_off_version, k_header_version);
    put<std::uint16_t>(out, k_off_header_size, static_cast<std::uint16_t>(k_header_size));
    put<std::uint64_t>(out, k_off_seq, h.seq);
    put<std::uint64_t>(out, k_off_correlation, h.correlation);
    put<std::uint64_t>(out, k_off_timestamp, h.timestamp_ns);
    put<std::uint32_t>(out, k_off_bus, h.bus);
    put<std::uint32_t>(out, k_off_sender, h.sender);
    put<std::uint32_t>(out, k_off_via, h.via);
    put<std::uint32_t>(out, k_off_destination, h.destination);
    put<std::uint32_t>(out, k_off_type, h.type);
    put<std::uint32_t>(out, k_off_payload_size, h.payload_size);
    put<std::uint8_t>(out, k_off_scope, static_cast<std::uint8_t>(h.scope));
    put<std::uint8_t>(out, k_off_hops, h.hops);
    put<std::uint16_t>(out, k_off_flags, h.flags);
    put<std::uint32_t>(out, k_off_generation, h.generation);
}

Result<Header, HeaderError> decode_header(std::span<const std::byte> in, std::uint32_t max_payload,
                                          Framing framing) {
    if (in.size() < k_header_size) return Err{HeaderError::truncated};
    const std::byte* p = in.data();
    if (get<std::uint32_t>(p, k_off_magic) != k_header_magic) return Err{HeaderError::bad_magic};
    if (get<std::uint16_t>(p, k_off_version) != k_header_version) {
        return Err{HeaderError::bad_version};
    }
    if (get<std::uint16_t>(p, k_off_header_size) != k_header_size) {
        return Err{HeaderError::bad_header_size};
    }
    const auto scope = get<std::uint8_t>(p, k_off_scope);
    if (scope > k_max_scope) return Err{HeaderError::bad_scope};
    const auto flags = get<std::uint16_t>(p, k_off_flags);
    if ((flags & ~k_known_flags) != 0) return Err{HeaderError::unknown_flags};

    Header h;
    h.payload_size = get<std::uint32_t>(p, k_off_payload_size);
    if (h.payload_size > max_payload) return Err{HeaderError::payload_too_large};
    const std::size_t available = in.size() - k_header_size;
    if (h.payload_size > available) return Err{HeaderError::payload_truncated};
    if (framing == Framing::exact && h.payload_size != available) {
        return Err{HeaderError::trailing_bytes};
    }
    h.seq = get<std::uint64_t>(p, k_off_seq);
    h.correlation = get<std::uint64_t>(p, k_off_correlation);
    h.timestamp_ns = get<std::uint64_t>(p, k_off_timestamp);
    h.bus = get<std::uint32_t>(p, k_off_bus);
    h.sender = get<std::uint32_t>(p, k_off_sender);
    h.via = get<std::uint32_t>(p, k_off_via);
    h.destination = get<std::uint32_t>(p, k_off_destination);
    h.type = get<std::uint32_t>(p, k_off_type);
    h.scope = static_cast<Scope>(scope);
    h.hops = get<std::uint8_t>(p, k_off_hops);
    h.flags = flags;
    h.generation = get<std::uint32_t>(p, k_off_generation);
    return h;
}

}  // namespace hmk
