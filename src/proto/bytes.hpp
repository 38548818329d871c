#pragma once
// Big-endian integer access to byte buffers, independent of host byte order and
// alignment. Internal to the control protocol codec.
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace tcpha::proto {

template <typename T>
inline T load_be(const uint8_t* p) {
  static_assert(std::is_unsigned_v<T>);
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v = static_cast<T>((v << 8) | p[i]);
  return v;
}

template <typename T>
inline void store_be(uint8_t* p, T v) {
  static_assert(std::is_unsigned_v<T>);
  for (size_t i = 0; i < sizeof(T); ++i)
    p[i] = static_cast<uint8_t>(v >> (8 * (sizeof(T) - 1 - i)));
}

}  // namespace tcpha::proto
