// TCP_REPAIR export and import of a live loopback connection, in a private network
// namespace (needs root; skipped otherwise). Each iteration moves the connection to a
// new socket and keeps going from there, so every export works on an imported socket,
// as a multi-handoff would.
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "common/fd.hpp"
#include "fixtures.hpp"
#include "handoff/tcp_state.hpp"

namespace {

using tcpha::UniqueFd;

// Moves the calling (benchmark) thread into a fresh network namespace with lo up,
// once: the repaired sockets never touch the host's namespaces.
bool private_netns() {
  static const bool ok = [] {
    if (geteuid() != 0 || unshare(CLONE_NEWNET) != 0) return false;
    UniqueFd s(socket(AF_INET, SOCK_DGRAM, 0));
    ifreq ifr{};
    std::strcpy(ifr.ifr_name, "lo");
    if (ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0) return false;
    ifr.ifr_flags |= IFF_UP;
    return ioctl(s.get(), SIOCSIFFLAGS, &ifr) == 0;
  }();
  return ok;
}

// An established loopback connection: the client end and the accepted server end.
tcpha::Endpoint endpoint(const sockaddr_in& a) { return tcpha::Endpoint::v4(a.sin_addr.s_addr, a.sin_port); }

struct Connection {
  UniqueFd client, server;
  sockaddr_in local{}, peer{};
};

bool connect_loopback(Connection& c) {
  UniqueFd lst(socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(lst.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(lst.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0 || listen(lst.get(), 1))
    return false;
  c.client = UniqueFd(socket(AF_INET, SOCK_STREAM, 0));
  if (connect(c.client.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return false;
  c.server = UniqueFd(accept(lst.get(), nullptr, nullptr));
  len = sizeof c.local;
  getsockname(c.server.get(), reinterpret_cast<sockaddr*>(&c.local), &len);
  len = sizeof c.peer;
  getpeername(c.server.get(), reinterpret_cast<sockaddr*>(&c.peer), &len);
  return c.server.get() >= 0;
}

// Export only (the FE's side): TCP_REPAIR on, read the state, repair off again.
void BM_HandoffExport(benchmark::State& state) {
  Connection c;
  if (!private_netns() || !connect_loopback(c)) {
    state.SkipWithError("needs root (private netns, CAP_NET_ADMIN for TCP_REPAIR)");
    return;
  }
  std::string bytes;
  for (auto _ : state) {
    bytes.clear();
    auto st = tcpha::handoff::export_state(c.server.get(), endpoint(c.local), endpoint(c.peer), bytes);
    if (!st || !tcpha::handoff::leave_repair(c.server.get())) {
      state.SkipWithError("export failed");
      break;
    }
    benchmark::DoNotOptimize(st->snd_seq);
  }
}
BENCHMARK(BM_HandoffExport);

// Export, close the old socket silently, import into a new socket with the request
// re-queued, activate: the whole TCP_REPAIR part of one handoff, both sides.
void BM_HandoffExportImport(benchmark::State& state) {
  Connection c;
  if (!private_netns() || !connect_loopback(c)) {
    state.SkipWithError("needs root (private netns, CAP_NET_ADMIN for TCP_REPAIR)");
    return;
  }
  std::string bytes;
  for (auto _ : state) {
    bytes = tcpha::bench::kBrowserRequest;  // as if read from the client by the FE
    auto st = tcpha::handoff::export_state(c.server.get(), endpoint(c.local), endpoint(c.peer), bytes);
    if (!st) {
      state.SkipWithError(("export: " + st.error().message()).c_str());
      break;
    }
    // Here both ends share one host, so the old socket must go before the new one can
    // take its 4-tuple; closing it in repair mode is silent, as on the FE.
    c.server.reset();
    auto moved = tcpha::handoff::import_state(*st, bytes);
    if (!moved) {
      state.SkipWithError(("import: " + moved.error().message()).c_str());
      break;
    }
    if (!tcpha::handoff::activate(moved->get())) {
      state.SkipWithError("activate failed");
      break;
    }
    c.server = std::move(*moved);
    // Drop the re-queued request so that the receive queue stays as it was.
    state.PauseTiming();
    char sink[1024];
    while (recv(c.server.get(), sink, sizeof sink, MSG_DONTWAIT) > 0) {
    }
    state.ResumeTiming();
  }
}
BENCHMARK(BM_HandoffExportImport);

}  // namespace
