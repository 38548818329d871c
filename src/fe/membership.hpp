#pragma once
// Dynamic membership (seed 000 4.10): back-ends register with the front-end over an
// authenticated control link on [frontend] address:control_port. JOIN adds a back-end
// the cluster file does not list (or confirms one it does), LEAVE drains it, and the
// link closing removes a dynamic one. Runs in a thread of its own, off the data path.
//
// Links are bounded like every control link (proto::Link): at most kMaxLinks, a
// handshake deadline, keepalives both ways and an idle limit, so a half-open link (the
// BE's host vanished) frees its slot and a BE notices a restarted FE and joins again.
// A JOIN is tied to the link: its id must be the one the peer authenticated with, and
// the handler checks it against the link's real source address. Only the link that
// holds an id (its latest JOIN) may LEAVE or, by closing, remove it: a late close of a
// BE's old link does not remove the BE that has just joined again on a new one.
#include <netinet/in.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "common/fd.hpp"
#include "common/listen_socket.hpp"
#include "common/result.hpp"
#include "config/config.hpp"
#include "proto/control.hpp"

namespace tcpha::fe {

class Membership {
 public:
  static constexpr size_t kMaxLinks = 1024;  // registrations at once

  struct Handlers {
    // JOIN on a link from `peer`: "" when accepted, else why not (the link is closed).
    std::function<std::string(const proto::JoinMsg&, in_addr peer)> join;
    std::function<void(const std::string& id)> leave;  // drain
    std::function<void(const std::string& id)> gone;   // the link holding id closed
  };
  // given: the registration port's listening socket handed over by the FE process
  // before this one (--takeover); invalid: bind a new one.
  static Result<std::unique_ptr<Membership>> start(const config::Config& cfg, Handlers h,
                                                   UniqueFd given = {});
  int listener_fd() const { return listener_.fd(); }
  ~Membership();
  Membership(const Membership&) = delete;
  Membership& operator=(const Membership&) = delete;

 private:
  Membership(const config::Config& cfg, ListenSocket listener, Handlers h);
  void run();

  std::array<uint8_t, 32> key_{};
  std::string self_id_;
  ListenSocket listener_;
  UniqueFd stop_;
  Handlers h_;
  std::thread thread_;
};

}  // namespace tcpha::fe
