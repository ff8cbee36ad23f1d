// SPDX-License-Identifier: Apache-2.0
#include "hmk/services/requester.hpp"

namespace hmk::services {

const char* to_string(RequestError e) {
    switch (e) {
        case RequestError::unanswered:
            return "no answer";
        case RequestError::unsendable:
            return "cannot be sent";
    }
    return "unknown error";
}

struct Requester::Out {
    ModuleId to = k_no_module;
    std::uint32_t type = 0;
    std::vector<std::byte> payload;
    std::uint64_t sent_ns = 0;
    std::uint32_t tries = 0;
    bool done = false;
    Result<OwnedAnswer, RequestError> result = Err{RequestError::unanswered};
    std::coroutine_handle<> waiter;

    void complete(Result<OwnedAnswer, RequestError> r) {
        result = std::move(r);
        done = true;
        if (waiter) std::exchange(waiter, nullptr).resume();
    }
};

// The calls' frames own their Outs; a module being destroyed destroys them
// before (or without) any answer: nothing here is touched again.
Requester::~Requester() = default;

Task<Result<OwnedAnswer, RequestError>> Requester::call(ModuleId to, std::uint32_t type,
                                                        std::vector<std::byte> payload) {
    Out out;
    out.to = to;
    out.type = type;
    out.payload = std::move(payload);
    const std::uint64_t correlation = m_env.next_correlation();
    m_out[correlation] = &out;
    send(correlation, out);
    struct Wait {
        Out& o;
        bool await_ready() const { return o.done; }
        void await_suspend(std::coroutine_handle<> h) { o.waiter = h; }
        void await_resume() {}
    };
    co_await Wait{out};
    co_return std::move(out.result);
}

void Requester::send(std::uint64_t correlation, Out& out) {
    Outgoing o;
    o.destination = out.to;
    o.type = out.type;
    o.correlation = correlation;
    o.payload = out.payload;
    out.sent_ns = m_env.now_ns();
    ++out.tries;
    const auto r = m_env.send(o);
    // Full: the uplink is busy, the next tick sends it again.
    if (!r && r.error() != SendError::full) {
        m_out.erase(correlation);
        out.complete(Err{RequestError::unsendable});
    }
}

bool Requester::on_reply(const Message& m) {
    const auto it = m_out.find(m.header.correlation);
    if (it == m_out.end() || m.header.sender != it->second->to) return false;
    Out& out = *it->second;
    m_out.erase(it);
    out.complete(OwnedAnswer{m.header, {m.payload.begin(), m.payload.end()}});
    return true;
}

void Requester::on_tick(std::uint64_t now_ns) {
    std::vector<std::uint64_t> due;
    for (const auto& [correlation, out] : m_out) {
        if (now_ns >= out->sent_ns + m_timeout_ns) due.push_back(correlation);
    }
    for (const std::uint64_t correlation : due) {
        const auto it = m_out.find(correlation);
        if (it == m_out.end()) continue;
        Out& out = *it->second;
        if (out.tries >= m_tries) {
            m_out.erase(it);
            out.complete(Err{RequestError::unanswered});
        } else {
            send(correlation, out);
        }
    }
}

}  // namespace hmk::services
