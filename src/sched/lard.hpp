#pragma once
// Locality-Aware Request Distribution (Pai et al., ASPLOS 1998). The target is the
// request path: keeping each target on one member keeps its working set in one cache,
// while the load thresholds stop a popular target from overloading its member.
//
// Load is the member's active connections divided by its weight, so T_low and T_high
// are per unit of weight (with the default weight 1 they are the paper's connection
// counts). "Least loaded" is the usable member with the lowest (active+1)/weight, ties
// taken in turn as in least-conn.
//
// LARD: a new target, or one whose member became unusable, goes to the least loaded
// member; it moves there also when its member is over T_high while someone is under
// T_low, or when its member is at 2*T_high or more.
// LARD/R (replicate): a target owns a set of members and goes to the least loaded of
// them; under the same overload condition the least loaded member overall joins the
// set, and a set of two or more that has not changed for shrink_after loses its most
// loaded member.
//
// The target table is shared by all FE worker threads and guarded by one mutex (held
// for a hash lookup and a scan of the members). It keys on a 64-bit hash of the path,
// so memory does not grow with path length; two paths that collide simply share their
// members. It holds at most max_targets entries and evicts the least recently used, so
// a flood of unique paths cannot exhaust memory.
#include <chrono>
#include <list>
#include <mutex>
#include <unordered_map>

#include "sched/policy.hpp"

namespace tcpha::sched {

struct LardParams {
  uint32_t low = 25;   // T_low
  uint32_t high = 65;  // T_high
  bool replicate = false;
  std::chrono::steady_clock::duration shrink_after = std::chrono::seconds(20);  // K
  size_t max_targets = 100000;
};

class Lard final : public Policy {
 public:
  using Clock = std::chrono::steady_clock;

  Lard(Members members, LardParams params);
  int pick(const http::Request& req, uint32_t, const LoadView& load) override {
    return pick_target(hash64(req.path), load, Clock::now());
  }
  int pick_target(uint64_t target, const LoadView& load, Clock::time_point now);

  size_t target_count() const;
  // The member positions a target is assigned to (empty when it is not in the table).
  std::vector<uint32_t> servers_of(uint64_t target) const;

  // Sharing the table (multi-handoff: the FE and the back-ends each decide for the
  // requests they route, and tell the others their decisions over the control links).
  // The assignments this table made since the last call, at most `max` (the rest wait
  // for the next call); learned ones are not among them, so nothing echoes.
  std::vector<std::pair<uint64_t, std::vector<uint32_t>>> take_changes(size_t max);
  // Another node's assignment of `target`: replaces ours. Positions out of range are
  // dropped (a node with another member list); nothing left: ignored.
  void learn(uint64_t target, std::vector<uint32_t> servers, Clock::time_point now);

 private:
  struct Entry {
    std::vector<uint32_t> servers;  // positions in members(); one unless replicating
    Clock::time_point changed;      // last change of servers (LARD/R shrinking)
    std::list<uint64_t>::iterator lru;
  };

  Entry& find_or_insert(uint64_t target);
  int least_loaded(const LoadView& load);
  bool overloaded(uint32_t pos, const LoadView& load) const;
  void note_change(uint64_t target);  // mu_ held

  const LardParams params_;
  uint64_t turn_ = 0;  // rotates the start of least_loaded scans; guarded by mu_
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Entry> table_;
  std::list<uint64_t> lru_;  // most recently used first
  // Targets whose servers this table changed since take_changes(): bounded like the
  // table, so a flood of unique paths costs at most max_targets entries here too.
  std::vector<uint64_t> changed_;
};

}  // namespace tcpha::sched
