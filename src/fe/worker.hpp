#pragma once
// One front-end worker: an epoll loop on its own SO_REUSEPORT listeners and its own
// control connection to every back-end, so workers share nothing on the data path.
#include <netinet/in.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/fd.hpp"
#include "common/result.hpp"
#include "fe/scheduler.hpp"
#include "fe/shared.hpp"
#include "proto/control.hpp"
#include "tcpha_shared.h"

namespace tcpha::fe {

class Worker {
 public:
  Worker(Shared& shared, uint32_t index);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Binds the listeners; must succeed before run().
  Status open_listeners();
  void run();   // until stop()
  void stop();  // thread-safe

 private:
  struct Item {
    enum Kind { Listener, Client, Control, Wake } kind;
    explicit Item(Kind k) : kind(k) {}
  };
  struct ClientConn;
  struct ControlConn;

  void on_accept(int lfd);
  void on_client(ClientConn& c, uint32_t events);
  void on_control(ControlConn& cc, uint32_t events);
  void start_handoff(ClientConn& c, uint32_t be);
  void on_message(ControlConn& cc, proto::Message& m);
  void on_ready(ControlConn& cc, uint64_t id, uint32_t status);
  void abort_handoff(ClientConn& c, bool tell_be);
  void reply_and_close(ClientConn& c, int status);
  void destroy(ClientConn& c);
  void connect_control(ControlConn& cc);
  void control_down(ControlConn& cc, const std::string& why);
  void flush(ControlConn& cc);
  void tick(uint64_t now);
  void epoll_set(int op, int fd, uint32_t events, Item* item);

  Shared& sh_;
  uint32_t index_;
  Scheduler sched_;
  UniqueFd ep_;
  UniqueFd wake_;
  Item wake_item_{Item::Wake};
  std::vector<UniqueFd> listeners_;
  Item listener_item_{Item::Listener};
  std::vector<std::unique_ptr<ControlConn>> controls_;  // by back-end index
  std::unordered_map<ClientConn*, std::unique_ptr<ClientConn>> clients_;
  std::unordered_map<uint64_t, ClientConn*> pending_;   // handoff id -> client
  struct Committed {
    tcpha_flow_key key;
    uint32_t be;
  };
  std::unordered_map<uint64_t, Committed> committed_;   // handed off, until CLOSED
  uint64_t next_id_ = 1;
  uint64_t next_tick_ = 0;
};

}  // namespace tcpha::fe
