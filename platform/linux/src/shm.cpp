// SPDX-License-Identifier: Apache-2.0
#include "hmk/platform/shm.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace hmk::platform {

UniqueFd::~UniqueFd() {
    if (m_fd >= 0) ::close(m_fd);
}

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
        if (m_fd >= 0) ::close(m_fd);
        m_fd = other.release();
    }
    return *this;
}

namespace {
std::string errno_text(const char* what) {
    return std::string(what) + ": " + std::strerror(errno);
}
}  // namespace

Result<SharedRegion, std::string> SharedRegion::create(const char* name, std::size_t size) {
    UniqueFd fd(memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!fd.valid()) return Err{errno_text("memfd_create")};
    if (ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return Err{errno_text("ftruncate")};
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) return Err{errno_text("mmap")};
    return SharedRegion(std::move(fd), static_cast<std::byte*>(p), size);
}

Result<SharedRegion, std::string> SharedRegion::map(UniqueFd fd, Access access) {
    struct stat st {};
    if (fstat(fd.get(), &st) != 0) return Err{errno_text("fstat")};
    const auto size = static_cast<std::size_t>(st.st_size);
    const int prot = access == Access::read_only ? PROT_READ : PROT_READ | PROT_WRITE;
    void* p = mmap(nullptr, size, prot, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) return Err{errno_text("mmap")};
    return SharedRegion(std::move(fd), static_cast<std::byte*>(p), size);
}

Result<void, std::string> SharedRegion::seal_writes() {
    if (fcntl(m_fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE) != 0) {
        return Err{errno_text("F_ADD_SEALS")};
    }
    return {};
}

Result<void, std::string> SharedRegion::seal_size() {
    if (fcntl(m_fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0)
        return Err{errno_text("F_ADD_SEALS")};
    return {};
}

SharedRegion::SharedRegion(SharedRegion&& other) noexcept
    : m_fd(std::move(other.m_fd)),
      m_data(std::exchange(other.m_data, nullptr)),
      m_size(std::exchange(other.m_size, 0)) {}

SharedRegion& SharedRegion::operator=(SharedRegion&& other) noexcept {
    if (this != &other) {
        if (m_data != nullptr) munmap(m_data, m_size);
        m_fd = std::move(other.m_fd);
        m_data = std::exchange(other.m_data, nullptr);
        m_size = std::exchange(other.m_size, 0);
    }
    return *this;
}

SharedRegion::~SharedRegion() {
    if (m_data != nullptr) munmap(m_data, m_size);
}

}  // namespace hmk::platform
