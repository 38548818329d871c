// tcpha: one binary, one subcommand per role (INTERFACE.md).
#include <unistd.h>

#include <csignal>

#include <CLI/CLI.hpp>
#include <iostream>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "be/agent.hpp"
#include "config/config.hpp"
#include "fe/frontend.hpp"
#include "status/status_socket.hpp"

namespace {

// Exit statuses (INTERFACE.md).
constexpr int kExitBadConfig = 1;
constexpr int kExitHost = 2;

std::optional<tcpha::config::Config> load_or_report(const std::string& path) {
  auto r = tcpha::config::load(path);
  for (auto& e : r.errors) std::cerr << e << "\n";
  return std::move(r.config);
}

void print_table(const nlohmann::json& j) {
  if (j.value("role", "") == "fe") {
    const auto& h = j["handoffs"];
    const auto& lat = j["handoff_latency_us"];
    std::string vips = j.value("vip", "");
    if (const std::string v6 = j.value("vip6", ""); !v6.empty()) vips += " " + v6;
    std::printf("front-end %s  VIP %s  generation %llu  flows %zu\n", j.value("id", "").c_str(),
                vips.c_str(), (unsigned long long)j.value("generation", 0ull),
                j.value("flows", size_t(0)));
    std::printf("handoffs ok %llu failed %llu  latency p50 %.0f us p99 %.0f us  local %lld\n\n",
                (unsigned long long)h.value("ok", 0ull), (unsigned long long)h.value("failed", 0ull),
                lat.value("p50", 0.0), lat.value("p99", 0.0), (long long)j.value("local_active", 0ll));
    // Like `ipvsadm -L -n`: one line per real server.
    std::printf("%-12s %-16s %-9s %6s %7s %10s %9s %8s %6s\n", "ID", "ADDRESS", "STATE", "WEIGHT",
                "ACTIVE", "HANDOFFS", "FAILURES", "HB-AGE", "CACHE");
    for (auto& b : j["backends"]) {
      long long age = b.value("heartbeat_age_ms", -1ll);
      std::string age_s = age < 0 ? "-" : std::to_string(age) + "ms";
      std::printf("%-12s %-16s %-9s %6u %7lld %10llu %9llu %8s %5.0f%%%s\n",
                  b.value("id", "").c_str(), b.value("address", "").c_str(),
                  b.value("state", "").c_str(), b.value("weight", 0u),
                  (long long)b.value("active", 0ll), (unsigned long long)b.value("handoffs", 0ull),
                  (unsigned long long)b.value("failures", 0ull), age_s.c_str(),
                  100.0 * b.value("cache_hit_rate", 0.0), b.value("dynamic", false) ? "  dynamic" : "");
    }
  } else if (j.value("role", "") == "node") {
    std::printf("node %s  %s  accepted %llu  imported %llu  active %lld  entry flows %llu\n",
                j.value("id", "").c_str(), j.value("address", "").c_str(),
                (unsigned long long)j["counters"].value("accepted", 0ull),
                (unsigned long long)j.value("imported", 0ull), (long long)j.value("active", 0ll),
                (unsigned long long)j.value("entry_flows", 0ull));
  } else {
    std::printf("back-end %s  %s  imported %llu  active %lld  control links %llu\n",
                j.value("id", "").c_str(), j.value("address", "").c_str(),
                (unsigned long long)j.value("imported", 0ull), (long long)j.value("active", 0ll),
                (unsigned long long)j.value("control_links", 0ull));
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tcpha: content-aware web cluster with live TCP connection handoff"};
  app.set_version_flag("--version", std::string("tcpha ") + TCPHA_VERSION);
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
      ->capture_default_str();

  std::string cfg_path, id, socket_path;
  bool json = false, takeover = false;

  auto* fe = app.add_subcommand("fe", "run the front-end (dispatcher)");
  fe->add_option("-c,--config", cfg_path, "cluster file")->required();
  fe->add_option("--socket", socket_path, "status socket (default /run/tcpha/<id>.sock)");
  fe->add_option("--id", id,
                 "run as this front-end of the file: [frontend]'s id (the default) or a "
                 "[[standby]]'s (a hot standby)");
  fe->add_flag("--takeover", takeover,
               "upgrade: take over the listening sockets, datapath and status socket of the "
               "front-end running on this host (docs/fe-restart.md)");

  auto* be = app.add_subcommand("be", "run one back-end agent");
  be->add_option("-c,--config", cfg_path, "cluster file")->required();
  be->add_option("--id", id, "this back-end's id in the cluster file")->required();
  be->add_option("--socket", socket_path, "status socket (default /run/tcpha/<id>.sock)");

  auto* node = app.add_subcommand("node", "run one CARD node: it distributes and serves (no front-end)");
  node->add_option("-c,--config", cfg_path, "cluster file with [[node]] tables")->required();
  node->add_option("--id", id, "this node's id in the cluster file")->required();
  node->add_option("--socket", socket_path, "status socket (default /run/tcpha/<id>.sock)");

  auto* st = app.add_subcommand("status", "show a daemon's state");
  st->add_option("--id", id, "daemon id (default fe)");
  st->add_option("--socket", socket_path, "status socket path");
  st->add_flag("--json", json, "print JSON");

  auto* check = app.add_subcommand("check", "validate a cluster file");
  check->add_option("-c,--config", cfg_path, "cluster file")->required();

  std::string be_id;
  auto* drain = app.add_subcommand("drain", "stop new handoffs to a back-end (via the FE)");
  drain->add_option("ID", be_id, "back-end id")->required();
  drain->add_option("--socket", socket_path, "the FE's status socket");
  auto* undrain = app.add_subcommand("undrain", "resume new handoffs to a back-end (via the FE)");
  undrain->add_option("ID", be_id, "back-end id")->required();
  undrain->add_option("--socket", socket_path, "the FE's status socket");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitBadConfig;
  }
  auto logger = spdlog::stderr_color_mt("tcpha");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");

  if (*check) {
    auto cfg = load_or_report(cfg_path);
    if (!cfg) return kExitBadConfig;
    std::cout << cfg_path << ": ok (" << cfg->backends.size() << (cfg->card ? " nodes, " : " backends, ")
              << cfg->rules.size() << " rules)\n";
    return 0;
  }
  if (*fe || *be || *node) {
    auto cfg = load_or_report(cfg_path);
    if (!cfg) return kExitBadConfig;
    const char* role = *fe ? "fe" : *be ? "be" : "node";
    // A CARD file runs nodes only, and a node needs a CARD file.
    if (cfg->card != bool(*node)) {
      spdlog::error("{}: {}", cfg_path,
                    cfg->card ? std::string("has [[node]] tables (CARD): run `tcpha node --id ID`, not `tcpha ") + role + "`"
                              : std::string("has no [[node]] table: `tcpha node` runs a CARD node"));
      return kExitBadConfig;
    }
    if (geteuid() != 0) {
      spdlog::error("tcpha {} needs root (CAP_NET_ADMIN for TCP_REPAIR and addresses, CAP_BPF)", role);
      return kExitHost;
    }
    // sendfile() and splice() into a socket the client has reset raise SIGPIPE (they
    // take no MSG_NOSIGNAL), which would end the daemon: the error must come back as
    // EPIPE, which closes that one connection.
    std::signal(SIGPIPE, SIG_IGN);
    if (*fe) {
      if (!id.empty() && !cfg->run_as(id)) {
        spdlog::error("{}: no front-end '{}' ([frontend] or [[standby]])", cfg_path, id);
        return kExitBadConfig;
      }
      if (socket_path.empty()) socket_path = tcpha::status::default_socket_path(cfg->frontend.id);
      return tcpha::fe::run_frontend(*cfg, socket_path, takeover);
    }
    if (socket_path.empty()) socket_path = tcpha::status::default_socket_path(id);
    return *node ? tcpha::be::run_node(*cfg, id, socket_path) : tcpha::be::run_backend(*cfg, id, socket_path);
  }
  if (socket_path.empty()) socket_path = tcpha::status::default_socket_path(id.empty() ? "fe" : id);
  std::string command = "status";
  if (*drain) command = "drain " + be_id;
  if (*undrain) command = "undrain " + be_id;
  auto answer = tcpha::status::query(socket_path, command);
  if (!answer) {
    std::cerr << "tcpha: " << answer.error().message() << "\n";
    return kExitHost;
  }
  auto j = nlohmann::json::parse(*answer, nullptr, false);
  if (j.is_discarded()) {
    std::cerr << "tcpha: unreadable answer from " << socket_path << "\n";
    return kExitHost;
  }
  if (*st && !json) {
    print_table(j);
  } else {
    std::cout << j.dump() << "\n";
  }
  if (j.contains("ok") && !j["ok"].get<bool>()) return kExitBadConfig;
  return 0;
}
