// Error and Result<T>: the one error style of libuprobe.
//
// Every fallible call returns Result<T>. An Error is a user-facing message
// with a chain of context prepended as it travels up
// ("reading /proc/42/maps: permission denied"). Bad input is never an
// assertion; assertions are for invariants of our own code.
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace uprobe {

class Error {
public:
    explicit Error(std::string message) : message_(std::move(message)) {}

    const std::string& message() const { return message_; }

    // Returns this error with `what` in front: "what: message".
    Error context(std::string_view what) const {
        return Error(std::string(what) + ": " + message_);
    }

private:
    std::string message_;
};

template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
    Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }

    T& value() & { assert(ok()); return std::get<0>(v_); }
    const T& value() const& { assert(ok()); return std::get<0>(v_); }
    T&& value() && { assert(ok()); return std::get<0>(std::move(v_)); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }

    const Error& error() const { assert(!ok()); return std::get<1>(v_); }

    // Adds context to a failure; passes a success through.
    Result context(std::string_view what) && {
        if (ok()) return std::move(*this);
        return error().context(what);
    }

private:
    std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT(google-explicit-constructor)

    bool ok() const { return ok_; }
    explicit operator bool() const { return ok_; }
    const Error& error() const { assert(!ok_); return error_; }

    Result context(std::string_view what) && {
        if (ok_) return {};
        return error_.context(what);
    }

private:
    Error error_{""};
    bool ok_ = true;
};

}  // namespace uprobe

// Evaluates a Result expression; on failure returns its Error from the
// enclosing function, otherwise binds the value to `var`.
#define UPROBE_CONCAT_INNER(a, b) a##b
#define UPROBE_CONCAT(a, b) UPROBE_CONCAT_INNER(a, b)
#define UPROBE_TRY_IMPL(tmp, var, expr) \
    auto tmp = (expr);                  \
    if (!tmp.ok()) return tmp.error();  \
    var = std::move(tmp).value()
#define UPROBE_TRY(var, expr) UPROBE_TRY_IMPL(UPROBE_CONCAT(uprobe_try_, __LINE__), var, expr)

// Same for Result<void>.
#define UPROBE_CHECK(expr)                                \
    do {                                                  \
        auto uprobe_check_r = (expr);                     \
        if (!uprobe_check_r.ok()) return uprobe_check_r.error(); \
    } while (0)
