#pragma once
// A moved connection keeps its congestion window (bpf/cwnd.bpf.c says how). The
// exporter puts its cwnd in TcpState::snd_cwnd; an importer holding a CwndCarry stores
// it for the new socket before connect(), and the sock_ops program attached to this
// process's cgroup applies it as the socket becomes established. Without one (cgroup
// v2 not mounted, the attachment refused) imports start with the initial window, as
// TCP_REPAIR alone leaves them.
#include <cstdint>
#include <memory>
#include <string>

#include "common/result.hpp"

struct tcpha_cwnd;
struct bpf_link;

namespace tcpha::handoff {

class CwndCarry {
 public:
  // Loads the program and attaches it to the cgroup (v2) this process is in. The
  // attachment is a BPF link: it ends with the process, even on SIGKILL.
  static Result<std::unique_ptr<CwndCarry>> attach();
  ~CwndCarry();
  CwndCarry(const CwndCarry&) = delete;
  CwndCarry& operator=(const CwndCarry&) = delete;

  // Before connect() of a socket in repair mode: ask for `cwnd` segments (0: nothing).
  Status store(int fd, uint32_t cwnd) const;
  uint64_t applied() const;  // windows the kernel took
  uint64_t refused() const;  // windows it refused (TCP_BPF_IW failed)
  const std::string& cgroup() const { return cgroup_; }

 private:
  CwndCarry() = default;
  tcpha_cwnd* skel_ = nullptr;
  bpf_link* link_ = nullptr;
  std::string cgroup_;
};

}  // namespace tcpha::handoff
