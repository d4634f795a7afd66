#pragma once
/// thaw's errors are values (CONVENTIONS.md rule 9): every fallible function returns
/// `expected<T>`, which holds either a T or an `error` made of one `errc` code and a message that
/// names the file, field or resource concerned.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace thaw {

/// The project's error codes. Every value is documented; add new ones at the end.
enum class errc : std::uint8_t {
  none = 0,           ///< Not an error; never carried by an `error`.
  invalid_argument,   ///< A caller passed a bad value (flag, option, parameter).
  not_found,          ///< A file, model, tensor or key that was asked for does not exist.
  already_exists,     ///< The target exists and would be overwritten (e.g. a checkpoint dir).
  io_error,           ///< A read, write, open, rename or other OS call failed; see the message.
  no_space,           ///< The disk is full (ENOSPC) or a file size limit was hit (EFBIG).
  corrupt,            ///< Stored data fails validation: bad checksum, truncated, inconsistent.
  unsupported,        ///< Valid input that thaw cannot handle: unknown architecture, dtype, version.
  parse_error,        ///< Text or binary input that cannot be parsed (JSON, TOML, Cap'n Proto).
  resource_exhausted, ///< A bounded resource (chunk pool, device memory) cannot satisfy a request.
  cancelled,          ///< The operation was cancelled by its owner.
  device_error,       ///< A device (host or CUDA) operation failed.
  internal,           ///< A broken invariant inside thaw: a bug.
};

/// Stable lower-case name of a code, e.g. "corrupt".
[[nodiscard]] std::string_view to_string(errc code) noexcept;

/// An error: a code and a message meant for a person ("data-00000.bin: chunk 3 checksum ...").
struct error {
  errc code = errc::internal;
  std::string message;

  /// "corrupt: data-00000.bin: ..."
  [[nodiscard]] std::string to_string() const;
};

/// Builds an error; `make_error(errc::not_found, "model.safetensors: no such file")`.
[[nodiscard]] inline error make_error(errc code, std::string message) {
  return error{code, std::move(message)};
}

/// Prefixes an error's message with context, keeping its code ("loading tiny: " + message).
[[nodiscard]] error with_context(error e, std::string_view context);

/// Tag type for constructing an `expected` holding an error.
struct unexpected {
  error value;
  explicit unexpected(error e) : value(std::move(e)) {}
};

/// Either a value of type T or an `error`; a small stand-in for C++23's std::expected.
template <class T>
class [[nodiscard]] expected {
public:
  expected(T value) : state_(std::in_place_index<0>, std::move(value)) {}
  expected(error e) : state_(std::in_place_index<1>, std::move(e)) {}
  expected(unexpected u) : state_(std::in_place_index<1>, std::move(u.value)) {}

  [[nodiscard]] bool has_value() const noexcept { return state_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & { return std::get<0>(state_); }
  const T& value() const& { return std::get<0>(state_); }
  T&& value() && { return std::get<0>(std::move(state_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const error& err() const& { return std::get<1>(state_); }
  error&& err() && { return std::get<1>(std::move(state_)); }

private:
  std::variant<T, error> state_;
};

/// `expected<void>`: success or an error.
template <>
class [[nodiscard]] expected<void> {
public:
  expected() = default;
  expected(error e) : error_(std::move(e)), failed_(true) {}
  expected(unexpected u) : error_(std::move(u.value)), failed_(true) {}

  [[nodiscard]] bool has_value() const noexcept { return !failed_; }
  explicit operator bool() const noexcept { return !failed_; }
  const error& err() const& { return error_; }
  error&& err() && { return std::move(error_); }

private:
  error error_;
  bool failed_ = false;
};

using status = expected<void>;

} // namespace thaw

/// Evaluates `expr` (an expected<...>); on error returns that error from the enclosing function.
#define THAW_TRY(expr)                                                                             \
  do {                                                                                             \
    if (auto thaw_try_result_ = (expr); !thaw_try_result_)                                         \
      return ::thaw::unexpected(std::move(thaw_try_result_).err());                                \
  } while (false)

#define THAW_CONCAT_IMPL_(a, b) a##b
#define THAW_CONCAT_(a, b) THAW_CONCAT_IMPL_(a, b)

/// `THAW_ASSIGN(auto x, f());` declares x from f()'s value or returns f()'s error.
#define THAW_ASSIGN(decl, expr) THAW_ASSIGN_IMPL_(THAW_CONCAT_(thaw_assign_, __LINE__), decl, expr)
#define THAW_ASSIGN_IMPL_(tmp, decl, expr)                                                         \
  auto tmp = (expr);                                                                               \
  if (!tmp)                                                                                        \
    return ::thaw::unexpected(std::move(tmp).err());                                               \
  decl = std::move(tmp).value()
