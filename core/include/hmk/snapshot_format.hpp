// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "hmk/ids.hpp"
#include "hmk/result.hpp"

namespace hmk {

/// Wire and file formats of module snapshots and lifecycle events, fixed and
/// little-endian like the message header (docs/recovery.md gives them byte by
/// byte). A snapshot *body* is opaque here: the runtime's envelope (timers,
/// random state, counters) followed by the module's own state.

/// Largest snapshot body the runtime sends, stores or restores.
inline constexpr std::uint32_t k_max_snapshot = 64u << 20;

enum class SnapshotError : std::uint8_t {
    truncated = 1,      ///< fewer bytes than the fixed part
    bad_magic,          ///< not a snapshot file, or another version
    bad_header_crc,     ///< the file header's checksum does not match
    bad_size,           ///< a size or offset out of bounds
    bad_body_crc,       ///< the body's checksum does not match
    reserved_not_zero,  ///< a reserved field is set
    bad_event,          ///< an unknown lifecycle event
};
const char* to_string(SnapshotError error);

// --- k_snapshot chunks on the bus -----------------------------------------

/// Bytes of the fixed part of a k_snapshot payload; the chunk's bytes follow.
inline constexpr std::size_t k_snapshot_chunk_header = 40;

/// One k_snapshot message: a slice of a snapshot body. Chunks of one snapshot
/// share `snapshot_id` and are sent back to back, in order.
struct SnapshotChunk {
    std::uint64_t input_seq = 0;      ///< last parent-bus seq whose effect the state includes
    std::uint64_t snapshot_id = 0;    ///< the sender's number for this snapshot
    std::uint32_t total_size = 0;     ///< bytes of the whole body
    std::uint32_t offset = 0;         ///< of this chunk in the body
    std::uint32_t body_crc = 0;       ///< CRC-32C of the whole body
    std::uint32_t state_version = 0;  ///< the module kind's state format
};

/// Writes the fixed part for a chunk of `chunk_bytes`; the caller appends them.
void encode_snapshot_chunk(const SnapshotChunk& chunk, std::uint32_t chunk_bytes,
                           std::span<std::byte, k_snapshot_chunk_header> out);
/// Decodes and bounds-checks a payload from an untrusted sender: the chunk
/// must fit in the body (offset + bytes <= total_size <= k_max_snapshot).
/// `data` receives a view of the chunk bytes inside `payload`.
Result<SnapshotChunk, SnapshotError> decode_snapshot_chunk(std::span<const std::byte> payload,
                                                           std::span<const std::byte>& data);

// --- snapshot files ------------------------------------------------------

inline constexpr std::size_t k_snapshot_file_header = 64;

/// The fixed header of a snapshot file `snap-<module>-<input seq>.hmks`.
struct SnapshotFileHeader {
    ModuleId module = k_no_module;
    std::uint64_t input_seq = 0;     ///< as in the chunks
    std::uint64_t output_seq = 0;    ///< bus seq of the last chunk: the module's later
                                     ///< messages were sent after the snapshot was taken
    std::uint64_t hint_segment = 0;  ///< first seq of the journal segment holding
                                     ///< input_seq + 1 (0: unknown)
    std::uint64_t hint_offset = 0;   ///< a record offset in it at or before input_seq + 1
    std::uint32_t state_version = 0;
    std::uint32_t body_size = 0;
    std::uint32_t body_crc = 0;
};

/// Writes the 64-byte header, its own CRC included.
void encode_snapshot_file_header(const SnapshotFileHeader& header,
                                 std::span<std::byte, k_snapshot_file_header> out);
/// Checks magic, version, the header CRC and sizes (not the body).
Result<SnapshotFileHeader, SnapshotError> decode_snapshot_file_header(
    std::span<const std::byte> bytes);
/// Checks a whole file: header, then the body's size and CRC. `body`
/// receives a view of it inside `file`.
Result<SnapshotFileHeader, SnapshotError> check_snapshot_file(std::span<const std::byte> file,
                                                              std::span<const std::byte>& body);

// --- k_lifecycle events --------------------------------------------------

/// What happened to a child, as its parent announces it on its bus.
enum class LifecycleKind : std::uint8_t {
    started = 1,     ///< a fresh instance; its life in the journal begins here
    recovering = 2,  ///< an instance that restores state and replays the journal
    failed = 3,      ///< the instance ended abnormally (crash, exit, hang, quota)
    restarting = 4,  ///< the parent will start a new instance after a backoff
    stopped = 5,     ///< stopped in order
    gave_up = 6,     ///< past the restart intensity: not restarted again
};
const char* to_string(LifecycleKind kind);

inline constexpr std::size_t k_lifecycle_size = 48;

struct LifecycleEvent {
    ModuleId module = k_no_module;
    LifecycleKind kind = LifecycleKind::started;
    std::uint64_t epoch = 0;       ///< the instance's number (1 for the first)
    std::uint64_t seed = 0;        ///< started: seed of the instance's randomness
    std::uint64_t from_seq = 0;    ///< started / recovering: first input seq it handles
    std::uint64_t base_seq = 0;    ///< recovering: input seq of the snapshot restored (0: none)
    std::uint64_t suppressed = 0;  ///< recovering: its outputs already on the bus
};

/// Writes the fixed 48 bytes; a reason text may follow in the payload.
void encode_lifecycle(const LifecycleEvent& event, std::span<std::byte, k_lifecycle_size> out);
/// Decodes the fixed part of an untrusted payload; `text` receives what follows it.
Result<LifecycleEvent, SnapshotError> decode_lifecycle(std::span<const std::byte> payload,
                                                       std::span<const std::byte>& text);

}  // namespace hmk
