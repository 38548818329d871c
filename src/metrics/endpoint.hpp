#pragma once
// The Prometheus scrape endpoint: a tiny HTTP/1.x server on its own thread, off the
// data path. GET (or HEAD) /metrics answers 200 with the rendered document, any other
// path 404; every connection is closed after one answer. All sockets are non-blocking
// and multiplexed with poll(), and a client gets at most kHeadTimeoutMs to send its
// request head, so a slow or silent client cannot hold the scraper off.
#include <netinet/in.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "common/fd.hpp"
#include "common/result.hpp"

namespace tcpha::metrics {

class Endpoint {
 public:
  using Render = std::function<std::string()>;  // called on the endpoint's thread

  static constexpr int kHeadTimeoutMs = 1000;   // to send the request head
  static constexpr int kWriteTimeoutMs = 5000;  // to take the answer
  static constexpr size_t kMaxHead = 8192;      // bytes of request head
  static constexpr size_t kMaxClients = 16;     // connections served at once

  // Listens on "ADDR:PORT" (dotted IPv4; port 0 picks a free port, see port()).
  static Result<std::unique_ptr<Endpoint>> start(const std::string& addr_port, Render render);
  ~Endpoint();  // stops the thread and closes every connection
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  const sockaddr_in& address() const { return bound_; }  // as bound
  uint16_t port() const { return ntohs(bound_.sin_port); }

 private:
  Endpoint(UniqueFd listener, UniqueFd stop, sockaddr_in bound, Render render);
  void run();

  UniqueFd listener_;
  UniqueFd stop_;  // eventfd: written by the destructor
  sockaddr_in bound_{};
  Render render_;
  std::thread thread_;
};

}  // namespace tcpha::metrics
