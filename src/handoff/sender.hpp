#pragma once
// The sending side of a handoff, for every role that moves a connection away: the FE
// (first request), a BE (a later request belongs to another BE), and later a backup
// or a CARD node. The target serves the connection as soon as it has imported it,
// under a LEASE, so that the round trip back to the sender is off the client's path;
// the ownership invariant (exactly one kernel owns the connection at every instant)
// is kept by the lease:
//
//   Idle --start--> Sent --on_ready(0)--> Committed
//                     \--on_ready(err)/abort after the lease--> Idle (taken back)
//     1. FORWARD the local datapath sends the client's packets to the target, whose
//                guard drops them (never an RST) until it has imported the socket
//     2. export  the socket goes into repair mode and its state is read; from here
//                our kernel sends nothing on it, and closing it is silent
//     3. HANDOFF state + unanswered bytes + the lease to the target, which imports
//                them, leaves repair mode and serves at once, answering READY
//     4. COMMIT  on READY(0): we let go for good (the caller closes its socket,
//                silently: still in repair mode); the target's lease becomes ownership
//
// The lease is measured on the TARGET's clock from the last heartbeat we heard from it
// (lease_base_ns, its own timestamp, sent before our HANDOFF), so the target's lease
// ends before our clock, started after that heartbeat arrived, reaches lease_ms. The
// target refuses an import it receives after its lease, and kills (silently) a leased
// connection no COMMIT confirmed by the end of its lease. So:
//   - READY with an error: the target holds nothing; take back at once.
//   - no READY (the target is slow, stopped, dead, or the link is lost): take back only
//     once lease_ms has passed since HANDOFF (abort()), when the target has stopped
//     serving it, whatever it did.
//   - READY(0) but COMMIT cannot be sent: as if no READY came (the target's lease runs
//     out, then ours).
// Taking back: out of repair mode, the flow entry removed (the client's packets reach
// our own socket again), the caller's byte buffer as before the export.
//
// A Sender is one move attempt's state, kept in the connection that moves; it owns
// nothing. The caller passes a SenderPort for the attempt's target at each step.
#include <netinet/in.h>

#include <cstdint>
#include <string>

#include "common/result.hpp"
#include "handoff/tcp_state.hpp"
#include "tcpha_shared.h"

namespace tcpha::handoff {

// The lease a HANDOFF gives, in ms: the sender's handoff timeout, plus the age of the
// heartbeat it counts from (heard `beat_heard_ns` ago on the sender's clock, now
// `now_ns`), so that a heartbeat a little late does not shorten the target's window; at
// most twice the timeout. The sender takes the connection back no earlier than this
// long after it sent the HANDOFF.
uint32_t lease_ms(uint32_t timeout_ms, uint64_t beat_heard_ns, uint64_t now_ns);
// The end of a lease on the target's clock: lease_ms after its base, less a margin of
// an eighth of it or two of the target's ticks (which revoke expired leases), the
// larger. 0 when the lease is too short to leave anything.
uint64_t lease_end(uint64_t base_ns, uint32_t lease_ms, uint64_t tick_ns);

// What the moving side provides for one target: its local datapath, its control link
// to that target, and the socket's repair operations (virtual so that unit tests can
// walk every state without a kernel).
class SenderPort {
 public:
  virtual ~SenderPort() = default;
  // Points the flow at the target, creating or replacing its entry. Error{E2BIG}: the
  // table is full.
  virtual Status forward(const tcpha_flow_key& key) = 0;
  // After READY(0): the entry must still be there (the flow GC may have deleted it in
  // the instant it was created, racing a finished connection of the same 4-tuple); put
  // it back if not. Errors are only logged: the connection is the target's either way.
  virtual void confirm_forward(const tcpha_flow_key& key) = 0;
  virtual void release(const tcpha_flow_key& key) = 0;  // remove the flow entry
  // False: not sent (the link is down, or the frame would be too large).
  virtual bool send_handoff(uint64_t id, const TcpState& st, const std::string& bytes) = 0;
  virtual bool send_commit(uint64_t id) = 0;
  virtual void send_abort(uint64_t id) = 0;
  virtual Result<TcpState> export_socket(int fd, const Endpoint& local, const Endpoint& peer,
                                         std::string& bytes) {
    return export_state(fd, local, peer, bytes);
  }
  virtual Status leave_repair(int fd) { return handoff::leave_repair(fd); }
};

// The connection being moved, as the sender needs it.
struct MovingConn {
  int fd = -1;
  Endpoint local{}, peer{};
  tcpha_flow_key key{};
};

class Sender {
 public:
  enum class State : uint8_t {
    Idle,       // ours: served by our own socket (also after a take-back)
    Sent,       // forwarded, exported, HANDOFF sent: waiting for READY (the target may
                // be serving it under its lease)
    Committed,  // the target owns it; the caller closes its socket
  };
  enum class Outcome : uint8_t {
    Ok,
    TableFull,      // step 1: the flow table is full
    ForwardFailed,  // step 1, any other error
    ExportFailed,   // step 2
    LinkDown,       // step 3: HANDOFF not sent (taken back); or step 4: COMMIT not sent
                    // (still Sent: abort() once the lease is over)
    Refused,        // READY with an error status (taken back)
    NotPending,     // on_ready/abort outside Sent: nothing done
  };
  static const char* describe(Outcome o);

  // Steps 1-3, from Idle. `bytes` holds what was read from the socket and not
  // answered; export appends what is still queued, and it all travels in HANDOFF.
  // `bytes` must stay alive and untouched until the attempt ends (a take-back
  // restores it). Ok: Sent. Otherwise Idle again and the connection is the caller's.
  Outcome start(SenderPort& port, const MovingConn& conn, uint64_t id, std::string& bytes);
  // READY from the target (the caller checked that it came from the target's link).
  // Ok: COMMIT sent, Committed. Refused: taken back (Idle). LinkDown: COMMIT could not
  // be sent; still Sent, for abort() at the end of the lease.
  Outcome on_ready(SenderPort& port, uint32_t status);
  // Take the connection back while Sent: ABORT when `tell` (so the target frees what
  // it holds at once), then take back. Only once the lease is over (lease_ms after
  // the HANDOFF was sent), or when the caller knows the target holds nothing (the
  // HANDOFF was never written). NotPending in any other state.
  Outcome abort(SenderPort& port, bool tell);

  State state() const { return state_; }
  uint64_t id() const { return id_; }
  const MovingConn& conn() const { return conn_; }
  const TcpState& exported() const { return st_; }

 private:
  void take_back(SenderPort& port);

  State state_ = State::Idle;
  uint64_t id_ = 0;
  MovingConn conn_{};
  TcpState st_{};
  std::string* bytes_ = nullptr;
  size_t bytes_before_ = 0;
};

}  // namespace tcpha::handoff
