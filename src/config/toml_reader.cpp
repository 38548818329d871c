#include "config/toml_reader.hpp"

#include <algorithm>

namespace tcpha::config {

void Diagnostics::add(int line, std::string message) {
  items_.emplace_back(line, std::move(message));
}

std::vector<std::string> Diagnostics::lines() const {
  auto sorted = items_;
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> out;
  out.reserve(sorted.size());
  for (const auto& [line, msg] : sorted)
    out.push_back(file_ + ":" + std::to_string(line) + ": " + msg);
  return out;
}

int line_of(const toml::node& n) {
  auto line = n.source().begin.line;
  return line > 0 ? static_cast<int>(line) : 1;
}

std::string_view kind_of(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    default:
      return "nothing";
  }
}

void TableReader::allow_only(std::initializer_list<std::string_view> keys) const {
  allow_only(std::vector<std::string_view>(keys));
}

void TableReader::allow_only(const std::vector<std::string_view>& keys) const {
  for (auto&& [k, v] : t_) {
    if (std::find(keys.begin(), keys.end(), k.str()) == keys.end())
      d_.add(line_of(v), "unknown key '" + std::string(k.str()) + "' in " + name_);
  }
}

void TableReader::error(std::string_view key, std::string_view message) const {
  const toml::node* n = t_.get(key);
  d_.add(n ? line_of(*n) : line(), name_ + " " + std::string(key) + ": " + std::string(message));
}

void TableReader::error_at(const toml::node& n, std::string_view key,
                           std::string_view message) const {
  d_.add(line_of(n), name_ + " " + std::string(key) + ": " + std::string(message));
}

const toml::node* TableReader::find(std::string_view key, Need need) const {
  const toml::node* n = t_.get(key);
  if (!n && need == Need::required)
    d_.add(line(), name_ + " missing required key '" + std::string(key) + "'");
  return n;
}

bool TableReader::expect(const toml::node& n, std::string_view key, bool ok,
                         std::string_view want) const {
  if (!ok) error_at(n, key, "expected " + std::string(want) + ", got " + std::string(kind_of(n)));
  return ok;
}

std::optional<std::string> TableReader::string(std::string_view key, Need need) const {
  const toml::node* n = find(key, need);
  if (!n || !expect(*n, key, n->is_string(), "a string")) return std::nullopt;
  return n->as_string()->get();
}

std::optional<int64_t> TableReader::integer(std::string_view key, int64_t lo, int64_t hi,
                                            Need need) const {
  const toml::node* n = find(key, need);
  if (!n || !expect(*n, key, n->is_integer(), "an integer")) return std::nullopt;
  int64_t v = n->as_integer()->get();
  if (v < lo || v > hi) {
    error_at(
        *n, key,
        std::to_string(v) + " is out of range " + std::to_string(lo) + ".." + std::to_string(hi));
    return std::nullopt;
  }
  return v;
}

const toml::array* TableReader::array(std::string_view key, Need need) const {
  const toml::node* n = find(key, need);
  if (!n || !expect(*n, key, n->is_array(), "an array")) return nullptr;
  return n->as_array();
}

const toml::table* TableReader::subtable(std::string_view key, Need need) const {
  const toml::node* n = find(key, need);
  if (!n || !expect(*n, key, n->is_table(), "a table")) return nullptr;
  return n->as_table();
}

}  // namespace tcpha::config
