// SPDX-License-Identifier: Apache-2.0
#include "bus_block_io.hpp"

#include <cstring>

#include "hmk/proto/block_generated.h"
#include "hmk/services/protocol.hpp"

namespace hmk::services {

namespace pb = hmk::proto::block;

// The ops live in the frames of the coroutines that wait on them; the module
// destroys those first (or they are done): nothing here is touched again.
BusBlockIo::~BusBlockIo() = default;

void BusBlockIo::submit(fs::BlockOp& op) {
    m_builder.Clear();
    flatbuffers::Offset<flatbuffers::Vector<std::uint8_t>> data;
    if (op.kind == fs::BlockOp::Kind::write) {
        if (op.write_from.size() != fs::k_block_size) {
            op.complete(Err{fs::IoError::bad_request});
            return;
        }
        data = m_builder.CreateVector(reinterpret_cast<const std::uint8_t*>(op.write_from.data()),
                                      op.write_from.size());
    }
    pb::RequestBuilder r(m_builder);
    switch (op.kind) {
        case fs::BlockOp::Kind::read:
            r.add_op(pb::Op::Read);
            break;
        case fs::BlockOp::Kind::write:
            r.add_op(pb::Op::Write);
            break;
        case fs::BlockOp::Kind::flush:
            r.add_op(pb::Op::Flush);
            break;
        case fs::BlockOp::Kind::info:
            r.add_op(pb::Op::Info);
            break;
    }
    r.add_block(op.block);
    if (op.kind == fs::BlockOp::Kind::write) r.add_data(data);
    m_builder.Finish(r.Finish());
    const std::span<const std::byte> bytes = bytes_of(m_builder);
    const std::uint64_t correlation = m_env.next_correlation();
    Out& out = m_out[correlation];
    out.op = &op;
    out.request.assign(bytes.begin(), bytes.end());
    send(correlation, out);
}

void BusBlockIo::send(std::uint64_t correlation, Out& out) {
    Outgoing o;
    o.destination = m_driver;
    o.type = k_block_type;
    o.correlation = correlation;
    o.payload = out.request;
    // A send that fails (the uplink full) counts as sent: on_tick tries again.
    (void)m_env.send(o);
    out.sent_ns = m_env.now_ns();
    ++out.tries;
}

bool BusBlockIo::on_reply(const Message& m) {
    const auto it = m_out.find(m.header.correlation);
    if (it == m_out.end() || m.header.sender != m_driver) return false;
    fs::BlockOp& op = *it->second.op;
    m_out.erase(it);
    const pb::Reply* reply = verified<pb::Reply>(m.payload);
    if (reply == nullptr) {
        op.complete(Err{fs::IoError::io_error});
        return true;
    }
    switch (reply->status()) {
        case pb::Status::Ok:
            break;
        case pb::Status::BadRequest:
            op.complete(Err{fs::IoError::bad_request});
            return true;
        case pb::Status::OutOfRange:
            op.complete(Err{fs::IoError::out_of_range});
            return true;
        default:
            op.complete(Err{fs::IoError::io_error});
            return true;
    }
    if (op.kind == fs::BlockOp::Kind::info) {
        op.info_blocks = reply->blocks();
        m_durable = reply->durable();
    }
    if (op.kind == fs::BlockOp::Kind::read) {
        if (reply->data() == nullptr || reply->data()->size() != fs::k_block_size ||
            op.read_into.size() != fs::k_block_size) {
            op.complete(Err{fs::IoError::io_error});
            return true;
        }
        std::memcpy(op.read_into.data(), reply->data()->data(), fs::k_block_size);
    }
    op.complete({});
    return true;
}

void BusBlockIo::on_tick(std::uint64_t now_ns) {
    std::vector<std::uint64_t> failed;
    for (auto& [correlation, out] : m_out) {
        if (now_ns < out.sent_ns + m_timeout_ns) continue;
        if (out.tries >= m_tries) {
            failed.push_back(correlation);
            continue;
        }
        ++m_resent;
        send(correlation, out);
    }
    for (const std::uint64_t c : failed) {
        const auto it = m_out.find(c);
        if (it == m_out.end()) continue;
        fs::BlockOp& op = *it->second.op;
        m_out.erase(it);
        op.complete(Err{fs::IoError::io_error});
    }
}

}  // namespace hmk::services
