// SPDX-License-Identifier: Apache-2.0
// Requests to another service from inside a module, awaited by a coroutine
// (docs/services.md): the answer's payload, or an error once every try has
// gone unanswered. A request is sent again after `timeout` without an
// answer (the other side may be restarting), so it must be one that may be
// done twice.
#pragma once

#include <coroutine>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "hmk/result.hpp"
#include "hmk/runtime/module.hpp"
#include "hmk/services/task.hpp"

namespace hmk::services {

enum class RequestError : std::uint8_t {
    unanswered = 1,  ///< no answer after every try
    unsendable,      ///< the bus refused it (too large, no such module)
};
const char* to_string(RequestError e);

/// An answer, copied out of its message.
struct OwnedAnswer {
    Header header;
    std::vector<std::byte> payload;
};

class Requester {
  public:
    /// Every call from the module's thread.
    Requester(Env& env, std::uint64_t timeout_ns, std::uint32_t tries)
        : m_env(env), m_timeout_ns(timeout_ns), m_tries(tries) {}
    ~Requester();
    Requester(const Requester&) = delete;
    Requester& operator=(const Requester&) = delete;

    /// Sends `payload` as `type` to `to`; the answer (header and payload).
    Task<Result<OwnedAnswer, RequestError>> call(ModuleId to, std::uint32_t type,
                                                 std::vector<std::byte> payload);
    /// An answer: completes the call it answers; false if it answers none.
    bool on_reply(const Message& m);
    /// Sends again what is overdue; fails what has had all its tries.
    void on_tick(std::uint64_t now_ns);
    std::size_t outstanding() const { return m_out.size(); }

  private:
    struct Out;
    void send(std::uint64_t correlation, Out& out);

    Env& m_env;
    std::uint64_t m_timeout_ns;
    std::uint32_t m_tries;
    std::unordered_map<std::uint64_t, Out*> m_out;
};

}  // namespace hmk::services
