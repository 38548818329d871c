#include "serve/file_cache.hpp"

#include <unistd.h>

namespace tcpha::serve {

std::shared_ptr<const std::string> FileCache::get(int fd, const struct stat& st) {
  Key key{uint64_t(st.st_dev), uint64_t(st.st_ino), uint64_t(st.st_size),
          int64_t(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec};
  {
    std::lock_guard lk(mu_);
    if (auto it = index_.find(key); it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      hits_.fetch_add(1, std::memory_order_relaxed);
      return it->second->data;
    }
  }
  misses_.fetch_add(1, std::memory_order_relaxed);
  // One file may take at most a quarter of the cache, so a few large downloads cannot
  // flush everything else.
  if (uint64_t(st.st_size) > capacity_ / 4) return nullptr;
  auto data = std::make_shared<std::string>(size_t(st.st_size), '\0');
  size_t off = 0;
  while (off < data->size()) {
    ssize_t n = pread(fd, data->data() + off, data->size() - off, off_t(off));
    if (n <= 0) return nullptr;  // shrank or unreadable: stream it instead
    off += size_t(n);
  }
  std::lock_guard lk(mu_);
  if (index_.count(key)) return data;  // filled meanwhile by another thread
  lru_.push_front(Entry{key, data});
  index_[key] = lru_.begin();
  bytes_ += data->size();
  while (bytes_ > capacity_ && !lru_.empty()) {
    bytes_ -= lru_.back().data->size();
    index_.erase(lru_.back().key);
    lru_.pop_back();
  }
  return data;
}

uint64_t FileCache::bytes() const {
  std::lock_guard lk(mu_);
  return bytes_;
}

}  // namespace tcpha::serve
