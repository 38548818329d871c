// The back-end daemon: the host set up around the agent (signals, ARP sysctls, the
// VIP on lo), the status socket, the metrics endpoint and the registration link.
#include "be/agent.hpp"

#include <signal.h>
#include <sys/signalfd.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "be/agent_core.hpp"
#include "be/registration.hpp"
#include "host/host.hpp"
#include "metrics/endpoint.hpp"
#include "status/status_socket.hpp"

namespace tcpha::be {
namespace {

// Members are declared in the order they are set up; C++ tears them down in reverse:
// the registration link goes first (the FE stops sending work), the VIP and the
// sysctls last (connections in flight keep their address until the agent is gone).
class Daemon {
 public:
  Daemon(const config::Config& cfg, const config::BackendSection& self) : cfg_(cfg), self_(self) {}
  // 0, or the process exit status of the failed step (logged).
  int start(const std::string& status_socket);
  void run() { agent_->run(); }

 private:
  int setup_host();

  const config::Config& cfg_;
  const config::BackendSection& self_;
  UniqueFd sigfd_;
  std::string ifname_;
  std::vector<std::unique_ptr<host::SysctlGuard>> sysctls_;
  std::unique_ptr<host::AddressGuard> vip_;
  std::unique_ptr<host::AddressGuard> vip6_;  // [cluster] vip6, when set
  std::unique_ptr<Agent> agent_;
  std::unique_ptr<status::Server> status_;
  std::unique_ptr<metrics::Endpoint> metrics_endpoint_;
  std::unique_ptr<Registration> registration_;
};

int Daemon::setup_host() {
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&sigs, s);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  sigset_t stop_sigs;
  sigemptyset(&stop_sigs);
  sigaddset(&stop_sigs, SIGINT);
  sigaddset(&stop_sigs, SIGTERM);
  sigaddset(&stop_sigs, SIGHUP);  // reload (Agent::reload), not a stop
  sigfd_.reset(signalfd(-1, &stop_sigs, SFD_CLOEXEC | SFD_NONBLOCK));

  auto ifname = host::interface_of(self_.addr);
  if (!ifname) {
    spdlog::error("{}", ifname.error().message());
    return 2;
  }
  ifname_ = *ifname;
  // A CARD node names its interface: its datapath goes there, so it must be the one
  // its address is on (where the routers send the VIP's packets).
  if (cfg_.card && ifname_ != self_.interface) {
    spdlog::error("node {}: address {} is on {}, not on interface {} (cluster file line {})",
                  self_.id, self_.address, ifname_, self_.interface, self_.line);
    return 2;
  }
  // Silence ARP for the VIP before it exists on lo, so no neighbour ever learns it
  // here; let packets to the VIP arrive on the LAN interface.
  for (auto [name, value] : {std::pair<std::string, std::string>{"net.ipv4.conf.all.arp_ignore", "1"},
                             {"net.ipv4.conf.all.arp_announce", "2"},
                             {"net.ipv4.conf.all.rp_filter", "0"},
                             {"net.ipv4.conf." + ifname_ + ".rp_filter", "0"}}) {
    auto g = host::SysctlGuard::set(name, value);
    if (!g) {
      spdlog::error("{}", g.error().message());
      return 2;
    }
    sysctls_.push_back(std::move(*g));
  }
  // A move's strays to a tunnel back-end are encapsulated by our datapath, which finds
  // their next hop with bpf_fib_lookup(): it answers only for a forwarding interface.
  if (std::any_of(cfg_.backends.begin(), cfg_.backends.end(), [](const auto& b) { return b.tunnel(); })) {
    auto g = host::SysctlGuard::set("net.ipv4.conf." + ifname_ + ".forwarding", "1");
    if (!g) {
      spdlog::error("{}", g.error().message());
      return 2;
    }
    sysctls_.push_back(std::move(*g));
  }
  auto vip = host::AddressGuard::add("lo", cfg_.cluster.vip_addr);
  if (!vip) {
    spdlog::error("{}", vip.error().message());
    return 2;
  }
  vip_ = std::move(*vip);
  // The IPv6 VIP on lo too, without duplicate address detection (a tentative address
  // cannot be bound, and DAD would find the FE's). Nothing to silence: Linux answers a
  // neighbour solicitation only for an address of the interface it came in on, so
  // this one is never answered for on the LAN (docs/ipv6.md; the ipv6 netns test
  // checks the clients' neighbour entries).
  if (const auto& v6 = cfg_.cluster.vip6_addr) {
    auto g = host::AddressGuard::add("lo", *v6);
    if (!g) {
      spdlog::error("{}", g.error().message());
      return 2;
    }
    vip6_ = std::move(*g);
  }
  return 0;
}

int Daemon::start(const std::string& status_socket) {
  if (int rc = setup_host()) return rc;
  agent_ = std::make_unique<Agent>(cfg_, self_);
  if (auto s = agent_->open(sigfd_.get(), ifname_); !s) {
    spdlog::error("{}", s.error().message());
    return 2;
  }
  Agent* agent = agent_.get();
  auto status = status::Server::start(status_socket, [agent](const std::string&) { return agent->status_json(); });
  if (!status) {
    spdlog::error("status socket: {}", status.error().message());
    return 2;
  }
  status_ = std::move(*status);
  spdlog::info("{} {} on {} ({}), VIP {} on lo, {} {}", cfg_.card ? "node" : "back-end", self_.id,
               self_.address, ifname_,
               cfg_.cluster.vip + (cfg_.cluster.vip6.empty() ? "" : " and " + cfg_.cluster.vip6),
               self_.upstream.empty() ? "docroot" : "relay to",
               self_.upstream.empty() ? self_.docroot : self_.upstream);
  if (!self_.metrics.empty()) {
    auto m = metrics::Endpoint::start(
        self_.metrics, [agent] { return agent->prometheus(); }, self_.metrics_allow);
    if (!m) {
      spdlog::error("metrics endpoint {}: {}", self_.metrics, m.error().message());
      return 2;
    }
    metrics_endpoint_ = std::move(*m);
  }
  if (cfg_.card) return 0;  // no front-end to register with: the routers bring clients
  registration_ = std::make_unique<Registration>(cfg_, self_);
  Registration* registration = registration_.get();
  agent_->set_on_drain([registration] { registration->leave(); });
  return 0;
}

}  // namespace

int run_backend(const config::Config& cfg, const std::string& id, const std::string& status_socket) {
  const auto* self = cfg.find_backend(id);
  if (!self) {
    spdlog::error("{}: no [[{}]] with id '{}'", cfg.path, cfg.card ? "node" : "backend", id);
    return 1;
  }
  Daemon daemon(cfg, *self);
  if (int rc = daemon.start(status_socket)) return rc;
  daemon.run();
  spdlog::info("{} {} stopping; VIP and sysctls restored", cfg.card ? "node" : "back-end", id);
  return 0;
}

// A CARD node is a back-end agent that also accepts clients (card.cpp): the same daemon.
int run_node(const config::Config& cfg, const std::string& id, const std::string& status_socket) {
  return run_backend(cfg, id, status_socket);
}

}  // namespace tcpha::be
