#pragma once
// Character-level helpers for HTTP text (ASCII only: HTTP syntax is byte-oriented and
// must not depend on the C locale).
#include <algorithm>
#include <string_view>

namespace tcpha::http {

constexpr bool is_alpha(unsigned char c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
constexpr bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
constexpr bool is_ows(unsigned char c) { return c == ' ' || c == '\t'; }

// ASCII case-insensitive equality.
inline bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return x == y || (is_alpha(x) && (x | 0x20) == (y | 0x20));
         });
}

// Strips optional whitespace (SP / HTAB) at both ends.
inline std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace tcpha::http
