// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "hmk/header.hpp"
#include "hmk/result.hpp"

namespace hmk {

enum class RingError : std::uint8_t {
    misaligned = 1,     ///< the region is not 64-byte aligned
    too_small,          ///< the region cannot hold the requested geometry
    bad_geometry,       ///< slot count not a power of two, or payload limit out of range
    not_formatted,      ///< attach() found no ring (bad magic or version)
    payload_too_large,  ///< publish() of more than max_payload() bytes
};
const char* to_string(RingError error);

/// Outcome of one read attempt.
enum class ReadStatus : std::uint8_t {
    ok,     ///< one message copied out; the cursor moved past it
    empty,  ///< nothing new
    lost,   ///< the writer lapped this reader; [lost_first, lost_last] are gone and the
            ///< cursor now points at the oldest message still held
};
struct ReadResult {
    ReadStatus status = ReadStatus::empty;
    std::uint32_t size = 0;  ///< bytes copied (header + payload), for ok
    std::uint64_t seq = 0;   ///< sequence number of the copied message, for ok
    std::uint64_t lost_first = 0;
    std::uint64_t lost_last = 0;
};

/// Single-writer, many-reader broadcast ring of fixed-size slots over a memory
/// region the caller provides (heap for in-process buses, a shared mapping for
/// process buses). The writer never waits for readers: a reader that falls more
/// than `slot_count` messages behind is told exactly which sequence numbers it
/// lost (DESIGN.md section 2.3). Each slot is a seqlock: a reader copies the
/// message out and keeps it only if the slot's tag did not change meanwhile.
///
/// Sequence numbers start at 1 and are contiguous. The ring is a view: it owns
/// nothing and is cheap to copy. One thread at a time may write; any number of
/// threads or processes may read, each with its own cursor.
class BroadcastRing {
  public:
    /// Bytes a region needs for `slot_count` slots of messages up to `max_payload`.
    static std::size_t region_size(std::uint32_t slot_count, std::uint32_t max_payload);
    /// Formats `region` as an empty ring.
    static Result<BroadcastRing, RingError> create(std::span<std::byte> region,
                                                   std::uint32_t slot_count,
                                                   std::uint32_t max_payload);
    /// Views a region another party formatted; checks its control block.
    static Result<BroadcastRing, RingError> attach(std::span<std::byte> region);

    /// Writer only. Stamps `header.seq` with the next sequence number and
    /// `header.payload_size` with the payload's size, writes both into the next
    /// slot and publishes it. Returns the sequence number, or payload_too_large
    /// (nothing written) for more than max_payload() bytes.
    Result<std::uint64_t, RingError> publish(Header& header, std::span<const std::byte> payload);

    /// Reader. `cursor` is the next sequence number the reader wants (start at
    /// oldest() or head() + 1). Copies at most out.size() bytes; `out` must hold
    /// k_header_size + max_payload() bytes. Never blocks.
    ReadResult read(std::uint64_t& cursor, std::span<std::byte> out) const;

    /// Sequence number of the newest published message (0 when none).
    std::uint64_t head() const;
    /// Sequence number of the oldest message still held.
    std::uint64_t oldest() const;
    std::uint32_t slot_count() const { return m_slot_count; }
    std::uint32_t max_payload() const { return m_max_payload; }
    std::uint32_t max_message() const {
        return static_cast<std::uint32_t>(k_header_size) + m_max_payload;
    }

  private:
    struct Control;
    struct Slot;
    BroadcastRing(Control* control, std::byte* slots, std::uint32_t slot_count,
                  std::uint32_t stride, std::uint32_t max_payload)
        : m_control(control),
          m_slots(slots),
          m_slot_count(slot_count),
          m_stride(stride),
          m_max_payload(max_payload) {}
    Slot* slot(std::uint64_t seq) const;

    Control* m_control = nullptr;
    std::byte* m_slots = nullptr;
    std::uint32_t m_slot_count = 0;
    std::uint32_t m_stride = 0;
    std::uint32_t m_max_payload = 0;
};

}  // namespace hmk
