#pragma once
// The front-end's client-facing datapath: the tc program (bpf/datapath.bpf.c) and
// its flow table, as one RAII object. The daemon holds the fds; nothing is pinned
// (`ip netns exec` remounts /sys, so /sys/fs/bpf cannot be relied upon).
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/net.hpp"
#include "common/result.hpp"
#include "tcpha_shared.h"

struct tcpha_dp;  // the libbpf skeleton, kept out of this header

namespace tcpha::datapath {

using FlowKey = tcpha_flow_key;

// An IPv4 client 4-tuple as the datapath sees it; all arguments in network order.
FlowKey make_key(uint32_t client_addr_be, uint16_t client_port_be, uint32_t vip_be,
                 uint16_t vip_port_be);

class Datapath {
 public:
  using Counters = std::array<uint64_t, TCPHA_DP_NR_COUNTERS>;
  struct GcStats {
    size_t removed_closed = 0, removed_idle = 0, live = 0;
  };

  // Loads the program with the flow table bounded to max_flows and attaches it to
  // ifname's clsact ingress, creating the clsact qdisc if absent. A filter left
  // by a crashed run (same handle and priority) is replaced.
  static Result<std::unique_ptr<Datapath>> attach(const std::string& ifname, uint32_t max_flows);
  // Loads without attaching (BPF_PROG_RUN tests).
  static Result<std::unique_ptr<Datapath>> load_only(uint32_t max_flows);

  Datapath(const Datapath&) = delete;
  Datapath& operator=(const Datapath&) = delete;
  // Detaches the filter; removes the clsact qdisc only if attach() created it.
  ~Datapath();

  // Inserts or overwrites the flow as HOLD (client packets dropped), stamped with
  // the current time so that gc() frees holds a crashed handoff left behind.
  // A full table is Error{E2BIG}; existing flows are never evicted.
  Status hold(const FlowKey& key);
  // Turns an existing flow (normally held) into FORWARD to the given back-end.
  // Error{ENOENT} when the flow vanished meanwhile (a new SYN on the 4-tuple, or
  // the hold aged out): the handoff must be aborted, not forwarded.
  Status forward(const FlowKey& key, uint32_t backend, const Mac& be_mac, const Mac& fe_mac);
  // Removes the flow; a flow that is already gone is fine.
  Status remove(const FlowKey& key);
  // Sets closing_ns if unset (the back-end reported the connection closed); a
  // flow that is already gone is fine.
  Status mark_closing(const FlowKey& key, uint64_t now_ns);
  // Deletes FORWARD flows closed longer than linger_ns or idle longer than idle_ns,
  // and HOLD flows older than hold_max_ns. Times are CLOCK_MONOTONIC ns, the clock
  // of bpf_ktime_get_ns().
  GcStats gc(uint64_t now_ns, uint64_t linger_ns, uint64_t idle_ns, uint64_t hold_max_ns);

  std::optional<tcpha_flow_value> lookup(const FlowKey& key) const;
  Counters counters() const;                // summed over CPUs
  static const char* counter_name(int id);  // "rx", "hold_drop", ...; "unknown" when out of range
  static const char* counter_help(int id);

  int prog_fd() const;
  int flows_fd() const;

 private:
  struct SkelDeleter {
    void operator()(tcpha_dp* s) const;
  };

  Datapath() = default;
  static Result<std::unique_ptr<Datapath>> load(uint32_t max_flows);
  Status attach_to(const std::string& ifname);

  std::unique_ptr<tcpha_dp, SkelDeleter> skel_;
  int ifindex_ = 0;  // 0: not attached
  bool created_qdisc_ = false;
  bool attached_ = false;
  std::vector<FlowKey> doomed_;  // gc scratch, kept to reuse its capacity
};

// The MAC address of a local interface (SIOCGIFHWADDR).
Result<Mac> interface_mac(const std::string& ifname);
// An IPv4 neighbour's MAC from /proc/net/arp (complete entries only), nullopt if absent.
std::optional<Mac> neighbour_mac(uint32_t addr_be);

}  // namespace tcpha::datapath
