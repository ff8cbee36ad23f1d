// SPDX-License-Identifier: Apache-2.0
// Coroutines for services that wait on other services (docs/services.md).
//
// A service module handles one message at a time on its own thread. An
// operation that needs answers from elsewhere (the file system asking the
// disk driver for blocks) is written as a coroutine: it runs until it has to
// wait, the handler returns, and the reply's handler resumes it.
//
// Tasks are eager: a Task starts running when it is called, and is done at
// once if nothing it waits for suspends it (a file-backed block device in a
// tool or a test). Awaiting a Task that is done takes its value without a
// transfer, so a loop over a thousand synchronous reads uses no stack per
// iteration; a suspended Task resumes its awaiter when it finishes.
//
// Pass named values (locals, std::move of locals) into a call that is
// co_awaited, not temporaries made in the same expression (a conditional,
// a braced list, a string sum): GCC 12 destroys some of those twice.
#pragma once

#include <coroutine>
#include <exception>
#include <optional>
#include <utility>

namespace hmk::services {

namespace detail {

struct PromiseBase {
    std::coroutine_handle<> continuation;
    std::exception_ptr error;

    std::suspend_never initial_suspend() noexcept { return {}; }
    // Always suspends at the end, so the Task can read the value; resumes
    // whoever awaits it, if anyone does yet.
    struct FinalAwaiter {
        bool await_ready() noexcept { return false; }
        template <typename P>
        std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
            const std::coroutine_handle<> next = h.promise().continuation;
            return next ? next : std::noop_coroutine();
        }
        void await_resume() noexcept {}
    };
    FinalAwaiter final_suspend() noexcept { return {}; }
    void unhandled_exception() noexcept { error = std::current_exception(); }
};

}  // namespace detail

/// The result of a coroutine, awaited with `co_await` or, at the top, kept
/// and checked with done() / get(). Owns the coroutine frame; not copyable.
template <typename T>
class [[nodiscard]] Task {
  public:
    struct promise_type : detail::PromiseBase {
        std::optional<T> value;
        Task get_return_object() {
            return Task(std::coroutine_handle<promise_type>::from_promise(*this));
        }
        template <typename U>
        void return_value(U&& v) {
            value.emplace(std::forward<U>(v));
        }
    };

    Task() = default;
    Task(Task&& other) noexcept : m_handle(std::exchange(other.m_handle, nullptr)) {}
    Task& operator=(Task&& other) noexcept {
        if (this != &other) {
            reset();
            m_handle = std::exchange(other.m_handle, nullptr);
        }
        return *this;
    }
    Task(const Task&) = delete;
    Task& operator=(const Task&) = delete;
    ~Task() { reset(); }

    /// True once the coroutine has returned (or thrown).
    bool done() const { return m_handle && m_handle.done(); }
    /// Its value (rethrows what it threw). Only when done().
    T get() {
        if (m_handle.promise().error) std::rethrow_exception(m_handle.promise().error);
        return std::move(*m_handle.promise().value);
    }

    bool await_ready() const noexcept { return m_handle.done(); }
    void await_suspend(std::coroutine_handle<> awaiting) noexcept {
        m_handle.promise().continuation = awaiting;
    }
    T await_resume() { return get(); }

  private:
    explicit Task(std::coroutine_handle<promise_type> h) : m_handle(h) {}
    void reset() {
        if (m_handle) m_handle.destroy();
        m_handle = nullptr;
    }
    std::coroutine_handle<promise_type> m_handle;
};

template <>
class [[nodiscard]] Task<void> {
  public:
    struct promise_type : detail::PromiseBase {
        Task get_return_object() {
            return Task(std::coroutine_handle<promise_type>::from_promise(*this));
        }
        void return_void() {}
    };

    Task() = default;
    Task(Task&& other) noexcept : m_handle(std::exchange(other.m_handle, nullptr)) {}
    Task& operator=(Task&& other) noexcept {
        if (this != &other) {
            reset();
            m_handle = std::exchange(other.m_handle, nullptr);
        }
        return *this;
    }
    Task(const Task&) = delete;
    Task& operator=(const Task&) = delete;
    ~Task() { reset(); }

    bool done() const { return m_handle && m_handle.done(); }
    void get() {
        if (m_handle.promise().error) std::rethrow_exception(m_handle.promise().error);
    }

    bool await_ready() const noexcept { return m_handle.done(); }
    void await_suspend(std::coroutine_handle<> awaiting) noexcept {
        m_handle.promise().continuation = awaiting;
    }
    void await_resume() { get(); }

  private:
    explicit Task(std::coroutine_handle<promise_type> h) : m_handle(h) {}
    void reset() {
        if (m_handle) m_handle.destroy();
        m_handle = nullptr;
    }
    std::coroutine_handle<promise_type> m_handle;
};

/// Runs a task whose every wait completes at once (a file-backed device):
/// its value. Throws std::logic_error if it suspended anyway.
template <typename T>
T run_now(Task<T> task);

}  // namespace hmk::services

#include <stdexcept>

namespace hmk::services {

template <typename T>
T run_now(Task<T> task) {
    if (!task.done()) throw std::logic_error("run_now: the task waits for something");
    return task.get();
}

}  // namespace hmk::services

// HMK_TRY for coroutines (a GNU statement expression cannot hold co_return:
// GCC 12 fails on it). On error, co_returns the error; otherwise
// HMK_CO_TRY_AS declares `decl` with the value.
#define HMK_CO_CONCAT_(a, b) a##b
#define HMK_CO_CONCAT(a, b) HMK_CO_CONCAT_(a, b)
#define HMK_CO_TRY_AS(decl, expr)                                                    \
    auto HMK_CO_CONCAT(_hmk_co_r, __LINE__) = (expr);                                \
    if (!HMK_CO_CONCAT(_hmk_co_r, __LINE__))                                         \
        co_return ::hmk::Err{std::move(HMK_CO_CONCAT(_hmk_co_r, __LINE__)).error()}; \
    decl = std::move(HMK_CO_CONCAT(_hmk_co_r, __LINE__)).value()
#define HMK_CO_TRY(expr)                                        \
    do {                                                        \
        if (auto _hmk_co_r = (expr); !_hmk_co_r)                \
            co_return ::hmk::Err{std::move(_hmk_co_r).error()}; \
    } while (false)
