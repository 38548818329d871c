#pragma once
// The built-in server's bounded in-memory file cache (`cache_mb` per back-end). It is
// what makes locality-aware distribution (LARD) pay off: a back-end that always gets
// the same targets keeps them in memory, one that gets everything thrashes. Entries
// are whole files keyed by (device, inode, size, mtime), so a changed file is a new
// entry; least recently used entries are evicted to stay under the byte budget.
#include <sys/stat.h>

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace tcpha::serve {

class FileCache {
 public:
  explicit FileCache(uint64_t capacity_bytes) : capacity_(capacity_bytes) {}

  // The whole file behind `fd` (described by `st`) from memory, reading and caching it
  // on a miss; nullptr when it does not fit (then the caller streams it from disk).
  std::shared_ptr<const std::string> get(int fd, const struct stat& st);

  uint64_t hits() const { return hits_.load(std::memory_order_relaxed); }
  uint64_t misses() const { return misses_.load(std::memory_order_relaxed); }
  uint64_t bytes() const;
  uint64_t capacity() const { return capacity_; }

 private:
  struct Key {
    uint64_t dev, ino, size;
    int64_t mtime_ns;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const {
      return std::hash<uint64_t>()(k.ino * 1000003u ^ k.dev ^ uint64_t(k.mtime_ns) ^ k.size);
    }
  };
  struct Entry {
    Key key;
    std::shared_ptr<const std::string> data;
  };

  const uint64_t capacity_;
  mutable std::mutex mu_;  // the BE agent is single-threaded; FE workers share one cache
  std::list<Entry> lru_;   // front = most recently used
  std::unordered_map<Key, std::list<Entry>::iterator, KeyHash> index_;
  uint64_t bytes_ = 0;
  std::atomic<uint64_t> hits_{0}, misses_{0};
};

}  // namespace tcpha::serve
