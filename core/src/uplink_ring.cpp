// SPDX-License-Identifier: Apache-2.0
#include "hmk/uplink_ring.hpp"

#include <cstring>
#include <new>

#include "hmk/detail/atomic_copy.hpp"

namespace hmk {

struct UplinkRing::Control {
    std::uint64_t magic;
    std::uint32_t version;
    std::uint32_t slot_count;
    std::uint32_t stride;
    std::uint32_t max_payload;
    alignas(64) std::atomic<std::uint64_t> write_pos;  // child: records written
    alignas(64) std::atomic<std::uint64_t> read_pos;   // owner: records taken (for flow control)
    UplinkBells bells;
    UplinkStats stats;
    UplinkProgress progress;
};

namespace {

constexpr std::uint64_t k_uplink_magic = 0x4b4e494c'50554b48ull;  // "HKUPLINK"
constexpr std::uint32_t k_uplink_version = 2;
constexpr std::size_t k_control_size = 512;
constexpr std::size_t k_size_field = 8;  // u32 size, padded so data stays 8-aligned

std::uint32_t stride_for(std::uint32_t max_payload) {
    const std::size_t n = k_size_field + k_header_size + max_payload;
    return static_cast<std::uint32_t>((n + 63) / 64 * 64);
}

bool is_power_of_two(std::uint32_t n) {
    return n != 0 && (n & (n - 1)) == 0;
}

}  // namespace

std::size_t UplinkRing::region_size(std::uint32_t slot_count, std::uint32_t max_payload) {
    return k_control_size + std::size_t{slot_count} * stride_for(max_payload);
}

Result<UplinkRing, RingError> UplinkRing::create(std::span<std::byte> region,
                                                 std::uint32_t slot_count,
                                                 std::uint32_t max_payload, Zeroed zeroed) {
    static_assert(sizeof(Control) <= k_control_size);
    if (reinterpret_cast<std::uintptr_t>(region.data()) % 64 != 0)
        return Err{RingError::misaligned};
    if (!is_power_of_two(slot_count) || max_payload > k_max_payload)
        return Err{RingError::bad_geometry};
    if (region.size() < region_size(slot_count, max_payload)) return Err{RingError::too_small};
    if (zeroed == Zeroed::no) std::memset(region.data(), 0, region_size(slot_count, max_payload));
    auto* c = new (region.data()) Control{};
    c->magic = k_uplink_magic;
    c->version = k_uplink_version;
    c->slot_count = slot_count;
    c->stride = stride_for(max_payload);
    c->max_payload = max_payload;
    return UplinkRing(c, region.data() + k_control_size, slot_count, c->stride, max_payload);
}

Result<UplinkRing, RingError> UplinkRing::attach(std::span<std::byte> region) {
    if (reinterpret_cast<std::uintptr_t>(region.data()) % 64 != 0)
        return Err{RingError::misaligned};
    if (region.size() < k_control_size) return Err{RingError::too_small};
    auto* c = std::launder(reinterpret_cast<Control*>(region.data()));
    if (c->magic != k_uplink_magic || c->version != k_uplink_version)
        return Err{RingError::not_formatted};
    const std::uint32_t slots = c->slot_count, max_payload = c->max_payload;
    if (!is_power_of_two(slots) || max_payload > k_max_payload ||
        c->stride != stride_for(max_payload)) {
        return Err{RingError::bad_geometry};
    }
    if (region.size() < region_size(slots, max_payload)) return Err{RingError::too_small};
    UplinkRing ring(c, region.data() + k_control_size, slots, c->stride, max_payload);
    ring.m_write = c->write_pos.load(std::memory_order_relaxed);
    return ring;
}

std::byte* UplinkRing::slot(std::uint64_t index) const {
    return m_slots + static_cast<std::size_t>(index & (m_slot_count - 1)) * m_stride;
}

bool UplinkRing::try_push(std::span<const std::byte> message) {
    if (message.size() > max_message()) return false;
    const std::uint64_t read = m_control->read_pos.load(std::memory_order_acquire);
    if (m_write - read >= m_slot_count) return false;
    std::byte* s = slot(m_write);
    std::atomic_ref<std::uint32_t>(*reinterpret_cast<std::uint32_t*>(s))
        .store(static_cast<std::uint32_t>(message.size()), std::memory_order_relaxed);
    detail::store_words(reinterpret_cast<std::uint64_t*>(s + k_size_field), message.data(),
                        message.size());
    ++m_write;
    // seq_cst: the child then checks whether the owner sleeps, and the owner,
    // about to sleep, arms and then checks this cursor (see UplinkBells).
    m_control->write_pos.store(m_write, std::memory_order_seq_cst);
    return true;
}

void UplinkRing::reset() {
    // The last child may have scribbled over the whole region, its header
    // too: the header is written again from the owner's own copy.
    m_control->magic = k_uplink_magic;
    m_control->version = k_uplink_version;
    m_control->slot_count = m_slot_count;
    m_control->stride = m_stride;
    m_control->max_payload = m_max_payload;
    m_control->write_pos.store(0, std::memory_order_seq_cst);
    m_control->read_pos.store(0, std::memory_order_seq_cst);
    m_read = 0;
    m_write = 0;
    UplinkBells& b = m_control->bells;
    b.child_armed.store(0, std::memory_order_seq_cst);
    b.owner_armed.store(0, std::memory_order_seq_cst);
    UplinkStats& s = m_control->stats;
    for (auto* c : {&s.rx, &s.tx, &s.seen, &s.lost, &s.invalid, &s.send_errors, &s.caught_up,
                    &s.suppressed, &s.snapshots})
        c->store(0, std::memory_order_relaxed);
    s.sandbox.store(0, std::memory_order_relaxed);
    UplinkProgress& p = m_control->progress;
    for (auto* c :
         {&p.heartbeat, &p.want_from, &p.want_run, &p.feed_read, &p.cursor, &p.ring_cursor})
        c->store(0, std::memory_order_relaxed);
    s.state.store(0, std::memory_order_release);
}

std::uint64_t UplinkRing::pending() const {
    const std::uint64_t w = m_control->write_pos.load(std::memory_order_seq_cst);
    return w >= m_read && w - m_read <= m_slot_count ? w - m_read : 0;
}

PopResult UplinkRing::pop(std::span<std::byte> out) {
    PopResult r;
    // Each shared value is read once into a local and checked before use.
    const std::uint64_t w = m_control->write_pos.load(std::memory_order_acquire);
    if (w == m_read) return r;
    if (w < m_read || w - m_read > m_slot_count) {
        r.status = PopStatus::corrupt;
        return r;
    }
    std::byte* s = slot(m_read);
    const std::uint32_t size = std::atomic_ref<std::uint32_t>(*reinterpret_cast<std::uint32_t*>(s))
                                   .load(std::memory_order_relaxed);
    if (size > max_message() || size > out.size()) {
        r.status = PopStatus::corrupt;
        return r;
    }
    detail::load_words(out.data(), reinterpret_cast<const std::uint64_t*>(s + k_size_field), size);
    ++m_read;
    m_control->read_pos.store(m_read, std::memory_order_release);
    r.status = PopStatus::ok;
    r.size = size;
    return r;
}

UplinkBells& UplinkRing::bells() const {
    return m_control->bells;
}
UplinkStats& UplinkRing::stats() const {
    return m_control->stats;
}
UplinkProgress& UplinkRing::progress() const {
    return m_control->progress;
}

}  // namespace hmk
