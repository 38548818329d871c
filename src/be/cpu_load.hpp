#pragma once
// The load a back-end reports in its heartbeats (HeartbeatMsg::cpu_permille), for the
// FE's least-conn and LARD to weigh.
//
// What is measured: the HOST's CPU use, from /proc/stat, in permille of all its CPUs
// (1000 = every CPU busy), over the last kWindowNs. Not the agent's own CPU time: in
// relay mode the work is the upstream server's (nginx, an application), and the
// network stack's softirq time is charged to no process; a host that is busy for any
// reason serves new connections slower. (In the test bed all back-ends share one host
// and report the same value.)
#include <cstdint>
#include <optional>
#include <string_view>

namespace tcpha::be {

struct CpuTimes {
  uint64_t busy = 0, total = 0;  // clock ticks since boot, all CPUs
};

// The aggregate "cpu " line of /proc/stat's text; nullopt when it is not there.
// Idle time is idle + iowait; guest time is already inside user/nice.
std::optional<CpuTimes> parse_proc_stat(std::string_view text);

// Busy share between two readings, 0..1000 (0 when no time passed).
uint32_t busy_permille(const CpuTimes& before, const CpuTimes& after);

class CpuLoad {
 public:
  // Long enough to smooth a 100 ms heartbeat's worth of scheduler noise, short enough
  // that the FE sees a load change within a second or two.
  static constexpr uint64_t kWindowNs = 1'000'000'000;

  // The last window's value; reads /proc/stat when the window has passed.
  uint32_t sample(uint64_t now_ns);

 private:
  std::optional<CpuTimes> last_;
  uint64_t last_ns_ = 0;
  uint32_t permille_ = 0;
};

}  // namespace tcpha::be
