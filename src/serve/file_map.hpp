#pragma once
// A read-only shared mapping of a file's first `len` bytes, unmapped when it goes: the
// built-in server sends a body from it (static_session.cpp says why not sendfile()).
// A mapping that could not be made is empty (data() == nullptr) and the caller falls
// back to sendfile(). Mapping costs no copy; the pages are the page cache's own.
#include <sys/mman.h>

#include <cstdint>
#include <utility>

namespace tcpha::serve {

class FileMap {
 public:
  FileMap() = default;
  FileMap(int fd, uint64_t len) {
    if (len == 0 || len > SIZE_MAX) return;
    void* p = mmap(nullptr, size_t(len), PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return;
    data_ = static_cast<const char*>(p);
    size_ = len;
  }
  FileMap(FileMap&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  FileMap& operator=(FileMap&& o) noexcept {
    if (this != &o) {
      reset();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  FileMap(const FileMap&) = delete;
  FileMap& operator=(const FileMap&) = delete;
  ~FileMap() { reset(); }

  const char* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  void reset() {
    if (data_) munmap(const_cast<char*>(data_), size_t(size_));
    data_ = nullptr;
    size_ = 0;
  }
  const char* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace tcpha::serve
