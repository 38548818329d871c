#include "be/cpu_load.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>

#include "common/fd.hpp"

namespace tcpha::be {

std::optional<CpuTimes> parse_proc_stat(std::string_view text) {
  if (text.substr(0, 4) != "cpu ") return std::nullopt;
  std::string_view line = text.substr(4, text.find('\n') - 4);
  // user nice system idle iowait irq softirq steal [guest guest_nice]
  uint64_t v[8] = {};
  size_t n = 0;
  const char* p = line.data();
  const char* end = line.data() + line.size();
  while (n < 8) {
    while (p < end && *p == ' ') ++p;
    if (p == end) break;
    auto [q, ec] = std::from_chars(p, end, v[n]);
    if (ec != std::errc()) return std::nullopt;
    p = q;
    ++n;
  }
  if (n < 4) return std::nullopt;  // user nice system idle exist on every kernel
  CpuTimes t;
  for (size_t i = 0; i < n; ++i) t.total += v[i];
  t.busy = t.total - v[3] - v[4];
  return t;
}

uint32_t busy_permille(const CpuTimes& before, const CpuTimes& after) {
  if (after.total <= before.total || after.busy < before.busy) return 0;
  uint64_t busy = after.busy - before.busy, total = after.total - before.total;
  return uint32_t(std::min<uint64_t>(1000, busy * 1000 / total));
}

uint32_t CpuLoad::sample(uint64_t now_ns) {
  if (last_ && now_ns - last_ns_ < kWindowNs) return permille_;
  UniqueFd fd(open("/proc/stat", O_RDONLY | O_CLOEXEC));
  char buf[512];  // the aggregate line comes first
  ssize_t n = fd.valid() ? read(fd.get(), buf, sizeof buf) : -1;
  if (n <= 0) return permille_;
  auto t = parse_proc_stat(std::string_view(buf, size_t(n)));
  if (!t) return permille_;
  if (last_) permille_ = busy_permille(*last_, *t);
  last_ = t;
  last_ns_ = now_ns;
  return permille_;
}

}  // namespace tcpha::be
