#pragma once
// The daemons' status socket: a unix stream socket; a client writes one command line
// ("status", "drain be1", "undrain be1"), the daemon answers with one JSON document
// and closes. Served from a thread of its own, off the data path.
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
  static Result<std::unique_ptr<Server>> start(const std::string& path, Handler handler);
  ~Server();  // stops the thread and unlinks the socket
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

// Sends `command` to the daemon at `path` and returns its answer.
Result<std::string> query(const std::string& path, const std::string& command);

}  // namespace tcpha::status
