#pragma once
// The worker's connection records and its view of the back-ends' load, shared by
// worker.cpp and failover.cpp (the parts of one class).
#include <netinet/in.h>

#include <memory>
#include <string>

#include "fe/worker.hpp"
#include "handoff/sender.hpp"
#include "proto/link.hpp"
#include "serve/static_session.hpp"

namespace tcpha::fe {

struct Worker::ClientConn : Item {
  enum State { Reading, Handing, Local, Closing } state = Reading;
  ClientConn() : Item(Client) {}
  UniqueFd fd;
  Endpoint peer{}, local{};  // IPv4 or IPv6 (the VIP it came in on)
  std::string buf;
  size_t consumed = 0;        // bytes of buf read from the socket (the rest was peeked)
  uint64_t deadline = 0;      // header timeout, handoff timeout or close linger
  uint64_t request_done = 0;  // when the whole head had arrived
  uint64_t handoff_sent = 0;
  uint64_t id = 0;
  BackendState* be = nullptr;
  BackendState* failed_be = nullptr;  // excluded from the retry
  BackendState* backup = nullptr;     // failover: where the committed connection is backed up
  int attempts = 0;
  int rule = -1;              // index into snap's router
  // The snapshot this connection was routed with: the rule index, the local docroot
  // fd and the access log's rule name stay valid however many reloads happen while
  // it is handed off or served locally.
  std::shared_ptr<const Snapshot> snap;
  std::string request_line;   // for the access log
  tcpha_flow_key key{};
  std::unique_ptr<serve::StaticSession> session;  // when served locally
  bool want_write = false;
  bool peer_fin = false;       // the client half-closed after its request
  bool quota = false;          // holds one of its address's client_quota slots
  uint64_t progress = 0;       // local node: bytes sent + requests at the last check
  uint64_t progress_at = 0;    // ... and when that last changed
  handoff::Sender move;        // the handoff attempt under way (state Sent while Handing)
  bool watched = false;        // in the worker's epoll set
  uint64_t gc_epoch = 0;       // Datapath::gc_epoch() when the handoff created its flow
};

struct Worker::ControlConn : Item {
  ControlConn(BackendState& b, in_addr a, proto::LinkOptions o)
      : Item(Control), be(&b), addr(a), link(std::move(o)) {}
  BackendState* be;
  in_addr addr;             // where the BE is (a reload may move it; tick() redials)
  proto::Link link;         // dials addr, redials with proto::Backoff
  bool up = false;          // link up, peer id and MAC checked
  bool live = false;        // counted in be->links_up: up and heartbeating
  uint64_t retired_at = 0;  // no longer in the configuration; closes when idle
  bool told_drained = false;  // the BE knows it is drained (DRAIN sent)
  // The sent_ns of the last HEARTBEAT heard on this link: a time on the BE's clock,
  // the base of the lease our HANDOFFs give it (handoff/sender.hpp). 0: none yet.
  uint64_t beat_ns = 0;
  uint64_t beat_at = 0;  // when we heard it (our clock)
};

// What the router sees of the back-ends, from this worker's point of view.
class Worker::Load final : public sched::LoadView {
 public:
  Load(const Worker& w, const BackendState* exclude) : w_(w), exclude_(exclude) {}
  bool usable(uint32_t i) const override {
    const auto& bes = w_.snap_->backends;
    if (i >= bes.size()) return false;
    BackendState* b = bes[i];
    // A BE failed over gets nothing until it reconnects (its flows go to backups).
    if (b == exclude_ || b->drained.load(std::memory_order_relaxed) ||
        b->leaving.load(std::memory_order_relaxed) || b->failed_at.load(std::memory_order_relaxed))
      return false;
    // A link takes handoffs once the BE's first heartbeat came (sent at once on link
    // up): it is the lease's base, without which the BE refuses the HANDOFF. Matters
    // when clients are already waiting as the links come up (an FE upgrade).
    auto it = w_.controls_.find(b);
    return it != w_.controls_.end() && it->second->live && it->second->beat_ns != 0 &&
           b->addressable();
  }
  int64_t active(uint32_t i) const override {
    const auto& bes = w_.snap_->backends;
    if (i < bes.size()) return bes[i]->active.load(std::memory_order_relaxed);
    return w_.sh_.local_active.load(std::memory_order_relaxed);
  }
  uint32_t cpu_permille(uint32_t i) const override {
    const auto& bes = w_.snap_->backends;
    return i < bes.size() ? bes[i]->cpu_permille.load(std::memory_order_relaxed) : 0;
  }

 private:
  const Worker& w_;
  const BackendState* exclude_;
};

}  // namespace tcpha::fe
