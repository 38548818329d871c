#include "sched/lard.hpp"

#include <algorithm>

namespace tcpha::sched {

namespace {
LardParams sane(LardParams p) {
  p.max_targets = std::max<size_t>(p.max_targets, 1);  // the new entry must fit
  return p;
}
}  // namespace

Lard::Lard(Members members, LardParams params)
    : Policy(std::move(members)), params_(sane(params)) {}

Lard::Entry& Lard::find_or_insert(uint64_t target) {
  if (auto it = table_.find(target); it != table_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return it->second;
  }
  if (table_.size() >= params_.max_targets) {
    table_.erase(lru_.back());
    lru_.pop_back();
  }
  lru_.push_front(target);
  Entry& e = table_[target];
  e.lru = lru_.begin();
  return e;
}

int Lard::least_loaded(const LoadView& load) {
  const size_t n = members_.size();
  if (n == 0) return -1;
  return members_.lightest(turn_++ % n, load);
}

// The paper's condition for moving (or, with LARD/R, widening) a target: its member is
// over T_high while another is under T_low, or it is at 2*T_high whatever the others.
bool Lard::overloaded(uint32_t pos, const LoadView& load) const {
  const int64_t w = members_[pos].weight;
  const int64_t a = members_.active(pos, load);
  if (a >= 2 * int64_t(params_.high) * w) return true;
  if (a <= int64_t(params_.high) * w) return false;
  for (size_t p = 0; p < members_.size(); ++p)
    if (members_.usable(p, load) &&
        members_.active(p, load) < int64_t(params_.low) * members_[p].weight)
      return true;
  return false;
}

int Lard::pick_target(uint64_t target, const LoadView& load, Clock::time_point now) {
  std::lock_guard lock(mu_);
  Entry& e = find_or_insert(target);
  auto& set = e.servers;
  // A member that went unusable loses its targets, which then behave as new.
  bool changed = std::erase_if(set, [&](uint32_t p) { return !members_.usable(p, load); }) > 0;
  if (set.empty()) {
    int p = least_loaded(load);
    if (p < 0) return -1;
    set.push_back(uint32_t(p));
    e.changed = now;
    note_change(target);
    return p;
  }
  auto by_load = [&](uint32_t a, uint32_t b) { return members_.lighter(a, b, load); };
  // minmax_element: the first lightest and the last heaviest, so that in a set of equals
  // the member shed below is never the one this request goes to.
  const auto [lightest, heaviest] = std::minmax_element(set.begin(), set.end(), by_load);
  uint32_t n = *lightest;
  const uint32_t most = *heaviest;
  // The least loaded member may be n itself when everyone is as busy, and then the
  // target stays. It may also be none: usable() reads state the health checker changes
  // while we route, so every member can have gone down since the erase above. The set
  // must never hold -1 (it would index members_ out of bounds on the next pick).
  const int least = overloaded(n, load) ? least_loaded(load) : -1;
  if (least >= 0) {
    const uint32_t p = uint32_t(least);
    if (!params_.replicate) {
      changed |= p != n;
      set.assign(1, p);
    } else if (std::find(set.begin(), set.end(), p) == set.end()) {
      set.push_back(p);
      changed = true;
    }
    n = p;
  }
  // LARD/R: a set that has been stable for K seconds sheds its most loaded member, so
  // replication shrinks again once the target cools down.
  if (params_.replicate && set.size() > 1 && now - e.changed > params_.shrink_after) {
    std::erase(set, most);
    changed = true;
  }
  if (changed) {
    e.changed = now;
    note_change(target);
  }
  return int(n);
}

void Lard::note_change(uint64_t target) {
  if (changed_.size() < params_.max_targets) changed_.push_back(target);
}

std::vector<std::pair<uint64_t, std::vector<uint32_t>>> Lard::take_changes(size_t max) {
  std::lock_guard lock(mu_);
  std::vector<std::pair<uint64_t, std::vector<uint32_t>>> out;
  size_t used = 0;
  for (; used < changed_.size() && out.size() < max; ++used) {
    const uint64_t t = changed_[used];
    auto it = table_.find(t);
    if (it == table_.end()) continue;  // evicted since
    if (std::any_of(out.begin(), out.end(), [&](const auto& o) { return o.first == t; }))
      continue;  // changed twice: its current servers are out already
    out.emplace_back(t, it->second.servers);
  }
  changed_.erase(changed_.begin(), changed_.begin() + ptrdiff_t(used));
  return out;
}

void Lard::learn(uint64_t target, std::vector<uint32_t> servers, Clock::time_point now) {
  std::erase_if(servers, [&](uint32_t p) { return p >= members_.size(); });
  if (servers.empty()) return;
  // erase, not resize(1): GCC 12's -O3 -Warray-bounds misreads the resize path.
  if (!params_.replicate) servers.erase(servers.begin() + 1, servers.end());
  std::lock_guard lock(mu_);
  Entry& e = find_or_insert(target);
  e.servers = std::move(servers);
  e.changed = now;
}

size_t Lard::target_count() const {
  std::lock_guard lock(mu_);
  return table_.size();
}

std::vector<uint32_t> Lard::servers_of(uint64_t target) const {
  std::lock_guard lock(mu_);
  auto it = table_.find(target);
  return it == table_.end() ? std::vector<uint32_t>{} : it->second.servers;
}

}  // namespace tcpha::sched
