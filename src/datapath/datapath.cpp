#include "datapath/datapath.hpp"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <net/if.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstring>
#include <string_view>
#include <vector>

#include "common/clock.hpp"
#include "common/fd.hpp"
#include "tcpha_dp.skel.h"

namespace tcpha::datapath {
namespace {

// Fixed, so that a restart replaces (BPF_TC_F_REPLACE) the filter a crashed run
// left behind instead of running behind it.
constexpr uint32_t kTcHandle = 0x7c9a;
constexpr uint32_t kTcPriority = 1;

bpf_tc_hook make_hook(int ifindex, int attach_point) {
  bpf_tc_hook h{};
  h.sz = sizeof h;
  h.ifindex = ifindex;
  h.attach_point = static_cast<bpf_tc_attach_point>(attach_point);
  return h;
}

bpf_tc_opts make_opts() {
  bpf_tc_opts o{};
  o.sz = sizeof o;
  o.handle = kTcHandle;
  o.priority = kTcPriority;
  return o;
}

std::string key_str(const FlowKey& k) {
  const int af = k.family == AF_INET6 ? AF_INET6 : AF_INET;
  char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
  inet_ntop(af, k.saddr, s, sizeof s);
  inet_ntop(af, k.daddr, d, sizeof d);
  return std::string(s) + ":" + std::to_string(ntohs(k.sport)) + "->" + d + ":" +
         std::to_string(ntohs(k.dport));
}

// A FORWARD flow to the back-end at be_mac, last seen (idle aging starts) at now_ns.
tcpha_flow_value forward_value(uint32_t backend, const Mac& be_mac, const Mac& fe_mac,
                               uint64_t now_ns, uint16_t backup) {
  tcpha_flow_value v{};
  v.state = TCPHA_FLOW_FORWARD;
  v.backup = backup;
  v.backend = backend;
  std::memcpy(v.dmac, be_mac.data(), sizeof v.dmac);
  std::memcpy(v.smac, fe_mac.data(), sizeof v.smac);
  v.last_seen_ns = now_ns;
  // The datapath's clock is the same (bpf_ktime_get_ns); 0 means unknown (old).
  v.born_ms = std::max<uint32_t>(1, uint32_t(now_ns / 1'000'000));
  return v;
}

constexpr uint32_t kBpfFsMagic = 0xcafe4a11;  // BPF_FS_MAGIC (linux/magic.h)
constexpr const char* kPinRoot = "/run/tcpha/bpf";
// What is pinned, by file name: the program (which names its maps, so one pin finds
// them all) and the maps an operator may want to read with bpftool.
constexpr const char* kPinProg = "ingress";
constexpr const char* kPinMaps[] = {"flows", "backends", "counters"};

bool is_bpffs(const std::string& path) {
  struct statfs st{};
  return statfs(path.c_str(), &st) == 0 && uint32_t(st.f_type) == kBpfFsMagic;
}

std::string parent_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos || slash == 0 ? "/" : path.substr(0, slash);
}

// No pins left: a bpffs shows files of its own (maps.debug, progs.debug with
// CONFIG_BPF_PRELOAD), which have a dot, a name no pin may have.
bool no_pins(const std::string& path) {
  DIR* d = opendir(path.c_str());
  if (!d) return false;
  bool empty = true;
  while (dirent* e = readdir(d))
    if (!std::strchr(e->d_name, '.')) empty = false;
  closedir(d);
  return empty;
}

}  // namespace

std::string default_pin_dir(const std::string& fe_id) {
  struct stat st{};
  const uint64_t ino = stat("/proc/self/ns/net", &st) == 0 ? uint64_t(st.st_ino) : 0;
  // bpffs refuses names with a dot (reserved for its own files): ids may hold one.
  std::string name = fe_id + "-" + std::to_string(ino);
  for (char& c : name)
    if (c == '.') c = '_';
  return std::string(kPinRoot) + "/" + name;
}

// A datapath found to adopt: its maps, by the names the program gives them.
struct Datapath::Found {
  std::string source;  // "pinned" or "attached"
  UniqueFd flows, backends, counters, rodata;
};

namespace {

// The maps a loaded program uses, found by name (a program holds its maps alive).
void maps_of(int prog_fd, Datapath::Found& f) {
  std::array<uint32_t, 16> ids{};
  bpf_prog_info info{};
  info.nr_map_ids = uint32_t(ids.size());
  info.map_ids = reinterpret_cast<uint64_t>(ids.data());
  uint32_t len = sizeof info;
  if (bpf_obj_get_info_by_fd(prog_fd, &info, &len) < 0) return;
  for (uint32_t i = 0; i < std::min<uint32_t>(info.nr_map_ids, uint32_t(ids.size())); ++i) {
    UniqueFd m(bpf_map_get_fd_by_id(ids[i]));
    if (!m.valid()) continue;
    bpf_map_info mi{};
    uint32_t ml = sizeof mi;
    if (bpf_obj_get_info_by_fd(m.get(), &mi, &ml) < 0) continue;
    const std::string_view name(mi.name);
    if (name == "flows")
      f.flows = std::move(m);
    else if (name == "backends")
      f.backends = std::move(m);
    else if (name == "counters")
      f.counters = std::move(m);
    else if (name.ends_with(".rodata"))
      f.rodata = std::move(m);
  }
}

bool is_our_program(int prog_fd) {
  bpf_prog_info info{};
  uint32_t len = sizeof info;
  return bpf_obj_get_info_by_fd(prog_fd, &info, &len) == 0 &&
         std::string_view(info.name) == "tcpha_ingress";
}

std::optional<Datapath::Found> find_pinned(const std::string& dir) {
  if (dir.empty()) return std::nullopt;
  UniqueFd prog(bpf_obj_get((dir + "/" + kPinProg).c_str()));
  if (!prog.valid() || !is_our_program(prog.get())) return std::nullopt;
  Datapath::Found f;
  f.source = "pinned";
  maps_of(prog.get(), f);
  return f;
}

std::optional<Datapath::Found> find_attached(int ifindex) {
  bpf_tc_hook hook = make_hook(ifindex, BPF_TC_INGRESS);
  bpf_tc_opts opts = make_opts();
  if (bpf_tc_query(&hook, &opts) < 0 || opts.prog_id == 0) return std::nullopt;
  UniqueFd prog(bpf_prog_get_fd_by_id(opts.prog_id));
  if (!prog.valid() || !is_our_program(prog.get())) return std::nullopt;
  Datapath::Found f;
  f.source = "attached";
  maps_of(prog.get(), f);
  return f;
}

// Why the map behind fd cannot stand in for the skeleton's map, or "".
std::string map_mismatch(const bpf_map* want, int fd, const char* what) {
  if (fd < 0) return std::string(what) + " map missing";
  bpf_map_info mi{};
  uint32_t ml = sizeof mi;
  if (bpf_obj_get_info_by_fd(fd, &mi, &ml) < 0) return std::string(what) + ": " + std::strerror(errno);
  if (mi.type != uint32_t(bpf_map__type(want)) || mi.key_size != bpf_map__key_size(want) ||
      mi.value_size != bpf_map__value_size(want) || mi.map_flags != bpf_map__map_flags(want))
    return std::string(what) + " map has another layout";
  if (mi.max_entries != bpf_map__max_entries(want))
    return std::string(what) + " map holds " + std::to_string(mi.max_entries) +
           " entries, the configuration " + std::to_string(bpf_map__max_entries(want)) +
           " ([frontend] max_flows)";
  return "";
}

}  // namespace

FlowKey make_key(uint32_t client_addr_be, uint16_t client_port_be, uint32_t vip_be,
                 uint16_t vip_port_be) {
  FlowKey k;
  std::memset(&k, 0, sizeof k);  // hashed byte by byte: padding must be zero
  k.saddr[0] = client_addr_be;
  k.daddr[0] = vip_be;
  k.sport = client_port_be;
  k.dport = vip_port_be;
  k.family = AF_INET;
  return k;
}

void Datapath::SkelDeleter::operator()(tcpha_dp* s) const { tcpha_dp__destroy(s); }

Result<std::unique_ptr<Datapath>> Datapath::load(uint32_t max_flows, Found* adopt,
                                                  Adoption* adoption) {
  if (max_flows == 0) return Error{EINVAL, "datapath: max_flows must be positive"};
  std::unique_ptr<Datapath> dp(new Datapath());
  dp->skel_.reset(tcpha_dp__open());
  if (!dp->skel_) return sys_error("open BPF datapath object");
  auto& maps = dp->skel_->maps;
  if (int rc = bpf_map__set_max_entries(maps.flows, max_flows); rc < 0)
    return Error{-rc, "set flow table size"};
  // One copy buffer per CPU (bpf/datapath.bpf.c, copy_bufs).
  if (int cpus = libbpf_num_possible_cpus(); cpus <= 0)
    return Error{cpus < 0 ? -cpus : EINVAL, "count the possible CPUs"};
  else if (int rc = bpf_map__set_max_entries(maps.copy_bufs, uint32_t(cpus)); rc < 0)
    return Error{-rc, "size the copy buffers"};
  bool adopted = false;
  if (adopt && adoption) {
    // Same sizes and the same TCPHA_STATE_LAYOUT (all of .rodata, which holds it alone).
    std::string why = map_mismatch(maps.flows, adopt->flows.get(), "flows");
    if (why.empty()) why = map_mismatch(maps.backends, adopt->backends.get(), "backends");
    if (why.empty()) why = map_mismatch(maps.counters, adopt->counters.get(), "counters");
    if (why.empty()) {
      size_t size = 0;
      const void* ours = bpf_map__initial_value(maps.rodata, &size);
      std::vector<uint8_t> theirs(size);
      const uint32_t zero = 0;
      if (map_mismatch(maps.rodata, adopt->rodata.get(), ".rodata") != "" || !ours ||
          bpf_map_lookup_elem(adopt->rodata.get(), &zero, theirs.data()) < 0 ||
          std::memcmp(ours, theirs.data(), size) != 0)
        why = "state layout differs (TCPHA_STATE_LAYOUT)";
    }
    if (why.empty()) {
      for (auto [map, fd] : {std::pair{maps.flows, adopt->flows.get()},
                             std::pair{maps.backends, adopt->backends.get()},
                             std::pair{maps.counters, adopt->counters.get()}})
        if (int rc = bpf_map__reuse_fd(map, fd); rc < 0) {
          why = std::string("reuse map: ") + std::strerror(-rc);
          break;
        }
    }
    if (why.empty()) {
      adopted = true;
      adoption->source = adopt->source;
    } else {
      adoption->refused = adopt->source + " datapath not adopted: " + why;
    }
  }
  // libbpf prints the verifier log on failure.
  if (int rc = tcpha_dp__load(dp->skel_.get()); rc < 0) return Error{-rc, "load BPF datapath"};
  if (adopted) adoption->flows = dp->count_flows();
  return dp;
}

Result<std::unique_ptr<Datapath>> Datapath::load_only(uint32_t max_flows) {
  return load(max_flows);
}

uint64_t Datapath::count_flows() const {
  uint64_t n = 0;
  for_each_flow([&](const FlowKey&, const tcpha_flow_value&) { ++n; });
  return n;
}

void Datapath::for_each_flow(
    const std::function<void(const FlowKey&, const tcpha_flow_value&)>& f) const {
  uint32_t batch = 4096;
  std::vector<FlowKey> keys;
  std::vector<tcpha_flow_value> values;
  FlowKey cursor{};
  bool started = false;
  for (;;) {
    keys.resize(batch);
    values.resize(batch);
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    FlowKey next{};  // the token is a u32 for hash maps; a key's size is ample
    __u32 count = batch;
    int rc = bpf_map_lookup_batch(flows_fd(), started ? &cursor : nullptr, &next, keys.data(),
                                  values.data(), &count, &opts);
    if (rc < 0 && rc != -ENOENT) {
      if (rc == -ENOSPC && batch < (1u << 20)) {
        batch *= 2;
        continue;
      }
      spdlog::warn("datapath: reading the flow table: {}", std::strerror(-rc));
      return;
    }
    for (__u32 i = 0; i < count; ++i) f(keys[i], values[i]);
    if (rc == -ENOENT) return;
    cursor = next;
    started = true;
  }
}

Status Datapath::put(const FlowKey& key, const tcpha_flow_value& v) {
  int rc = bpf_map_update_elem(flows_fd(), &key, &v, BPF_ANY);
  if (rc == -E2BIG) return Error{E2BIG, "put " + key_str(key) + ": flow table full"};
  if (rc < 0) return Error{-rc, "put " + key_str(key)};
  return {};
}

uint64_t Datapath::count_open_flows() const {
  uint64_t n = 0;
  for_each_flow([&](const FlowKey&, const tcpha_flow_value& v) {
    if (v.state == TCPHA_FLOW_FORWARD && !(v.flags & TCPHA_FLOW_F_BE_CLOSED)) ++n;
  });
  return n;
}

Result<std::unique_ptr<Datapath>> Datapath::attach(const std::string& ifname,
                                                   const AttachOptions& opts) {
  const int ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  if (ifindex == 0) return sys_error("interface " + ifname);
  std::optional<Found> found;
  if (opts.adopt) {
    found = find_pinned(opts.pin_dir);
    if (!found) found = find_attached(ifindex);
  }
  Adoption adoption;
  auto dp = load(opts.max_flows, found ? &*found : nullptr, &adoption);
  if (!dp) return dp;
  (*dp)->adoption_ = adoption;
  // The new program replaces the old one in one step (same handle and priority): every
  // packet sees one of the two, both with the same maps.
  if (Status st = (*dp)->attach_to(ifname); !st) return st.error();
  if (!opts.pin_dir.empty())
    if (Status st = (*dp)->pin(opts.pin_dir); !st)
      spdlog::info("datapath: not pinned ({}); a restart adopts the attached program instead",
                   st.error().message());
  return dp;
}

// Pins under dir, making its parent a bpffs if it is not one. Under `ip netns exec`
// that mount lives in the command's private mount namespace and goes with the process;
// the attached program still carries the state to the next FE (find_attached).
Status Datapath::pin(const std::string& dir) {
  const std::string root = parent_of(dir);
  if (!is_bpffs(root)) {
    if (int rc = mkdir(parent_of(root).c_str(), 0755); rc < 0 && errno != EEXIST)
      return sys_error("mkdir " + parent_of(root));
    if (int rc = mkdir(root.c_str(), 0700); rc < 0 && errno != EEXIST)
      return sys_error("mkdir " + root);
    if (mount("bpf", root.c_str(), "bpf", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700") < 0)
      return sys_error("mount bpffs on " + root);
  }
  if (mkdir(dir.c_str(), 0700) < 0 && errno != EEXIST) return sys_error("mkdir " + dir);
  pin_dir_ = dir;  // from here on unpin() cleans up whatever was pinned
  auto pin_one = [&](int fd, const char* name) -> Status {
    const std::string path = dir + "/" + name;
    unlink(path.c_str());  // a predecessor's pin: ours replaces it
    if (bpf_obj_pin(fd, path.c_str()) < 0) return sys_error("pin " + path);
    return {};
  };
  if (Status st = pin_one(prog_fd(), kPinProg); !st) return st;
  const int fds[] = {flows_fd(), backends_fd(), bpf_map__fd(skel_->maps.counters)};
  for (size_t i = 0; i < std::size(kPinMaps); ++i)
    if (Status st = pin_one(fds[i], kPinMaps[i]); !st) return st;
  return {};
}

void Datapath::unpin() {
  if (pin_dir_.empty()) return;
  unlink((pin_dir_ + "/" + kPinProg).c_str());
  for (const char* m : kPinMaps) unlink((pin_dir_ + "/" + m).c_str());
  rmdir(pin_dir_.c_str());
  // The bpffs itself goes when no other FE pins there (ours or a leftover mount).
  const std::string root = parent_of(pin_dir_);
  if (is_bpffs(root) && no_pins(root) && umount2(root.c_str(), MNT_DETACH) == 0)
    rmdir(root.c_str());
  pin_dir_.clear();
}

Result<std::unique_ptr<Datapath>> Datapath::attach(const std::string& ifname, uint32_t max_flows) {
  auto dp = load(max_flows);
  if (!dp) return dp;
  // On failure, the destructor undoes whatever part of the attachment was done.
  if (Status st = (*dp)->attach_to(ifname); !st) return st.error();
  return dp;
}

Status Datapath::attach_to(const std::string& ifname) {
  const int ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  if (ifindex == 0) return sys_error("interface " + ifname);
  ifindex_ = ifindex;
  bpf_tc_hook hook = make_hook(ifindex_, BPF_TC_INGRESS);
  int rc = bpf_tc_hook_create(&hook);
  if (rc == 0)
    created_qdisc_ = true;
  else if (rc != -EEXIST)
    return Error{-rc, "create clsact qdisc on " + ifname};
  bpf_tc_opts opts = make_opts();
  opts.prog_fd = prog_fd();
  opts.flags = BPF_TC_F_REPLACE;
  if (rc = bpf_tc_attach(&hook, &opts); rc < 0)
    return Error{-rc, "attach tc ingress filter on " + ifname};
  attached_ = true;
  return {};
}

// The egress program runs on every packet the interface sends, forwarded ones included:
// it is attached only where the guard is wanted (set_egress_guard), not on the FE. Same
// handle and priority as ingress, so a crashed run's filter is replaced, not stacked.
Status Datapath::attach_egress() {
  bpf_tc_hook egress = make_hook(ifindex_, BPF_TC_EGRESS);
  bpf_tc_opts eopts = make_opts();
  eopts.prog_fd = egress_prog_fd();
  eopts.flags = BPF_TC_F_REPLACE;
  if (int rc = bpf_tc_attach(&egress, &eopts); rc < 0)
    return Error{-rc, "attach tc egress filter on ifindex " + std::to_string(ifindex_)};
  egress_attached_ = true;
  return {};
}

Datapath::~Datapath() {
  if (released_) return;  // the attachment and the pins carry on (release())
  unpin();
  // The interface may be gone already (its namespace deleted): nothing left to undo.
  auto gone = [](int rc) { return rc == 0 || rc == -ENODEV || rc == -ENOENT; };
  auto detach = [&](int attach_point, const char* what) {
    bpf_tc_hook hook = make_hook(ifindex_, attach_point);
    bpf_tc_opts opts = make_opts();
    if (int rc = bpf_tc_detach(&hook, &opts); !gone(rc))
      spdlog::warn("datapath: detach tc {} filter from ifindex {}: {}", what, ifindex_,
                   std::strerror(-rc));
  };
  if (egress_attached_) detach(BPF_TC_EGRESS, "egress");
  if (attached_) detach(BPF_TC_INGRESS, "ingress");
  if (created_qdisc_) {
    // Ingress|egress is libbpf's way of saying "the clsact qdisc itself".
    bpf_tc_hook hook = make_hook(ifindex_, BPF_TC_INGRESS | BPF_TC_EGRESS);
    if (int rc = bpf_tc_hook_destroy(&hook); !gone(rc))
      spdlog::warn("datapath: remove clsact qdisc from ifindex {}: {}", ifindex_,
                   std::strerror(-rc));
  }
}

Status Datapath::hold(const FlowKey& key) {
  tcpha_flow_value v{};
  v.state = TCPHA_FLOW_HOLD;
  v.last_seen_ns = monotonic_ns();  // hold time, for gc's hold_max
  int rc = bpf_map_update_elem(flows_fd(), &key, &v, BPF_ANY);
  if (rc == -E2BIG) return Error{E2BIG, "hold " + key_str(key) + ": flow table full"};
  if (rc < 0) return Error{-rc, "hold " + key_str(key)};
  return {};
}

Status Datapath::point(const FlowKey& key, uint32_t backend, const Mac& be_mac, const Mac& fe_mac,
                       uint16_t backup) {
  const tcpha_flow_value v = forward_value(backend, be_mac, fe_mac, monotonic_ns(), backup);
  int rc = bpf_map_update_elem(flows_fd(), &key, &v, BPF_ANY);
  if (rc == -E2BIG) return Error{E2BIG, "forward " + key_str(key) + ": flow table full"};
  if (rc < 0) return Error{-rc, "forward " + key_str(key)};
  return {};
}

Status Datapath::forward(const FlowKey& key, uint32_t backend, const Mac& be_mac, const Mac& fe_mac,
                         uint16_t backup) {
  const tcpha_flow_value v = forward_value(backend, be_mac, fe_mac, monotonic_ns(), backup);
  // BPF_EXIST: if the held flow vanished, its 4-tuple may belong to a new
  // connection now, which must not be sent to this back-end.
  if (int rc = bpf_map_update_elem(flows_fd(), &key, &v, BPF_EXIST); rc < 0)
    return Error{-rc, "forward " + key_str(key)};
  return {};
}

Status Datapath::remove(const FlowKey& key) {
  if (int rc = bpf_map_delete_elem(flows_fd(), &key); rc < 0 && rc != -ENOENT)
    return Error{-rc, "remove " + key_str(key)};
  return {};
}

Status Datapath::mark_closed(const FlowKey& key, uint32_t backend, const Mac& be_mac,
                             const Mac& fe_mac, uint64_t now_ns) {
  tcpha_flow_value v = forward_value(backend, be_mac, fe_mac, now_ns, 0);
  v.flags = TCPHA_FLOW_F_BE_CLOSED;
  v.closing_ns = now_ns;
  if (int rc = bpf_map_update_elem(flows_fd(), &key, &v, BPF_EXIST); rc < 0 && rc != -ENOENT)
    return Error{-rc, "mark closed " + key_str(key)};
  return {};
}

Status Datapath::mark_closing(const FlowKey& key, uint64_t now_ns) {
  auto v = lookup(key);
  if (!v || (v->flags & TCPHA_FLOW_F_BE_CLOSED)) return {};
  v->flags |= TCPHA_FLOW_F_BE_CLOSED;
  v->closing_ns = now_ns;
  // Read-modify-write: counters the datapath adds in between are lost, which
  // only affects statistics of a closing flow. The update replaces the element,
  // so a concurrent write by the program cannot undo the flag.
  if (int rc = bpf_map_update_elem(flows_fd(), &key, &*v, BPF_EXIST); rc < 0 && rc != -ENOENT)
    return Error{-rc, "mark closing " + key_str(key)};
  return {};
}

// The program reads the knob through a volatile load per packet; a relaxed atomic
// store on the shared mapping is all the ordering it needs.
void Datapath::set_linger(uint64_t linger_ns) {
  std::atomic_ref knob(skel_->data->tcpha_linger_ns);
  knob.store(linger_ns, std::memory_order_relaxed);
}

uint64_t Datapath::linger() const {
  std::atomic_ref knob(skel_->data->tcpha_linger_ns);
  return knob.load(std::memory_order_relaxed);
}

// Same as the linger: a relaxed store on the mapped .data, read per packet.
Status Datapath::set_guard(uint32_t vip_be) {
  if (!skel_->data) return Error{EINVAL, "datapath: .data not mapped, cannot set the guard"};
  std::atomic_ref knob(skel_->data->tcpha_guard_vip);
  knob.store(vip_be, std::memory_order_relaxed);
  return {};
}

uint32_t Datapath::guard() const {
  if (!skel_->data) return 0;
  std::atomic_ref knob(skel_->data->tcpha_guard_vip);
  return knob.load(std::memory_order_relaxed);
}

Status Datapath::set_guard6(const in6_addr& vip6) {
  if (!skel_->data) return Error{EINVAL, "datapath: .data not mapped, cannot set the guard"};
  // Four relaxed word stores: a packet that races a change (start-up only) sees a
  // mixed address, matches nothing, and is treated as before the change.
  uint32_t w[4];
  std::memcpy(w, &vip6, sizeof w);
  for (size_t i = 0; i < 4; ++i)
    std::atomic_ref(skel_->data->tcpha_guard_vip6[i]).store(w[i], std::memory_order_relaxed);
  return {};
}

Status Datapath::set_tunnel_source(uint32_t addr_be) {
  if (!skel_->data) return Error{EINVAL, "datapath: .data not mapped, cannot set the tunnel source"};
  std::atomic_ref(skel_->data->tcpha_tunnel_src).store(addr_be, std::memory_order_relaxed);
  return {};
}

Status Datapath::set_decap(uint32_t addr_be, const std::vector<uint32_t>& sources) {
  if (!skel_->data) return Error{EINVAL, "datapath: .data not mapped, cannot set decapsulation"};
  const int fd = bpf_map__fd(skel_->maps.tunnel_sources);
  // Old sources not in the new set go; the new ones are added before the address is
  // set, so that a sender is never refused for being added late.
  std::vector<uint32_t> old;
  uint32_t key, next;
  for (int rc = bpf_map_get_next_key(fd, nullptr, &next); rc == 0;
       rc = bpf_map_get_next_key(fd, &key, &next)) {
    old.push_back(next);
    key = next;
  }
  for (uint32_t a : old)
    if (std::find(sources.begin(), sources.end(), a) == sources.end()) (void)bpf_map_delete_elem(fd, &a);
  const uint8_t one = 1;
  for (uint32_t a : sources)
    if (int rc = bpf_map_update_elem(fd, &a, &one, BPF_ANY); rc < 0)
      return Error{-rc, "datapath: tunnel source " + ipv4_str(a)};
  std::atomic_ref(skel_->data->tcpha_decap_addr).store(addr_be, std::memory_order_relaxed);
  return {};
}

Status Datapath::set_backend(uint32_t slot, const Mac& mac, bool failed, uint32_t tunnel_be) {
  if (slot >= TCPHA_MAX_BACKENDS)
    return Error{EINVAL, "datapath: back-end slot " + std::to_string(slot) + " out of range"};
  tcpha_backend b{};
  std::memcpy(b.mac, mac.data(), sizeof b.mac);
  b.flags = failed ? TCPHA_BACKEND_F_FAILED : 0;
  b.forward = tunnel_be ? TCPHA_FORWARD_TUNNEL : TCPHA_FORWARD_DR;
  b.tunnel_addr = tunnel_be;
  // An array element is overwritten in place: a packet may read half the MAC of a
  // slot being changed, which only happens when a slot is given to another back-end
  // (its flows are gone by then) or a failed back-end's MAC changes.
  if (int rc = bpf_map_update_elem(backends_fd(), &slot, &b, BPF_ANY); rc < 0)
    return Error{-rc, "datapath: set back-end slot " + std::to_string(slot)};
  return {};
}

// Like the guard: a relaxed store on the mapped .data, read per packet.
Status Datapath::set_egress_guard(bool on) {
  if (!skel_->data) return Error{EINVAL, "datapath: .data not mapped, cannot set the egress guard"};
  std::atomic_ref knob(skel_->data->tcpha_egress_guard);
  knob.store(on ? 1u : 0u, std::memory_order_relaxed);
  if (ifindex_ == 0 || egress_attached_) return {};
  if (on) return attach_egress();
  // Off on an interface where a crashed run with the guard on left its filter: that
  // one would drop the FIN/RST of every connection this run ends (it marks none).
  bpf_tc_hook egress = make_hook(ifindex_, BPF_TC_EGRESS);
  bpf_tc_opts opts = make_opts();
  (void)bpf_tc_detach(&egress, &opts);
  return {};
}

bool Datapath::egress_guard() const {
  if (!skel_->data) return false;
  std::atomic_ref knob(skel_->data->tcpha_egress_guard);
  return knob.load(std::memory_order_relaxed) != 0;
}

std::optional<tcpha_flow_value> Datapath::lookup(const FlowKey& key) const {
  tcpha_flow_value v;
  if (bpf_map_lookup_elem(flows_fd(), &key, &v) < 0) return std::nullopt;
  return v;
}

Datapath::Counters Datapath::counters() const {
  Counters sum{};
  const int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return sum;
  std::vector<uint64_t> per_cpu(static_cast<size_t>(ncpu));  // u64: already 8-byte slots
  const int fd = bpf_map__fd(skel_->maps.counters);
  for (uint32_t id = 0; id < TCPHA_DP_NR_COUNTERS; ++id) {
    if (bpf_map_lookup_elem(fd, &id, per_cpu.data()) < 0) continue;
    for (uint64_t c : per_cpu) sum[id] += c;
  }
  return sum;
}

const char* Datapath::counter_name(int id) {
  static const auto names = [] {
    std::array<std::string, TCPHA_DP_NR_COUNTERS> n{
#define TCPHA_X_NAME(name, desc) #name,
        TCPHA_DP_COUNTERS(TCPHA_X_NAME)
#undef TCPHA_X_NAME
    };
    for (auto& s : n)
      for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return n;
  }();
  return id >= 0 && id < TCPHA_DP_NR_COUNTERS ? names[id].c_str() : "unknown";
}

const char* Datapath::counter_help(int id) {
  static constexpr const char* help[] = {
#define TCPHA_X_HELP(name, desc) desc,
      TCPHA_DP_COUNTERS(TCPHA_X_HELP)
#undef TCPHA_X_HELP
  };
  return id >= 0 && id < TCPHA_DP_NR_COUNTERS ? help[id] : "unknown";
}

int Datapath::prog_fd() const { return bpf_program__fd(skel_->progs.tcpha_ingress); }
int Datapath::egress_prog_fd() const { return bpf_program__fd(skel_->progs.tcpha_egress); }
int Datapath::backends_fd() const { return bpf_map__fd(skel_->maps.backends); }
int Datapath::flows_fd() const { return bpf_map__fd(skel_->maps.flows); }
int Datapath::copies_fd() const { return bpf_map__fd(skel_->maps.copies); }

Result<CopyReader> CopyReader::open(const Datapath& dp) {
  CopyReader r;
  r.rb_ = ring_buffer__new(dp.copies_fd(), &CopyReader::on_record, nullptr, nullptr);
  if (!r.rb_) return sys_error("copies ring buffer");
  return r;
}

CopyReader::CopyReader(CopyReader&& o) noexcept : rb_(o.rb_) { o.rb_ = nullptr; }
CopyReader& CopyReader::operator=(CopyReader&& o) noexcept {
  std::swap(rb_, o.rb_);
  return *this;
}
CopyReader::~CopyReader() {
  if (rb_) ring_buffer__free(rb_);
}

int CopyReader::fd() const { return rb_ ? ring_buffer__epoll_fd(rb_) : -1; }

// libbpf's callback has a context fixed at ring_buffer__new(), before this object has
// its final address: drain() passes its callback through a thread-local instead.
namespace {
thread_local CopyReader::OnCopy const* tl_on_copy = nullptr;
}

int CopyReader::on_record(void*, void* data, size_t size) {
  tcpha_copy h;
  if (size < sizeof h || !tl_on_copy) return 0;
  std::memcpy(&h, data, sizeof h);
  if (h.len > size - sizeof h) return 0;  // the datapath writes none such
  (*tl_on_copy)(h.backup, static_cast<const uint8_t*>(data) + sizeof h, h.len);
  return 0;
}

size_t CopyReader::drain(const OnCopy& on) {
  if (!rb_) return 0;
  tl_on_copy = &on;
  const int n = ring_buffer__consume(rb_);
  tl_on_copy = nullptr;
  return n > 0 ? size_t(n) : 0;
}
uint32_t Datapath::max_flows() const { return bpf_map__max_entries(skel_->maps.flows); }

}  // namespace tcpha::datapath
