// SPDX-License-Identifier: Apache-2.0
#include "hmk/platform/cpu.hpp"

#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <vector>

namespace hmk::platform {
namespace {

constexpr std::uint64_t k_period_us = 100000;

bool write_file(const std::string& path, const std::string& text, std::string* why = nullptr) {
    std::ofstream out(path);
    out << text;
    out.flush();
    if (out.good()) return true;
    if (why != nullptr) *why = path + ": " + std::strerror(errno);
    return false;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

/// Where we may make cgroups of our own with a cpu controller: the
/// directory of the calling process's cgroup in that hierarchy.
struct Hierarchy {
    CpuMechanism mechanism = CpuMechanism::weight;
    std::string dir;
    std::string why;  ///< when there is none
};

Hierarchy find_hierarchy() {
    // Mount points from mountinfo: field 5 is the mount point; after " - "
    // come the type, the source and the super options.
    std::ifstream mounts("/proc/self/mountinfo");
    std::string line, v1_mount, v2_mount;
    while (std::getline(mounts, line)) {
        const auto dash = line.find(" - ");
        if (dash == std::string::npos) continue;
        std::istringstream head(line.substr(0, dash)), tail(line.substr(dash + 3));
        std::string f, mount_point, type, source, options;
        for (int i = 0; i < 5 && head >> f; ++i) mount_point = f;
        tail >> type >> source >> options;
        if (type == "cgroup2" && v2_mount.empty()) v2_mount = mount_point;
        if (type == "cgroup" && v1_mount.empty()) {
            std::istringstream opts(options);
            std::string o;
            while (std::getline(opts, o, ','))
                if (o == "cpu") v1_mount = mount_point;
        }
    }
    // Our place in each: "0::/path" (v2), "N:cpu,cpuacct:/path" (v1).
    std::ifstream groups("/proc/self/cgroup");
    std::string v1_path, v2_path;
    bool have_v2 = false, have_v1 = false;
    while (std::getline(groups, line)) {
        const auto a = line.find(':'), b = line.find(':', a + 1);
        if (a == std::string::npos || b == std::string::npos) continue;
        const std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
        if (line.substr(0, a) == "0" && controllers.empty()) {
            v2_path = path, have_v2 = true;
        }
        std::istringstream cs(controllers);
        std::string c;
        while (std::getline(cs, c, ','))
            if (c == "cpu") v1_path = path, have_v1 = true;
    }
    Hierarchy h;
    std::string tried;
    if (!v2_mount.empty() && have_v2) {
        const std::string dir = v2_mount + (v2_path == "/" ? "" : v2_path);
        const std::string controllers = read_file(dir + "/cgroup.controllers");
        if (controllers.find("cpu") != std::string::npos && ::access(dir.c_str(), W_OK) == 0) {
            h.mechanism = CpuMechanism::cgroup_v2;
            h.dir = dir;
            return h;
        }
        tried = "cgroup v2 at " + dir + " offers no cpu controller we may use";
    }
    if (!v1_mount.empty() && have_v1) {
        const std::string dir = v1_mount + (v1_path == "/" ? "" : v1_path);
        if (::access((dir + "/cpu.cfs_quota_us").c_str(), F_OK) == 0 &&
            ::access(dir.c_str(), W_OK) == 0) {
            h.mechanism = CpuMechanism::cgroup_v1;
            h.dir = dir;
            return h;
        }
        tried += (tried.empty() ? "" : "; ") + std::string("cgroup v1 cpu at ") + dir +
                 " is not writable";
    }
    h.why = tried.empty() ? "no cgroup hierarchy with a cpu controller is mounted" : tried;
    return h;
}

// Directories hmk.<pid> of processes that are gone (killed before they
// could remove theirs): removed, with their empty groups.
void remove_stale(const std::string& parent) {
    DIR* d = ::opendir(parent.c_str());
    if (d == nullptr) return;
    std::vector<std::string> stale;
    while (const dirent* e = ::readdir(d)) {
        const std::string name = e->d_name;
        if (name.rfind("hmk.", 0) != 0) continue;
        char* end = nullptr;
        const long pid = std::strtol(name.c_str() + 4, &end, 10);
        if (end == nullptr || *end != '\0' || pid <= 0) continue;
        if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) stale.push_back(name);
    }
    ::closedir(d);
    for (const auto& name : stale) {
        const std::string dir = parent + "/" + name;
        if (DIR* g = ::opendir(dir.c_str())) {
            while (const dirent* e = ::readdir(g)) {
                if (e->d_type == DT_DIR && e->d_name[0] != '.')
                    ::rmdir((dir + "/" + e->d_name).c_str());
            }
            ::closedir(g);
        }
        ::rmdir(dir.c_str());
    }
}

/// Our own directory in the hierarchy, made once: hmk.<pid>, removed when
/// the process exits (its groups are empty by then).
struct RemoveAtExit {
    const Hierarchy& h;
    ~RemoveAtExit() {
        if (h.mechanism != CpuMechanism::weight) ::rmdir(h.dir.c_str());
    }
};

const Hierarchy& ours() {
    static const Hierarchy h = [] {
        Hierarchy found = find_hierarchy();
        if (found.mechanism == CpuMechanism::weight) return found;
        remove_stale(found.dir);
        std::string why;
        const std::string dir = found.dir + "/hmk." + std::to_string(::getpid());
        if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
            found.why = dir + ": " + std::strerror(errno);
            found.mechanism = CpuMechanism::weight;
            return found;
        }
        // v2: children of ours need the cpu controller enabled for them.
        if (found.mechanism == CpuMechanism::cgroup_v2 &&
            !write_file(dir + "/cgroup.subtree_control", "+cpu", &why)) {
            found.why = why;
            found.mechanism = CpuMechanism::weight;
            ::rmdir(dir.c_str());
            return found;
        }
        found.dir = dir;
        return found;
    }();
    static const RemoveAtExit remove{h};
    return h;
}

}  // namespace

const char* to_string(CpuMechanism mechanism) {
    switch (mechanism) {
        case CpuMechanism::cgroup_v2:
            return "cgroup v2 (cpu.max)";
        case CpuMechanism::cgroup_v1:
            return "cgroup v1 (cpu.cfs_quota_us)";
        case CpuMechanism::weight:
            return "scheduling weight (nice)";
    }
    return "?";
}

std::unique_ptr<CpuShare> CpuShare::make(const std::string& name, double share) {
    std::unique_ptr<CpuShare> s(new CpuShare(share));
    const Hierarchy& h = ours();
    // Weight: each nice level is about 1.25 times less CPU against a busy
    // sibling at nice 0, so a quarter of a core is about 6 levels.
    s->m_nice =
        share >= 1
            ? 0
            : std::min(19, static_cast<int>(std::lround(std::log(1 / share) / std::log(1.25))));
    if (h.mechanism == CpuMechanism::weight) {
        s->m_why = h.why;
        return s;
    }
    const std::string dir = h.dir + "/" + name;
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
        s->m_why = dir + ": " + std::strerror(errno);
        return s;
    }
    const auto quota = static_cast<std::uint64_t>(std::llround(share * k_period_us));
    std::string why;
    const bool set =
        h.mechanism == CpuMechanism::cgroup_v2
            ? write_file(dir + "/cpu.max",
                         std::to_string(quota) + " " + std::to_string(k_period_us), &why)
            : write_file(dir + "/cpu.cfs_period_us", std::to_string(k_period_us), &why) &&
                  write_file(dir + "/cpu.cfs_quota_us", std::to_string(quota), &why);
    if (!set) {
        ::rmdir(dir.c_str());
        s->m_why = why;
        return s;
    }
    s->m_mechanism = h.mechanism;
    s->m_dir = dir;
    return s;
}

CpuShare::~CpuShare() {
    // Its processes are gone (reaped) by now; a thread of ours still in it
    // (an abandoned handler) keeps it, harmlessly, until the process ends.
    if (!m_dir.empty()) ::rmdir(m_dir.c_str());
}

Result<void, std::string> CpuShare::add_process(pid_t pid) {
    if (m_mechanism == CpuMechanism::weight) {
        if (::setpriority(PRIO_PROCESS, static_cast<id_t>(pid), m_nice) != 0)
            return Err{std::string("setpriority: ") + std::strerror(errno)};
        return {};
    }
    std::string why;
    if (!write_file(m_dir + "/cgroup.procs", std::to_string(pid), &why)) return Err{why};
    return {};
}

Result<void, std::string> CpuShare::add_thread(pid_t tid) {
    if (m_mechanism == CpuMechanism::cgroup_v2)
        return Err{std::string("cgroup v2 takes whole processes only")};
    if (m_mechanism == CpuMechanism::weight) {
        // Linux's nice is per thread.
        if (::setpriority(PRIO_PROCESS, static_cast<id_t>(tid), m_nice) != 0)
            return Err{std::string("setpriority: ") + std::strerror(errno)};
        return {};
    }
    std::string why;
    if (!write_file(m_dir + "/tasks", std::to_string(tid), &why)) return Err{why};
    return {};
}

std::string CpuShare::describe() const {
    char share[32];
    std::snprintf(share, sizeof(share), "%g", m_share);
    const auto quota = static_cast<std::uint64_t>(std::llround(m_share * k_period_us));
    std::string text = std::string(share) + " of a core: " + to_string(m_mechanism);
    if (m_mechanism == CpuMechanism::weight) {
        text += ", nice " + std::to_string(m_nice) + ": a soft share (" + m_why + ")";
    } else {
        text += ", " + std::to_string(quota) + " us every " + std::to_string(k_period_us) + " us";
    }
    return text;
}

std::uint64_t CpuShare::throttled_ns() const {
    if (m_dir.empty()) return 0;
    std::istringstream in(read_file(m_dir + "/cpu.stat"));
    std::string key;
    std::uint64_t value = 0;
    while (in >> key >> value) {
        if (key == "throttled_time") return value;         // v1: ns
        if (key == "throttled_usec") return value * 1000;  // v2
    }
    return 0;
}

}  // namespace hmk::platform
