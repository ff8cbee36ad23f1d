// SPDX-License-Identifier: Apache-2.0
#include "hmk/broadcast_ring.hpp"

#include <cstring>

#include "hmk/detail/atomic_copy.hpp"

namespace hmk {

// Control block at the start of the region. Immutable geometry first, then the
// writer's head on a cache line of its own.
struct BroadcastRing::Control {
    std::uint64_t magic;
    std::uint32_t version;
    std::uint32_t slot_count;
    std::uint32_t stride;
    std::uint32_t max_payload;
    std::uint64_t first_seq;
    std::uint32_t commit_mode;
    alignas(64) std::atomic<std::uint64_t> head;
    alignas(64) std::atomic<std::uint64_t> commit;  // CommitMode::explicit_ only
};

// Slot layout: tag (the sequence number it holds; k_busy set while written),
// size, then the encoded message, padded to a multiple of 8 bytes.
struct BroadcastRing::Slot {
    std::atomic<std::uint64_t> tag;
    std::atomic<std::uint32_t> size;
    std::uint32_t reserved;
    std::uint64_t data[1];  // really stride/8 - 2 words
};

namespace {

constexpr std::uint64_t k_ring_magic = 0x474e4952'4b4d4831ull;  // "1HMKRING"
constexpr std::uint32_t k_ring_version = 2;
constexpr std::uint64_t k_busy = 1ull << 63;
constexpr std::size_t k_control_size = 192;
constexpr std::size_t k_slot_header = 16;
static_assert(sizeof(std::atomic<std::uint64_t>) == 8 &&
                  std::atomic<std::uint64_t>::is_always_lock_free,
              "the ring relies on lock-free 64-bit atomics (they also work across processes)");

constexpr std::size_t round_up(std::size_t n, std::size_t to) {
    return (n + to - 1) / to * to;
}

std::uint32_t stride_for(std::uint32_t max_payload) {
    return static_cast<std::uint32_t>(round_up(k_slot_header + k_header_size + max_payload, 64));
}

bool is_power_of_two(std::uint32_t n) {
    return n != 0 && (n & (n - 1)) == 0;
}

using detail::load_words;
using detail::store_words;

}  // namespace

const char* to_string(RingError error) {
    switch (error) {
        case RingError::misaligned:
            return "ring region is not 64-byte aligned";
        case RingError::too_small:
            return "ring region too small";
        case RingError::bad_geometry:
            return "slot count must be a power of two, payload limit at most 1 MiB, first "
                   "sequence number from 1 to 2^62";
        case RingError::not_formatted:
            return "region holds no hmk ring";
        case RingError::payload_too_large:
            return "payload larger than the ring's slots";
    }
    return "ring error";
}

std::size_t BroadcastRing::region_size(std::uint32_t slot_count, std::uint32_t max_payload) {
    return k_control_size + std::size_t{slot_count} * stride_for(max_payload);
}

Result<BroadcastRing, RingError> BroadcastRing::create(std::span<std::byte> region,
                                                       std::uint32_t slot_count,
                                                       std::uint32_t max_payload,
                                                       std::uint64_t first_seq, CommitMode mode,
                                                       Zeroed zeroed) {
    static_assert(sizeof(Control) <= k_control_size);
    if (reinterpret_cast<std::uintptr_t>(region.data()) % 64 != 0)
        return Err{RingError::misaligned};
    // Tags keep the busy bit free, and seq + slot_count must not wrap.
    if (!is_power_of_two(slot_count) || max_payload > k_max_payload || first_seq == 0 ||
        first_seq > (1ull << 62)) {
        return Err{RingError::bad_geometry};
    }
    if (region.size() < region_size(slot_count, max_payload)) return Err{RingError::too_small};
    if (zeroed == Zeroed::no) std::memset(region.data(), 0, region_size(slot_count, max_payload));
    auto* control = new (region.data()) Control{};
    control->magic = k_ring_magic;
    control->version = k_ring_version;
    control->slot_count = slot_count;
    control->stride = stride_for(max_payload);
    control->max_payload = max_payload;
    control->first_seq = first_seq;
    control->commit_mode = static_cast<std::uint32_t>(mode);
    control->head.store(first_seq - 1, std::memory_order_release);
    control->commit.store(first_seq - 1, std::memory_order_release);
    std::byte* slots = region.data() + k_control_size;
    // An empty slot is all zero bytes: zeroed memory holds empty slots already.
    for (std::uint32_t i = 0; zeroed == Zeroed::no && i < slot_count; ++i) {
        new (slots + std::size_t{i} * control->stride) Slot{};
    }
    return BroadcastRing(control, slots, slot_count, control->stride, max_payload, first_seq, mode);
}

Result<BroadcastRing, RingError> BroadcastRing::attach(std::span<std::byte> region) {
    if (reinterpret_cast<std::uintptr_t>(region.data()) % 64 != 0)
        return Err{RingError::misaligned};
    if (region.size() < k_control_size) return Err{RingError::too_small};
    auto* control = std::launder(reinterpret_cast<Control*>(region.data()));
    if (control->magic != k_ring_magic || control->version != k_ring_version) {
        return Err{RingError::not_formatted};
    }
    // The geometry is read once and kept in the view, so a later change of the
    // control block by another party cannot make this view read out of bounds.
    const std::uint32_t slot_count = control->slot_count;
    const std::uint32_t max_payload = control->max_payload;
    const std::uint32_t stride = control->stride;
    const std::uint64_t first = control->first_seq;
    const std::uint32_t mode = control->commit_mode;
    if (!is_power_of_two(slot_count) || max_payload > k_max_payload ||
        stride != stride_for(max_payload) || first == 0 || first > (1ull << 62) ||
        mode > static_cast<std::uint32_t>(CommitMode::explicit_)) {
        return Err{RingError::bad_geometry};
    }
    if (region.size() < region_size(slot_count, max_payload)) return Err{RingError::too_small};
    return BroadcastRing(control, region.data() + k_control_size, slot_count, stride, max_payload,
                         first, static_cast<CommitMode>(mode));
}

BroadcastRing::Slot* BroadcastRing::slot(std::uint64_t seq) const {
    const std::size_t index = static_cast<std::size_t>(seq & (m_slot_count - 1));
    return std::launder(reinterpret_cast<Slot*>(m_slots + index * m_stride));
}

std::uint64_t BroadcastRing::head() const {
    return m_control->head.load(std::memory_order_acquire);
}

std::uint64_t BroadcastRing::available(Visibility visibility) const {
    if (visibility == Visibility::committed && m_mode == CommitMode::explicit_) {
        return m_control->commit.load(std::memory_order_seq_cst);
    }
    return head();
}

std::uint64_t BroadcastRing::oldest() const {
    const std::uint64_t h = head();
    return h - m_first + 1 < m_slot_count ? m_first : h - m_slot_count + 1;
}

void BroadcastRing::commit(std::uint64_t seq) {
    const std::uint64_t h = m_control->head.load(std::memory_order_relaxed);
    if (seq > h) seq = h;
    if (seq > m_control->commit.load(std::memory_order_relaxed)) {
        // seq_cst, like the head: readers arm their doorbell and then look at it.
        m_control->commit.store(seq, std::memory_order_seq_cst);
    }
}

Result<std::uint64_t, RingError> BroadcastRing::publish(Header& header,
                                                        std::span<const std::byte> payload) {
    if (payload.size() > m_max_payload) return Err{RingError::payload_too_large};
    const std::uint64_t seq = m_control->head.load(std::memory_order_relaxed) + 1;
    header.seq = seq;
    header.payload_size = static_cast<std::uint32_t>(payload.size());
    Slot* s = slot(seq);
    s->tag.store(seq | k_busy, std::memory_order_relaxed);

    alignas(8) std::byte head_bytes[k_header_size];
    encode_header(header, std::span<std::byte, k_header_size>(head_bytes));
    store_words(s->data, head_bytes, k_header_size);
    store_words(s->data + k_header_size / 8, payload.data(), payload.size());
    s->size.store(static_cast<std::uint32_t>(k_header_size + payload.size()),
                  std::memory_order_release);

    s->tag.store(seq, std::memory_order_release);
    m_control->head.store(seq, std::memory_order_seq_cst);
    return seq;
}

ReadResult BroadcastRing::read(std::uint64_t& cursor, std::span<std::byte> out,
                               Visibility visibility) const {
    ReadResult r;
    for (;;) {
        const std::uint64_t h = head();
        const std::uint64_t oldest =
            h - m_first + 1 < m_slot_count ? m_first : h - m_slot_count + 1;
        if (cursor == 0 || cursor < oldest) {
            // Lapped, from before this ring's first message, or never set:
            // jump to the oldest held.
            const std::uint64_t wanted = cursor == 0 ? oldest : cursor;
            cursor = oldest;
            if (wanted < oldest) {
                r.status = ReadStatus::lost;
                r.lost_first = wanted;
                r.lost_last = oldest - 1;
                return r;
            }
            continue;
        }
        if (cursor > available(visibility)) return r;  // empty
        const Slot* s = slot(cursor);
        const std::uint64_t t1 = s->tag.load(std::memory_order_acquire);
        if (t1 != cursor) continue;  // being overwritten by a newer lap: re-check head
        const std::uint32_t size = s->size.load(std::memory_order_acquire);
        const std::uint32_t max = max_message();
        const std::uint32_t n = size <= max && size <= out.size() ? size : 0;
        load_words(out.data(), s->data, n);
        if (s->tag.load(std::memory_order_relaxed) != cursor) continue;  // torn: retry
        r.status = ReadStatus::ok;
        r.size = n;
        r.seq = cursor;
        ++cursor;
        return r;
    }
}

}  // namespace hmk
