#pragma once
// The stateless-or-nearly policies: weighted round-robin, weighted least connections and
// consistent hashing. Their fast paths are lock-free (one atomic counter at most), since
// every FE worker thread routes through the same policy objects. LARD is in lard.hpp.
#include <atomic>
#include <string>

#include "sched/policy.hpp"

namespace tcpha::sched {

// Smooth weighted round-robin: a precomputed cycle holds member p weight(p) times
// (weights divided by their gcd), interleaved evenly, and an atomic ticket walks it.
// A ticket that lands on an unusable member is dropped and another drawn, so over a
// cycle the usable members get exactly their weights' proportions. When many members
// are down the draw stops after size() tries and the cycle is walked instead, which
// keeps the cost bounded at the price of exactness during the outage.
class RoundRobin final : public Policy {
 public:
  explicit RoundRobin(Members members);
  int pick(const http::Request&, uint32_t, const LoadView& load) override { return next(load); }
  int next(const LoadView& load);
  size_t cycle_length() const { return cycle_.size(); }

 private:
  std::vector<uint32_t> cycle_;
  std::atomic<uint64_t> ticket_{0};
};

// Weighted least connections: the usable member with the lowest (active+1)/weight.
// The scan starts at a rotating offset and keeps the first of equals, so members with
// equal load per weight take turns instead of the first one getting every request.
class LeastConn final : public Policy {
 public:
  explicit LeastConn(Members members) : Policy(std::move(members)) {}
  int pick(const http::Request&, uint32_t, const LoadView& load) override { return next(load); }
  int next(const LoadView& load);

 private:
  std::atomic<uint64_t> start_{0};
};

// Weighted rendezvous (highest random weight) hashing: every member scores the key with
// weight / -ln(u), u a uniform number from hash(key, member seed), and the best usable
// score wins. Removing or losing a member moves only the keys it held (each to its next
// best), adding one takes only the keys it now wins, about weight/total of them.
// O(members) per request, which is small next to a handoff.
class ConsistentHash final : public Policy {
 public:
  // key: "path", "url", "host", "client", "header:NAME" or "cookie:NAME".
  ConsistentHash(Members members, std::string_view key);
  int pick(const http::Request& req, uint32_t client_addr_be, const LoadView& load) override {
    return pick_hash(key_hash(req, client_addr_be), load);
  }
  // What the request hashes to. A missing header or cookie falls back to the client
  // address, so such clients still stick to one member.
  uint64_t key_hash(const http::Request& req, uint32_t client_addr_be) const;
  int pick_hash(uint64_t key_hash, const LoadView& load) const;

 private:
  enum class Key { Path, Url, Host, Client, Header, Cookie };
  Key key_ = Key::Path;
  std::string name_;  // header or cookie name
};

}  // namespace tcpha::sched
