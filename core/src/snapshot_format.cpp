// SPDX-License-Identifier: Apache-2.0
#include "hmk/snapshot_format.hpp"

#include <cstring>

#include "hmk/crc32c.hpp"
#include "hmk/detail/endian.hpp"

namespace hmk {
namespace {

using detail::get_le;
using detail::put_le;

constexpr std::byte k_file_magic[8] = {std::byte{'H'}, std::byte{'M'}, std::byte{'K'},
                                       std::byte{'S'}, std::byte{'N'}, std::byte{'A'},
                                       std::byte{'P'}, std::byte{'1'}};
constexpr std::uint32_t k_file_version = 1;

}  // namespace

const char* to_string(SnapshotError error) {
    switch (error) {
        case SnapshotError::truncated:
            return "truncated";
        case SnapshotError::bad_magic:
            return "not an hmk snapshot (magic or version)";
        case SnapshotError::bad_header_crc:
            return "header CRC32C mismatch";
        case SnapshotError::bad_size:
            return "size or offset out of bounds";
        case SnapshotError::bad_body_crc:
            return "body CRC32C mismatch";
        case SnapshotError::reserved_not_zero:
            return "reserved field not zero";
        case SnapshotError::bad_event:
            return "unknown lifecycle event";
    }
    return "snapshot error";
}

const char* to_string(LifecycleKind kind) {
    switch (kind) {
        case LifecycleKind::started:
            return "started";
        case LifecycleKind::recovering:
            return "recovering";
        case LifecycleKind::failed:
            return "failed";
        case LifecycleKind::restarting:
            return "restarting";
        case LifecycleKind::stopped:
            return "stopped";
        case LifecycleKind::gave_up:
            return "gave up";
    }
    return "?";
}

void encode_snapshot_chunk(const SnapshotChunk& c, std::uint32_t chunk_bytes,
                           std::span<std::byte, k_snapshot_chunk_header> out) {
    std::byte* p = out.data();
    put_le<std::uint64_t>(p, 0, c.input_seq);
    put_le<std::uint64_t>(p, 8, c.snapshot_id);
    put_le<std::uint32_t>(p, 16, c.total_size);
    put_le<std::uint32_t>(p, 20, c.offset);
    put_le<std::uint32_t>(p, 24, c.body_crc);
    put_le<std::uint32_t>(p, 28, c.state_version);
    put_le<std::uint32_t>(p, 32, chunk_bytes);
    put_le<std::uint32_t>(p, 36, 0);
}

Result<SnapshotChunk, SnapshotError> decode_snapshot_chunk(std::span<const std::byte> payload,
                                                           std::span<const std::byte>& data) {
    if (payload.size() < k_snapshot_chunk_header) return Err{SnapshotError::truncated};
    const std::byte* p = payload.data();
    SnapshotChunk c;
    c.input_seq = get_le<std::uint64_t>(p, 0);
    c.snapshot_id = get_le<std::uint64_t>(p, 8);
    c.total_size = get_le<std::uint32_t>(p, 16);
    c.offset = get_le<std::uint32_t>(p, 20);
    c.body_crc = get_le<std::uint32_t>(p, 24);
    c.state_version = get_le<std::uint32_t>(p, 28);
    const std::uint32_t declared = get_le<std::uint32_t>(p, 32);
    if (get_le<std::uint32_t>(p, 36) != 0) return Err{SnapshotError::reserved_not_zero};
    const std::size_t bytes = payload.size() - k_snapshot_chunk_header;
    // 64-bit arithmetic: offset + bytes cannot wrap.
    if (declared != bytes || c.total_size > k_max_snapshot ||
        std::uint64_t{c.offset} + bytes > c.total_size) {
        return Err{SnapshotError::bad_size};
    }
    data = payload.subspan(k_snapshot_chunk_header);
    return c;
}

void encode_snapshot_file_header(const SnapshotFileHeader& h,
                                 std::span<std::byte, k_snapshot_file_header> out) {
    std::byte* p = out.data();
    std::memcpy(p, k_file_magic, 8);
    put_le<std::uint32_t>(p, 8, k_file_version);
    put_le<std::uint32_t>(p, 12, h.module);
    put_le<std::uint64_t>(p, 16, h.input_seq);
    put_le<std::uint64_t>(p, 24, h.output_seq);
    put_le<std::uint64_t>(p, 32, h.hint_segment);
    put_le<std::uint64_t>(p, 40, h.hint_offset);
    put_le<std::uint32_t>(p, 48, h.state_version);
    put_le<std::uint32_t>(p, 52, h.body_size);
    put_le<std::uint32_t>(p, 56, h.body_crc);
    put_le<std::uint32_t>(p, 60, crc32c(std::span<const std::byte>(p, 60)));
}

Result<SnapshotFileHeader, SnapshotError> decode_snapshot_file_header(
    std::span<const std::byte> bytes) {
    if (bytes.size() < k_snapshot_file_header) return Err{SnapshotError::truncated};
    const std::byte* p = bytes.data();
    if (std::memcmp(p, k_file_magic, 8) != 0 || get_le<std::uint32_t>(p, 8) != k_file_version) {
        return Err{SnapshotError::bad_magic};
    }
    if (get_le<std::uint32_t>(p, 60) != crc32c(std::span<const std::byte>(p, 60))) {
        return Err{SnapshotError::bad_header_crc};
    }
    SnapshotFileHeader h;
    h.module = get_le<std::uint32_t>(p, 12);
    h.input_seq = get_le<std::uint64_t>(p, 16);
    h.output_seq = get_le<std::uint64_t>(p, 24);
    h.hint_segment = get_le<std::uint64_t>(p, 32);
    h.hint_offset = get_le<std::uint64_t>(p, 40);
    h.state_version = get_le<std::uint32_t>(p, 48);
    h.body_size = get_le<std::uint32_t>(p, 52);
    h.body_crc = get_le<std::uint32_t>(p, 56);
    if (h.body_size > k_max_snapshot) return Err{SnapshotError::bad_size};
    return h;
}

Result<SnapshotFileHeader, SnapshotError> check_snapshot_file(std::span<const std::byte> file,
                                                              std::span<const std::byte>& body) {
    const SnapshotFileHeader h = HMK_TRY(decode_snapshot_file_header(file));
    if (file.size() != k_snapshot_file_header + h.body_size) {
        return Err{file.size() < k_snapshot_file_header + h.body_size ? SnapshotError::truncated
                                                                      : SnapshotError::bad_size};
    }
    const auto b = file.subspan(k_snapshot_file_header);
    if (crc32c(b) != h.body_crc) return Err{SnapshotError::bad_body_crc};
    body = b;
    return h;
}

void encode_lifecycle(const LifecycleEvent& e, std::span<std::byte, k_lifecycle_size> out) {
    std::byte* p = out.data();
    put_le<std::uint32_t>(p, 0, e.module);
    put_le<std::uint32_t>(p, 4, static_cast<std::uint32_t>(e.kind));
    put_le<std::uint64_t>(p, 8, e.epoch);
    put_le<std::uint64_t>(p, 16, e.seed);
    put_le<std::uint64_t>(p, 24, e.from_seq);
    put_le<std::uint64_t>(p, 32, e.base_seq);
    put_le<std::uint64_t>(p, 40, e.suppressed);
}

Result<LifecycleEvent, SnapshotError> decode_lifecycle(std::span<const std::byte> payload,
                                                       std::span<const std::byte>& text) {
    if (payload.size() < k_lifecycle_size) return Err{SnapshotError::truncated};
    const std::byte* p = payload.data();
    const std::uint32_t kind = get_le<std::uint32_t>(p, 4);
    if (kind < static_cast<std::uint32_t>(LifecycleKind::started) ||
        kind > static_cast<std::uint32_t>(LifecycleKind::gave_up)) {
        return Err{SnapshotError::bad_event};
    }
    LifecycleEvent e;
    e.module = get_le<std::uint32_t>(p, 0);
    e.kind = static_cast<LifecycleKind>(kind);
    e.epoch = get_le<std::uint64_t>(p, 8);
    e.seed = get_le<std::uint64_t>(p, 16);
    e.from_seq = get_le<std::uint64_t>(p, 24);
    e.base_seq = get_le<std::uint64_t>(p, 32);
    e.suppressed = get_le<std::uint64_t>(p, 40);
    text = payload.subspan(k_lifecycle_size);
    return e;
}

}  // namespace hmk
