// SPDX-License-Identifier: Apache-2.0
#include "bus_journal.hpp"

#include <fmt/core.h>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

namespace hmk::detail {

BusJournal::BusJournal(const ModuleSpec& monitor, BusId bus)
    : m_monitor(monitor.id),
      m_bus(bus),
      m_dir(monitor.config.string("dir")),
      m_durable(monitor.config.string("visibility") == "durable"),
      m_stall_ms(static_cast<std::uint32_t>(monitor.config.integer("stall_ms"))) {}

BusJournal::~BusJournal() {
    unlock();
}

void BusJournal::unlock() {
    if (m_lock >= 0) ::close(m_lock);
    m_lock = -1;
}

Result<std::uint64_t, std::string> BusJournal::open(Logger& logger) {
    std::error_code made;
    std::filesystem::create_directories(m_dir, made);
    const std::string lock_file = m_dir + "/.lock";
    m_lock = ::open(lock_file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (m_lock < 0) return Err{"cannot open " + lock_file + ": " + std::strerror(errno)};
    if (::flock(m_lock, LOCK_EX | LOCK_NB) != 0) {
        return Err{std::string("in use by another running system (") + lock_file + " is locked)"};
    }
    const JournalRepair repair = HMK_TRY(repair_journal(m_dir));
    if (!repair.report.empty()) logger.log(LogLevel::warn, m_dir, repair.report);
    // One pass for where each module's life began: its parent's `started` events.
    std::map<ModuleId, Genesis> found;
    const JournalScan scan = scan_journal(m_dir, [&](const JournalRecord& r) {
        const Header& h = r.header;
        if (h.type != msg::k_lifecycle || h.sender != m_bus || h.via != m_bus || h.hops != 0)
            return;
        std::span<const std::byte> text;
        const auto e = decode_lifecycle(r.message.subspan(k_header_size), text);
        if (e && e->kind == LifecycleKind::started) {
            found[e->module] = Genesis{h.seq, e->seed, h.timestamp_ns, e->from_seq};
        }
    });
    if (!scan.clean && scan.records != 0) {
        // repair_journal() left a clean prefix; anything else is a new problem.
        return Err{"journal " + m_dir + ": " + scan.problem};
    }
    {
        const std::lock_guard lock(m_mutex);
        m_genesis = std::move(found);
    }
    if (scan.records != 0) {
        logger.log(LogLevel::info, m_dir,
                   fmt::format("journal holds seq {}..{} ({} records in {} segments)",
                               scan.first_seq, scan.last_seq, scan.records, scan.segments));
    }
    m_last_seq = repair.last_seq;
    return repair.last_seq;
}

std::optional<Genesis> BusJournal::genesis(ModuleId module) const {
    const std::lock_guard lock(m_mutex);
    const auto it = m_genesis.find(module);
    if (it == m_genesis.end()) return std::nullopt;
    return it->second;
}

void BusJournal::set_genesis(ModuleId module, const Genesis& genesis) {
    const std::lock_guard lock(m_mutex);
    m_genesis[module] = genesis;
}

JournalCatchUp::JournalCatchUp(const BusJournal& journal, const InprocBus& bus, Logger& logger,
                               std::string who)
    : m_reader(journal.dir(), journal.max_payload()),
      m_bus(bus),
      m_logger(logger),
      m_who(std::move(who)) {}

CatchUp::Status JournalCatchUp::read(std::uint64_t seq, std::span<std::byte> out,
                                     std::uint32_t& size, std::uint64_t& missing_last) {
    // Asked before the read: the monitor writes a record before it
    // acknowledges it, so a journal that ends before seq although the
    // monitor had passed it by then has lost it. Asked after the read, a
    // record written in between would count as lost.
    const bool may_still_write = m_bus.journal_may_still_write(seq);
    m_reader.seek(seq);
    JournalRecord record;
    switch (m_reader.next(record)) {
        case JournalReader::Status::ok:
            if (record.message.size() > out.size()) {
                missing_last = seq;
                return Status::missing;
            }
            std::copy(record.message.begin(), record.message.end(), out.begin());
            size = static_cast<std::uint32_t>(record.message.size());
            return Status::ok;
        case JournalReader::Status::end:
            // Not written yet: worth waiting for only if the monitor may still write it.
            if (may_still_write) return Status::pending;
            // The journal ends here for good (its monitor stopped, or fell a
            // ring behind): everything up to what the ring still holds is
            // one gap, told once.
            missing_last = std::max(seq, m_bus.ring().oldest() - 1);
            return Status::missing;
        case JournalReader::Status::missing:
            missing_last = m_reader.missing_last();
            if (missing_last >= seq) return Status::missing;
            if (may_still_write) return Status::pending;
            missing_last = seq;
            return Status::missing;
        case JournalReader::Status::damaged:
            m_logger.log(LogLevel::error, m_who,
                         "journal damaged while catching up: " + m_reader.problem());
            // Skip the damaged record; a fresh seek rescans the segment.
            m_reader.seek(seq + 1);
            missing_last = seq;
            return Status::missing;
    }
    return Status::pending;
}

namespace {

bool is_output_of(ModuleId module, const Header& h) {
    return h.sender == module && h.via == module && h.hops == 0 &&
           (h.flags & k_flag_operator) == 0 && h.type != msg::k_timer && h.type != msg::k_snapshot;
}

}  // namespace

Result<std::uint64_t, std::string> count_outputs(ModuleId module, std::uint64_t after,
                                                 const InprocBus& bus, const BusJournal* journal) {
    const BroadcastRing& ring = bus.ring();
    const std::uint64_t head = ring.head();
    std::uint64_t next = after + 1;
    std::uint64_t count = 0;
    std::vector<std::byte> buffer(ring.max_message());
    std::optional<JournalReader> reader;
    while (next <= head) {
        if (next < ring.oldest()) {
            if (journal == nullptr) {
                return Err{fmt::format("seq {}..{} are gone from the bus and it has no journal",
                                       next, ring.oldest() - 1)};
            }
            if (!reader) reader.emplace(journal->dir(), journal->max_payload());
            reader->seek(next);
            JournalRecord r;
            const auto st = reader->next(r);
            if (st == JournalReader::Status::ok) {
                if (is_output_of(module, r.header)) ++count;
                ++next;
                continue;
            }
            if (st == JournalReader::Status::end && next >= ring.oldest()) continue;
            if (st == JournalReader::Status::end) {
                // The ring lapped it and the monitor has not written it: the
                // journal has a gap here (it stalled).
                return Err{fmt::format("seq {} is in neither the bus nor its journal", next)};
            }
            return Err{fmt::format("journal {}: {}", journal->dir(), reader->problem())};
        }
        std::uint64_t cursor = next;
        const ReadResult r = ring.read(cursor, buffer, Visibility::published);
        if (r.status == ReadStatus::lost) continue;  // lapped meanwhile: the journal then
        if (r.status != ReadStatus::ok) break;
        const auto h = decode_header(std::span<const std::byte>(buffer.data(), r.size),
                                     ring.max_payload(), Framing::exact);
        if (h && is_output_of(module, *h)) ++count;
        next = cursor;
    }
    return count;
}

std::uint64_t announce(InprocBus& bus, const LifecycleEvent& event, std::string_view reason,
                       std::uint64_t* stamped_ns) {
    std::vector<std::byte> payload(k_lifecycle_size);
    encode_lifecycle(event,
                     std::span<std::byte, k_lifecycle_size>(payload.data(), k_lifecycle_size));
    const std::size_t room = bus.settings().max_payload > k_lifecycle_size
                                 ? bus.settings().max_payload - k_lifecycle_size
                                 : 0;
    const auto text = as_bytes(reason.substr(0, std::min<std::size_t>(room, 200)));
    payload.insert(payload.end(), text.begin(), text.end());
    if (payload.size() > bus.settings().max_payload) payload.resize(k_lifecycle_size);
    Header h;
    h.sender = bus.id();
    h.type = msg::k_lifecycle;
    std::uint64_t ts = 0;
    auto seq = bus.publish_stamped(h, payload, bus.id(), ts);
    if (!seq) return 0;
    if (stamped_ns != nullptr) *stamped_ns = ts;
    return *seq;
}

StartPlan plan_start(const ModuleSpec& spec, InprocBus& bus, BusJournal* journal,
                     std::uint64_t epoch, std::uint64_t snapshot_at_most, std::uint64_t entropy,
                     std::uint64_t boot_from, Logger& logger) {
    StartPlan plan;
    plan.epoch = epoch;
    if (journal != nullptr && journal->monitor() == spec.id) {
        // The monitor goes on where its journal ends (the bus kept the rest for it).
        plan.from_seq = bus.acknowledged() + 1;
        plan.seed = entropy;
        return plan;
    }
    auto fresh = [&] {
        plan.seed = entropy;
        plan.from_seq = boot_from;
        if (journal == nullptr) return;  // nothing to announce it to
        LifecycleEvent e;
        e.module = spec.id;
        e.kind = LifecycleKind::started;
        e.epoch = epoch;
        e.seed = plan.seed;
        // At boot it reads from the bus's first message of this boot, else
        // from what follows its announcement.
        e.from_seq = boot_from != 0 ? boot_from : bus.ring().head() + 2;
        std::uint64_t ts = 0;
        const std::uint64_t seq = announce(bus, e, {}, &ts);
        if (seq == 0) return;
        plan.from_seq = boot_from != 0 ? boot_from : seq + 1;
        plan.start_ns = ts;
        journal->set_genesis(spec.id, Genesis{seq, plan.seed, ts, plan.from_seq});
    };
    if (spec.recovery != Recovery::journal || journal == nullptr) {
        fresh();
        return plan;
    }

    // What the journal says this module was.
    const auto genesis = journal->genesis(spec.id);
    std::vector<std::string> skipped;
    // A snapshot past the bus's head is of messages the journal lost (a crash
    // between the two): of no use.
    auto snapshot = load_latest_snapshot(journal->dir(), spec.id, &skipped,
                                         std::min(snapshot_at_most, bus.ring().head()));
    for (const auto& s : skipped)
        logger.log(LogLevel::warn, spec.path, "snapshot passed over: " + s);
    // A snapshot older than the module's latest fresh start is of an earlier life.
    if (snapshot && genesis && snapshot->header.input_seq < genesis->seq) snapshot.reset();
    if (!snapshot && !genesis) {
        logger.log(LogLevel::info, spec.path,
                   "no snapshot and no start in the journal: starting with an empty state");
        fresh();
        return plan;
    }
    std::uint64_t outputs_after = 0;
    LifecycleEvent e;
    e.module = spec.id;
    e.kind = LifecycleKind::recovering;
    e.epoch = epoch;
    if (snapshot) {
        plan.restore = true;
        plan.body = std::move(snapshot->body);
        plan.state_version = snapshot->header.state_version;
        plan.from_seq = snapshot->header.input_seq + 1;
        outputs_after = snapshot->header.output_seq;
        e.base_seq = snapshot->header.input_seq;
        e.seed = genesis ? genesis->seed : 0;
    } else {
        plan.from_seq = genesis->from_seq != 0 ? genesis->from_seq : genesis->seq + 1;
        plan.seed = genesis->seed;
        plan.start_ns = genesis->timestamp_ns;
        outputs_after = genesis->seq;
        e.seed = plan.seed;
    }
    auto outputs = count_outputs(spec.id, outputs_after, bus, journal);
    if (!outputs) {
        logger.log(LogLevel::error, spec.path,
                   "cannot tell which of its messages are on the bus already (" + outputs.error() +
                       "); it may send some again");
    }
    plan.suppress = outputs.value_or(0);
    e.from_seq = plan.from_seq;
    e.suppressed = plan.suppress;
    const std::uint64_t marker = announce(bus, e);
    // It handles everything up to and including its own announcement before
    // its timers and snapshots resume: by then it is where the old one was.
    plan.live_at = marker != 0 ? marker : bus.ring().head();
    logger.log(
        LogLevel::info, spec.path,
        snapshot
            ? fmt::format("recovering from snapshot at seq {} ({}), replaying seq {}..{}; "
                          "{} of its messages are on the bus already",
                          e.base_seq, snapshot->path, plan.from_seq, plan.live_at, plan.suppress)
            : fmt::format("recovering from its start at seq {}, replaying seq {}..{}; {} "
                          "of its messages are on the bus already",
                          genesis->seq, plan.from_seq, plan.live_at, plan.suppress));
    return plan;
}

}  // namespace hmk::detail
