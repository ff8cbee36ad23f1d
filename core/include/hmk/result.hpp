// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cassert>
#include <type_traits>
#include <utility>
#include <variant>

namespace hmk {

/// Wraps an error value so that a `Result` can be built from it unambiguously,
/// like `std::unexpected`.
template <typename E>
struct Err {
    E value;
};
template <typename E>
Err(E) -> Err<E>;

/// A value of type T or an error of type E, shaped like C++23 `std::expected`.
/// Errors are values in hmk's core: nothing here throws.
template <typename T, typename E>
class [[nodiscard]] Result {
  public:
    using value_type = T;
    using error_type = E;

    Result(T value) : m_storage(std::in_place_index<0>, std::move(value)) {}  // NOLINT
    template <typename G>
    Result(Err<G> err) : m_storage(std::in_place_index<1>, E(std::move(err.value))) {}  // NOLINT

    bool has_value() const { return m_storage.index() == 0; }
    explicit operator bool() const { return has_value(); }

    T& value() & {
        assert(has_value());
        return *std::get_if<0>(&m_storage);
    }
    const T& value() const& {
        assert(has_value());
        return *std::get_if<0>(&m_storage);
    }
    T&& value() && {
        assert(has_value());
        return std::move(*std::get_if<0>(&m_storage));
    }
    const E& error() const& {
        assert(!has_value());
        return *std::get_if<1>(&m_storage);
    }
    E&& error() && {
        assert(!has_value());
        return std::move(*std::get_if<1>(&m_storage));
    }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

    template <typename U>
    T value_or(U&& fallback) const& {
        return has_value() ? value() : static_cast<T>(std::forward<U>(fallback));
    }

  private:
    std::variant<T, E> m_storage;
};

/// `Result` of an operation that yields nothing but success or an error.
template <typename E>
class [[nodiscard]] Result<void, E> {
  public:
    using value_type = void;
    using error_type = E;

    Result() = default;
    template <typename G>
    Result(Err<G> err) : m_error(E(std::move(err.value))), m_failed(true) {}  // NOLINT

    bool has_value() const { return !m_failed; }
    explicit operator bool() const { return has_value(); }
    void value() const { assert(has_value()); }
    const E& error() const& {
        assert(m_failed);
        return m_error;
    }
    E&& error() && {
        assert(m_failed);
        return std::move(m_error);
    }

  private:
    E m_error{};
    bool m_failed = false;
};

}  // namespace hmk

/// Evaluates `expr` (a Result); on error returns the error from the enclosing
/// function, otherwise yields the value (SerenityOS TRY). GNU statement expression.
#define HMK_TRY(expr)                                              \
    __extension__({                                                \
        auto _hmk_try_result = (expr);                             \
        if (!_hmk_try_result) {                                    \
            return ::hmk::Err{std::move(_hmk_try_result).error()}; \
        }                                                          \
        std::move(_hmk_try_result).value();                        \
    })
