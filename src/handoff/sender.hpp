#pragma once
// The sending side of a handoff, for every role that moves a connection away: the FE
// (first request), a BE (a later request belongs to another BE), and later a backup
// or a CARD node. Seed 002's sequence, with the ownership invariant (exactly one
// kernel owns the connection at every instant) kept at every step:
//
//   Idle --start--> Sent --on_ready(ok)--> Committed
//     1. HOLD    the local datapath drops the client's packets (it retransmits them)
//     2. export  the socket goes into repair mode and its state is read; from here
//                our kernel sends nothing on it, and closing it is silent
//     3. HANDOFF state + unanswered bytes to the target, which imports them in
//                repair mode (silent too) and answers READY
//     4. FORWARD the local datapath sends the client's packets to the target
//     5. COMMIT  the target leaves repair mode: it owns the connection. The caller
//                closes its socket (silently, still in repair mode).
//
// Every failure before COMMIT puts the connection back where it was ("take back"):
// out of repair mode, the flow entry removed (the client's packets reach our own
// socket again), the caller's byte buffer as before the export. The target drops an
// import that never sees COMMIT (ABORT, its deadline, or the link's loss).
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

// What the moving side provides for one target: its local datapath, its control link
// to that target, and the socket's repair operations (virtual so that unit tests can
// walk every state without a kernel).
class SenderPort {
 public:
  virtual ~SenderPort() = default;
  virtual Status hold(const tcpha_flow_key& key) = 0;     // Error{E2BIG}: table full
  virtual Status forward(const tcpha_flow_key& key) = 0;  // point the flow at the target
  virtual void release(const tcpha_flow_key& key) = 0;    // remove the flow entry
  // False: not sent (the link is down, or the frame would be too large).
  virtual bool send_handoff(uint64_t id, const TcpState& st, const std::string& bytes) = 0;
  virtual bool send_commit(uint64_t id) = 0;
  virtual void send_abort(uint64_t id) = 0;
  virtual Result<TcpState> export_socket(int fd, const sockaddr_in& local, const sockaddr_in& peer,
                                         std::string& bytes) {
    return export_state(fd, local, peer, bytes);
  }
  virtual Status leave_repair(int fd) { return handoff::leave_repair(fd); }
};

// The connection being moved, as the sender needs it.
struct MovingConn {
  int fd = -1;
  sockaddr_in local{}, peer{};
  tcpha_flow_key key{};
};

class Sender {
 public:
  enum class State : uint8_t {
    Idle,       // ours: served by our own socket (also after a take-back)
    Sent,       // held, exported, HANDOFF sent: waiting for READY
    Committed,  // the target owns it; the caller closes its socket
  };
  enum class Outcome : uint8_t {
    Ok,
    TableFull,     // step 1: the flow table is full
    HoldFailed,    // step 1, any other error
    ExportFailed,  // step 2
    LinkDown,      // step 3 (HANDOFF not sent) or 5 (COMMIT not sent)
    Refused,       // READY with an error status
    ForwardFailed, // step 4: the flow vanished (a new SYN reused the 4-tuple)
    NotPending,    // on_ready/abort outside Sent: nothing done
  };
  static const char* describe(Outcome o);

  // Steps 1-3, from Idle. `bytes` holds what was read from the socket and not
  // answered; export appends what is still queued, and it all travels in HANDOFF.
  // `bytes` must stay alive and untouched until the attempt ends (a take-back
  // restores it). Ok: Sent. Otherwise Idle again and the connection is the caller's.
  Outcome start(SenderPort& port, const MovingConn& conn, uint64_t id, std::string& bytes);
  // READY from the target (the caller checked that it came from the target's link).
  // Ok: steps 4-5 done, Committed. Otherwise taken back (Idle); ForwardFailed also
  // told the target (ABORT).
  Outcome on_ready(SenderPort& port, uint32_t status);
  // Give up while Sent (timeout, the link's loss, shutdown): ABORT when `tell`, then
  // take back. NotPending in any other state.
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
