#pragma once
// Hot standby front-ends (docs/fe-restart.md, "Hot standby"). Every front-end of the
// file ([frontend] and each [[standby]]) runs one Standby: authenticated links to the
// others (the lower index dials; port control_port + 1 on each FE's address), over
// which each says every 100 ms whether it is active (FESTATE), and the active one
// streams its flow table's changes (FLOWS: a full copy to a new link, then a diff of
// the table every 50 ms). A standby writes them into its own datapath, with its own
// MAC as the source, so that the table is there when it takes over.
//
// Roles, without preemption: a starting FE waits (1 s, plus 300 ms per place in the
// file) for an active one's advert; with none it becomes active. A standby becomes
// active when no active FE has been heard for kDownNs (its adverts stop: host or link
// failure, a crash or a stop). An FE that returns hears the active one and stays a
// standby; it never takes the VIP back.
#include <netinet/in.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/fd.hpp"
#include "common/histogram.hpp"
#include "common/listen_socket.hpp"
#include "common/net.hpp"
#include "common/result.hpp"
#include "config/config.hpp"
#include "datapath/datapath.hpp"
#include "proto/link.hpp"

namespace tcpha::fe {

class Standby {
 public:
  static constexpr uint64_t kAdvertNs = 100'000'000;   // FESTATE this often
  static constexpr uint64_t kDownNs = 350'000'000;     // no active advert this long: take over
  static constexpr uint64_t kSyncNs = 50'000'000;      // the active's table diff this often
  static constexpr uint64_t kColdWaitNs = 1'000'000'000;  // at start, before claiming
  static constexpr uint64_t kPerPlaceNs = 300'000'000;    // ... plus this per place in the file
  static constexpr uint16_t kPortOffset = 1;              // control_port + 1

  // The links and the thread; self_mac: the source MAC for replicated flows.
  static Result<std::unique_ptr<Standby>> start(const config::Config& cfg, datapath::Datapath& dp,
                                                const Mac& self_mac);
  ~Standby();
  Standby(const Standby&) = delete;
  Standby& operator=(const Standby&) = delete;

  // Readable once this FE must become active (the caller then serves and calls
  // activated()).
  int promote_fd() const { return promote_.get(); }
  // This FE serves now: it advertises itself active and replicates its table.
  void activated();
  bool active() const { return active_.load(); }
  nlohmann::json status() const;

  // How long a standby waits before it claims the active role, counted from its start
  // (cold: no active front-end heard yet) or from the last advert of the active one;
  // earlier_alive: the places in the file of the live standbys before it.
  static uint64_t claim_after(bool cold, size_t self, const std::vector<size_t>& earlier_alive);

 private:
  struct Peer {
    size_t index;  // in cfg.fe_members
    std::unique_ptr<proto::Link> link;
    bool dialer = false;
    bool up = false;
    bool active = false;     // its last FESTATE
    uint64_t epoch = 0;
    uint64_t heard_at = 0;   // its last FESTATE
    bool full_sent = false;  // the active's full copy went out on this link
  };
  struct Shadow {  // what the standbys were told of one flow
    uint8_t state, flags;
    uint16_t backup;
    uint32_t backend;
    std::array<uint8_t, 6> dmac;
    bool operator==(const Shadow&) const = default;
  };
  struct KeyHash {
    size_t operator()(const std::array<uint8_t, 40>& k) const;
  };

  Standby(const config::Config& cfg, datapath::Datapath& dp, const Mac& mac, ListenSocket l);
  void run();
  void on_accept(uint64_t now);
  void on_link(Peer& p, unsigned changes, std::vector<proto::Message>& msgs, uint64_t now);
  void decide(uint64_t now);
  void replicate(uint64_t now);
  void apply(const proto::FlowsMsg& m, uint64_t now);
  proto::LinkOptions link_options() const;

  const config::Config& cfg_;
  datapath::Datapath& dp_;
  Mac mac_;
  size_t self_;
  ListenSocket listener_;
  UniqueFd stop_, promote_;
  std::vector<Peer> peers_;           // dialed ones first, then accepted ones
  std::atomic<bool> active_{false};
  std::atomic<bool> promoted_{false};  // promote_fd signalled
  uint64_t epoch_ = 0;
  uint64_t started_ = 0, active_heard_ = 0, next_advert_ = 0, next_sync_ = 0;
  std::unordered_map<std::array<uint8_t, 40>, Shadow, KeyHash> shadow_;  // active side
  // Status (read by the status thread).
  mutable std::mutex mu_;
  uint64_t replicated_ = 0;       // entries applied (standby) or sent (active)
  uint64_t sync_cpu_ns_ = 0;      // the active's replication thread CPU
  uint64_t synced_changes_ = 0;   // ... for this many flow changes
  std::string active_peer_;       // the active FE's id, as a standby
  LatencyHistogram transit_;      // FLOWS sent -> applied (wall clocks: same-host beds)
  std::thread thread_;
};

}  // namespace tcpha::fe
