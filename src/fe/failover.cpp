// The front-end's part of BE failover (seed 004; docs/failover.md): it picks each
// committed connection's backup (the next usable BE of the same groups, a ring in
// cluster-file order), sends it the connection's state at COMMIT, tells it what to
// forget, and when a BE dies points all of its flows at their backups in one map
// update and asks the backups to take over. The datapath copies the client's
// data-bearing packets to each flow's backup meanwhile (bpf/datapath.bpf.c).
#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>

#include <spdlog/spdlog.h>

#include "common/clock.hpp"
#include "common/flow_key.hpp"
#include "datapath/datapath.hpp"
#include "fe/worker_internal.hpp"

namespace tcpha::fe {
namespace {

constexpr uint64_t kMs = 1'000'000;
// How long the connections of a failed-over BE wait for their backup's TAKEN before
// they count as lost: a takeover probes each client (a round trip, a retry or two).
// Also how long the BE stays failed over when it comes back.
constexpr uint64_t kTakeoverWaitNs = uint64_t(proto::kFailoverWindowMs) * kMs;
// How long after its COMMIT a connection's BACKUP is sent (at the next tick after it:
// 10-30 ms with the worker's 20 ms tick).
// The datapath copies a young flow's client FIN only after this (tcpha_shared.h).
constexpr uint64_t kBackupDelayNs = TCPHA_BACKUP_DUE_MS * kMs;

bool same_groups(std::vector<std::string> a, std::vector<std::string> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  return a == b;
}

}  // namespace

uint16_t Worker::backup_slot(const BackendState* b) {
  return b && b->uid < TCPHA_MAX_BACKENDS ? uint16_t(b->uid + 1) : 0;
}

// The ring: the first BE after the primary in cluster-file order (wrapping) that this
// worker can reach, that is not drained or leaving, serves the same groups and is of
// the same kind: a built-in server generates the response again, a relay asks its own
// upstream again (docs/relay.md, "Failover"); never one for the other. Both must fit
// the datapath's slot table.
BackendState* Worker::backup_for(const BackendState& primary) const {
  const auto& bes = snap_->backends;
  const auto& cfg = *snap_->cfg;
  size_t p = bes.size();
  for (size_t i = 0; i < bes.size(); ++i)
    if (bes[i] == &primary) p = i;
  if (p == bes.size() || primary.uid >= TCPHA_MAX_BACKENDS) return nullptr;
  const bool relay = !cfg.backends[p].upstream.empty();
  Load load(*this, &primary);
  for (size_t k = 1; k < bes.size(); ++k) {
    const size_t i = (p + k) % bes.size();
    if (!load.usable(uint32_t(i)) || bes[i]->uid >= TCPHA_MAX_BACKENDS) continue;
    if (cfg.backends[i].upstream.empty() == relay ||
        !same_groups(cfg.backends[i].groups, cfg.backends[p].groups))
      continue;
    return bes[i];
  }
  return nullptr;
}

// At COMMIT (or a move): the backup is to get what the primary got (the exported state
// and the request bytes); the client's later data reaches it as copies from the
// datapath from now on, and it parks those until the BACKUP comes. The BACKUP waits
// kBackupDelayNs: most short connections end before that, and as their last FIN is
// not copied either (the datapath's young-FIN rule) their backup never hears of them
// (docs/failover.md, "BACKUP when due"). A primary that dies
// meanwhile is covered: the BACKUP goes at once with a TAKEOVER behind it
// (flush_backups()).
void Worker::back_up_later(uint64_t id, BackendState& backup, BackendState& primary,
                           proto::BackupMsg msg, uint64_t now) {
  const uint32_t epoch = primary.failover_count.load(std::memory_order_relaxed);
  if (!due_backups_.insert_or_assign(id, DueBackup{&backup, &primary, epoch, now, std::move(msg)})
           .second)
    return;  // queued again (moved within the delay): keeps its place in the order
  due_order_.push_back(id);
}

bool Worker::send_backup(BackendState& to, const proto::BackupMsg& msg) {
  auto it = controls_.find(&to);
  if (it == controls_.end() || !it->second->link.send(msg)) return false;
  sh_.counters.inc(Counter::backups);
  return true;
}

bool Worker::cancel_backup(uint64_t id) { return due_backups_.erase(id) != 0; }

void Worker::flush_backups(uint64_t now, bool all, const BackendState* failing) {
  auto send = [&](DueBackup& d) {
    if (send_backup(*d.to, d.msg)) return true;
    // The backup's link is down: the connection simply has no backup.
    if (auto c = committed_.find(d.msg.id); c != committed_.end() && c->second.backup == d.to)
      c->second.backup = nullptr;
    return false;
  };
  // Whose primary failed over since it was queued: now, and the backup told to take
  // it over (its TAKEOVER for that primary came before this BACKUP, or from another
  // worker's link, which is not ordered with ours).
  std::vector<std::pair<BackendState*, BackendState*>> takeovers;  // (backup, primary)
  size_t late = 0;
  for (auto it = due_backups_.begin(); it != due_backups_.end();) {
    DueBackup& d = it->second;
    if (d.primary->failover_count.load(std::memory_order_relaxed) == d.epoch) {
      ++it;
      continue;
    }
    if (send(d)) {
      ++late;
      if (d.primary != failing &&
          std::find(takeovers.begin(), takeovers.end(), std::pair{d.to, d.primary}) ==
              takeovers.end())
        takeovers.emplace_back(d.to, d.primary);
    }
    it = due_backups_.erase(it);
  }
  if (!takeovers.empty()) send_copies();  // the copies ahead of the TAKEOVERs
  for (auto [to, primary] : takeovers)
    if (auto it = controls_.find(to); it != controls_.end())
      it->second->link.send(proto::TakeoverMsg{primary->id});
  if (late)
    spdlog::warn("[w{}] {} BACKUP(s) of connections whose back-end failed over before they were "
                 "due: sent now, {}",
                 index_, late, failing ? "ahead of the TAKEOVERs" : "each with a TAKEOVER behind");
  while (!due_order_.empty()) {
    auto it = due_backups_.find(due_order_.front());
    if (it != due_backups_.end()) {
      if (!all && now - it->second.at < kBackupDelayNs) break;
      send(it->second);
      due_backups_.erase(it);
    }
    due_order_.pop_front();
  }
}

// The datapath appends a copy of every client packet a backup needs to its ring (before
// the packet goes on to its owner, so a copy exists of all the owner can acknowledge);
// this sends them on, each backup's in COPIES messages of up to kMaxPayload, in the
// ring's order. Worker 0 does it every tick (20 ms; sooner when over
// TCPHA_COPY_WAKE_BYTES, 16 KiB, wait); a worker failing a back-end over does it before its
// TAKEOVERs, so that on each of its links the copies come first. A backup whose link
// is down misses its copies (copies_unsent): those connections it cannot take over.
void Worker::send_copies() {
  if (!sh_.copies) return;
  struct Batch {
    BackendState* to;
    proto::CopiesMsg msg;
  };
  std::vector<Batch> batches;
  std::array<int16_t, TCPHA_MAX_BACKENDS> batch_of;  // slot -> index in batches; -1: none yet
  batch_of.fill(-1);
  uint64_t unsent = 0;
  auto send = [&](Batch& b) {
    auto it = controls_.find(b.to);
    if (it != controls_.end() && it->second->up && it->second->link.send(b.msg))
      sh_.counters.inc(Counter::copies_sent, b.msg.count);
    else
      unsent += b.msg.count;
    b.msg.packed.clear();  // keeps its capacity for the next batch
    b.msg.count = 0;
  };
  std::lock_guard lk(sh_.copies_mu);
  sh_.copies->drain([&](uint16_t slot, const uint8_t* frame, size_t len) {
    if (slot >= TCPHA_MAX_BACKENDS) {
      ++unsent;
      return;
    }
    if (batch_of[slot] < 0) {
      BackendState* to = sh_.backend_by_uid(slot);
      if (!to) {
        ++unsent;
        return;
      }
      batch_of[slot] = int16_t(batches.size());
      batches.push_back(Batch{to, {}});
    }
    Batch& b = batches[size_t(batch_of[slot])];
    if (!b.msg.add(frame, len)) {
      send(b);
      if (!b.msg.add(frame, len)) {  // the datapath copies no frame that large
        ++unsent;
        return;
      }
    }
  });
  for (auto& b : batches)
    if (b.msg.count) send(b);
  if (unsent) sh_.counters.inc(Counter::copies_unsent, unsent);
}

// FORGETs are batched per backup and sent once per tick: a closed connection's backup
// costs its backup nothing but memory until then.
void Worker::forget_later(BackendState& backup, uint64_t id) {
  auto& ids = forgets_[&backup];
  ids.push_back(id);
  if (ids.size() >= proto::kForgetMax) flush_forgets();
}

void Worker::flush_forgets() {
  for (auto& [b, ids] : forgets_) {
    if (ids.empty()) continue;
    auto it = controls_.find(b);
    // A backup we cannot reach now holds nothing we could make it forget later either
    // (a new link is a new agent, or the same one that ages its entries out).
    if (it != controls_.end() && it->second->up) it->second->link.send(proto::ForgetMsg{ids});
    ids.clear();
  }
}

// The BE behind cc has lost its last live link (its agent died: the kernel closed the
// links; or it went silent for dead_after_ms). Fail it over once: one datapath update
// sends every flow it owns to that flow's own backup, and every BE is asked to take over
// what it backs up for it.
void Worker::maybe_fail_over(ControlConn& cc, uint64_t now) {
  BackendState& b = *cc.be;
  if (!snap_->cfg->cluster.failover || stopping_ || cc.retired_at ||
      b.links_up.load(std::memory_order_relaxed) != 0 || b.uid >= TCPHA_MAX_BACKENDS)
    return;
  uint64_t expected = 0;
  if (!b.failed_at.compare_exchange_strong(expected, now)) return;  // another worker did
  const uint64_t mac = b.mac.load(std::memory_order_relaxed);
  if (auto s = sh_.dp->set_backend(b.uid, BackendState::unpack(mac), true,
                                   b.tunnel.load(std::memory_order_relaxed));
      !s) {
    spdlog::error("failover of {}: {}", b.id, s.error().message());
    return;
  }
  sh_.counters.inc(Counter::failovers);
  b.failover_count.fetch_add(1);
  const uint64_t silent = now > cc.link.last_heard() ? (now - cc.link.last_heard()) / kMs : 0;
  {
    std::lock_guard lk(sh_.failover_mu);
    if (sh_.failovers.size() == Shared::kFailoverHistory) sh_.failovers.pop_front();
    auto& last = sh_.failovers.emplace_back();
    last.backend = b.id;
    last.at_ns = now;
    last.at_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
    last.silent_ms = silent;
  }
  // Its connections' BACKUPs still due go first, then every copy the datapath made
  // (before this update: all the dead one could have acknowledged), ahead of the
  // TAKEOVERs on each link.
  flush_backups(now, false, &b);
  send_copies();
  size_t asked = 0;
  for (auto& [other, link] : controls_) {
    if (other == &b || !link->up) continue;
    if (link->link.send(proto::TakeoverMsg{b.id})) ++asked;
  }
  spdlog::warn("[w{}] {} failed over (silent for {} ms): its flows go to their backups; {} "
               "back-end(s) asked to take over",
               index_, b.id, silent, asked);
  // If it is alive after all (silent, not dead: overloaded, or cut off from us only), it
  // must let go of what its backups now serve: TAKEOVER naming itself tells it to drop
  // its connections silently, and the link closes so that it comes back as a new one
  // (end_failover() clears failed_at once its link is back and its backups have had
  // kTakeoverWaitNs; until then it gets no new connection).
  if (cc.link.fd() >= 0 && cc.link.send(proto::TakeoverMsg{b.id}))
    control_down(cc, "failed over");
}

// Not at once when its link returns (a BE that was only silent comes back within
// milliseconds of its failover): its flows would point at it again, which dropped them
// when it was failed over, before their backups' TAKENs (which would then not count
// either) and while their probes' answers must reach the backups.
void Worker::end_failover(BackendState& b, uint64_t now) {
  uint64_t at = b.failed_at.load(std::memory_order_relaxed);
  if (at == 0 || now - at < kTakeoverWaitNs || !b.failed_at.compare_exchange_strong(at, 0))
    return;
  if (b.uid < TCPHA_MAX_BACKENDS)
    (void)sh_.dp->set_backend(b.uid, BackendState::unpack(b.mac.load(std::memory_order_relaxed)),
                              false, b.tunnel.load(std::memory_order_relaxed));
  spdlog::info("[w{}] {} is back after its failover {} ms ago", index_, b.id, (now - at) / kMs);
}

// A backup's answer for one connection of a dead BE: recovered (it serves it now: the
// flow points at it for good, without a backup) or lost.
void Worker::on_taken(ControlConn& cc, const proto::TakenMsg& m) {
  auto it = committed_.find(m.id);
  if (it == committed_.end() || it->second.backup != cc.be ||
      it->second.be->failed_at.load(std::memory_order_relaxed) == 0) {
    // Only the connection's backup, and only once its owner was failed over.
    sh_.counters.inc(Counter::ctl_unauthorized);
    spdlog::warn("[w{}] TAKEN for {} from {}, which is not its backup or not failing over: ignored",
                 index_, m.id, cc.be->id);
    return;
  }
  Committed& c = it->second;
  if (c.orphaned_at) --orphans_;
  c.orphaned_at = 0;
  {
    std::lock_guard lk(sh_.failover_mu);
    if (auto* f = sh_.failover_of(c.be->id)) {
      f->last_taken_ns = monotonic_ns();
      ++(m.status == 0 ? f->recovered : f->lost);
    }
  }
  if (m.status != 0) {
    sh_.counters.inc(Counter::takeover_lost);
    spdlog::info("[w{}] {}: connection {} lost in the failover of {}: {}", index_, cc.be->id, m.id,
                 c.be->id, strerror(int(m.status)));
    mark_closed(c);
    release(it);
    return;
  }
  sh_.counters.inc(Counter::taken_over);
  BackendState& to = *cc.be;
  const Mac mac = BackendState::unpack(to.mac.load(std::memory_order_relaxed));
  if (auto s = sh_.dp->forward(c.key, to.uid, mac, sh_.fe_mac); !s)
    spdlog::warn("[w{}] flow of {} after its takeover: {}", index_, m.id, s.error().message());
  c.be->active.fetch_sub(1, std::memory_order_relaxed);
  to.active.fetch_add(1, std::memory_order_relaxed);
  c.be = &to;
  c.backup = nullptr;
  c.seq = 0;
}

// A CLOSED from a back-end that was failed over, for a connection no backup took: it
// dropped it when told it was failed over (fenced: alive but silent, and this one's
// backup could not take it, e.g. because it was dead too). Lost to the failover.
void Worker::count_fenced(const Committed& c) {
  sh_.counters.inc(Counter::takeover_lost);
  std::lock_guard lk(sh_.failover_mu);
  if (auto* f = sh_.failover_of(c.be->id)) ++f->lost;
}

// Connections whose owner's link was lost: if the owner was failed over since, those no
// TAKEN resolved in time are lost; if not (another worker still hears it, or its link is
// back), they are its again, or forgotten as before failover existed.
void Worker::sweep_orphans(uint64_t now) {
  for (auto it = committed_.begin(); it != committed_.end();) {
    Committed& c = it->second;
    if (!c.orphaned_at || now - c.orphaned_at < kTakeoverWaitNs) {
      ++it;
      continue;
    }
    --orphans_;
    c.orphaned_at = 0;
    // Failed over since it was orphaned (even if it is back by now: then it dropped it).
    if (c.be->failover_count.load(std::memory_order_relaxed) != c.orphan_epoch) {
      spdlog::warn("[w{}] connection {} ({}) of {} lost: no TAKEN from its backup ({}) in {} ms",
                   index_, it->first, key_client(c.key).str(), c.be->id,
                   c.backup ? c.backup->id : "none", kTakeoverWaitNs / kMs);
      sh_.counters.inc(Counter::takeover_lost);
      std::lock_guard lk(sh_.failover_mu);
      if (auto* f = sh_.failover_of(c.be->id)) ++f->lost;
    } else {
      auto link = controls_.find(c.be);
      if (link != controls_.end() && link->second->up) {
        ++it;  // the link came back: the BE still owns it
        continue;
      }
    }
    mark_closed(c);
    it = release(it);
  }
}

}  // namespace tcpha::fe
