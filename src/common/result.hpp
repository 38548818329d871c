#pragma once
// Errors are values with context: what was being done and the errno, if any.
// No exceptions on the per-connection path.
#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace tcpha {

struct Error {
  int err = 0;       // errno, or 0 when the failure is not a system call's
  std::string what;  // what was being done, e.g. "setsockopt(TCP_REPAIR)"

  std::string message() const {
    if (err == 0) return what;
    return what + ": " + std::strerror(err);
  }
};

inline Error sys_error(std::string what) { return Error{errno, std::move(what)}; }
inline Error app_error(std::string what) { return Error{0, std::move(what)}; }

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}
  Result(Error e) : v_(std::move(e)) {}

  bool ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return ok(); }
  T& value() { return std::get<T>(v_); }
  const T& value() const { return std::get<T>(v_); }
  T& operator*() { return value(); }
  T* operator->() { return &value(); }
  const Error& error() const { return std::get<Error>(v_); }

 private:
  std::variant<T, Error> v_;
};

// Result<void>: success, or an Error.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error e) : e_(std::move(e)) {}
  bool ok() const { return !e_.has_value(); }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return *e_; }

 private:
  std::optional<Error> e_;
};

}  // namespace tcpha
