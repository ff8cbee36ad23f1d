// SPDX-License-Identifier: Apache-2.0
#include "hmk/runtime/module_host.hpp"

#include <fmt/core.h>
#include <unistd.h>

#include <atomic>
#include <vector>

#include "hmk/platform/futex.hpp"
#include "hmk/platform/sandbox.hpp"
#include "hmk/platform/shm.hpp"
#include "hmk/runtime/config.hpp"
#include "hmk/uplink_ring.hpp"
#include "process_child.hpp"
#include "runner.hpp"

namespace hmk {
namespace {

/// The parent bus as a module in its own process sees it: the owner's ring,
/// mapped read-only, and the module's uplink to the owner.
class RemoteBus final : public detail::BusPort {
  public:
    RemoteBus(BroadcastRing ring, UplinkRing uplink, int event_fd, std::string name)
        : m_ring(ring), m_uplink(uplink), m_event(event_fd), m_name(std::move(name)) {
        m_buffer.resize(m_uplink.max_message());
    }
    const BroadcastRing& ring() const override { return m_ring; }
    const std::string& name() const override { return m_name; }

    Result<std::uint64_t, SendError> publish(Header h, std::span<const std::byte> payload,
                                             ModuleId /*via*/) override {
        // The owner stamps and checks everything; we only frame the message.
        if (payload.size() > m_ring.max_payload()) return Err{SendError::payload_too_large};
        h.payload_size = static_cast<std::uint32_t>(payload.size());
        encode_header(h, std::span<std::byte, k_header_size>(m_buffer.data(), k_header_size));
        std::copy(payload.begin(), payload.end(), m_buffer.begin() + k_header_size);
        if (!m_uplink.try_push(
                std::span<const std::byte>(m_buffer.data(), k_header_size + payload.size()))) {
            return Err{SendError::full};
        }
        // Wake the owner's pump only if it sleeps: one write per burst.
        std::atomic<std::uint32_t>& armed = m_uplink.bells().owner_armed;
        if (armed.load(std::memory_order_seq_cst) != 0 &&
            armed.exchange(0, std::memory_order_seq_cst) != 0) {
            const std::uint64_t one = 1;
            (void)!write(m_event, &one, sizeof(one));
        }
        return std::uint64_t{0};  // the sequence number is known once the owner publishes it
    }

  private:
    BroadcastRing m_ring;
    UplinkRing m_uplink;
    int m_event;
    std::string m_name;
    std::vector<std::byte> m_buffer;
};

/// The runner's host inside a module host process.
class HostSide final : public detail::RunnerHost {
  public:
    HostSide(Logger& logger, const Topology& topology, UplinkStats& stats, ModuleId id)
        : m_logger(logger), m_topology(topology), m_stats(stats), m_id(id) {}
    Logger& logger() override { return m_logger; }
    const Topology& topology() const override { return m_topology; }
    // Unique across the system without asking anyone: the module id on top.
    std::uint64_t next_correlation() override {
        return (std::uint64_t{m_id} << 40) | ++m_correlation;
    }
    void started(ModuleId /*id*/, bool ok) override {
        m_stats.state.store(
            static_cast<std::uint32_t>(ok ? ModuleState::running : ModuleState::failed),
            std::memory_order_release);
    }
    bool wants_progress() const override { return true; }
    void progress(const ModuleStats& s) override {
        m_stats.rx.store(s.rx, std::memory_order_relaxed);
        m_stats.tx.store(s.tx, std::memory_order_relaxed);
        m_stats.seen.store(s.seen, std::memory_order_relaxed);
        m_stats.lost.store(s.lost, std::memory_order_relaxed);
        m_stats.invalid.store(s.invalid, std::memory_order_relaxed);
        m_stats.send_errors.store(s.send_errors, std::memory_order_relaxed);
    }

  private:
    Logger& m_logger;
    const Topology& m_topology;
    UplinkStats& m_stats;
    ModuleId m_id;
    std::uint64_t m_correlation = 0;
};

std::string read_system_text(std::uint64_t size) {
    std::string text(static_cast<std::size_t>(size), '\0');
    std::size_t done = 0;
    while (done < text.size()) {
        // pread: the fd's file offset is shared with our siblings' copies.
        const ssize_t n = pread(k_host_fd_system, text.data() + done, text.size() - done,
                                static_cast<off_t>(done));
        if (n <= 0) break;
        done += static_cast<std::size_t>(n);
    }
    text.resize(done);
    return text;
}

}  // namespace

int run_module_host(const HostOptions& o) {
    Logger logger(stderr, parse_log_level(o.log_level).value_or(LogLevel::info));
    auto fail = [&](const std::string& why) {
        logger.log(LogLevel::error, o.module, "module host: " + why);
        return 2;
    };
    Registry registry;
    // The other modules of the system appear to us as placeholders of their role.
    for (const auto& [name, role] : {std::pair{detail::k_placeholder_gateway, Role::gateway},
                                     std::pair{detail::k_placeholder_leaf, Role::leaf}}) {
        registry.add(ModuleKind{name,
                                "placeholder",
                                role,
                                Eavesdrop::no,
                                {},
                                [](Env&) -> Result<std::unique_ptr<Module>, std::string> {
                                    return Err{std::string("a placeholder kind is never run")};
                                }});
    }
    for (const auto& p : o.plugins) {
        if (auto loaded = registry.load_plugin(p); !loaded) return fail(loaded.error());
    }
    auto spec = parse_system(read_system_text(o.text_size), "(system from parent)", registry,
                             Plugins::already_loaded);
    if (!spec) return fail(spec.error().to_string());
    const TopologyNode* node = spec->topology.find(o.module);
    const ModuleSpec* mine = node != nullptr ? spec->module(node->id) : nullptr;
    const ModuleKind* kind = mine != nullptr ? registry.find(mine->kind) : nullptr;
    if (kind == nullptr)
        return fail("no module " + o.module + " of a known kind in the system description");

    auto bus_region =
        platform::SharedRegion::map(platform::UniqueFd(k_host_fd_bus), platform::Access::read_only);
    auto up_region = platform::SharedRegion::map(platform::UniqueFd(k_host_fd_uplink),
                                                 platform::Access::read_write);
    if (!bus_region || !up_region) return fail("cannot map the bus or the uplink");
    auto ring = BroadcastRing::attach(bus_region->bytes());
    auto uplink = UplinkRing::attach(up_region->bytes());
    if (!ring || !uplink) return fail("the bus or uplink region holds no ring");
    ::close(k_host_fd_system);

    const TopologyNode* parent = spec->topology.find(node->parent);
    RemoteBus bus(*ring, *uplink, k_host_fd_event,
                  parent->id == k_root_id ? "Bus 0" : parent->path);
    HostSide side(logger, spec->topology, uplink->stats(), node->id);
    UplinkBells& bells = uplink->bells();
    detail::Runner runner(
        side, mine, kind, &bus, nullptr,
        detail::Doorbell{&bells.child_word, &bells.child_armed, platform::FutexScope::shared});
    runner.set_parent_cursor(o.from_seq);

    // Last step before module code runs: the sandbox closes, for good.
    logger.log(LogLevel::debug, o.module, "closing the sandbox");
    const platform::SandboxReport report = platform::close_sandbox();
    std::string active;
    for (const auto& a : report.active) active += (active.empty() ? "" : ", ") + a;
    logger.log(LogLevel::debug, o.module, "sandbox: " + active);
    for (const auto& s : report.skipped)
        logger.log(LogLevel::warn, o.module, "sandbox layer skipped: " + s);
    std::uint32_t bits = 0;
    for (const auto& a : report.active) {
        if (a.rfind("landlock", 0) == 0) bits |= k_sandbox_landlock;
        if (a == "no_new_privs") bits |= k_sandbox_no_new_privs;
        if (a == "seccomp allowlist") bits |= k_sandbox_seccomp;
    }
    uplink->stats().sandbox.store(bits, std::memory_order_release);

    runner.run();
    const ModuleStats s = runner.stats();
    side.progress(s);
    uplink->stats().state.store(static_cast<std::uint32_t>(s.state), std::memory_order_release);
    return s.state == ModuleState::failed ? 1 : 0;
}

}  // namespace hmk
