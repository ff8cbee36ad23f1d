// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "hmk/result.hpp"

namespace hmk::platform {

/// How a share of the processor is held for a group of processes or threads.
enum class CpuMechanism : std::uint8_t {
    cgroup_v2,  ///< cpu.max in a cgroup of our own under a delegated cgroup2 hierarchy
    cgroup_v1,  ///< cpu.cfs_quota_us in a cgroup of our own under the v1 cpu hierarchy
    weight,     ///< no cgroup to use: a lower scheduling weight (nice), a soft share
};
const char* to_string(CpuMechanism mechanism);

/// A share of the processor (`share` cores, e.g. 0.25) for the processes
/// (or, with v1 and for the weight, threads) put into it. With a cgroup it
/// is a ceiling the kernel enforces per 100 ms period whatever else runs;
/// with the weight it yields to busy siblings only. The cgroup (named
/// after the calling process and `name`) goes with the object, once what
/// ran in it has ended.
class CpuShare {
  public:
    static std::unique_ptr<CpuShare> make(const std::string& name, double share);
    ~CpuShare();
    CpuShare(const CpuShare&) = delete;
    CpuShare& operator=(const CpuShare&) = delete;

    /// Puts process `pid` (all its threads) under the share.
    Result<void, std::string> add_process(pid_t pid);
    /// Puts thread `tid` alone under the share (v1 and weight; v2 cannot
    /// take one thread of a process without threaded cgroups: refused).
    Result<void, std::string> add_thread(pid_t tid);

    CpuMechanism mechanism() const { return m_mechanism; }
    double share() const { return m_share; }
    /// "0.25 of a core: cgroup v1 (cpu.cfs_quota_us 25000 of 100000)".
    std::string describe() const;
    /// Why no cgroup could be used, when the mechanism is the weight.
    const std::string& fallback_reason() const { return m_why; }
    /// Time the group was held back by its ceiling, ns (cgroups; 0 for the weight).
    std::uint64_t throttled_ns() const;

  private:
    CpuShare(double share) : m_share(share) {}
    double m_share;
    CpuMechanism m_mechanism = CpuMechanism::weight;
    std::string m_dir;  // the cgroup's directory, if any
    std::string m_why;
    int m_nice = 0;
};

}  // namespace hmk::platform
