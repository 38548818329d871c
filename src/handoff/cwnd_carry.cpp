#include "handoff/cwnd_carry.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "common/fd.hpp"
#include "tcpha_cwnd.skel.h"
#include "tcpha_shared.h"

namespace tcpha::handoff {
namespace {

// The cgroup (v2) this process is in, opened: the "0::" line of /proc/self/cgroup under
// a mount of the cgroup2 file system (/sys/fs/cgroup on a unified host,
// /sys/fs/cgroup/unified on a hybrid one). `ip netns exec` runs us in a mount namespace
// of its own where none may be visible: then the hierarchy (one per host) is mounted
// on a private directory just long enough to open our cgroup; the open directory
// outlives the mount.
Result<UniqueFd> open_own_cgroup(std::string& dir) {
  std::ifstream cg("/proc/self/cgroup");
  std::string line, path;
  while (std::getline(cg, line))
    if (line.rfind("0::", 0) == 0) path = line.substr(3);
  if (path.empty()) return app_error("no cgroup v2 line in /proc/self/cgroup");
  if (path == "/") path.clear();
  std::ifstream mi("/proc/self/mountinfo");
  while (std::getline(mi, line)) {
    // "id parent dev root mount-point options ... - fstype source options"
    const auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream tail(line.substr(dash + 3)), head(line.substr(0, dash));
    std::string fstype, field, mount;
    tail >> fstype;
    if (fstype != "cgroup2") continue;
    for (int i = 0; i < 5 && head >> field; ++i)
      if (i == 4) mount = field;
    if (mount.empty()) continue;
    dir = mount + path;
    UniqueFd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (fd.valid()) return fd;
  }
  char tmp[] = "/tmp/tcpha-cgroup2.XXXXXX";
  if (!mkdtemp(tmp)) return sys_error("mkdtemp for a cgroup2 mount");
  if (mount("cgroup2", tmp, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
    Error e = sys_error("mount cgroup2 (none visible here)");
    rmdir(tmp);
    return e;
  }
  dir = "cgroup2:" + (path.empty() ? std::string("/") : path);
  UniqueFd fd(open((std::string(tmp) + path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  Error e = fd.valid() ? Error{} : sys_error("open cgroup " + dir);
  umount2(tmp, MNT_DETACH);
  rmdir(tmp);
  if (!fd.valid()) return e;
  return fd;
}

}  // namespace

Result<std::unique_ptr<CwndCarry>> CwndCarry::attach() {
  std::unique_ptr<CwndCarry> c(new CwndCarry());
  auto cg = open_own_cgroup(c->cgroup_);
  if (!cg) return cg.error();
  c->skel_ = tcpha_cwnd__open_and_load();
  if (!c->skel_) return sys_error("load BPF object tcpha_cwnd");
  c->link_ = bpf_program__attach_cgroup(c->skel_->progs.tcpha_sockops, cg->get());
  if (!c->link_) return sys_error("attach sock_ops to cgroup " + c->cgroup_);
  return c;
}

CwndCarry::~CwndCarry() {
  if (link_) bpf_link__destroy(link_);
  if (skel_) tcpha_cwnd__destroy(skel_);
}

Status CwndCarry::store(int fd, uint32_t cwnd) const {
  if (cwnd == 0) return {};
  tcpha_import_cwnd v{};
  v.cwnd = cwnd;
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.import_cwnd), &fd, &v, BPF_ANY) != 0)
    return sys_error("store the congestion window to carry");
  return {};
}

uint64_t CwndCarry::applied() const {
  return __atomic_load_n(&skel_->bss->tcpha_cwnd_applied, __ATOMIC_RELAXED);
}
uint64_t CwndCarry::refused() const {
  return __atomic_load_n(&skel_->bss->tcpha_cwnd_refused, __ATOMIC_RELAXED);
}

}  // namespace tcpha::handoff
