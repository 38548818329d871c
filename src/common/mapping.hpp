#pragma once
// Owns one memory mapping; unmaps it once (what UniqueFd is for a descriptor). Used for
// the backup's copy ring (failover/sockets.cpp) and the built-in server's file bodies
// (serve/static_session.cpp).
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <utility>

namespace tcpha {

class Mapping {
 public:
  Mapping() = default;
  // mmap(NULL, len, prot, flags, fd, 0); empty (valid() false, errno set) on failure.
  Mapping(size_t len, int prot, int flags, int fd) {
    if (len == 0) return;
    void* p = mmap(nullptr, len, prot, flags, fd, 0);
    if (p == MAP_FAILED) return;
    data_ = static_cast<uint8_t*>(p);
    size_ = len;
  }
  Mapping(Mapping&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  Mapping& operator=(Mapping&& o) noexcept {
    if (this != &o) {
      reset();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { reset(); }

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool valid() const { return data_ != nullptr; }
  void reset() {
    if (data_) munmap(data_, size_);
    data_ = nullptr;
    size_ = 0;
  }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace tcpha
