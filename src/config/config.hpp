#pragma once
// The cluster file (TOML), as in ../shared/design/INTERFACE.md. Every node reads the
// same file and finds its own part by id. Loading validates everything; errors are
// "FILE:LINE: message" lines.
#include <netinet/in.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/net.hpp"

namespace tcpha::config {

struct ClusterSection {
  std::string vip;                 // dotted IPv4
  in_addr vip_addr{};
  // The IPv6 VIP served beside the IPv4 one on the same ports (docs/ipv6.md); "" and
  // nullopt when not configured.
  std::string vip6;
  std::optional<in6_addr> vip6_addr;
  std::vector<uint16_t> ports;     // at least one, unique
  std::string key_file;            // resolved relative to the cluster file's directory
  std::vector<uint8_t> key;        // 32 bytes derived from the key file's contents
  std::string forward = "dr";      // "dr" (same L2 segment) or "tunnel" (IPIP; docs/tunnel.md)
  uint16_t control_port = 7400;    // BE agents listen here on their address
  // BE -> FE heartbeats: a BE silent for dead_after_ms is marked down, even if its
  // control connection is still open (a hung, not dead, agent). With failover on the
  // defaults are 50 and 250 ms.
  uint32_t heartbeat_ms = 100;
  uint32_t dead_after_ms = 500;
  // Every server of the cluster (BE agents, the FE as a local node): a kept-alive
  // connection idle between requests this long is closed, and so is one whose client
  // has acknowledged nothing of a response for send_timeout_ms (it stopped reading).
  // nginx's keepalive_timeout and send_timeout, with nginx's defaults' spirit.
  uint32_t keepalive_timeout_ms = 60000;
  uint32_t send_timeout_ms = 60000;
  // BE failover (seed 004, docs/failover.md): "ring" = each BE backs up the connections
  // of the next BE of the same groups and takes them over when it dies; "off".
  bool failover = false;
};

struct FrontendSection {
  std::string id = "fe";
  std::string address;             // FE's own address
  in_addr addr{};
  std::string interface;           // client-facing interface
  std::string metrics;             // "ADDR:PORT", empty = off
  // Who may scrape `metrics`: required for a non-loopback ADDR; empty = loopback only.
  std::vector<Ipv4Prefix> metrics_allow;
  uint32_t workers = 0;            // 0 = one per online CPU
  uint32_t header_timeout_ms = 10000;
  uint32_t max_header_bytes = 16384;
  uint32_t handoff_timeout_ms = 500;
  uint32_t max_flows = 65536;
  // Flows (client connections in the table) one client address may hold, so one
  // source cannot fill the table for everyone. Clamped to max_flows when not set.
  uint32_t max_flows_per_client = 1024;
  uint32_t flow_linger_ms = 5000;  // keep a flow this long after FIN/RST or CLOSED
  uint32_t flow_idle_s = 900;      // remove a forwarded flow idle this long
  // SIGTERM with handed-off connections still open: keep forwarding them this long
  // at most (new connections are refused), then remove everything (docs/fe-restart.md).
  uint32_t stop_timeout_s = 30;
  // Local node (seed 000 4.7): the FE serves requests of these groups itself from
  // docroot, without a handoff.
  std::vector<std::string> groups;
  std::string docroot;
  std::string access_log;          // path of the access log; empty = off
  int line = 0;
};

// A front-end of the cluster: [frontend] and each [[standby]] (hot standbys that
// receive the flow table and take the VIP over when the active one fails;
// docs/fe-restart.md, "Hot standby").
struct FeMember {
  std::string id;
  std::string address;
  in_addr addr{};
  std::string interface;
  int line = 0;
};

struct BackendSection {
  std::string id;
  std::string address;
  in_addr addr{};
  uint32_t weight = 1;
  std::vector<std::string> groups;
  std::string docroot;             // built-in static server, or
  std::string upstream;            // "host:port" or "unix:/path" of a local HTTP server
  int proxy_protocol = 0;          // 0 = off, 2 = PROXY v2
  bool x_forwarded_for = false;    // add the client's address to every relayed request head
  uint32_t cache_mb = 0;
  std::string metrics;
  std::vector<Ipv4Prefix> metrics_allow;  // as in FrontendSection
  uint32_t upstream_timeout_ms = 2000;  // connect timeout to the upstream: 504 after it
  // One line per request this back-end answers (built-in server), the ones a
  // connection brought here by a move included; empty = off.
  std::string access_log;
  // "dr" or "tunnel"; the cluster's forward when the table does not say (Config::load
  // fills it in). tunnel(): reached by IPIP through routers (docs/tunnel.md).
  std::string forward;
  bool tunnel() const { return forward == "tunnel"; }
  // A CARD [[node]] only: the interface the node receives clients on (its datapath).
  std::string interface;
  int line = 0;
};

struct RuleSection {
  std::string name;
  std::string method, host, path;                 // regexes, empty = any
  std::map<std::string, std::string> headers;     // header name -> regex
  std::map<std::string, std::string> cookies;     // cookie name -> regex
  std::string group;
  std::string policy = "round-robin";             // lard | least-conn | round-robin | hash
  // hash: what is hashed. "path" (default), "url" (path+query), "host", "client"
  // (client address), "header:NAME" or "cookie:NAME".
  std::string hash_key = "path";
  // lard (Pai et al. 1998): a target stays on its BE while that BE's load is under
  // lard_high; it moves to the least loaded BE when over lard_high and someone is
  // under lard_low, or when over 2*lard_high. Load = active connections.
  uint32_t lard_low = 25;
  uint32_t lard_high = 65;
  bool lard_replicate = false;   // LARD/R: a target may own a set of BEs
  int line = 0;
};

struct Config {
  std::string path;  // the file it came from
  ClusterSection cluster;
  FrontendSection frontend;
  // The servers: [[backend]] tables, or in a CARD file (card) its [[node]] tables, every
  // one of which also accepts clients and distributes (docs/card.md).
  std::vector<BackendSection> backends;
  bool card = false;
  std::vector<RuleSection> rules;
  // Every front-end: [frontend] first (index = priority: lower wins a cold start), then
  // the [[standby]] tables in file order. One entry when there is no standby.
  std::vector<FeMember> fe_members;

  const BackendSection* find_backend(const std::string& id) const;
  // This process runs as front-end `id` (`tcpha fe --id ID`): [frontend]'s identity
  // (id, address, interface) becomes that member's; its other keys stay. False when
  // no front-end has that id.
  bool run_as(const std::string& id);
  // This process's index in fe_members (its priority).
  size_t self_index() const;
};

struct LoadResult {
  std::optional<Config> config;     // set only when errors is empty
  std::vector<std::string> errors;  // each "FILE:LINE: message"
};

// Parses and fully validates the cluster file.
LoadResult load(const std::string& path);

}  // namespace tcpha::config
