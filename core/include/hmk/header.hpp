// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "hmk/ids.hpp"
#include "hmk/result.hpp"

namespace hmk {

/// Wire size of the message header. The layout is fixed and little-endian on
/// every platform; docs/message-header.md gives it byte by byte.
inline constexpr std::size_t k_header_size = 64;
/// "HMK1" as the bytes 'H' 'M' 'K' '1' at offset 0.
inline constexpr std::uint32_t k_header_magic = 0x314B4D48;
inline constexpr std::uint16_t k_header_version = 1;
/// Upper bound any bus may be configured with; a bus may set a lower one.
inline constexpr std::uint32_t k_max_payload = 1u << 20;
/// A message forwarded more often than this is dropped (a translating gateway
/// that loops must not flood the system).
inline constexpr std::uint8_t k_max_hops = 64;

/// Header flag bits.
enum HeaderFlag : std::uint16_t {
    k_flag_reply = 1u << 0,  ///< answers the request with the same correlation id
    k_flag_error = 1u << 1,  ///< a reply that reports failure; payload says why
    /// Sent by the operator with the sender's authority (hmk run scripts,
    /// control commands), not by the sender's own code; recovery does not
    /// count it among the module's outputs. Only the runtime sets it.
    k_flag_operator = 1u << 2,
};
inline constexpr std::uint16_t k_known_flags = k_flag_reply | k_flag_error | k_flag_operator;

/// Decoded message header. Fields marked "owner" are stamped by the bus owner
/// when it publishes the message and are never taken from the sender.
struct Header {
    std::uint64_t seq = 0;               ///< owner: position in the bus's total order
    std::uint64_t correlation = 0;       ///< request/reply pairing, chosen by the requester
    std::uint64_t timestamp_ns = 0;      ///< owner: kernel clock when published
    BusId bus = k_no_module;             ///< owner: the bus this copy travels on
    ModuleId sender = k_no_module;       ///< origin module; checked by each owner on the way
    ModuleId via = k_no_module;          ///< owner: who put this copy on this bus
    ModuleId destination = k_no_module;  ///< k_no_module = broadcast within `scope`
    std::uint32_t type = 0;              ///< message type (see message_types.hpp)
    std::uint32_t payload_size = 0;      ///< bytes following the header
    Scope scope = Scope::bus;
    std::uint8_t hops = 0;  ///< gateway forwards so far
    std::uint16_t flags = 0;
    /// owner of the first bus: the system's tree the message is routed by,
    /// all the way (0: the tree it booted with; each relocation adds one).
    /// Gateways keep it when they forward.
    std::uint32_t generation = 0;

    bool is_broadcast() const { return destination == k_no_module; }
    bool is_reply() const { return (flags & k_flag_reply) != 0; }
};

enum class HeaderError : std::uint8_t {
    truncated = 1,  ///< fewer bytes than a header
    bad_magic,
    bad_version,
    bad_header_size,
    bad_scope,
    unknown_flags,
    payload_too_large,  ///< payload_size above the limit given to decode
    payload_truncated,  ///< buffer shorter than header + payload_size
    trailing_bytes,     ///< buffer longer than header + payload_size (exact framing)
};

const char* to_string(HeaderError error);

enum class Framing : std::uint8_t {
    exact,   ///< the buffer holds exactly one message
    prefix,  ///< the buffer starts with a message and may hold more after it
};

/// Writes `header` into `out[0..64)`. `out` must hold at least k_header_size bytes.
void encode_header(const Header& header, std::span<std::byte, k_header_size> out);

/// Validates and decodes a header from untrusted bytes. Never reads outside
/// `in`; `max_payload` bounds payload_size. With Framing::exact the buffer
/// must be exactly one message long.
Result<Header, HeaderError> decode_header(std::span<const std::byte> in,
                                          std::uint32_t max_payload = k_max_payload,
                                          Framing framing = Framing::prefix);

}  // namespace hmk
