#pragma once
// The back-end's side of dynamic membership: keeps an authenticated registration link
// to the front-end ([frontend] address, [cluster] control_port), announces itself with
// JOIN (again after every reconnect, so a restarted FE learns of it), and says LEAVE
// when the agent starts draining. Its own thread; off the data path.
#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "common/fd.hpp"
#include "config/config.hpp"

namespace tcpha::be {

class Registration {
 public:
  Registration(const config::Config& cfg, const config::BackendSection& self);
  ~Registration();  // closes the link: the FE forgets a dynamic back-end
  Registration(const Registration&) = delete;
  Registration& operator=(const Registration&) = delete;

  void leave();  // thread-safe
  bool linked() const { return linked_.load(); }

 private:
  void run();
  const config::Config& cfg_;
  const config::BackendSection& self_;
  UniqueFd wake_;
  std::atomic<bool> leaving_{false}, stopping_{false}, linked_{false};
  std::thread thread_;
};

}  // namespace tcpha::be
