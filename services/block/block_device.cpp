// SPDX-License-Identifier: Apache-2.0
// `blockdev`: the microkernel's block device, a kernel service on Bus 0
// backed by an image file (docs/services.md). It runs in the kernel's
// process, or sandboxed with its image granted (grants = { file = ...,
// write = true, create = true }); drivers reach it only by messages
// (schemas/block.fbs).
#include <fmt/core.h>
#include <sys/stat.h>

#include <filesystem>

#include "hmk/fs/block_io.hpp"
#include "hmk/proto/block_generated.h"
#include "hmk/services/protocol.hpp"
#include "hmk/services/services.hpp"

namespace hmk::services {
namespace {

namespace pb = hmk::proto::block;

class BlockDevice final : public Module {
  public:
    static Result<std::unique_ptr<Module>, std::string> create(Env& env) {
        const std::string& image = env.config().string("image");
        struct stat st {};
        std::unique_ptr<fs::FileBlockIo> io;
        // Missing, or empty (a granted file its host just made): a new image.
        if (::stat(image.c_str(), &st) != 0 || (S_ISREG(st.st_mode) && st.st_size == 0)) {
            std::error_code ec;
            const auto dir = std::filesystem::path(image).parent_path();
            if (!dir.empty()) std::filesystem::create_directories(dir, ec);
            const auto blocks = static_cast<std::uint64_t>(env.config().integer("blocks"));
            auto made = fs::FileBlockIo::create(image, blocks);
            if (!made) return Err{made.error()};
            io = std::move(*made);
            env.log(LogLevel::info, fmt::format("{}: created, {} blocks of {} bytes", image, blocks,
                                                fs::k_block_size));
        } else {
            auto opened = fs::FileBlockIo::open(image);
            if (!opened) return Err{opened.error()};
            io = std::move(*opened);
        }
        io->set_durable(env.config().boolean("durable"));
        return std::unique_ptr<Module>(new BlockDevice(env, std::move(io)));
    }

    void on_message(const Message& m) override {
        const Header& h = m.header;
        if (h.destination != m_env.id() || h.is_reply() || h.type < msg::k_user_base) return;
        if (h.type != k_block_type) {
            answer(m, pb::Status::BadRequest,
                   fmt::format("type {:#x} is not the block protocol ({:#x}, schemas/block.fbs)",
                               h.type, k_block_type));
            return;
        }
        const pb::Request* req = verified<pb::Request>(m.payload);
        if (req == nullptr) {
            answer(m, pb::Status::BadRequest, "not a block request (schemas/block.fbs)");
            return;
        }
        fs::BlockOp op;
        op.block = req->block();
        switch (req->op()) {
            case pb::Op::Info:
                answer(m, pb::Status::Ok, {}, 0, m_io->blocks(), {}, m_io->durable());
                return;
            case pb::Op::Read:
                op.kind = fs::BlockOp::Kind::read;
                op.read_into = m_buffer;
                break;
            case pb::Op::Write:
                if (req->data() == nullptr || req->data()->size() != fs::k_block_size) {
                    answer(m, pb::Status::BadRequest,
                           fmt::format("a write carries one block of {} bytes", fs::k_block_size));
                    return;
                }
                op.kind = fs::BlockOp::Kind::write;
                op.write_from = std::span<const std::byte>(
                    reinterpret_cast<const std::byte*>(req->data()->data()), fs::k_block_size);
                break;
            case pb::Op::Flush:
                op.kind = fs::BlockOp::Kind::flush;
                break;
            default:
                answer(m, pb::Status::BadRequest, "unknown operation");
                return;
        }
        m_io->submit(op);  // a file: done at once
        if (!op.result) {
            const fs::IoError e = op.result.error();
            answer(m, static_cast<pb::Status>(e),
                   e == fs::IoError::out_of_range
                       ? fmt::format("block {} is beyond the device's {}", op.block, m_io->blocks())
                       : std::string(fs::to_string(e)));
            return;
        }
        answer(m, pb::Status::Ok, {}, op.block, 0,
               op.kind == fs::BlockOp::Kind::read ? std::span<const std::byte>(m_buffer)
                                                  : std::span<const std::byte>());
    }

  private:
    BlockDevice(Env& env, std::unique_ptr<fs::FileBlockIo> io)
        : m_env(env), m_io(std::move(io)), m_buffer(fs::k_block_size), m_builder(8192) {}

    void answer(const Message& m, pb::Status status, std::string_view why, std::uint64_t block = 0,
                std::uint64_t blocks = 0, std::span<const std::byte> data = {},
                bool durable = false) {
        m_builder.Clear();
        const auto message = why.empty() ? 0 : m_builder.CreateString(why.data(), why.size());
        const auto bytes =
            data.empty() ? 0
                         : m_builder.CreateVector(
                               reinterpret_cast<const std::uint8_t*>(data.data()), data.size());
        pb::ReplyBuilder r(m_builder);
        r.add_status(status);
        if (!why.empty()) r.add_message(message);
        r.add_block(block);
        r.add_block_size(fs::k_block_size);
        r.add_blocks(blocks);
        if (!data.empty()) r.add_data(bytes);
        r.add_durable(durable);
        m_builder.Finish(r.Finish());
        (void)m_env.reply(m, bytes_of(m_builder), status == pb::Status::Ok ? 0 : k_flag_error);
    }

    Env& m_env;
    std::unique_ptr<fs::FileBlockIo> m_io;
    std::vector<std::byte> m_buffer;
    flatbuffers::FlatBufferBuilder m_builder;
};

}  // namespace

void add_block_device(Registry& registry) {
    registry.add<BlockDevice>(
        "blockdev",
        "the kernel's block device on an image file (schemas/block.fbs, type 0x2000): info, "
        "read, write and flush of 4096-byte blocks; runs in the kernel's process",
        Role::leaf,
        {ConfigKey("image", ConfigType::file, std::string(),
                   "the image file (relative: to the system file); made when missing")
             .require(),
         ConfigKey("blocks", ConfigType::integer, std::int64_t{16384},
                   "size of a new image, in blocks")
             .range(1024, std::int64_t{1} << 32),
         ConfigKey("durable", ConfigType::boolean, false,
                   "flush calls fdatasync (survives power loss, not only crashes)")});
}

}  // namespace hmk::services
