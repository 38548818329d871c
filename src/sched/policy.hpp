#pragma once
// The vocabulary shared by the router and its policies: what a policy knows about the
// members of a rule's group, and the interface every policy implements.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "http/request.hpp"

namespace tcpha::sched {

// What the router needs to know about back-ends right now (the FE fills it from its
// shared atomics). Index i < config.backends.size() is back-end i. The index
// config.backends.size() (Router::local_id()) is the FE itself as a local node: the
// router asks active() for it (requests the FE is serving itself) but never usable(),
// because the local node is always usable.
struct LoadView {
  virtual ~LoadView() = default;
  virtual bool usable(uint32_t backend) const = 0;     // up, not drained, this worker can reach it
  virtual int64_t active(uint32_t backend) const = 0;  // active connections the FE knows of
  // The member's own CPU load in permille of one CPU, from its heartbeats (seed 000
  // 4.9, dynamic load feedback); 0 when unknown (the local node, no heartbeat yet).
  virtual uint32_t cpu_permille(uint32_t /*backend*/) const { return 0; }
};

struct Member {
  uint32_t id = 0;      // LoadView index: a back-end index or the local id
  uint32_t weight = 1;  // 1..1000 from the config; the local node counts as 1
  uint64_t seed = 0;    // from the member's name, so hash placement survives reordering
};

// A rule's group as its policy sees it; immutable. Policies speak of members by their
// position in this list.
class Members {
 public:
  Members(std::vector<Member> list, uint32_t local_id)
      : list_(std::move(list)), local_id_(local_id) {}

  size_t size() const { return list_.size(); }
  const Member& operator[](size_t pos) const { return list_[pos]; }
  uint32_t local_id() const { return local_id_; }

  bool usable(size_t pos, const LoadView& load) const {
    return list_[pos].id == local_id_ || load.usable(list_[pos].id);
  }
  // Clamped to 0..2^30: a CLOSED racing its handoff's increment may briefly leave the
  // count negative, and the cap keeps (active + 1) * weight products within int64_t.
  int64_t active(size_t pos, const LoadView& load) const {
    return std::clamp<int64_t>(load.active(list_[pos].id), 0, int64_t{1} << 30);
  }
  // Load per unit of weight: connections (+1, so an idle heavy member is preferred
  // over an idle light one) scaled by the member's reported CPU load, so that a
  // member busy with few but expensive connections (or with work of its own) gets
  // fewer new ones: factor 1 at idle, 2 with one CPU saturated (capped there).
  // The CPU figure counts in bands of kCpuBand permille: two members whose loads
  // differ by sampling noise (heartbeats taken at different instants; in a test bed
  // they even share one host) must tie, so that ties rotate instead of the member
  // that happened to report 1% less winning every new target (CI saw LARD give one
  // BE 1 of 30 paths that way).
  static constexpr uint32_t kCpuBand = 200;
  int64_t pressure(size_t pos, const LoadView& load) const {
    const uint32_t raw = std::min<uint32_t>(load.cpu_permille(list_[pos].id), 1000);
    const int64_t cpu = raw / kCpuBand * kCpuBand;
    return (active(pos, load) + 1) * (1000 + cpu);
  }
  // True when a carries less load per unit of weight than b. Products stay below
  // 2^31 * 2000 * 1000 < 2^63.
  bool lighter(size_t a, size_t b, const LoadView& load) const {
    return pressure(a, load) * list_[b].weight < pressure(b, load) * list_[a].weight;
  }
  // The usable member with the least load per unit of weight, or -1. Ties go to the
  // first one found from `start` on, so callers that rotate `start` share them out.
  int lightest(size_t start, const LoadView& load) const {
    const size_t n = list_.size();
    int best = -1;
    for (size_t i = 0; i < n; ++i) {
      size_t pos = (start + i) % n;
      if (!usable(pos, load)) continue;
      if (best < 0 || lighter(pos, size_t(best), load)) best = int(pos);
    }
    return best;
  }

 private:
  std::vector<Member> list_;
  uint32_t local_id_;
};

class Policy {
 public:
  explicit Policy(Members members) : members_(std::move(members)) {}
  virtual ~Policy() = default;
  Policy(const Policy&) = delete;
  Policy& operator=(const Policy&) = delete;

  // Position in members() of the member to use, or -1 when none is usable. Called by
  // several FE worker threads at once.
  virtual int pick(const http::Request& req, uint32_t client_addr_be, const LoadView& load) = 0;

  const Members& members() const { return members_; }

 protected:
  const Members members_;
};

// The policy a rule names, over the given members. Precondition: the rule passed
// config validation (policy and hash_key are among the known values).
std::unique_ptr<Policy> make_policy(const config::RuleSection& rule, Members members);

// 64-bit hashing for placement: FNV-1a over the bytes, then the splitmix64 finaliser
// so that keys differing in one byte land far apart. Stable across runs and builds,
// unlike std::hash, so a reload keeps every key where it was.
constexpr uint64_t kFnvBasis = 0xcbf29ce484222325ull;
constexpr uint64_t fnv1a(std::string_view s, uint64_t h = kFnvBasis) {
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}
constexpr uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
constexpr uint64_t hash64(std::string_view s) { return mix64(fnv1a(s)); }

}  // namespace tcpha::sched
