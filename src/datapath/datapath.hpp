#pragma once
// The front-end's client-facing datapath: the tc program (bpf/datapath.bpf.c) and
// its flow table, as one RAII object. Flows are aged out by FlowGc (flow_gc.hpp); the
// rules are at the top of datapath.bpf.c.
//
// The FE's datapath outlives its process (docs/fe-restart.md): the attached tc filter
// keeps the program and its maps alive after a crash, and the maps are also pinned in
// a bpffs the FE mounts itself. A starting FE adopts that state (AttachOptions::adopt)
// when its layout matches, and a clean stop removes it all.
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <netinet/in.h>

#include "common/net.hpp"
#include "common/result.hpp"
#include "tcpha_shared.h"

struct tcpha_dp;  // the libbpf skeleton, kept out of this header
struct ring_buffer;  // libbpf's ring buffer reader

namespace tcpha::datapath {

using FlowKey = tcpha_flow_key;

// An IPv4 client 4-tuple as the datapath sees it; all arguments in network order.
FlowKey make_key(uint32_t client_addr_be, uint16_t client_port_be, uint32_t vip_be,
                 uint16_t vip_port_be);

// How a datapath is attached (Datapath::attach).
struct AttachOptions {
  uint32_t max_flows = TCPHA_DEFAULT_MAX_FLOWS;
  // Take over the flows, back-end slots and counters of a datapath this FE left behind
  // (crash, kill, upgrade): the one pinned in pin_dir, else the program attached to the
  // interface with our handle and priority. Refused (with the reason in adoption())
  // when its layout differs: sizes, max_flows or TCPHA_STATE_LAYOUT.
  bool adopt = false;
  // Where to pin the maps and the program ("" = nowhere). Its parent is made a bpffs
  // mount if it is not one already (pin_root_mount).
  std::string pin_dir;
};

// What attach() found to adopt.
struct Adoption {
  std::string source;   // "pinned", "attached", or "" (nothing adopted)
  uint64_t flows = 0;   // entries in the adopted flow table
  std::string refused;  // why a datapath that was found was not adopted ("" = none)
};

// The default pin directory of a front-end: /run/tcpha/bpf/<id>-<netns inode>. The
// namespace's inode keeps the FEs of different namespaces apart on one bpffs.
std::string default_pin_dir(const std::string& fe_id);

class Datapath {
 public:
  using Counters = std::array<uint64_t, TCPHA_DP_NR_COUNTERS>;
  struct Found;  // a datapath found to adopt (datapath.cpp)

  // Loads the program with the flow table bounded to max_flows and attaches it to
  // ifname's clsact ingress, creating the clsact qdisc if absent. A filter left by a
  // crashed run (same handle and priority) is replaced. The egress guard's program is
  // attached by set_egress_guard(true) only.
  static Result<std::unique_ptr<Datapath>> attach(const std::string& ifname, uint32_t max_flows);
  // The same with adoption and pinning (the FE).
  static Result<std::unique_ptr<Datapath>> attach(const std::string& ifname,
                                                  const AttachOptions& opts);
  // Loads without attaching (BPF_PROG_RUN tests).
  static Result<std::unique_ptr<Datapath>> load_only(uint32_t max_flows);

  Datapath(const Datapath&) = delete;
  Datapath& operator=(const Datapath&) = delete;
  // Detaches the filters, removes the pins; removes the clsact qdisc only if attach()
  // created it. Nothing of it after release().
  ~Datapath();
  // Leaves the attachment and the pins to a process that adopts them (an upgrade) or
  // to nobody (forwarding goes on until the next FE adopts or removes it).
  void release() { released_ = true; }
  const Adoption& adoption() const { return adoption_; }
  // Entries in the flow table (walks it).
  uint64_t count_flows() const;
  // Every flow, read in batches (a hot standby's replication).
  void for_each_flow(const std::function<void(const FlowKey&, const tcpha_flow_value&)>& f) const;
  // Writes a flow as it is (a hot standby applying the active FE's table).
  Status put(const FlowKey& key, const tcpha_flow_value& v);
  // FORWARD flows whose back-end has not reported the connection closed: the
  // connections a stopping FE still forwards for (walks the table).
  uint64_t count_open_flows() const;

  // Inserts or overwrites the flow as HOLD (client packets dropped), stamped with
  // the current time so that gc() frees holds a crashed handoff left behind.
  // A full table is Error{E2BIG}; existing flows are never evicted.
  Status hold(const FlowKey& key);
  // Creates or replaces the flow as FORWARD to the given back-end: the first step of a
  // handoff (handoff/sender.hpp), after which the client's packets go to the target,
  // whose guard drops them until it has imported the connection. A full table is
  // Error{E2BIG}. backend is the back-end's slot (set_backend); backup is the flow's
  // backup's slot + 1 (0: none), which gets copies of the client's packets that carry
  // data, SYN, FIN or RST, and all of them once backend's slot is FAILED.
  Status point(const FlowKey& key, uint32_t backend, const Mac& be_mac, const Mac& fe_mac,
               uint16_t backup = 0);
  // Turns an existing flow (normally held) into FORWARD to the given back-end, with
  // its backup as point(). Error{ENOENT} when the flow vanished meanwhile (a new SYN
  // on the 4-tuple, or the hold aged out): the handoff must be aborted, not forwarded.
  Status forward(const FlowKey& key, uint32_t backend, const Mac& be_mac, const Mac& fe_mac,
                 uint16_t backup = 0);
  // Removes the flow; a flow that is already gone is fine.
  Status remove(const FlowKey& key);
  // The back-end reported the connection finished: sets F_BE_CLOSED and closing_ns
  // (first report wins). From then on a SYN on the 4-tuple replaces the flow, and
  // FlowGc removes it once the linger has passed. A flow that is gone is fine.
  Status mark_closing(const FlowKey& key, uint64_t now_ns);
  // The same in one map update, for a caller that knows where the flow points: the flow
  // is rewritten whole (its packet and byte counts and FIN/RST flags, which only
  // statistics read, start again; last_seen becomes now_ns) without a backup: a closed
  // connection needs none. A flow that is gone stays gone.
  Status mark_closed(const FlowKey& key, uint32_t backend, const Mac& be_mac, const Mac& fe_mac,
                     uint64_t now_ns);
  // Flow GC deletions (FlowGc): odd while a pass that may delete is under way, bumped
  // at its start and end. A handoff that read the same even value when it created its
  // flow and at COMMIT knows no GC deletion can have hit it, and need not look it up.
  uint64_t gc_epoch() const { return gc_epoch_.load(); }
  void gc_pass_begins() { gc_epoch_.fetch_add(1); }
  void gc_pass_ends() { gc_epoch_.fetch_add(1); }
  // How long a FORWARD flow must be idle before a SYN may replace it (the
  // program's tcpha_linger_ns; TCPHA_DEFAULT_LINGER_NS until set). Takes effect
  // for the next packet.
  void set_linger(uint64_t linger_ns);
  uint64_t linger() const;
  // Back-ends: guards the VIP vip_be (IPv4, network order; 0 = off, the default and
  // the FE's setting). A TCP packet to it with no flow that is not a pure SYN is
  // dropped (the client retransmits) unless a socket can take it: dropped when no
  // socket or only a listener matches its 4-tuple (counter guard_nosock) or the
  // socket is still in TCP_REPAIR (guard_repair). This covers a connection whose
  // flow already points here but whose import has not finished; the kernel would
  // answer an RST or a half-restored socket would take the packet. Rules at the top
  // of datapath.bpf.c. Takes effect for the next packet. Error{EINVAL} only when
  // the loaded program has no writable .data (cannot happen with this skeleton).
  Status set_guard(uint32_t vip_be);
  uint32_t guard() const;  // the guarded VIP, 0 when off
  // The same for the IPv6 VIP (all zero = off), which the guard covers beside the
  // IPv4 one.
  Status set_guard6(const in6_addr& vip6);

  // Tunnel mode (docs/tunnel.md): the outer source address of packets encapsulated
  // toward tunnel back-ends, this host's IPv4 (network order; 0 = none: such packets
  // are dropped, counter tunnel_drop).
  Status set_tunnel_source(uint32_t addr_be);
  // Back-ends: decapsulate IPIP/IPv6-in-IPv4 packets to addr_be (ours; 0 = off) whose
  // outer source is one of `sources` (replacing the previous set) and whose inner
  // destination is the guarded VIP (set_guard / set_guard6).
  Status set_decap(uint32_t addr_be, const std::vector<uint32_t>& sources);

  // Failover: back-end `slot` (the FE's BackendState::uid) is at mac, and failed
  // (its flows' packets go to their backups, or are dropped without one) or not. One
  // map update for all of its flows. Error{EINVAL} for slot >= TCPHA_MAX_BACKENDS.
  // tunnel_be, when not 0, is the back-end's IPv4 (network order) in tunnel mode: its
  // flows' packets are encapsulated toward it, and mac is unused.
  Status set_backend(uint32_t slot, const Mac& mac, bool failed, uint32_t tunnel_be = 0);
  // Back-ends with failover on: the egress program drops FIN/RST segments from the
  // guarded VIP (set_guard) whose socket lacks SO_MARK TCPHA_MARK_DONE (counter
  // egress_guard), so that a killed agent's kernel does not end the connections its
  // backup takes over. Off by default; takes effect for the next packet. On an attached
  // datapath, true attaches tcpha_egress to the interface's clsact egress (replacing a
  // crashed run's), and false before any true removes a crashed run's leftover.
  Status set_egress_guard(bool on);
  bool egress_guard() const;

  std::optional<tcpha_flow_value> lookup(const FlowKey& key) const;
  Counters counters() const;                // summed over CPUs
  static const char* counter_name(int id);  // "rx", "hold_drop", ...; "unknown" when out of range
  static const char* counter_help(int id);

  int prog_fd() const;         // tcpha_ingress
  int egress_prog_fd() const;  // tcpha_egress
  int backends_fd() const;
  int flows_fd() const;
  int copies_fd() const;  // the copies ring buffer (CopyReader)
  uint32_t max_flows() const;  // the flow table's size

 private:
  struct SkelDeleter {
    void operator()(tcpha_dp* s) const;
  };

  Datapath() = default;
  static Result<std::unique_ptr<Datapath>> load(uint32_t max_flows, Found* adopt = nullptr,
                                                Adoption* adoption = nullptr);
  Status attach_to(const std::string& ifname);
  Status pin(const std::string& dir);
  void unpin();
  Status attach_egress();

  std::unique_ptr<tcpha_dp, SkelDeleter> skel_;
  int ifindex_ = 0;  // 0: not attached
  bool created_qdisc_ = false;
  std::atomic<uint64_t> gc_epoch_{0};
  bool attached_ = false;         // ingress filter
  bool egress_attached_ = false;  // egress filter
  bool released_ = false;
  std::string pin_dir_;  // pinned here ("" = not pinned)
  Adoption adoption_;
};

// Reads the copies the datapath made for backups (the "copies" ring buffer, see
// bpf/datapath.bpf.c and docs/failover.md, "Copies"). One reader per datapath, used by
// one thread at a time: the ring has one consumer position.
class CopyReader {
 public:
  static Result<CopyReader> open(const Datapath& dp);
  CopyReader(CopyReader&&) noexcept;
  CopyReader& operator=(CopyReader&&) noexcept;
  ~CopyReader();

  // Readable when the datapath woke the reader: more than TCPHA_COPY_WAKE_BYTES are
  // waiting (the copies themselves wake nobody; drain() on a timer as well).
  int fd() const;
  // Calls on(backup slot, frame, length) for every copy in the ring, oldest first, and
  // frees them; the frame is valid during the call only. Returns the copies read.
  using OnCopy = std::function<void(uint16_t, const uint8_t*, size_t)>;
  size_t drain(const OnCopy& on);

 private:
  CopyReader() = default;
  static int on_record(void* ctx, void* data, size_t size);
  ::ring_buffer* rb_ = nullptr;
};

}  // namespace tcpha::datapath
