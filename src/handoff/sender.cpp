#include "handoff/sender.hpp"

#include <algorithm>
#include <cerrno>

namespace tcpha::handoff {

uint32_t lease_ms(uint32_t timeout_ms, uint64_t beat_heard_ns, uint64_t now_ns) {
  const uint64_t age_ms = now_ns > beat_heard_ns ? (now_ns - beat_heard_ns + 999'999) / 1'000'000 : 0;
  return uint32_t(std::min<uint64_t>(uint64_t(timeout_ms) + age_ms, 2 * uint64_t(timeout_ms)));
}

uint64_t lease_end(uint64_t base_ns, uint32_t lease_ms, uint64_t tick_ns) {
  const uint64_t lease = uint64_t(lease_ms) * 1'000'000;
  const uint64_t margin = std::max(lease / 8, 2 * tick_ns);
  return lease > margin ? base_ns + lease - margin : 0;
}

const char* Sender::describe(Outcome o) {
  switch (o) {
    case Outcome::Ok: return "ok";
    case Outcome::TableFull: return "flow table full";
    case Outcome::ForwardFailed: return "forwarding entry failed";
    case Outcome::ExportFailed: return "export failed";
    case Outcome::LinkDown: return "control link down";
    case Outcome::Refused: return "refused by the target";
    case Outcome::NotPending: return "no handoff pending";
  }
  return "?";
}

Sender::Outcome Sender::start(SenderPort& port, const MovingConn& conn, uint64_t id,
                              std::string& bytes) {
  if (state_ == State::Sent) return Outcome::NotPending;
  conn_ = conn;
  id_ = id;
  // 1. FORWARD: the client's packets go to the target, whose guard drops them until
  // the import (they are retransmitted); none reaches our socket while it is exported.
  if (auto s = port.forward(conn.key); !s)
    return s.error().err == E2BIG ? Outcome::TableFull : Outcome::ForwardFailed;
  // 2. export (the socket stays in repair mode)
  bytes_ = &bytes;
  bytes_before_ = bytes.size();
  auto st = port.export_socket(conn.fd, conn.local, conn.peer, bytes);
  if (!st) {  // export_state has left repair mode and restored `bytes` itself
    port.release(conn.key);
    bytes_ = nullptr;
    return Outcome::ExportFailed;
  }
  st_ = *st;
  // 3. HANDOFF (with the lease; the port adds it)
  if (!port.send_handoff(id, st_, bytes)) {
    take_back(port);
    return Outcome::LinkDown;
  }
  state_ = State::Sent;
  return Outcome::Ok;
}

Sender::Outcome Sender::on_ready(SenderPort& port, uint32_t status) {
  if (state_ != State::Sent) return Outcome::NotPending;
  if (status != 0) {
    take_back(port);
    return Outcome::Refused;
  }
  // 4. COMMIT. If it cannot be sent, the target serves until its lease ends and then
  // drops the connection silently; it is ours again only after that (abort()).
  if (!port.send_commit(id_)) return Outcome::LinkDown;
  port.confirm_forward(conn_.key);
  state_ = State::Committed;
  bytes_ = nullptr;
  return Outcome::Ok;
}

Sender::Outcome Sender::abort(SenderPort& port, bool tell) {
  if (state_ != State::Sent) return Outcome::NotPending;
  if (tell) port.send_abort(id_);
  take_back(port);
  return Outcome::Ok;
}

void Sender::take_back(SenderPort& port) {
  (void)port.leave_repair(conn_.fd);  // a failure here leaves a silent socket: the
                                      // caller's next I/O on it fails and closes it
  port.release(conn_.key);
  if (bytes_) bytes_->resize(bytes_before_);
  bytes_ = nullptr;
  state_ = State::Idle;
}

}  // namespace tcpha::handoff
