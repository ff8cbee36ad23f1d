// SPDX-License-Identifier: Apache-2.0
// The file system's blocks over the bus: each BlockOp becomes a request to
// the disk driver (schemas/block.fbs), completed when its answer comes. A
// request not answered in time is sent again (the driver may have been
// restarted), up to a number of tries; then the op fails with io_error.
#pragma once

#include <flatbuffers/flatbuffers.h>

#include <unordered_map>
#include <vector>

#include "hmk/fs/block_io.hpp"
#include "hmk/runtime/module.hpp"

namespace hmk::services {

class BusBlockIo final : public fs::BlockIo {
  public:
    /// Requests go to `driver`. Every call from the module's thread.
    BusBlockIo(Env& env, ModuleId driver, std::uint64_t timeout_ns, std::uint32_t tries)
        : m_env(env), m_driver(driver), m_timeout_ns(timeout_ns), m_tries(tries) {}
    ~BusBlockIo() override;

    void set_blocks(std::uint64_t blocks) { m_blocks = blocks; }
    bool flushes() const override { return m_durable; }
    std::uint64_t blocks() const override { return m_blocks; }
    void submit(fs::BlockOp& op) override;

    /// A block reply: completes its op (and runs whoever waited on it).
    /// False if it answers nothing this device asked.
    bool on_reply(const Message& m);
    /// Sends again what is overdue; fails what has had all its tries.
    void on_tick(std::uint64_t now_ns);
    std::size_t outstanding() const { return m_out.size(); }
    std::uint64_t resent() const { return m_resent; }

  private:
    struct Out {
        fs::BlockOp* op = nullptr;
        std::vector<std::byte> request;
        std::uint64_t sent_ns = 0;
        std::uint32_t tries = 0;
    };
    void send(std::uint64_t correlation, Out& out);

    Env& m_env;
    ModuleId m_driver;
    std::uint64_t m_timeout_ns;
    std::uint32_t m_tries;
    std::uint64_t m_blocks = 0;
    bool m_durable = true;  // until the device says otherwise
    std::uint64_t m_resent = 0;
    std::unordered_map<std::uint64_t, Out> m_out;
    flatbuffers::FlatBufferBuilder m_builder{8192};
};

}  // namespace hmk::services
