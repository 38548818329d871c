#pragma once
// The daemons' status socket: a unix stream socket; a client writes one command line
// ("status", "drain be1", "undrain be1"), the daemon answers with one JSON document
// and closes. Served from a thread of its own, off the data path.
//
// Access: the socket file is mode 0660 from the moment its name exists (it is bound
// in a private directory and renamed into place), so its owner and group may connect.
// Reading commands ("status", "ping") answer anyone who connects; every other command
// changes the daemon and runs only for a peer whose credentials (SO_PEERCRED) are root
// or the daemon's own user. Members of the socket's group can watch, not steer.
#include <sys/types.h>

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "common/fd.hpp"
#include "common/result.hpp"

namespace tcpha::status {

std::string default_socket_path(const std::string& id);  // /run/tcpha/<id>.sock

class Server {
 public:
  using Handler = std::function<std::string(const std::string& command)>;
  // Binds `path` (creating its directory; replacing a stale socket file) and serves.
  // A socket a live daemon answers on is refused, unless `replace` (an FE upgrade: the
  // new process takes the name over from the old one, which release()s it).
  static Result<std::unique_ptr<Server>> start(const std::string& path, Handler handler,
                                               bool replace = false);
  ~Server();  // stops the thread and unlinks the socket, unless release()d
  // The path names a successor's socket now (an FE upgrade): leave it.
  void release() { path_.clear(); }
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

 private:
  Server(std::string path, UniqueFd fd, Handler h);
  void run();
  std::string path_;
  UniqueFd fd_;
  UniqueFd stop_;  // eventfd
  Handler handler_;
  std::thread thread_;
};

// Whether a peer running as `peer_uid` may run `command` on a daemon running as
// `daemon_uid`: reading commands for anyone, the rest for root and the daemon's user.
bool command_allowed(const std::string& command, uid_t peer_uid, uid_t daemon_uid);

// Sends `command` to the daemon at `path` and returns its answer.
Result<std::string> query(const std::string& path, const std::string& command);

}  // namespace tcpha::status
