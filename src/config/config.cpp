#include "config/config.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <re2/re2.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

#include "common/fd.hpp"
#include "common/net.hpp"
#include "config/toml_reader.hpp"

namespace tcpha::config {
namespace {

constexpr size_t kMinKeyBytes = 32;
// A key file is a few bytes of randomness; the cap stops a mistake such as
// key_file = "/dev/urandom" from reading forever.
constexpr size_t kMaxKeyBytes = 64 * 1024;
constexpr size_t kMaxClusterFileBytes = 4 * 1024 * 1024;

// Reads the whole file, refusing files larger than max. On failure returns false and
// sets why. `mode`, when given, receives the opened file's mode (no race with a
// separate stat of the path).
bool read_limited(const std::string& path, size_t max, std::string& out, std::string& why,
                  mode_t* mode = nullptr) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st;
  if (!fd.valid() || (mode && ::fstat(fd.get(), &st) != 0)) {
    why = std::strerror(errno);
    return false;
  }
  if (mode) *mode = st.st_mode;
  out.clear();
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      why = std::strerror(errno);
      return false;
    }
    if (n == 0) return true;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max) {
      why = "larger than " + std::to_string(max) + " bytes";
      return false;
    }
  }
}

bool valid_id(std::string_view s) {
  if (s.empty() || s.size() > 31) return false;
  return std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_' || c == '.' || c == '-';
  });
}

// An HTTP token (RFC 9110 section 5.6.2): what header and cookie names are made of.
bool is_token(std::string_view s) {
  static constexpr std::string_view kExtra = "!#$%&'*+-.^_`|~";
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || kExtra.find(static_cast<char>(c)) != std::string_view::npos;
  });
}

bool valid_ifname(std::string_view s) {
  if (s.empty() || s.size() >= IF_NAMESIZE || s == "." || s == "..") return false;
  return std::none_of(s.begin(), s.end(),
                      [](unsigned char c) { return c == '/' || c == ':' || std::isspace(c); });
}

// Addresses that can be assigned to an interface and connected to.
bool unicast(in_addr a) {
  uint32_t h = ntohl(a.s_addr);
  return h != 0 && h != 0xffffffffu && (h >> 28) != 0xe;
}

bool read_address(const TableReader& r, std::string_view key, Need need, std::string& text,
                  in_addr& addr) {
  auto s = r.string(key, need);
  if (!s) return false;
  auto a = parse_ipv4(*s);
  if (!a) {
    r.error(key, "'" + *s + "' is not an IPv4 address");
    return false;
  }
  if (!unicast(*a)) {
    r.error(key, "'" + *s + "' is not a unicast address");
    return false;
  }
  text = *s;
  addr = *a;
  return true;
}

// An IPv6 address a VIP can be: global or unique-local unicast (not unspecified,
// loopback, multicast, link-local or IPv4-mapped: none can be a service address that
// clients route to and the FE answers neighbour discovery for).
void read_address6(const TableReader& r, std::string_view key, std::string& text,
                   std::optional<in6_addr>& addr) {
  auto s = r.string(key);
  if (!s) return;
  auto a = parse_ipv6(*s);
  if (!a) {
    r.error(key, "'" + *s + "' is not an IPv6 address");
    return;
  }
  if (IN6_IS_ADDR_UNSPECIFIED(&*a) || IN6_IS_ADDR_LOOPBACK(&*a) || IN6_IS_ADDR_MULTICAST(&*a) ||
      IN6_IS_ADDR_LINKLOCAL(&*a) || IN6_IS_ADDR_V4MAPPED(&*a) || IN6_IS_ADDR_V4COMPAT(&*a)) {
    r.error(key, "'" + *s + "' is not a global or unique-local unicast IPv6 address");
    return;
  }
  text = *s;
  addr = *a;
}

void read_id(const TableReader& r, Need need, std::string& out) {
  auto s = r.string("id", need);
  if (!s) return;
  if (!valid_id(*s))
    r.error("id", "'" + *s + "' is not a valid id (1 to 31 of A-Z a-z 0-9 _ . -)");
  else
    out = *s;
}

// metrics = "ADDR:PORT" and metrics_allow = ["NET/LEN", ...]. The endpoint has no
// authentication, so one reachable from other hosts needs an explicit list of who may
// scrape it; a loopback one serves local scrapers only.
void read_metrics(const TableReader& r, std::string& out, std::vector<Ipv4Prefix>& allow) {
  if (const toml::array* list = r.array("metrics_allow")) {
    if (list->empty()) r.error("metrics_allow", "empty list; omit the key for loopback only");
    for (const toml::node& n : *list) {
      std::optional<Ipv4Prefix> p;
      if (n.is_string()) p = parse_ipv4_prefix(n.as_string()->get());
      if (p)
        allow.push_back(*p);
      else
        r.error_at(n, "metrics_allow",
                   n.is_string() ? "'" + n.as_string()->get() +
                                       "' is not an IPv4 network (\"10.0.0.0/8\", or an address)"
                                 : "expected strings, got " + std::string(kind_of(n)));
    }
    if (!r.has("metrics")) r.error("metrics_allow", "applies only with metrics");
  }
  auto s = r.string("metrics");
  if (!s) return;
  auto sa = parse_host_port(*s);
  if (!sa) {
    r.error("metrics", "'" + *s + "' is not ADDR:PORT (e.g. \"127.0.0.1:9180\")");
    return;
  }
  if (!is_loopback(sa->sin_addr) && !r.has("metrics_allow"))
    r.error("metrics", "'" + *s +
                           "' is reachable from other hosts and the endpoint has no "
                           "authentication: bind it to 127.0.0.1, or list who may scrape it "
                           "(metrics_allow = [\"10.0.0.0/8\"])");
  out = *s;
}

void check_regex(const TableReader& r, const toml::node& n, std::string_view key,
                 const std::string& pattern) {
  if (pattern.empty()) {
    r.error_at(n, key, "empty regular expression; omit the key to match anything");
    return;
  }
  RE2::Options opt;
  opt.set_log_errors(false);
  RE2 re(pattern, opt);
  if (!re.ok()) r.error_at(n, key, "bad regular expression: " + re.error());
}

void read_regex(const TableReader& r, std::string_view key, std::string& out) {
  auto s = r.string(key);
  if (!s) return;
  check_regex(r, *r.table().get(key), key, *s);
  out = *s;
}

// header = { "X-Tenant" = '...' } and cookie = { session = '...' }: name -> regex.
void read_regex_map(const TableReader& r, std::string_view key,
                    std::map<std::string, std::string>& out) {
  const toml::table* t = r.subtable(key);
  if (!t) return;
  if (t->empty()) r.error(key, "empty table; omit the key to match anything");
  for (auto&& [name, value] : *t) {
    std::string label = std::string(key) + "." + std::string(name.str());
    if (!is_token(name.str())) {
      r.error_at(value, label,
                 "'" + std::string(name.str()) + "' is not a valid " + std::string(key) + " name");
    } else if (!value.is_string()) {
      r.error_at(value, label, "expected a string, got " + std::string(kind_of(value)));
    } else {
      check_regex(r, value, label, value.as_string()->get());
      out[std::string(name.str())] = value.as_string()->get();
    }
  }
}

void read_ports(const TableReader& r, const toml::array& ports, std::vector<uint16_t>& out) {
  if (ports.empty()) r.error("ports", "list at least one port");
  for (const toml::node& p : ports) {
    if (!p.is_integer()) {
      r.error_at(p, "ports", "expected integers, got " + std::string(kind_of(p)));
      continue;
    }
    int64_t v = p.as_integer()->get();
    if (v < 1 || v > 65535)
      r.error_at(p, "ports", std::to_string(v) + " is out of range 1..65535");
    else if (std::find(out.begin(), out.end(), v) != out.end())
      r.error_at(p, "ports", "port " + std::to_string(v) + " is listed twice");
    else
      out.push_back(static_cast<uint16_t>(v));
  }
}

// The key actually used is a BLAKE2b hash of the file, so any file of enough random
// bytes works, whatever its length or encoding.
void read_key(const TableReader& r, const std::string& cluster_path, const std::string& name,
              ClusterSection& c) {
  if (name.empty()) {
    r.error("key_file", "empty path");
    return;
  }
  std::filesystem::path p(name);
  if (p.is_relative()) p = std::filesystem::path(cluster_path).parent_path() / p;
  c.key_file = p.string();
  const std::string hint =
      " (make one with: (umask 077; head -c 32 /dev/urandom > " + c.key_file + "))";
  std::string bytes, why;
  mode_t mode = 0;
  if (!read_limited(c.key_file, kMaxKeyBytes, bytes, why, &mode)) {
    r.error("key_file", "cannot read '" + c.key_file + "': " + why + hint);
    return;
  }
  // Like ssh with a private key: a secret others can read (or replace) is no secret.
  if ((mode & 077) != 0) {
    char octal[8];
    std::snprintf(octal, sizeof octal, "%04o", static_cast<unsigned>(mode & 07777));
    r.error("key_file", "'" + c.key_file + "' has mode " + octal +
                            ": group or others may access it; the cluster key must be "
                            "readable by its owner only (chmod 600 " + c.key_file + ")");
    return;
  }
  if (bytes.size() < kMinKeyBytes) {
    r.error("key_file", "'" + c.key_file + "' holds " + std::to_string(bytes.size()) +
                            " bytes, at least " + std::to_string(kMinKeyBytes) + " are needed" +
                            hint);
    return;
  }
  static const bool sodium_ok = sodium_init() >= 0;
  if (!sodium_ok) {
    r.error("key_file", "libsodium failed to initialise");
    return;
  }
  c.key.resize(crypto_generichash_BYTES);
  crypto_generichash(c.key.data(), c.key.size(), reinterpret_cast<const uint8_t*>(bytes.data()),
                     bytes.size(), nullptr, 0);
}

void read_cluster(const TableReader& r, const std::string& path, ClusterSection& c) {
  r.allow_only({"vip", "vip6", "ports", "key_file", "forward", "control_port", "heartbeat_ms",
                "dead_after_ms", "keepalive_timeout_ms", "send_timeout_ms", "failover"});
  read_address(r, "vip", Need::required, c.vip, c.vip_addr);
  read_address6(r, "vip6", c.vip6, c.vip6_addr);
  if (const toml::array* ports = r.array("ports", Need::required)) read_ports(r, *ports, c.ports);
  if (auto f = r.string("forward")) {
    if (*f == "dr" || *f == "tunnel")
      c.forward = *f;
    else
      r.error("forward", "'" + *f + "' is not \"dr\" or \"tunnel\"");
  }
  if (auto f = r.string("failover")) {
    if (*f == "ring" || *f == "off")
      c.failover = *f == "ring";
    else
      r.error("failover", "'" + *f + "' is not \"ring\" or \"off\"");
  }
  r.number("control_port", 1, 65535, c.control_port);
  // Failover wants a dead back-end detected within 300 ms (docs/failover.md): its
  // defaults are a 50 ms heartbeat and 250 ms of silence.
  if (c.failover) {
    c.heartbeat_ms = 50;
    c.dead_after_ms = 250;
  }
  r.number("heartbeat_ms", 10, 60000, c.heartbeat_ms);
  r.number("dead_after_ms", 20, 600000, c.dead_after_ms);
  r.number("keepalive_timeout_ms", 10, 3600000, c.keepalive_timeout_ms);
  r.number("send_timeout_ms", 10, 3600000, c.send_timeout_ms);
  if (c.dead_after_ms < 2 * c.heartbeat_ms)
    r.error(r.has("dead_after_ms") ? "dead_after_ms" : "heartbeat_ms",
            "dead_after_ms must be at least twice heartbeat_ms, or one late heartbeat marks a "
            "healthy back-end down");
  if (auto kf = r.string("key_file", Need::required)) read_key(r, path, *kf, c);
}

void read_groups(const TableReader& r, std::vector<std::string>& out) {
  const toml::array* groups = r.array("groups");
  if (!groups) return;
  for (const toml::node& g : *groups) {
    if (!g.is_string() || g.as_string()->get().empty())
      r.error_at(g, "groups",
                 "expected non-empty strings, got " +
                     (g.is_string() ? "\"\"" : std::string(kind_of(g))));
    else
      out.push_back(g.as_string()->get());
  }
}

void read_frontend(const TableReader& r, FrontendSection& f) {
  r.allow_only({"id", "address", "interface", "metrics", "metrics_allow", "workers",
                "header_timeout_ms", "max_header_bytes", "handoff_timeout_ms", "max_flows",
                "max_flows_per_client", "flow_linger_ms", "flow_idle_s", "stop_timeout_s", "groups", "docroot",
                "access_log"});
  f.line = r.line();
  read_id(r, Need::optional, f.id);
  read_address(r, "address", Need::required, f.address, f.addr);
  if (auto i = r.string("interface", Need::required)) {
    if (valid_ifname(*i))
      f.interface = *i;
    else
      r.error("interface", "'" + *i + "' is not a valid interface name");
  }
  read_metrics(r, f.metrics, f.metrics_allow);
  r.number("workers", 0, 256, f.workers);
  r.number("header_timeout_ms", 1, 600000, f.header_timeout_ms);
  r.number("max_header_bytes", 1024, 1048576, f.max_header_bytes);
  r.number("handoff_timeout_ms", 1, 60000, f.handoff_timeout_ms);
  r.number("max_flows", 16, 16777216, f.max_flows);
  if (auto v = r.integer("max_flows_per_client", 1, 16777216)) {
    f.max_flows_per_client = static_cast<uint32_t>(*v);
    if (f.max_flows_per_client > f.max_flows)
      r.error("max_flows_per_client",
              std::to_string(*v) + " is above max_flows (" + std::to_string(f.max_flows) +
                  "): one client address could fill the flow table");
  } else if (!r.has("max_flows_per_client")) {
    f.max_flows_per_client = std::min(f.max_flows_per_client, f.max_flows);
  }
  r.number("flow_linger_ms", 1, 600000, f.flow_linger_ms);
  r.number("flow_idle_s", 1, 7 * 86400, f.flow_idle_s);
  r.number("stop_timeout_s", 0, 86400, f.stop_timeout_s);
  read_groups(r, f.groups);
  if (auto d = r.string("docroot")) {
    if (d->empty())
      r.error("docroot", "empty path");
    else
      f.docroot = *d;
  }
  if (!f.groups.empty() && f.docroot.empty())
    r.error("groups", "a front-end in groups serves them itself (local node): set docroot too");
  if (auto a = r.string("access_log")) f.access_log = *a;
}

// A [[backend]], or a CARD [[node]] (node: the keys of a backend plus interface).
void read_backend(const TableReader& r, BackendSection& b, bool node = false) {
  std::vector<std::string_view> keys = {"id", "address", "weight", "groups", "docroot", "upstream",
                                        "proxy_protocol", "x_forwarded_for", "cache_mb", "metrics",
                                        "metrics_allow", "upstream_timeout_ms", "access_log",
                                        "forward"};
  if (node) keys.push_back("interface");
  r.allow_only(keys);
  b.line = r.line();
  if (node) {
    if (auto i = r.string("interface", Need::required)) {
      if (i->empty() || i->size() >= 16)
        r.error("interface", "'" + *i + "' is not an interface name");
      else
        b.interface = *i;
    }
  }
  if (auto f = r.string("forward")) {
    if (*f == "dr" || *f == "tunnel")
      b.forward = *f;
    else
      r.error("forward", "'" + *f + "' is not \"dr\" or \"tunnel\"");
  }
  read_id(r, Need::required, b.id);
  read_address(r, "address", Need::required, b.address, b.addr);
  r.number("weight", 1, 1000, b.weight);
  read_groups(r, b.groups);
  auto docroot = r.string("docroot");
  auto upstream = r.string("upstream");
  if (r.has("docroot") == r.has("upstream"))
    r.error(r.has("docroot") ? "upstream" : "docroot",
            "set exactly one of docroot (built-in server) and upstream (local HTTP server)");
  if (docroot && docroot->empty()) r.error("docroot", "empty path");
  if (docroot && !docroot->empty()) b.docroot = *docroot;
  if (upstream && !parse_socket_address(*upstream))
    r.error("upstream",
            "'" + *upstream + "' is neither HOST:PORT with an IPv4 host nor unix:/ABSOLUTE/PATH");
  else if (upstream)
    b.upstream = *upstream;
  if (auto pp = r.integer("proxy_protocol", 0, 2)) {
    if (*pp == 1)
      r.error("proxy_protocol", "only 0 (off) and 2 (PROXY v2) are supported");
    else if (*pp != 0 && !r.has("upstream"))
      r.error("proxy_protocol", "needs upstream: it applies to the relay to a local server");
    else
      b.proxy_protocol = static_cast<int>(*pp);
  }
  if (r.has("x_forwarded_for")) {
    if (auto* x = r.table().get("x_forwarded_for"); !x || !x->is_boolean())
      r.error("x_forwarded_for", "expected a boolean");
    else if (!r.has("upstream"))
      r.error("x_forwarded_for", "needs upstream: it applies to the relay to a local server");
    else
      b.x_forwarded_for = x->as_boolean()->get();
  }
  if (r.has("cache_mb") && r.has("upstream"))
    r.error("cache_mb", "applies only to the built-in server (docroot)");
  r.number("cache_mb", 0, 1048576, b.cache_mb);
  if (r.has("upstream_timeout_ms") && !r.has("upstream"))
    r.error("upstream_timeout_ms", "applies only to the relay to a local server (upstream)");
  r.number("upstream_timeout_ms", 1, 600000, b.upstream_timeout_ms);
  read_metrics(r, b.metrics, b.metrics_allow);
  if (auto a = r.string("access_log")) {
    if (a->empty()) r.error("access_log", "empty path");
    else if (r.has("upstream")) r.error("access_log", "applies only to the built-in server (docroot)");
    else b.access_log = *a;
  }
}

constexpr std::string_view kMatchKeys[] = {"method", "host", "path", "header", "cookie"};

void read_rule(const TableReader& r, RuleSection& rule) {
  r.allow_only({"name", "method", "host", "path", "header", "cookie", "group", "policy",
                "hash_key", "lard_low", "lard_high", "lard_replicate"});
  rule.line = r.line();
  if (auto n = r.string("name")) {
    if (n->empty())
      r.error("name", "empty name; omit the key instead");
    else
      rule.name = *n;
  }
  read_regex(r, "method", rule.method);
  read_regex(r, "host", rule.host);
  read_regex(r, "path", rule.path);
  read_regex_map(r, "header", rule.headers);
  read_regex_map(r, "cookie", rule.cookies);
  if (auto g = r.string("group", Need::required)) {
    if (g->empty())
      r.error("group", "empty group name");
    else
      rule.group = *g;
  }
  if (auto p = r.string("policy")) {
    if (*p == "lard" || *p == "least-conn" || *p == "round-robin" || *p == "hash")
      rule.policy = *p;
    else
      r.error("policy", "'" + *p + "' is not one of lard, least-conn, round-robin, hash");
  }
  if (auto k = r.string("hash_key")) {
    bool named = (k->rfind("header:", 0) == 0 && k->size() > 7) ||
                 (k->rfind("cookie:", 0) == 0 && k->size() > 7);
    if (rule.policy != "hash")
      r.error("hash_key", "applies only to policy = \"hash\"");
    else if (*k == "path" || *k == "url" || *k == "host" || *k == "client" || named)
      rule.hash_key = *k;
    else
      r.error("hash_key", "'" + *k + "' is not path, url, host, client, header:NAME or cookie:NAME");
  }
  for (std::string_view k : {"lard_low", "lard_high", "lard_replicate"})
    if (r.has(k) && rule.policy != "lard")
      r.error(k, "applies only to policy = \"lard\"");
  r.number("lard_low", 0, 1000000, rule.lard_low);
  r.number("lard_high", 1, 1000000, rule.lard_high);
  if (rule.lard_low >= rule.lard_high)
    r.error(r.has("lard_low") ? "lard_low" : "lard_high", "lard_low must be below lard_high");
  if (r.has("lard_replicate")) {
    if (auto* b = r.table().get("lard_replicate"); b && b->is_boolean())
      rule.lard_replicate = b->as_boolean()->get();
    else
      r.error("lard_replicate", "expected a boolean");
  }
}

// A top-level entry that must be a table ([cluster]) or an array of tables ([[backend]]).
const toml::node* top_level(const toml::table& doc, std::string_view key, bool array_of_tables,
                            Diagnostics& d) {
  const toml::node* n = doc.get(key);
  if (!n) return nullptr;
  std::string k(key);
  bool ok = array_of_tables ? n->is_array_of_tables() : n->is_table();
  if (!ok) {
    d.add(line_of(*n), array_of_tables ? k + " must be an array of tables: write [[" + k +
                                             "]], got " + std::string(kind_of(*n))
                                       : k + " must be a table: write [" + k + "], got " +
                                             std::string(kind_of(*n)));
    return nullptr;
  }
  return n;
}

// The tables each section was read from, for checks that span sections.
struct Sources {
  const toml::table* frontend = nullptr;
  std::vector<const toml::table*> backends, rules;
};

// Line of key in t, or of t itself when the key is absent.
int key_line(const toml::table& t, std::string_view key) {
  const toml::node* n = t.get(key);
  return n ? line_of(*n) : line_of(t);
}

// Checks that need the whole file: uniqueness, references between sections.
void cross_check(const Config& c, const Sources& src, Diagnostics& d) {
  const uint32_t vip = c.cluster.vip_addr.s_addr;
  std::map<std::string, int> ids;  // id -> line of first use
  // A failed back-end's packets go to its backups by MAC rewrite on the shared segment
  // (docs/failover.md; docs/tunnel.md, "Limits"), which does not cross a router.
  if (c.cluster.failover)
    for (const auto& b : c.backends)
      if (b.tunnel()) {
        d.add(b.line, "[backend] forward: '" + b.id + "' is reached by tunnel, and failover = " +
                          "\"ring\" needs every back-end on the front-end's segment (forward = " +
                          "\"dr\"): a failed back-end's packets go to its backup by MAC rewrite");
        break;
      }
  if (src.frontend) {
    ids[c.frontend.id] = key_line(*src.frontend, "id");
    if (c.frontend.addr.s_addr != 0 && c.frontend.addr.s_addr == vip)
      d.add(key_line(*src.frontend, "address"), "[frontend] address: " + c.frontend.address +
                                                    " is the VIP; use the node's own address");
    // A back-end serves a handed-off connection under a lease that counts from its last
    // heartbeat the sender heard and lasts handoff_timeout_ms (docs/design.md,
    // "Handoff"): with heartbeats as far apart as the timeout, every lease would be
    // over before its HANDOFF arrives.
    if (c.frontend.handoff_timeout_ms < 2 * c.cluster.heartbeat_ms) {
      d.add(key_line(*src.frontend, "handoff_timeout_ms"),
            "[frontend] handoff_timeout_ms: " + std::to_string(c.frontend.handoff_timeout_ms) +
                " must be at least twice [cluster] heartbeat_ms (" +
                std::to_string(c.cluster.heartbeat_ms) +
                "): a back-end's lease on a handoff counts from its last heartbeat");
    }
  }
  std::map<uint32_t, int> addrs;  // backend address -> line of first use
  std::set<std::string> groups;
  const std::string sect = c.card ? "[node]" : "[backend]";
  for (size_t i = 0; i < c.backends.size(); ++i) {
    const BackendSection& b = c.backends[i];
    if (!b.id.empty()) {
      int line = key_line(*src.backends[i], "id");
      auto [it, fresh] = ids.emplace(b.id, line);
      if (!fresh)
        d.add(line,
              sect + " id: '" + b.id + "' is already used at line " + std::to_string(it->second));
    }
    if (b.addr.s_addr != 0) {
      int line = key_line(*src.backends[i], "address");
      auto [it, fresh] = addrs.emplace(b.addr.s_addr, line);
      if (!fresh)
        d.add(line, sect + " address: " + b.address + " is already used by the " +
                        (c.card ? "node" : "backend") + " at line " +
                        std::to_string(it->second));
      if (b.addr.s_addr == vip)
        d.add(line, sect + " address: " + b.address + " is the VIP; use the node's own address");
    }
    groups.insert(b.groups.begin(), b.groups.end());
  }
  groups.insert(c.frontend.groups.begin(), c.frontend.groups.end());

  std::map<std::string, int> names;
  int catch_all_line = 0;
  for (size_t i = 0; i < c.rules.size(); ++i) {
    const RuleSection& rule = c.rules[i];
    const toml::table& t = *src.rules[i];
    if (catch_all_line != 0)
      d.add(rule.line, "[rule] is unreachable: the rule at line " + std::to_string(catch_all_line) +
                           " has no match fields and matches every request");
    bool matches_all = std::none_of(std::begin(kMatchKeys), std::end(kMatchKeys),
                                    [&](std::string_view k) { return t.contains(k); });
    if (matches_all && catch_all_line == 0) catch_all_line = rule.line;
    if (!rule.group.empty() && !groups.count(rule.group))
      d.add(key_line(t, "group"), std::string("[rule] group: no ") + (c.card ? "node" : "backend") +
                                      " is in group '" + rule.group + "'");
    if (!rule.name.empty()) {
      auto [it, fresh] = names.emplace(rule.name, key_line(t, "name"));
      if (!fresh)
        d.add(key_line(t, "name"), "[rule] name: '" + rule.name + "' is already used at line " +
                                       std::to_string(it->second));
    }
  }
}

}  // namespace

bool Config::run_as(const std::string& id) {
  for (const auto& m : fe_members) {
    if (m.id != id) continue;
    frontend.id = m.id;
    frontend.address = m.address;
    frontend.addr = m.addr;
    frontend.interface = m.interface;
    return true;
  }
  return false;
}

size_t Config::self_index() const {
  for (size_t i = 0; i < fe_members.size(); ++i)
    if (fe_members[i].id == frontend.id) return i;
  return 0;
}

const BackendSection* Config::find_backend(const std::string& id) const {
  for (const auto& b : backends)
    if (b.id == id) return &b;
  return nullptr;
}

LoadResult load(const std::string& path) {
  Diagnostics d(path);
  LoadResult result;
  // Read here rather than with toml::parse_file: that one parses a directory as an
  // empty document and gives no errno when the file cannot be opened.
  std::string text, why;
  if (!read_limited(path, kMaxClusterFileBytes, text, why)) {
    d.add(1, "cannot read cluster file: " + why);
    result.errors = d.lines();
    return result;
  }
  toml::table doc;
  try {
    doc = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    d.add(std::max(1, static_cast<int>(e.source().begin.line)), std::string(e.description()));
    result.errors = d.lines();
    return result;
  }

  Config c;
  c.path = path;
  for (auto&& [k, v] : doc) {
    std::string_view key = k.str();
    if (key == "cluster" || key == "frontend" || key == "backend" || key == "rule" ||
        key == "standby" || key == "node")
      continue;
    if (v.is_table() || v.is_array_of_tables())
      d.add(line_of(v), "unknown table [" + std::string(key) + "]");
    else
      d.add(line_of(v), "unknown key '" + std::string(key) + "' at top level");
  }

  if (auto* n = top_level(doc, "cluster", false, d))
    read_cluster(TableReader(*n->as_table(), "[cluster]", d), path, c.cluster);
  else if (!doc.contains("cluster"))
    d.add(1, "missing [cluster] table");

  Sources src;
  // CARD (seed 001, docs/card.md): [[node]] tables instead of a front-end and back-ends;
  // every node distributes and serves.
  c.card = doc.contains("node");
  if (c.card) {
    for (std::string_view other : {"frontend", "backend", "standby"})
      if (const toml::node* n = doc.get(other))
        d.add(line_of(*n), "[" + std::string(other) + "] in a file with [[node]] tables: a CARD " +
                               "cluster has no front-end; every node distributes and serves");
    if (c.cluster.failover)
      d.add(1, "[cluster] failover: \"ring\" is not supported with [[node]] tables (a CARD "
               "node's connections are not backed up)");
    if (!c.cluster.vip6.empty())
      d.add(1, "[cluster] vip6: IPv6 is not supported with [[node]] tables yet");
    if (auto* n = top_level(doc, "node", true, d)) {
      for (const toml::node& t : *n->as_array()) {
        src.backends.push_back(t.as_table());
        read_backend(TableReader(*t.as_table(), "[node]", d), c.backends.emplace_back(), true);
      }
    }
  } else if (auto* n = top_level(doc, "frontend", false, d)) {
    src.frontend = n->as_table();
    read_frontend(TableReader(*src.frontend, "[frontend]", d), c.frontend);
  } else if (!doc.contains("frontend")) {
    d.add(1, "missing [frontend] table");
  }

  if (auto* n = c.card ? nullptr : top_level(doc, "backend", true, d)) {
    for (const toml::node& t : *n->as_array()) {
      src.backends.push_back(t.as_table());
      read_backend(TableReader(*t.as_table(), "[backend]", d), c.backends.emplace_back());
    }
  }
  if (c.backends.empty() && !doc.contains("backend") && !c.card)
    d.add(1, "no [[backend]] table: at least one backend is required");
  for (auto& b : c.backends)
    if (b.forward.empty()) b.forward = c.cluster.forward;

  if (!c.card)
    c.fe_members.push_back({c.frontend.id, c.frontend.address, c.frontend.addr,
                            c.frontend.interface, c.frontend.line});
  if (auto* n = c.card ? nullptr : top_level(doc, "standby", true, d)) {
    for (const toml::node& t : *n->as_array()) {
      TableReader r(*t.as_table(), "[standby]", d);
      r.allow_only({"id", "address", "interface"});
      FeMember m;
      m.line = r.line();
      read_id(r, Need::required, m.id);
      read_address(r, "address", Need::required, m.address, m.addr);
      if (auto i = r.string("interface", Need::required)) {
        if (i->empty() || i->size() >= 16)
          r.error("interface", "'" + *i + "' is not an interface name");
        else
          m.interface = *i;
      }
      for (const auto& o : c.fe_members) {
        if (!m.id.empty() && o.id == m.id)
          d.add(m.line, "[standby] id: '" + m.id + "' is already a front-end's (line " +
                            std::to_string(o.line) + ")");
        if (m.addr.s_addr != 0 && o.addr.s_addr == m.addr.s_addr)
          d.add(m.line, "[standby] address: " + m.address + " is already a front-end's (line " +
                            std::to_string(o.line) + ")");
      }
      for (const auto& b : c.backends) {
        if (!m.id.empty() && b.id == m.id)
          d.add(m.line, "[standby] id: '" + m.id + "' is a backend's (line " + std::to_string(b.line) + ")");
        if (m.addr.s_addr != 0 && b.addr.s_addr == m.addr.s_addr)
          d.add(m.line, "[standby] address: " + m.address + " is a backend's (line " +
                            std::to_string(b.line) + ")");
      }
      if (m.addr.s_addr != 0 && m.addr.s_addr == c.cluster.vip_addr.s_addr)
        d.add(m.line, "[standby] address: " + m.address + " is the VIP; use the node's own address");
      c.fe_members.push_back(std::move(m));
    }
  }

  // With no [[rule]] at all the config is still complete: the front-end then spreads
  // requests round-robin over all backends.
  if (auto* n = top_level(doc, "rule", true, d)) {
    for (const toml::node& t : *n->as_array()) {
      src.rules.push_back(t.as_table());
      read_rule(TableReader(*t.as_table(), "[rule]", d), c.rules.emplace_back());
    }
  }
  cross_check(c, src, d);

  result.errors = d.lines();
  if (result.errors.empty()) result.config = std::move(c);
  return result;
}

}  // namespace tcpha::config
