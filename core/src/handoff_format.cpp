// SPDX-License-Identifier: Apache-2.0
#include "hmk/handoff_format.hpp"

#include "hmk/detail/endian.hpp"

namespace hmk {

using detail::get_le;
using detail::put_le;

const char* to_string(HandoffOp op) {
    switch (op) {
        case HandoffOp::swap_prepare:
            return "swap-prepare";
        case HandoffOp::state:
            return "state";
        case HandoffOp::switch_over:
            return "switch";
        case HandoffOp::retired:
            return "retired";
        case HandoffOp::move_prepare:
            return "move-prepare";
        case HandoffOp::flush:
            return "flush";
        case HandoffOp::retire_now:
            return "retire-now";
    }
    return "?";
}

std::size_t encode_handoff(const Handoff& h, std::uint32_t chunk_bytes,
                           std::span<std::byte, k_handoff_max_fixed> out) {
    std::byte* p = out.data();
    put_le<std::uint8_t>(p, 0, static_cast<std::uint8_t>(h.op));
    put_le<std::uint8_t>(p, 1, h.flags);
    put_le<std::uint16_t>(p, 2, 0);
    put_le<std::uint32_t>(p, 4, h.generation);
    put_le<std::uint64_t>(p, 8, h.id);
    switch (h.op) {
        case HandoffOp::state:
            encode_snapshot_chunk(h.chunk, chunk_bytes,
                                  std::span<std::byte, k_snapshot_chunk_header>(
                                      p + k_handoff_header, k_snapshot_chunk_header));
            return k_handoff_header + k_snapshot_chunk_header;
        case HandoffOp::retired:
            put_le<std::uint64_t>(p, 16, h.parent_cursor);
            put_le<std::uint64_t>(p, 24, h.child_cursor);
            return k_handoff_header + 16;
        case HandoffOp::flush:
            put_le<std::uint32_t>(p, 16, h.bus);
            put_le<std::uint32_t>(p, 20, h.buses);
            return k_handoff_header + 8;
        case HandoffOp::move_prepare:
            put_le<std::uint32_t>(p, 16, h.payload_limit);
            put_le<std::uint32_t>(p, 20, 0);
            return k_handoff_header + 8;
        default:
            return k_handoff_header;
    }
}

Result<Handoff, SnapshotError> decode_handoff(std::span<const std::byte> payload,
                                              std::span<const std::byte>& data) {
    data = {};
    if (payload.size() < k_handoff_header) return Err{SnapshotError::truncated};
    const std::byte* p = payload.data();
    Handoff h;
    const auto op = get_le<std::uint8_t>(p, 0);
    if (op < 1 || op > static_cast<std::uint8_t>(HandoffOp::retire_now))
        return Err{SnapshotError::bad_event};
    h.op = static_cast<HandoffOp>(op);
    h.flags = get_le<std::uint8_t>(p, 1);
    if (get_le<std::uint16_t>(p, 2) != 0) return Err{SnapshotError::reserved_not_zero};
    h.generation = get_le<std::uint32_t>(p, 4);
    h.id = get_le<std::uint64_t>(p, 8);
    const std::size_t rest = payload.size() - k_handoff_header;
    switch (h.op) {
        case HandoffOp::state:
            h.chunk = HMK_TRY(decode_snapshot_chunk(payload.subspan(k_handoff_header), data));
            return h;
        case HandoffOp::retired:
            if (rest != 16) return Err{SnapshotError::bad_size};
            h.parent_cursor = get_le<std::uint64_t>(p, 16);
            h.child_cursor = get_le<std::uint64_t>(p, 24);
            return h;
        case HandoffOp::flush:
            if (rest != 8) return Err{SnapshotError::bad_size};
            h.bus = get_le<std::uint32_t>(p, 16);
            h.buses = get_le<std::uint32_t>(p, 20);
            return h;
        case HandoffOp::move_prepare:
            if (rest != 8) return Err{SnapshotError::bad_size};
            if (get_le<std::uint32_t>(p, 20) != 0) return Err{SnapshotError::reserved_not_zero};
            h.payload_limit = get_le<std::uint32_t>(p, 16);
            return h;
        default:
            if (rest != 0) return Err{SnapshotError::bad_size};
            return h;
    }
}

}  // namespace hmk
