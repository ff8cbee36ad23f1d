// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "hmk/broadcast_ring.hpp"
#include "hmk/header.hpp"
#include "hmk/result.hpp"

namespace hmk {

/// Counters a module keeps about itself in its uplink region, for its
/// parent to show. Written by the child, so informational only: the parent
/// never decides anything on them.
struct alignas(64) UplinkStats {
    std::atomic<std::uint64_t> rx{0};
    std::atomic<std::uint64_t> tx{0};
    std::atomic<std::uint64_t> seen{0};
    std::atomic<std::uint64_t> lost{0};
    std::atomic<std::uint64_t> invalid{0};
    std::atomic<std::uint64_t> send_errors{0};
    std::atomic<std::uint64_t> caught_up{0};
    std::atomic<std::uint64_t> suppressed{0};
    std::atomic<std::uint64_t> snapshots{0};
    std::atomic<std::uint32_t> state{0};
    std::atomic<std::uint32_t> sandbox{0};  ///< k_sandbox_* bits the host closed
};

/// What a child tells its parent about where it is, in its uplink region.
/// Written by the child, so the parent uses these only for decisions that
/// concern that child alone: a child that lies can only starve or stall itself.
struct alignas(64) UplinkProgress {
    /// Seq of the last heartbeat the child's runtime handled (hang detection).
    std::atomic<std::uint64_t> heartbeat{0};
    /// Seq of the first bus message the child needs from its journal feed
    /// (it fell behind the bus ring, or recovers from the journal); 0: none.
    std::atomic<std::uint64_t> want_from{0};
    /// Which run of the feed the child reads: it counts up when the child
    /// wants a seq the feed has gone past (after a look-ahead, or records it
    /// skipped), and the parent then starts reading the journal again at
    /// want_from. Feed records carry their run in the header's correlation.
    /// Written after want_from.
    std::atomic<std::uint64_t> want_run{0};
    /// Feed records the child has taken (flow control of the feed).
    std::atomic<std::uint64_t> feed_read{0};
    /// The child's input cursor on its parent bus (next seq it will handle).
    std::atomic<std::uint64_t> cursor{0};
    /// A replica's progress in taking over (the runner's HandoffPhase).
    std::atomic<std::uint32_t> phase{0};
    /// The next seq the child takes off the bus ring (ahead of `cursor`
    /// when it read ahead of its handler). A reliable bus does not
    /// overwrite what the child has not taken, for at most its deadline.
    std::atomic<std::uint64_t> ring_cursor{0};
};

/// Sandbox layers a module host reports having closed (UplinkStats::sandbox).
enum SandboxBit : std::uint32_t {
    k_sandbox_landlock = 1u << 0,
    k_sandbox_no_new_privs = 1u << 1,
    k_sandbox_seccomp = 1u << 2,
};

/// The wake-up words of one child, in its uplink region.
struct alignas(64) UplinkBells {
    std::atomic<std::uint32_t> child_word{0};   ///< futex the child sleeps on; the owner bumps it
    std::atomic<std::uint32_t> child_armed{0};  ///< the child is (about to be) asleep
    std::atomic<std::uint32_t> owner_armed{0};  ///< the owner's pump is asleep: signal its eventfd
};

/// Outcome of the owner taking one record.
enum class PopStatus : std::uint8_t {
    ok,       ///< a record copied out (still to be validated as a message)
    empty,    ///< nothing new
    corrupt,  ///< the child broke the ring's protocol (cursor or size out of bounds)
};
struct PopResult {
    PopStatus status = PopStatus::empty;
    std::uint32_t size = 0;
};

/// One child's way up: a single-producer (the child), single-consumer (the
/// bus owner) ring of fixed-size slots in memory both map. The child writes
/// encoded messages; the owner copies each out and validates it before it
/// stamps and publishes it on the bus (DESIGN.md sections 4 and 6).
///
/// The child can write anything anywhere in the region. So the owner keeps
/// its read cursor and the geometry in its own memory, reads the child's
/// write cursor and each record's size once, bounds-checks them, and copies
/// before looking (copy first, then validate). A child that breaks the
/// protocol gets `corrupt`, never an out-of-bounds access in the owner.
class UplinkRing {
  public:
    /// An empty view; assign one from create() or attach().
    UplinkRing() = default;
    static std::size_t region_size(std::uint32_t slot_count, std::uint32_t max_payload);
    /// Owner: formats the region.
    static Result<UplinkRing, RingError> create(std::span<std::byte> region,
                                                std::uint32_t slot_count, std::uint32_t max_payload,
                                                Zeroed zeroed = Zeroed::no);
    /// Child: views a region its owner formatted.
    static Result<UplinkRing, RingError> attach(std::span<std::byte> region);

    /// Child only. Appends one encoded message (header + payload); false if
    /// the ring is full (the owner is behind or throttling) or it is too big.
    bool try_push(std::span<const std::byte> message);

    /// Owner only. Copies the next record into `out` (which must hold
    /// max_message() bytes).
    PopResult pop(std::span<std::byte> out);
    /// Owner only, once the child is gone: empties the ring for a new child
    /// and writes its header again (whatever the last child left there).
    /// Atomic stores only (others may be ringing the bells meanwhile); the
    /// futex words stay as they are, so a waker never sees them torn.
    void reset();
    /// Owner only: records waiting, as far as the child's cursor says (bounded).
    std::uint64_t pending() const;

    UplinkBells& bells() const;
    UplinkStats& stats() const;
    UplinkProgress& progress() const;
    std::uint32_t slot_count() const { return m_slot_count; }
    std::uint32_t max_message() const {
        return static_cast<std::uint32_t>(k_header_size) + m_max_payload;
    }

  private:
    struct Control;
    UplinkRing(Control* control, std::byte* slots, std::uint32_t slot_count, std::uint32_t stride,
               std::uint32_t max_payload)
        : m_control(control),
          m_slots(slots),
          m_slot_count(slot_count),
          m_stride(stride),
          m_max_payload(max_payload) {}
    std::byte* slot(std::uint64_t index) const;

    Control* m_control = nullptr;
    std::byte* m_slots = nullptr;
    std::uint32_t m_slot_count = 0;
    std::uint32_t m_stride = 0;
    std::uint32_t m_max_payload = 0;
    std::uint64_t m_read = 0;   // owner: private cursor
    std::uint64_t m_write = 0;  // child: private cursor
};

}  // namespace hmk
