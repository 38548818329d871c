#pragma once
// Checked access to a parsed TOML document: every type error, range error, missing or
// unknown key becomes one "FILE:LINE: message" diagnostic, and reading goes on so that
// one run of `tcpha check` reports everything that is wrong.
#include <toml++/toml.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tcpha::config {

class Diagnostics {
 public:
  explicit Diagnostics(std::string file) : file_(std::move(file)) {}
  void add(int line, std::string message);
  bool empty() const { return items_.empty(); }
  // "FILE:LINE: message" lines, in file order (stable for equal lines).
  std::vector<std::string> lines() const;

 private:
  std::string file_;
  std::vector<std::pair<int, std::string>> items_;
};

// 1-based line where toml++ saw the node; 1 when it has no position.
int line_of(const toml::node& n);
// "a string", "an integer", ...: for "expected X, got Y" messages.
std::string_view kind_of(const toml::node& n);

enum class Need { optional, required };

// One table of the document, named as the user wrote it ("[cluster]", "[backend]").
class TableReader {
 public:
  TableReader(const toml::table& t, std::string name, Diagnostics& d)
      : t_(t), name_(std::move(name)), d_(d) {}

  int line() const { return line_of(t_); }
  const toml::table& table() const { return t_; }
  bool has(std::string_view key) const { return t_.contains(key); }
  Diagnostics& diagnostics() const { return d_; }

  // Reports every key that is not listed (typo protection).
  void allow_only(std::initializer_list<std::string_view> keys) const;
  void allow_only(const std::vector<std::string_view>& keys) const;
  // Reports "[name] key: message" at the key's line (the table's line when absent).
  void error(std::string_view key, std::string_view message) const;
  void error_at(const toml::node& n, std::string_view key, std::string_view message) const;

  // Each returns nothing when the key is absent (reported when required) or has the
  // wrong type (always reported).
  std::optional<std::string> string(std::string_view key, Need need = Need::optional) const;
  std::optional<int64_t> integer(std::string_view key, int64_t lo, int64_t hi,
                                 Need need = Need::optional) const;
  const toml::array* array(std::string_view key, Need need = Need::optional) const;
  const toml::table* subtable(std::string_view key, Need need = Need::optional) const;

  // Sets out only when the key is present, an integer and within lo..hi.
  template <typename T>
  void number(std::string_view key, int64_t lo, int64_t hi, T& out) const {
    if (auto v = integer(key, lo, hi)) out = static_cast<T>(*v);
  }

 private:
  const toml::node* find(std::string_view key, Need need) const;
  bool expect(const toml::node& n, std::string_view key, bool ok, std::string_view want) const;

  const toml::table& t_;
  std::string name_;
  Diagnostics& d_;
};

}  // namespace tcpha::config
