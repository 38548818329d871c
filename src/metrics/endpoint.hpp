#pragma once
// The Prometheus scrape endpoint: a tiny HTTP/1.x server on its own thread, off the
// data path. GET (or HEAD) /metrics answers 200 with the rendered document, any other
// path 404; every connection is closed after one answer. All sockets are non-blocking
// and multiplexed with poll().
//
// It has no authentication, so who may connect is decided by address: a connection
// from outside the allow list is closed at once, unanswered. Slots cannot be held: a
// client gets kHeadTimeoutMs to send its request head, and when all kMaxClients slots
// are taken a new connection evicts the oldest one still waiting for its head, so
// silent connections delay a real scrape by nothing.
#include <netinet/in.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.hpp"
#include "common/net.hpp"
#include "common/result.hpp"

namespace tcpha::metrics {

class Endpoint {
 public:
  using Render = std::function<std::string()>;  // called on the endpoint's thread

  static constexpr int kHeadTimeoutMs = 1000;   // to send the request head
  static constexpr int kWriteTimeoutMs = 5000;  // to take the answer
  static constexpr size_t kMaxHead = 8192;      // bytes of request head
  static constexpr size_t kMaxClients = 16;     // connections served at once

  // Listens on "ADDR:PORT" (dotted IPv4; port 0 picks a free port, see port()) and
  // serves clients whose address is in `allow`. An empty list means loopback only, and
  // then ADDR must be a loopback address (a listener others can reach, serving none of
  // them, is a configuration mistake worth refusing).
  static Result<std::unique_ptr<Endpoint>> start(const std::string& addr_port, Render render,
                                                 std::vector<Ipv4Prefix> allow = {});
  ~Endpoint();  // stops the thread and closes every connection
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  const sockaddr_in& address() const { return bound_; }  // as bound
  uint16_t port() const { return ntohs(bound_.sin_port); }

 private:
  Endpoint(UniqueFd listener, UniqueFd stop, sockaddr_in bound, Render render,
           std::vector<Ipv4Prefix> allow);
  void run();
  bool allowed(in_addr peer) const;

  UniqueFd listener_;
  UniqueFd stop_;  // eventfd: written by the destructor
  sockaddr_in bound_{};
  Render render_;
  std::vector<Ipv4Prefix> allow_;  // empty: loopback only
  std::thread thread_;
};

}  // namespace tcpha::metrics
