#pragma once
// Upgrading the front-end in place (`tcpha fe -c F --takeover`, docs/fe-restart.md):
// the running FE listens on a unix socket beside its status socket; the new process
// connects there and receives the listening sockets (the VIP's, one per worker and
// port, and the registration port's) with SCM_RIGHTS. The kernel keeps the sockets and
// their accept queues across the handover, so no connection is refused. The new
// process adopts the datapath the old one attached (datapath.hpp), starts, and says
// READY; the old one then stops accepting, lets the handoffs it has under way finish,
// leaves the datapath, the VIP and the status socket to its successor and exits 0.
//
// The wire (SOCK_SEQPACKET, one message each):
//   new -> old   "TAKEOVER 1"
//   old -> new   "FDS" then one line per descriptor carried: "listen <port>" or
//                "registration"
//   new -> old   "READY" once it serves; closing instead means it failed, and the old
//                process goes on as before.
// Only root or the daemon's own user may connect (SO_PEERCRED), like the status
// socket's steering commands.
#include <string>
#include <vector>

#include "common/fd.hpp"
#include "common/result.hpp"

namespace tcpha::fe::takeover {

// <status socket>.takeover
std::string socket_path(const std::string& status_socket);

// A descriptor handed over, with what it is ("listen 80", "registration").
struct Handed {
  std::string what;
  UniqueFd fd;
};

// The running FE's side.
class Listener {
 public:
  // Binds path (mode 0600, replacing a stale file or a predecessor's socket).
  static Result<Listener> open(const std::string& path);
  Listener() = default;
  Listener(Listener&&) = default;
  Listener& operator=(Listener&&) = default;
  ~Listener();  // unlinks the path unless release()d
  int fd() const { return fd_.get(); }
  // The path now belongs to a successor: leave it.
  void release() { path_.clear(); }
  // Accepts one successor (nonblocking; an invalid fd when none is waiting, or when the
  // peer may not take over) and reads its request (1 s at most).
  UniqueFd accept_successor();

 private:
  std::string path_;
  UniqueFd fd_;
};

// Sends the descriptors (copies: the kernel duplicates them into the receiver).
Status send(int conn, const std::vector<std::pair<std::string, int>>& fds);
// Waits up to timeout_ms for the successor's word: true for READY, false when it
// closed or said anything else.
bool wait_ready(int conn, int timeout_ms);

// The new FE's side: connects to the running FE and receives its descriptors.
struct Session {
  UniqueFd conn;
  std::vector<Handed> fds;
};
Result<Session> request(const std::string& path);
Status say_ready(int conn);

}  // namespace tcpha::fe::takeover
