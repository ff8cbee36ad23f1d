// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "hmk/ids.hpp"
#include "hmk/result.hpp"
#include "hmk/snapshot_format.hpp"

namespace hmk {

/// Payload of a k_handoff message (docs/swap.md, docs/relocation.md): how a
/// module's running instance hands over to a replica. Fixed, little-endian:
///
///   0  u8  op
///   1  u8  flags (state: bit 0 = the body holds the module's own state)
///   2  u16 0
///   4  u32 generation (move_prepare: the routing generation of the move)
///   8  u64 handoff id (the parent's number for this swap or move)
///  16  ... what the op carries (below)
enum class HandoffOp : std::uint8_t {
    swap_prepare = 1,  ///< parent to module: send your state (k_handoff state chunks)
    state = 2,         ///< module to module: a chunk of its state (a SnapshotChunk follows)
    switch_over = 3,   ///< parent to module (swap): the old instance stops at this message
    retired = 4,       ///< module to module: the old instance has stopped; u64 parent
                       ///< cursor, u64 child cursor (the next seqs it would have read)
    move_prepare = 5,  ///< parent to module (move): messages of `generation` and later
                       ///< are no longer yours; u32 the largest state chunk payload
                       ///< every bus on the way takes, u32 0
    flush = 6,         ///< a bus owner to the moving module, routed by the old tree:
                       ///< u32 bus, u32 buses in all
    retire_now = 7,    ///< parent to module (move): stop waiting for flushes
};
const char* to_string(HandoffOp op);

inline constexpr std::size_t k_handoff_header = 16;
inline constexpr std::uint8_t k_handoff_has_state = 1;

struct Handoff {
    HandoffOp op = HandoffOp::swap_prepare;
    std::uint8_t flags = 0;
    std::uint32_t generation = 0;
    std::uint64_t id = 0;
    // retired
    std::uint64_t parent_cursor = 0;
    std::uint64_t child_cursor = 0;
    // move_prepare
    std::uint32_t payload_limit = 0;
    // flush
    BusId bus = k_no_module;
    std::uint32_t buses = 0;
    // state: the chunk header; the chunk's bytes are in `data` after decoding
    SnapshotChunk chunk;
};

/// The payload for `h` (for `state`, without the chunk's bytes, which the
/// caller appends). Returns the bytes written into `out` (at most 56).
inline constexpr std::size_t k_handoff_max_fixed = k_handoff_header + k_snapshot_chunk_header;
std::size_t encode_handoff(const Handoff& h, std::uint32_t chunk_bytes,
                           std::span<std::byte, k_handoff_max_fixed> out);
/// Decodes an untrusted payload: the op must be known and the size exact
/// (for `state`, the chunk bounds-checked as decode_snapshot_chunk does).
/// `data` receives the chunk's bytes.
Result<Handoff, SnapshotError> decode_handoff(std::span<const std::byte> payload,
                                              std::span<const std::byte>& data);

}  // namespace hmk
