#pragma once
// Dynamic membership (seed 000 4.10): back-ends register with the front-end over an
// authenticated control link on [frontend] address:control_port. JOIN adds a back-end
// the cluster file does not list (or confirms one it does), LEAVE drains it, and the
// link closing removes a dynamic one. Runs in a thread of its own, off the data path.
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "common/fd.hpp"
#include "common/result.hpp"
#include "config/config.hpp"
#include "proto/control.hpp"

namespace tcpha::fe {

class Membership {
 public:
  struct Handlers {
    std::function<void(const proto::JoinMsg&)> join;
    std::function<void(const std::string& id)> leave;  // drain
    std::function<void(const std::string& id)> gone;   // link closed
  };
  static Result<std::unique_ptr<Membership>> start(const config::Config& cfg, Handlers h);
  ~Membership();
  Membership(const Membership&) = delete;
  Membership& operator=(const Membership&) = delete;

 private:
  Membership(const config::Config& cfg, UniqueFd listener, Handlers h);
  void run();

  std::array<uint8_t, 32> key_{};
  std::string self_id_;
  UniqueFd listener_, stop_;
  Handlers h_;
  std::thread thread_;
};

}  // namespace tcpha::fe
