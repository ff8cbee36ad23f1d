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

/// Whether a region given to a ring's create() is all zero bytes already
/// (fresh shared memory is): then create() writes its header only, and
/// touches none of the slots' pages (a child's start need not fault in
/// megabytes of memory it may never use).
enum class Zeroed : std::uint8_t { no, yes };

/// How far a reader may read: up to the newest published message, or only
/// up to the writer's commit point (a bus whose journal must have a message
/// before anyone acts on it; see commit()).
enum class Visibility : std::uint8_t { published, committed };

/// Whether readers of `Visibility::committed` wait for explicit commits.
enum class CommitMode : std::uint8_t {
    on_publish,  ///< every published message is committed at once
    explicit_,   ///< the writer advances the commit point with commit()
};

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
/// Sequence numbers start at `first_seq` (1 for a new bus; a bus whose
/// journal survived a restart continues after its last record) and are
/// contiguous. The ring is a view: it owns
/// nothing and is cheap to copy. One thread at a time may write; any number of
/// threads or processes may read, each with its own cursor.
class BroadcastRing {
  public:
    /// Bytes a region needs for `slot_count` slots of messages up to `max_payload`.
    static std::size_t region_size(std::uint32_t slot_count, std::uint32_t max_payload);
    /// Formats `region` as an empty ring whose first message will be `first_seq`.
    static Result<BroadcastRing, RingError> create(std::span<std::byte> region,
                                                   std::uint32_t slot_count,
                                                   std::uint32_t max_payload,
                                                   std::uint64_t first_seq = 1,
                                                   CommitMode mode = CommitMode::on_publish,
                                                   Zeroed zeroed = Zeroed::no);
    /// Views a region another party formatted; checks its control block.
    static Result<BroadcastRing, RingError> attach(std::span<std::byte> region);

    /// Writer only. Stamps `header.seq` with the next sequence number and
    /// `header.payload_size` with the payload's size, writes both into the next
    /// slot and publishes it. Returns the sequence number, or payload_too_large
    /// (nothing written) for more than max_payload() bytes.
    Result<std::uint64_t, RingError> publish(Header& header, std::span<const std::byte> payload);

    /// Writer only, CommitMode::explicit_: lets `committed` readers see the
    /// messages up to `seq` (never beyond head(); never moves back).
    void commit(std::uint64_t seq);

    /// Reader. `cursor` is the next sequence number the reader wants (start at
    /// oldest() or head() + 1; 0 means "the oldest held"). Copies at most
    /// out.size() bytes; `out` must hold k_header_size + max_payload() bytes.
    /// A cursor below oldest() (overwritten, or from before first()) gets
    /// `lost` with the exact range. Never blocks.
    ReadResult read(std::uint64_t& cursor, std::span<std::byte> out,
                    Visibility visibility = Visibility::committed) const;

    /// Sequence number of the newest published message (first() - 1 when none).
    std::uint64_t head() const;
    /// The newest message `visibility` readers may read: head(), or the commit point.
    std::uint64_t available(Visibility visibility = Visibility::committed) const;
    /// Sequence number of the oldest message still held (head() + 1 when none).
    std::uint64_t oldest() const;
    /// Sequence number of the first message this ring ever held.
    std::uint64_t first() const { return m_first; }
    CommitMode commit_mode() const { return m_mode; }
    std::uint32_t slot_count() const { return m_slot_count; }
    std::uint32_t max_payload() const { return m_max_payload; }
    std::uint32_t max_message() const {
        return static_cast<std::uint32_t>(k_header_size) + m_max_payload;
    }

  private:
    struct Control;
    struct Slot;
    BroadcastRing(Control* control, std::byte* slots, std::uint32_t slot_count,
                  std::uint32_t stride, std::uint32_t max_payload, std::uint64_t first,
                  CommitMode mode)
        : m_control(control),
          m_slots(slots),
          m_slot_count(slot_count),
          m_stride(stride),
          m_max_payload(max_payload),
          m_first(first),
          m_mode(mode) {}
    Slot* slot(std::uint64_t seq) const;

    Control* m_control = nullptr;
    std::byte* m_slots = nullptr;
    std::uint32_t m_slot_count = 0;
    std::uint32_t m_stride = 0;
    std::uint32_t m_max_payload = 0;
    std::uint64_t m_first = 1;
    CommitMode m_mode = CommitMode::on_publish;
};

}  // namespace hmk
