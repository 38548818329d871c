#include "sched/policies.hpp"

#include <cctype>
#include <cmath>
#include <numeric>

#include "sched/lard.hpp"

namespace tcpha::sched {

RoundRobin::RoundRobin(Members members) : Policy(std::move(members)) {
  uint32_t g = 0;
  for (size_t p = 0; p < members_.size(); ++p) g = std::gcd(g, members_[p].weight);
  g = std::max(g, 1u);  // all weights 0: an empty cycle, next() answers -1
  // Member p's k-th turn (k = 0..w-1) is due at time (2k+1)/(2w); serving turns in
  // order of due time spreads each member's turns evenly over the cycle (the
  // Sainte-Lague sequence), which is what nginx's smooth round-robin achieves with
  // per-member counters and a lock.
  struct Turn {
    uint32_t k, w, pos;
  };
  std::vector<Turn> turns;
  for (uint32_t p = 0; p < members_.size(); ++p)
    for (uint32_t k = 0, w = members_[p].weight / g; k < w; ++k) turns.push_back({k, w, p});
  std::sort(turns.begin(), turns.end(), [](const Turn& a, const Turn& b) {
    uint64_t lhs = uint64_t(2 * a.k + 1) * b.w, rhs = uint64_t(2 * b.k + 1) * a.w;
    return lhs != rhs ? lhs < rhs : a.pos < b.pos;
  });
  cycle_.reserve(turns.size());
  for (const Turn& t : turns) cycle_.push_back(t.pos);
}

int RoundRobin::next(const LoadView& load) {
  const size_t n = cycle_.size();
  if (n == 0) return -1;
  for (size_t tries = 0; tries < members_.size(); ++tries) {
    uint32_t pos = cycle_[ticket_.fetch_add(1, std::memory_order_relaxed) % n];
    if (members_.usable(pos, load)) return int(pos);
  }
  bool any = false;
  for (size_t p = 0; p < members_.size() && !any; ++p) any = members_.usable(p, load);
  if (!any) return -1;
  const uint64_t from = ticket_.load(std::memory_order_relaxed);
  for (size_t i = 0; i < n; ++i) {
    uint32_t pos = cycle_[(from + i) % n];
    if (members_.usable(pos, load)) return int(pos);
  }
  return -1;  // every member went down during the walk
}

int LeastConn::next(const LoadView& load) {
  const size_t n = members_.size();
  if (n == 0) return -1;
  return members_.lightest(start_.fetch_add(1, std::memory_order_relaxed) % n, load);
}

ConsistentHash::ConsistentHash(Members members, std::string_view key) : Policy(std::move(members)) {
  if (key == "url") {
    key_ = Key::Url;
  } else if (key == "host") {
    key_ = Key::Host;
  } else if (key == "client") {
    key_ = Key::Client;
  } else if (key.starts_with("header:")) {
    key_ = Key::Header;
    name_ = key.substr(7);
  } else if (key.starts_with("cookie:")) {
    key_ = Key::Cookie;
    name_ = key.substr(7);
  }
}

uint64_t ConsistentHash::key_hash(const http::Request& req, uint32_t client_addr_be) const {
  auto client = [&] {
    return mix64(fnv1a(std::string_view(reinterpret_cast<const char*>(&client_addr_be), 4)));
  };
  switch (key_) {
    case Key::Path:
      return hash64(req.path);
    case Key::Url:
      // Hashed as the target's path?query, without building the string.
      return mix64(req.query.empty() ? fnv1a(req.path)
                                     : fnv1a(req.query, fnv1a("?", fnv1a(req.path))));
    case Key::Host: {
      // Host names are case-insensitive: Example.COM and example.com are one key.
      uint64_t h = kFnvBasis;
      for (char c : req.host) {
        char lower = char(std::tolower(static_cast<unsigned char>(c)));
        h = fnv1a(std::string_view(&lower, 1), h);
      }
      return mix64(h);
    }
    case Key::Client:
      return client();
    case Key::Header:
      if (auto v = req.header(name_)) return hash64(*v);
      return client();
    case Key::Cookie:
      if (auto v = req.cookie(name_)) return hash64(*v);
      return client();
  }
  return client();
}

int ConsistentHash::pick_hash(uint64_t key_hash, const LoadView& load) const {
  int best = -1;
  double best_score = 0;
  for (size_t p = 0; p < members_.size(); ++p) {
    if (!members_.usable(p, load)) continue;
    // 53 random bits as a uniform u in (0, 1); -ln(u) is then exponential, and the
    // member with the highest weight / -ln(u) wins with probability weight / total.
    uint64_t h = mix64(key_hash ^ members_[p].seed);
    double u = (double(h >> 11) + 0.5) * 0x1p-53;
    double score = members_[p].weight / -std::log(u);
    if (best < 0 || score > best_score) {
      best = int(p);
      best_score = score;
    }
  }
  return best;
}

std::unique_ptr<Policy> make_policy(const config::RuleSection& rule, Members members) {
  if (rule.policy == "least-conn") return std::make_unique<LeastConn>(std::move(members));
  if (rule.policy == "hash")
    return std::make_unique<ConsistentHash>(std::move(members), rule.hash_key);
  if (rule.policy == "lard") {
    LardParams p;
    p.low = rule.lard_low;
    p.high = rule.lard_high;
    p.replicate = rule.lard_replicate;
    return std::make_unique<Lard>(std::move(members), p);
  }
  return std::make_unique<RoundRobin>(std::move(members));
}

}  // namespace tcpha::sched
