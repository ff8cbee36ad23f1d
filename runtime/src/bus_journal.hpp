// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "hmk/runtime/journal.hpp"
#include "hmk/runtime/system_spec.hpp"
#include "inproc_bus.hpp"
#include "runner.hpp"

namespace hmk::detail {

/// Where a module's life in the journal begins: its parent's `started`
/// event (a fresh instance), with what that instance was given.
struct Genesis {
    std::uint64_t seq = 0;  ///< of the `started` event
    std::uint64_t seed = 0;
    std::uint64_t timestamp_ns = 0;
    std::uint64_t from_seq = 0;  ///< the first input it read (at boot: the bus's first)
};

/// The journal of one bus as the bus owner's runtime uses it: where it is,
/// who writes it, and where each module of the bus began. Thread-safe.
class BusJournal {
  public:
    /// `monitor` is the module that journals the bus; its config gives the
    /// directory, fsync policy, visibility and stall deadline.
    BusJournal(const ModuleSpec& monitor, BusId bus);

    /// At build time: locks the directory for this system (a second system on
    /// the same journal is refused), repairs it (a damaged tail goes to
    /// quarantine), then reads it once for every module's latest fresh start.
    /// Returns the last seq it holds (the bus continues after it).
    Result<std::uint64_t, std::string> open(Logger& logger);
    ~BusJournal();
    /// The system stopped writing it: another may take it now.
    void unlock();
    BusJournal(const BusJournal&) = delete;
    BusJournal& operator=(const BusJournal&) = delete;

    std::optional<Genesis> genesis(ModuleId module) const;
    void set_genesis(ModuleId module, const Genesis& genesis);

    const std::string& dir() const { return m_dir; }
    ModuleId monitor() const { return m_monitor; }
    BusId bus() const { return m_bus; }
    bool durable() const { return m_durable; }
    std::uint32_t stall_ms() const { return m_stall_ms; }
    std::uint32_t max_payload() const { return m_max_payload; }
    /// The last seq the journal held when opened (0: empty).
    std::uint64_t last_seq() const { return m_last_seq; }
    void set_max_payload(std::uint32_t n) { m_max_payload = n; }

  private:
    ModuleId m_monitor;
    BusId m_bus;
    std::string m_dir;
    bool m_durable;
    std::uint32_t m_stall_ms;
    std::uint32_t m_max_payload = k_max_payload;
    std::uint64_t m_last_seq = 0;
    int m_lock = -1;  // DIR/.lock, flock'ed for the life of the system
    mutable std::mutex m_mutex;
    std::map<ModuleId, Genesis> m_genesis;
};

/// An in-process runner's way to parent-bus messages the ring no longer
/// holds: it reads the bus journal's files itself.
class JournalCatchUp final : public CatchUp {
  public:
    JournalCatchUp(const BusJournal& journal, const InprocBus& bus, Logger& logger,
                   std::string who);
    Status read(std::uint64_t seq, std::span<std::byte> out, std::uint32_t& size,
                std::uint64_t& missing_last) override;
    bool ready() override { return true; }

  private:
    JournalReader m_reader;
    const InprocBus& m_bus;
    Logger& m_logger;
    std::string m_who;
};

/// Counts the messages `module` put on `bus` with seq in (after, head]:
/// its outputs, as a recovery must not send them again. Runtime timer and
/// snapshot messages and what the operator sent in its name do not count.
/// Reads the journal, then the ring for what the journal does not have yet.
/// Error: part of the range is in neither.
Result<std::uint64_t, std::string> count_outputs(ModuleId module, std::uint64_t after,
                                                 const InprocBus& bus, const BusJournal* journal);

/// Plans the start of instance `epoch` of `spec` on `bus` and announces it
/// there (a k_lifecycle event, on journaled buses). With `recovery =
/// journal` and history in the journal: the newest usable snapshot (input
/// seq at most `snapshot_at_most`) or the latest fresh start, the messages to
/// replay, and how many of its outputs are already on the bus. Otherwise a
/// fresh start. The seed comes from `entropy` for fresh starts. `boot_from`
/// (non-zero while the system boots): where a fresh instance starts reading,
/// so that every module of the first boot reads its bus from the same point.
StartPlan plan_start(const ModuleSpec& spec, InprocBus& bus, BusJournal* journal,
                     std::uint64_t epoch, std::uint64_t snapshot_at_most, std::uint64_t entropy,
                     std::uint64_t boot_from, Logger& logger);

/// Publishes a lifecycle event for `module` on `bus` as its owner, with an
/// optional reason text. Returns its seq (0 if the bus refused it).
std::uint64_t announce(InprocBus& bus, const LifecycleEvent& event, std::string_view reason = {},
                       std::uint64_t* stamped_ns = nullptr);

}  // namespace hmk::detail
