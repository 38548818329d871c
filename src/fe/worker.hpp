#pragma once
// One front-end worker: an epoll loop on its own SO_REUSEPORT listeners and its own
// control connection to every back-end, so workers share nothing on the data path.
#include <netinet/in.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/fd.hpp"
#include "common/listen_socket.hpp"
#include "common/result.hpp"
#include "fe/shared.hpp"
#include "handoff/sender.hpp"
#include "proto/control.hpp"
#include "proto/link.hpp"
#include "tcpha_shared.h"

namespace tcpha::fe {

class Worker {
 public:
  Worker(Shared& shared, uint32_t index);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Binds the listeners; must succeed before run(). `given`: listening sockets handed
  // over by the FE process before this one (--takeover), used instead of new ones for
  // their ports; a port none of them has gets a new one.
  Status open_listeners(std::vector<UniqueFd> given = {});
  // Its listening sockets' descriptors (to hand over to a successor).
  std::vector<int> listener_fds() const;
  void run();   // until stop()
  void stop();  // thread-safe
  void wake();  // thread-safe: look at the snapshot again
  // Thread-safe: closes the listeners (another process may hold them: a stop, or a
  // handover to a successor); what was accepted goes on.
  void stop_accepting();
  // Client connections accepted and not yet handed off, closed or served: what a
  // stopping or superseded FE waits for (thread-safe, updated once per loop round).
  size_t in_progress() const { return in_progress_.load(std::memory_order_relaxed); }

 private:
  Status clamp_mss();
  struct Item {
    enum Kind { Listener, Client, Control, Wake, Copies } kind;
    explicit Item(Kind k) : kind(k) {}
  };
  struct ClientConn;
  struct ControlConn;
  class Load;
  class Port;

  void on_accept(ListenSocket& l);
  void on_client(ClientConn& c, uint32_t events);
  void on_local(ClientConn& c, uint32_t events);
  void route(ClientConn& c);
  void start_handoff(ClientConn& c, BackendState& be);
  void serve_locally(ClientConn& c);
  void on_message(ControlConn& cc, proto::Message& m);
  void on_ready(ControlConn& cc, uint64_t id, uint32_t status);
  void on_repoint(ControlConn& cc, const proto::RepointMsg& m);
  void on_closed(ControlConn& cc, const proto::ClosedMsg& m);
  void on_owned(ControlConn& cc, const proto::OwnedMsg& m);
  void expire_early_closed(uint64_t now);
  // A handoff attempt failed on the BE's side: retry elsewhere once, else 503.
  void attempt_failed(ClientConn& c, bool tell_be);
  void take_back(ClientConn& c);
  // The client socket in the epoll set (added or modified) / out of it, if it was in.
  void watch(ClientConn& c, uint32_t events);
  void unwatch(ClientConn& c);
  void reply_and_close(ClientConn& c, int status, const char* outcome);
  void destroy(ClientConn& c);
  void access(const ClientConn& c, const char* outcome, uint64_t handoff_ns = 0);
  void connect_control(ControlConn& cc);
  void control_down(ControlConn& cc, const std::string& why);
  void set_live(ControlConn& cc, bool live);
  proto::LinkOptions control_options() const;
  void control_changed(ControlConn& cc, unsigned changes, std::vector<proto::Message>& msgs);
  void on_control(ControlConn& cc, uint32_t events);
  void reconcile();
  bool local_expired(ClientConn& c, uint64_t now);
  void tick(uint64_t now);
  void share_lard();  // this FE's LARD assignments to every BE (multi-handoff)
  void epoll_set(int op, int fd, uint32_t events, Item* item);

  Shared& sh_;
  uint32_t index_;
  std::shared_ptr<const Snapshot> snap_;
  uint64_t generation_ = ~0ull;
  UniqueFd ep_;
  UniqueFd wake_;
  Item wake_item_{Item::Wake};
  std::vector<ListenSocket> listeners_;
  Item listener_item_{Item::Listener};
  std::unordered_map<BackendState*, std::unique_ptr<ControlConn>> controls_;
  std::unordered_map<ClientConn*, std::unique_ptr<ClientConn>> clients_;
  std::unordered_map<uint64_t, ClientConn*> pending_;   // handoff id -> client
  struct Committed {
    tcpha_flow_key key;
    BackendState* be;
    uint32_t seq = 0;  // the owner's move number (REPOINT): 0 after our own handoff
    BackendState* backup = nullptr;  // failover: the BE holding its backup (BACKUP sent or due)
    uint64_t orphaned_at = 0;        // its owner's link was lost; waits for TAKEN
    uint32_t orphan_epoch = 0;       // its owner's failover_count then
  };
  using CommittedMap = std::unordered_map<uint64_t, Committed>;
  void mark_closed(const Committed& c);
  CommittedMap committed_;  // handed off, until CLOSED
  // CLOSEDs from a BE that does not own the connection yet: it may have moved there
  // and its REPOINT (from the previous owner, on another link) is still on its way.
  // Applied when that REPOINT arrives, dropped (and counted unauthorized) after a while.
  struct EarlyClosed {
    BackendState* be;
    uint64_t at;
  };
  std::unordered_map<uint64_t, EarlyClosed> early_closed_;
  CommittedMap::iterator release(CommittedMap::iterator it);

  // Failover (failover.cpp, docs/failover.md).
  BackendState* backup_for(const BackendState& primary) const;
  static uint16_t backup_slot(const BackendState* b);
  // A connection's BACKUP is due kBackupDelayNs after its COMMIT (or its move), sent at
  // the first tick after that; a connection that ends sooner (most short ones) is never
  // sent to its backup at all: no frame, no FORGET (docs/failover.md, "BACKUP when due").
  void back_up_later(uint64_t id, BackendState& backup, BackendState& primary,
                     proto::BackupMsg msg, uint64_t now);
  bool cancel_backup(uint64_t id);  // true if its BACKUP was still due (never sent)
  bool send_backup(BackendState& to, const proto::BackupMsg& msg);  // now; false: link down
  // Sends the BACKUPs that are due (`all`: every one). Those whose primary failed over
  // since they were queued go at once, with a TAKEOVER behind them on the same link,
  // except for `failing`'s, whose TAKEOVERs the caller sends.
  void flush_backups(uint64_t now, bool all, const BackendState* failing = nullptr);
  // Sends every copy the datapath has made for backups on this worker's links, in
  // COPIES batches per backup (docs/failover.md, "Copies"); a TAKEOVER sent after it
  // comes after those copies on each link.
  void send_copies();
  Item copies_item_{Item::Copies};
  void forget_later(BackendState& backup, uint64_t id);
  void flush_forgets();
  // After a link to b was lost or went stale: the last one fails b over.
  void maybe_fail_over(ControlConn& cc, uint64_t now);
  void on_taken(ControlConn& cc, const proto::TakenMsg& m);
  // A failed-over back-end whose link is up again: once its backups have had the time
  // to take its connections over, its slot is no longer FAILED and it gets connections.
  void end_failover(BackendState& b, uint64_t now);
  void sweep_orphans(uint64_t now);
  void count_fenced(const Committed& c);
  std::unordered_map<BackendState*, std::vector<uint64_t>> forgets_;  // FORGETs to send
  struct DueBackup {
    BackendState* to;
    BackendState* primary;
    uint32_t epoch;  // primary->failover_count when queued
    uint64_t at;
    proto::BackupMsg msg;
  };
  std::unordered_map<uint64_t, DueBackup> due_backups_;  // by connection id
  std::deque<uint64_t> due_order_;  // ids in the order queued (some cancelled since)
  size_t orphans_ = 0;  // committed_ entries with orphaned_at set
  // Connection ids: (worker << 48) | counter. The counter starts at the time in
  // microseconds (mod 2^48, about 9 years), so that a restarted FE, which learns its
  // predecessor's ids from the BEs (OWNED), never hands a new connection an id in use:
  // no worker makes a handoff per microsecond.
  uint64_t next_id_ = 1;
  std::atomic<bool> stop_accepting_{false};
  std::atomic<size_t> in_progress_{0};
  char read_buf_[16384];  // on_client's reads, appended to the connection's buffer
  uint64_t next_tick_ = 0;
  bool stopping_ = false;
  bool running_ = false;  // run() has started (worker thread only)
  bool accepting_ = false;  // the listeners are in the epoll set (start_accepting)
  uint64_t started_ = 0;
  void start_accepting(uint64_t now);
};

}  // namespace tcpha::fe
