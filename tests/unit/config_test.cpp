#include "config/config.hpp"
#include "config_fixture.hpp"

#include <gtest/gtest.h>
#include <sodium.h>
#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;
using tcpha::config::load;
using tcpha::config::LoadResult;

using tcpha::testing::ConfigDir;
using tcpha::testing::joined;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<uint8_t> blake2b_32(const std::string& bytes) {
  EXPECT_GE(sodium_init(), 0);
  std::vector<uint8_t> out(32);
  crypto_generichash(out.data(), out.size(), reinterpret_cast<const uint8_t*>(bytes.data()),
                     bytes.size(), nullptr, 0);
  return out;
}



TEST(Config, InterfaceExampleLoads) {
  const std::string path = tcpha::testing::example_config();
  const std::string key_path = fs::path(path).parent_path() / "cluster.key";
  LoadResult r = load(path);
  ASSERT_TRUE(r.errors.empty()) << joined(r);
  ASSERT_TRUE(r.config);
  const auto& c = *r.config;
  EXPECT_EQ(c.path, path);
  EXPECT_EQ(c.cluster.vip, "10.0.0.10");
  EXPECT_EQ(c.cluster.vip_addr.s_addr, htonl(0x0a00000a));
  EXPECT_EQ(c.cluster.ports, std::vector<uint16_t>{80});
  EXPECT_EQ(c.cluster.forward, "dr");
  EXPECT_EQ(c.cluster.control_port, 7400);
  EXPECT_FALSE(c.cluster.failover);  // "off" until make bench measures its cost (docs/failover.md)
  EXPECT_EQ(c.cluster.key_file, key_path);
  EXPECT_EQ(c.cluster.key, blake2b_32(slurp(TCPHA_TEST_DATA "/config/cluster.key")));

  EXPECT_EQ(c.frontend.id, "fe");
  EXPECT_EQ(c.frontend.address, "10.0.0.1");
  EXPECT_EQ(c.frontend.addr.s_addr, htonl(0x0a000001));
  EXPECT_EQ(c.frontend.interface, "eth0");
  EXPECT_EQ(c.frontend.metrics, "");
  EXPECT_TRUE(c.frontend.metrics_allow.empty());
  EXPECT_EQ(c.frontend.max_header_bytes, 16384u);
  EXPECT_EQ(c.frontend.max_flows_per_client, 1024u);
  EXPECT_EQ(c.frontend.stop_timeout_s, 30u);
  EXPECT_EQ(c.frontend.line, 7);

  ASSERT_EQ(c.backends.size(), 1u);
  const auto& b = c.backends[0];
  EXPECT_EQ(b.id, "be1");
  EXPECT_EQ(b.address, "10.0.0.11");
  EXPECT_EQ(b.weight, 1u);
  EXPECT_EQ(b.groups, (std::vector<std::string>{"static", "images"}));
  EXPECT_EQ(b.docroot, "/srv/be1");
  EXPECT_EQ(b.upstream, "");
  EXPECT_FALSE(b.x_forwarded_for);
  EXPECT_EQ(b.proxy_protocol, 0);
  EXPECT_EQ(b.line, 13);
  EXPECT_EQ(c.find_backend("be1"), &b);
  EXPECT_EQ(c.find_backend("fe"), nullptr);
  EXPECT_EQ(c.find_backend("be2"), nullptr);

  ASSERT_EQ(c.rules.size(), 2u);
  EXPECT_EQ(c.rules[0].name, "images");
  EXPECT_EQ(c.rules[0].path, R"(\.(png|jpe?g|gif|webp)$)");
  EXPECT_EQ(c.rules[0].group, "images");
  EXPECT_EQ(c.rules[0].policy, "lard");
  EXPECT_EQ(c.rules[0].line, 24);
  EXPECT_EQ(c.rules[1].name, "");
  EXPECT_TRUE(c.rules[1].path.empty());
  EXPECT_EQ(c.rules[1].group, "static");
  EXPECT_EQ(c.rules[1].policy, "least-conn");
}

TEST_F(ConfigDir, EveryOptionalKeyIsRead) {
  auto path = write("all.toml", R"([cluster]
vip = "192.168.1.10"
ports = [80, 8080]
key_file = "cluster.key"
forward = "dr"
control_port = 7500
failover = "ring"

[frontend]
id = "dispatcher"
address = "192.168.1.1"
interface = "veth-fe"
metrics = "127.0.0.1:9180"
workers = 4
header_timeout_ms = 2000
max_header_bytes = 8192
handoff_timeout_ms = 250
max_flows = 1024
max_flows_per_client = 64
flow_linger_ms = 100
flow_idle_s = 60
stop_timeout_s = 0

[[backend]]
id = "app-1"
address = "192.168.2.11"
weight = 1000
groups = ["api"]
upstream = "127.0.0.1:8080"
proxy_protocol = 2
metrics = "0.0.0.0:9181"
metrics_allow = ["10.1.0.0/16", "192.0.2.7", "127.0.0.1"]

[[backend]]
id = "static.2"
address = "192.168.2.12"
docroot = "/srv/www"
cache_mb = 256
access_log = "/var/log/tcpha/static2.log"

[[rule]]
name = "api"
method = '^(GET|POST)$'
host = '^api\.'
header = { "X-Tenant" = '^t[0-9]+$' }
cookie = { session = '.+' }
group = "api"
policy = "hash"
)");
  LoadResult r = load(path);
  ASSERT_TRUE(r.errors.empty()) << joined(r);
  const auto& c = *r.config;
  EXPECT_EQ(c.cluster.ports, (std::vector<uint16_t>{80, 8080}));
  EXPECT_EQ(c.cluster.forward, "dr");
  EXPECT_EQ(c.cluster.control_port, 7500);
  EXPECT_TRUE(c.cluster.failover);
  EXPECT_EQ(c.cluster.heartbeat_ms, 50u);  // failover's defaults
  EXPECT_EQ(c.cluster.dead_after_ms, 250u);
  EXPECT_EQ(c.cluster.key, blake2b_32(std::string(40, 'k')));
  EXPECT_EQ(c.frontend.id, "dispatcher");
  EXPECT_EQ(c.frontend.metrics, "127.0.0.1:9180");
  EXPECT_EQ(c.frontend.workers, 4u);
  EXPECT_EQ(c.frontend.header_timeout_ms, 2000u);
  EXPECT_EQ(c.frontend.max_header_bytes, 8192u);
  EXPECT_EQ(c.frontend.handoff_timeout_ms, 250u);
  EXPECT_EQ(c.frontend.max_flows, 1024u);
  EXPECT_EQ(c.frontend.max_flows_per_client, 64u);
  EXPECT_EQ(c.frontend.flow_linger_ms, 100u);
  EXPECT_EQ(c.frontend.flow_idle_s, 60u);
  EXPECT_EQ(c.frontend.stop_timeout_s, 0u);
  ASSERT_EQ(c.backends.size(), 2u);
  EXPECT_EQ(c.backends[0].weight, 1000u);
  EXPECT_EQ(c.backends[0].upstream, "127.0.0.1:8080");
  EXPECT_EQ(c.backends[0].proxy_protocol, 2);
  EXPECT_EQ(c.backends[0].metrics, "0.0.0.0:9181");
  ASSERT_EQ(c.backends[0].metrics_allow.size(), 3u);
  EXPECT_TRUE(c.backends[0].metrics_allow[0].contains(*tcpha::parse_ipv4("10.1.200.3")));
  EXPECT_FALSE(c.backends[0].metrics_allow[0].contains(*tcpha::parse_ipv4("10.2.0.1")));
  EXPECT_EQ(c.backends[0].metrics_allow[1].length, 32);
  EXPECT_TRUE(c.backends[1].metrics_allow.empty());
  EXPECT_EQ(c.backends[1].docroot, "/srv/www");
  EXPECT_EQ(c.backends[1].cache_mb, 256u);
  EXPECT_EQ(c.backends[1].access_log, "/var/log/tcpha/static2.log");
  EXPECT_TRUE(c.backends[0].access_log.empty());
  EXPECT_TRUE(c.backends[1].groups.empty());
  ASSERT_EQ(c.rules.size(), 1u);
  const auto& rule = c.rules[0];
  EXPECT_EQ(rule.method, "^(GET|POST)$");
  EXPECT_EQ(rule.host, R"(^api\.)");
  EXPECT_EQ(rule.headers, (std::map<std::string, std::string>{{"X-Tenant", "^t[0-9]+$"}}));
  EXPECT_EQ(rule.cookies, (std::map<std::string, std::string>{{"session", ".+"}}));
  EXPECT_EQ(rule.policy, "hash");
  EXPECT_EQ(c.find_backend("static.2"), &c.backends[1]);
}

// Without [[rule]] tables the file is complete: the FE round-robins over all backends.
TEST_F(ConfigDir, NoRulesIsValid) {
  auto path = write("norules.toml", R"([cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
[frontend]
address = "10.0.0.1"
interface = "eth0"
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
)");
  LoadResult r = load(path);
  ASSERT_TRUE(r.errors.empty()) << joined(r);
  EXPECT_TRUE(r.config->rules.empty());
  EXPECT_EQ(r.config->backends[0].weight, 1u);
}

// [cluster] vip6: an IPv6 VIP beside the IPv4 one; optional.
TEST_F(ConfigDir, Vip6IsParsed) {
  auto path = write("vip6.toml", R"([cluster]
vip = "10.0.0.10"
vip6 = "fd00:c8::10"
ports = [80]
key_file = "cluster.key"
[frontend]
address = "10.0.0.1"
interface = "eth0"
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
)");
  LoadResult r = load(path);
  ASSERT_TRUE(r.errors.empty()) << joined(r);
  EXPECT_EQ(r.config->cluster.vip6, "fd00:c8::10");
  ASSERT_TRUE(r.config->cluster.vip6_addr);
  in6_addr want{};
  inet_pton(AF_INET6, "fd00:c8::10", &want);
  EXPECT_EQ(std::memcmp(&*r.config->cluster.vip6_addr, &want, sizeof want), 0);
}

TEST_F(ConfigDir, Vip6IsOptional) {
  auto path = write("novip6.toml", R"([cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
[frontend]
address = "10.0.0.1"
interface = "eth0"
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
)");
  LoadResult r = load(path);
  ASSERT_TRUE(r.errors.empty()) << joined(r);
  EXPECT_TRUE(r.config->cluster.vip6.empty());
  EXPECT_FALSE(r.config->cluster.vip6_addr);
}

// The FE, the BE and `tcpha check` refuse a cluster key others may read or replace,
// as ssh refuses such a private key; the error names the mode and the fix.
TEST_F(ConfigDir, KeyFileMustBePrivate) {
  auto path = write("modes.toml", R"([cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
[frontend]
address = "10.0.0.1"
interface = "eth0"
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
)");
  const fs::path key = dir_ / "cluster.key";
  for (auto mode : {0640, 0644, 0604, 0660, 0606, 0620, 0602, 0610}) {
    ASSERT_EQ(::chmod(key.c_str(), mode), 0);
    LoadResult r = load(path);
    EXPECT_FALSE(r.config) << std::oct << mode;
    ASSERT_EQ(r.errors.size(), 1u) << joined(r);
    char octal[8];
    std::snprintf(octal, sizeof octal, "%04o", mode);
    EXPECT_EQ(r.errors[0], path + ":4: [cluster] key_file: '" + key.string() + "' has mode " +
                               octal +
                               ": group or others may access it; the cluster key must be "
                               "readable by its owner only (chmod 600 " + key.string() + ")");
  }
  for (auto mode : {0600, 0400}) {
    ASSERT_EQ(::chmod(key.c_str(), mode), 0);
    LoadResult r = load(path);
    EXPECT_TRUE(r.errors.empty()) << std::oct << mode << "\n" << joined(r);
  }
}

// A complete file whose last table is [frontend], ending at line 11: a test appends
// [frontend] keys from line 12 on.
const std::string kFrontendLast = R"([cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
[frontend]
address = "10.0.0.1"
interface = "eth0"
)";

// A metrics endpoint reachable from other hosts must say who may scrape it.
TEST_F(ConfigDir, MetricsOffLoopbackNeedsAnAllowList) {
  const std::string head = kFrontendLast;
  struct Case {
    const char* lines;
    const char* error;  // nullptr: valid
  } cases[] = {
      {"metrics = \"127.0.0.1:9180\"", nullptr},
      {"metrics = \"127.0.0.53:9180\"", nullptr},
      {"metrics = \"10.0.0.1:9180\"",
       ":12: [frontend] metrics: '10.0.0.1:9180' is reachable from other hosts and the endpoint "
       "has no authentication: bind it to 127.0.0.1, or list who may scrape it (metrics_allow = "
       "[\"10.0.0.0/8\"])"},
      {"metrics = \"0.0.0.0:9180\"", ":12: [frontend] metrics: '0.0.0.0:9180' is reachable"},
      {"metrics = \"0.0.0.0:9180\"\nmetrics_allow = [\"10.0.0.0/8\", \"192.0.2.1\"]", nullptr},
      {"metrics = \"127.0.0.1:9180\"\nmetrics_allow = [\"127.0.0.1\"]", nullptr},
      {"metrics = \"0.0.0.0:9180\"\nmetrics_allow = []",
       ":13: [frontend] metrics_allow: empty list; omit the key for loopback only"},
      {"metrics = \"0.0.0.0:9180\"\nmetrics_allow = [\"10.0.0.1/8\"]",
       ":13: [frontend] metrics_allow: '10.0.0.1/8' is not an IPv4 network"},
      {"metrics = \"0.0.0.0:9180\"\nmetrics_allow = [\"10.0.0.0/8\",\n  \"example.org\"]",
       ":14: [frontend] metrics_allow: 'example.org' is not an IPv4 network"},
      {"metrics = \"0.0.0.0:9180\"\nmetrics_allow = [10]",
       ":13: [frontend] metrics_allow: expected strings, got an integer"},
      {"metrics_allow = [\"10.0.0.0/8\"]",
       ":12: [frontend] metrics_allow: applies only with metrics"},
  };
  for (const auto& c : cases) {
    auto path = write("metrics.toml", head + c.lines + "\n");
    LoadResult r = load(path);
    if (!c.error) {
      EXPECT_TRUE(r.errors.empty()) << c.lines << "\n" << joined(r);
      continue;
    }
    ASSERT_EQ(r.errors.size(), 1u) << c.lines << "\n" << joined(r);
    EXPECT_EQ(r.errors[0].rfind(path + c.error, 0), 0u) << r.errors[0];
  }
  // [[backend]] metrics: the same rule.
  auto path = write("be_metrics.toml", head + "[[backend]]\nid = \"be2\"\naddress = \"10.0.0.12\"\n"
                                              "docroot = \"/srv\"\nmetrics = \"10.0.0.12:9181\"\n");
  LoadResult r = load(path);
  ASSERT_EQ(r.errors.size(), 1u) << joined(r);
  EXPECT_EQ(r.errors[0].rfind(path + ":16: [backend] metrics: '10.0.0.12:9181' is reachable", 0),
            0u)
      << r.errors[0];
}

// max_flows_per_client caps one client address's share of the flow table.
TEST_F(ConfigDir, MaxFlowsPerClient) {
  const std::string head = kFrontendLast;
  auto load_with = [&](const std::string& lines) {
    return load(write("flows.toml", head + lines + "\n"));
  };
  LoadResult r = load_with("");
  ASSERT_TRUE(r.config) << joined(r);
  EXPECT_EQ(r.config->frontend.max_flows_per_client, 1024u);  // the default
  r = load_with("max_flows = 100");
  ASSERT_TRUE(r.config) << joined(r);
  EXPECT_EQ(r.config->frontend.max_flows_per_client, 100u);  // clamped to the table
  r = load_with("max_flows_per_client = 5000");
  ASSERT_TRUE(r.config) << joined(r);
  EXPECT_EQ(r.config->frontend.max_flows_per_client, 5000u);
  r = load_with("max_flows = 100\nmax_flows_per_client = 101");
  ASSERT_EQ(r.errors.size(), 1u) << joined(r);
  EXPECT_NE(r.errors[0].find(":13: [frontend] max_flows_per_client: 101 is above max_flows (100)"),
            std::string::npos)
      << r.errors[0];
  for (const char* bad : {"max_flows_per_client = 0", "max_flows_per_client = -1",
                          "max_flows_per_client = \"10\""}) {
    r = load_with(bad);
    ASSERT_EQ(r.errors.size(), 1u) << bad << "\n" << joined(r);
    EXPECT_NE(r.errors[0].find(":12: [frontend] max_flows_per_client: "), std::string::npos)
        << r.errors[0];
  }
}

// forward: the cluster's default, overridden per back-end; DR and tunnel back-ends mix.
TEST_F(ConfigDir, ForwardIsTheClustersUnlessTheBackendSays) {
  const std::string head = R"([cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
forward = "tunnel"
[frontend]
address = "10.0.0.1"
interface = "eth0"
[[backend]]
id = "be1"
address = "10.0.1.11"
docroot = "/srv"
[[backend]]
id = "be2"
address = "10.0.0.12"
docroot = "/srv"
forward = "dr"
)";
  LoadResult r = load(write("tunnel.toml", head));
  ASSERT_TRUE(r.config) << joined(r);
  EXPECT_EQ(r.config->cluster.forward, "tunnel");
  EXPECT_TRUE(r.config->backends[0].tunnel());
  EXPECT_FALSE(r.config->backends[1].tunnel());
  EXPECT_EQ(r.config->backends[1].forward, "dr");
}

TEST_F(ConfigDir, UpstreamMayBeAUnixSocket) {
  auto path = write("unix.toml", R"([cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
[frontend]
address = "10.0.0.1"
interface = "eth0"
[[backend]]
id = "be1"
address = "10.0.0.11"
upstream = "unix:/run/nginx/tcpha.sock"
proxy_protocol = 2
x_forwarded_for = true
)");
  LoadResult r = load(path);
  ASSERT_TRUE(r.errors.empty()) << joined(r);
  EXPECT_EQ(r.config->backends[0].upstream, "unix:/run/nginx/tcpha.sock");
  EXPECT_EQ(r.config->backends[0].proxy_protocol, 2);
  EXPECT_TRUE(r.config->backends[0].x_forwarded_for);
}

TEST_F(ConfigDir, KeyFileIsRelativeToTheClusterFile) {
  write("site/keys/shared.key", std::string(32, 'x'));
  auto text = R"([cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "keys/shared.key"
[frontend]
address = "10.0.0.1"
interface = "eth0"
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
)";
  // Given as an absolute path.
  LoadResult r = load(write("site/cluster.toml", text));
  ASSERT_TRUE(r.errors.empty()) << joined(r);
  EXPECT_EQ(r.config->cluster.key_file, (dir_ / "site/keys/shared.key").string());
  EXPECT_EQ(r.config->cluster.key, blake2b_32(std::string(32, 'x')));

  // Given relative to the working directory, which is not the file's directory.
  auto old = fs::current_path();
  fs::current_path(dir_);
  r = load("site/cluster.toml");
  fs::current_path(old);
  ASSERT_TRUE(r.errors.empty()) << joined(r);
  EXPECT_EQ(r.config->cluster.key_file, "site/keys/shared.key");

  // An absolute key_file is used as it is.
  write("elsewhere.key", std::string(64, 'y'));
  std::string abs_key = (dir_ / "elsewhere.key").string();
  std::string t2 = text;
  t2.replace(t2.find("keys/shared.key"), 15, abs_key);
  r = load(write("site/abs.toml", t2));
  ASSERT_TRUE(r.errors.empty()) << joined(r);
  EXPECT_EQ(r.config->cluster.key_file, abs_key);
  EXPECT_EQ(r.config->cluster.key, blake2b_32(std::string(64, 'y')));
}

TEST_F(ConfigDir, AllErrorsAreReportedInFileOrder) {
  auto path = write("many.toml", R"([cluster]
vip = "10.0.0.10"
ports = [80, 80]
key_file = "cluster.key"
forward = "nat"
[frontend]
address = "10.0.0.1"
interface = "eth0"
workers = 1000
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
colour = "blue"
[[rule]]
path = '('
group = "nobody"
)");
  LoadResult r = load(path);
  EXPECT_FALSE(r.config);
  ASSERT_EQ(r.errors.size(), 6u) << joined(r);
  EXPECT_EQ(r.errors[0], path + ":3: [cluster] ports: port 80 is listed twice");
  EXPECT_EQ(r.errors[1], path + ":5: [cluster] forward: 'nat' is not \"dr\" or \"tunnel\"");
  EXPECT_EQ(r.errors[2], path + ":9: [frontend] workers: 1000 is out of range 0..256");
  EXPECT_EQ(r.errors[3], path + ":14: unknown key 'colour' in [backend]");
  EXPECT_EQ(r.errors[4], path + ":16: [rule] path: bad regular expression: missing ): (");
  EXPECT_EQ(r.errors[5], path + ":17: [rule] group: no backend is in group 'nobody'");
}

TEST_F(ConfigDir, UnreadableFile) {
  std::string path = (dir_ / "missing.toml").string();
  LoadResult r = load(path);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0], path + ":1: cannot read cluster file: No such file or directory");
  r = load(dir_.string());
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_NE(r.errors[0].find("Is a directory"), std::string::npos) << r.errors[0];
}

// Hot standbys: [[standby]] tables join fe_members after [frontend] (their index is
// their priority), and `tcpha fe --id` runs as one of them.
TEST_F(ConfigDir, StandbysAreFrontEndsOfTheFile) {
  auto path = write("standby.toml", R"([cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
[frontend]
address = "10.0.0.1"
interface = "eth0"
workers = 2
[[standby]]
id = "fe2"
address = "10.0.0.2"
interface = "eth1"
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
groups = ["all"]
)");
  LoadResult r = load(path);
  ASSERT_TRUE(r.config) << joined(r);
  tcpha::config::Config c = *r.config;
  ASSERT_EQ(c.fe_members.size(), 2u);
  EXPECT_EQ(c.fe_members[0].id, "fe");
  EXPECT_EQ(c.fe_members[1].id, "fe2");
  EXPECT_EQ(c.fe_members[1].interface, "eth1");
  EXPECT_EQ(c.fe_members[1].line, 9);
  EXPECT_EQ(c.self_index(), 0u);
  ASSERT_TRUE(c.run_as("fe2"));
  EXPECT_EQ(c.frontend.id, "fe2");
  EXPECT_EQ(c.frontend.address, "10.0.0.2");
  EXPECT_EQ(c.frontend.interface, "eth1");
  EXPECT_EQ(c.frontend.workers, 2u);  // [frontend]'s other keys stay
  EXPECT_EQ(c.self_index(), 1u);
  EXPECT_FALSE(c.run_as("be1"));
}


// One broken file each: exactly one error, at the given line, containing the text. The
// sections not under test are one-line inline tables so that each file stays short and
// the line numbers can be read off the literal.
struct BadFile {
  const char* name;
  const char* toml;
  int line;
  const char* message;
};

class BrokenFile : public ConfigDir, public ::testing::WithParamInterface<BadFile> {};

TEST_P(BrokenFile, ReportsOneErrorAtTheLine) {
  const BadFile& bad = GetParam();
  std::string path = write(std::string(bad.name) + ".toml", bad.toml);
  LoadResult r = load(path);
  EXPECT_FALSE(r.config);
  ASSERT_EQ(r.errors.size(), 1u) << joined(r);
  std::string prefix = path + ":" + std::to_string(bad.line) + ": ";
  EXPECT_EQ(r.errors[0].rfind(prefix, 0), 0u) << r.errors[0];
  EXPECT_NE(r.errors[0].find(bad.message), std::string::npos) << r.errors[0];
}

INSTANTIATE_TEST_SUITE_P(
    Config, BrokenFile,
    ::testing::ValuesIn(std::vector<BadFile>{
        {"SyntaxError", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.10
ports = [80]
key_file = "cluster.key"
)",
         4, "unescaped control characters"},
        {"DuplicateKey", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
vip = "10.0.0.11"
)",
         7, "cannot redefine existing string 'vip'"},
        {"WrongType", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.10"
ports = 80
key_file = "cluster.key"
)",
         5, "[cluster] ports: expected an array, got an integer"},
        {"UnknownKeyInCluster", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
vips = "10.0.0.10"
)",
         7, "unknown key 'vips' in [cluster]"},
        {"BadFailover", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
failover = "mirror"
)",
         7, "[cluster] failover: 'mirror' is not \"ring\" or \"off\""},
        {"Vip6NotAnAddress", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
vip6 = "fd00::10::1"
)",
         7, "[cluster] vip6: 'fd00::10::1' is not an IPv6 address"},
        {"Vip6IsIpv4", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
vip6 = "10.0.0.10"
)",
         7, "[cluster] vip6: '10.0.0.10' is not an IPv6 address"},
        {"Vip6Multicast", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
vip6 = "ff02::1"
)",
         7, "[cluster] vip6: 'ff02::1' is not a global or unique-local unicast IPv6 address"},
        {"Vip6LinkLocal", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
vip6 = "fe80::1"
)",
         7, "is not a global or unique-local unicast IPv6 address"},
        {"Vip6Loopback", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
vip6 = "::1"
)",
         7, "is not a global or unique-local unicast IPv6 address"},
        {"Vip6Mapped", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
vip6 = "::ffff:10.0.0.10"
)",
         7, "is not a global or unique-local unicast IPv6 address"},
        {"Vip6Unspecified", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
vip6 = "::"
)",
         7, "is not a global or unique-local unicast IPv6 address"},
        {"Vip6NotAString", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
vip6 = 6
)",
         7, "[cluster] vip6: expected a string"},
        {"MissingVip", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
ports = [80]
key_file = "cluster.key"
)",
         3, "[cluster] missing required key 'vip'"},
        {"MissingKeyFile", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.10"
ports = [80]
)",
         3, "[cluster] missing required key 'key_file'"},
        {"BadVip", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.300"
ports = [80]
key_file = "cluster.key"
)",
         4, "[cluster] vip: '10.0.0.300' is not an IPv4 address"},
        {"MulticastVip", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "239.1.1.1"
ports = [80]
key_file = "cluster.key"
)",
         4, "'239.1.1.1' is not a unicast address"},
        {"PortZero", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.10"
ports = [80, 0]
key_file = "cluster.key"
)",
         5, "[cluster] ports: 0 is out of range 1..65535"},
        {"NoPorts", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.10"
ports = []
key_file = "cluster.key"
)",
         5, "[cluster] ports: list at least one port"},
        {"DuplicatePort", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.10"
ports = [
  443,
  443,
]
key_file = "cluster.key"
)",
         7, "port 443 is listed twice"},
        {"BadControlPort", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
control_port = 70000
)",
         7, "[cluster] control_port: 70000 is out of range 1..65535"},
        {"BadForward", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
forward = "DR"
)",
         7, "[cluster] forward: 'DR' is not \"dr\" or \"tunnel\""},
        {"BackendForwardBad", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
[cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
forward = "ipip"
)",
         10, "[backend] forward: 'ipip' is not \"dr\" or \"tunnel\""},
        {"FailoverNeedsDrBackends", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
[cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
failover = "ring"
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
[[backend]]
id = "be2"
address = "10.0.1.12"
docroot = "/srv"
forward = "tunnel"
)",
         11, "'be2' is reached by tunnel, and failover = \"ring\" needs every back-end"},
        {"KeyFileTooShort", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "short.key"
)",
         6,
         "short.key' holds 5 bytes, at least 32 are needed (make one with: (umask 077; head -c 32 "
         "/dev/urandom > "},
        {"KeyFileMissing", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "absent.key"
)",
         6, "absent.key': No such file or directory (make one with: (umask 077; head -c 32 "
            "/dev/urandom > "},
        {"EmptyKeyFile", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[cluster]
vip = "10.0.0.10"
ports = [80]
key_file = ""
)",
         6, "[cluster] key_file: empty path"},
        {"UnknownTopLevelTable",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[clusters]
vip = "10.0.0.10"
)",
         4, "unknown table [clusters]"},
        {"UnknownTopLevelKey", R"(debug = true
cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
)",
         1, "unknown key 'debug' at top level"},
        {"ClusterNotTable", R"(frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[[cluster]]
vip = "10.0.0.10"
)",
         3, "cluster must be a table: write [cluster]"},
        {"MissingFrontend",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
)",
         1, "missing [frontend] table"},
        {"NoBackend", R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
)",
         1, "at least one backend is required"},
        {"BackendNotArray",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[backend]
id = "be1"
)",
         3, "backend must be an array of tables: write [[backend]]"},
        {"RuleNotArray", R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[rule]
group = "static"
)",
         4, "rule must be an array of tables: write [[rule]]"},
        {"MissingInterface",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[frontend]
address = "10.0.0.1"
)",
         3, "[frontend] missing required key 'interface'"},
        {"VipIsFrontendAddress",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[frontend]
address = "10.0.0.10"
interface = "eth0"
)",
         4, "[frontend] address: 10.0.0.10 is the VIP"},
        {"BadInterface", R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[frontend]
address = "10.0.0.1"
interface = "eth0/1"
)",
         5, "'eth0/1' is not a valid interface name"},
        {"LongInterface", R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[frontend]
address = "10.0.0.1"
interface = "an-interface-name"
)",
         5, "is not a valid interface name"},
        {"MaxHeaderBytesTooSmall",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[frontend]
address = "10.0.0.1"
interface = "eth0"
max_header_bytes = 100
)",
         6, "[frontend] max_header_bytes: 100 is out of range 1024..1048576"},
        {"HandoffTimeoutZero",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[frontend]
address = "10.0.0.1"
interface = "eth0"
handoff_timeout_ms = 0
)",
         6, "handoff_timeout_ms: 0 is out of range 1..60000"},
        {"MaxFlowsTooLarge",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[frontend]
address = "10.0.0.1"
interface = "eth0"
max_flows = 100000000
)",
         6, "max_flows: 100000000 is out of range 16..16777216"},
        {"WorkersNegative",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[frontend]
address = "10.0.0.1"
interface = "eth0"
workers = -1
)",
         6, "[frontend] workers: -1 is out of range 0..256"},
        {"FrontendKnobFloat",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[frontend]
address = "10.0.0.1"
interface = "eth0"
flow_idle_s = 1.5
)",
         6, "[frontend] flow_idle_s: expected an integer, got a float"},
        {"StopTimeoutOutOfRange",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[frontend]
address = "10.0.0.1"
interface = "eth0"
stop_timeout_s = 86401
)",
         6, "[frontend] stop_timeout_s: 86401 is out of range 0..86400"},
        {"StandbyIdTaken",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
frontend = { address = "10.0.0.1", interface = "eth0" }
[[standby]]
id = "be1"
address = "10.0.0.2"
interface = "eth0"
)",
         4, "[standby] id: 'be1' is a backend's"},
        {"StandbyAddressIsTheFrontEnds",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
frontend = { address = "10.0.0.1", interface = "eth0" }
[[standby]]
id = "fe2"
address = "10.0.0.1"
interface = "eth0"
)",
         4, "[standby] address: 10.0.0.1 is already a front-end's"},
        {"StandbyWithoutInterface",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
frontend = { address = "10.0.0.1", interface = "eth0" }
[[standby]]
id = "fe2"
address = "10.0.0.2"
)",
         4, "[standby] missing required key 'interface'"},
        {"BadFrontendMetrics",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[frontend]
address = "10.0.0.1"
interface = "eth0"
metrics = ":9180"
)",
         6, "[frontend] metrics: ':9180' is not ADDR:PORT"},
        {"EmptyFrontendId",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[frontend]
address = "10.0.0.1"
interface = "eth0"
id = ""
)",
         6, "[frontend] id: '' is not a valid id"},
        {"UnknownKeyInBackend",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
wieght = 2
)",
         7, "unknown key 'wieght' in [backend]"},
        {"MissingBackendId",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
address = "10.0.0.11"
docroot = "/srv"
)",
         3, "[backend] missing required key 'id'"},
        {"MissingBackendAddress",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "be1"
docroot = "/srv"
)",
         3, "[backend] missing required key 'address'"},
        {"BadBackendAddress",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "be1"
address = "be1.local"
docroot = "/srv"
)",
         5, "[backend] address: 'be1.local' is not an IPv4 address"},
        {"VipIsBackendAddress",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "be1"
address = "10.0.0.10"
docroot = "/srv"
)",
         5, "[backend] address: 10.0.0.10 is the VIP"},
        {"DuplicateId", R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
[[backend]]
id = "be1"
address = "10.0.0.12"
docroot = "/srv"
)",
         8, "[backend] id: 'be1' is already used at line 4"},
        {"BackendUsesFrontendId",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "fe"
address = "10.0.0.11"
docroot = "/srv"
)",
         4, "[backend] id: 'fe' is already used at line 2"},
        {"BadId", R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "be 1"
address = "10.0.0.11"
docroot = "/srv"
)",
         4, "[backend] id: 'be 1' is not a valid id"},
        {"LongId", R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
address = "10.0.0.11"
docroot = "/srv"
)",
         4, "is not a valid id (1 to 31 of"},
        {"DuplicateBackendAddress",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
[[backend]]
id = "be2"
address = "10.0.0.11"
docroot = "/srv"
)",
         9, "10.0.0.11 is already used by the backend at line 5"},
        {"WeightZero", R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
weight = 0
)",
         7, "[backend] weight: 0 is out of range 1..1000"},
        {"WeightString", R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
weight = "2"
)",
         7, "[backend] weight: expected an integer, got a string"},
        {"DocrootAndUpstream",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
upstream = "127.0.0.1:8080"
)",
         7, "[backend] upstream: set exactly one of docroot"},
        {"NeitherDocrootNorUpstream",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "be1"
address = "10.0.0.11"
)",
         3, "[backend] docroot: set exactly one of docroot"},
        {"BadUpstream", R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "be1"
address = "10.0.0.11"
upstream = "localhost:8080"
)",
         6, "[backend] upstream: 'localhost:8080' is neither HOST:PORT"},
        {"XForwardedForWithoutUpstream",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
x_forwarded_for = true
)",
         7, "[backend] x_forwarded_for: needs upstream"},
        {"XForwardedForNotBoolean",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "be1"
address = "10.0.0.11"
upstream = "127.0.0.1:8080"
x_forwarded_for = "yes"
)",
         7, "[backend] x_forwarded_for: expected a boolean"},
        {"RelativeUnixUpstream",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "be1"
address = "10.0.0.11"
upstream = "unix:nginx.sock"
)",
         6, "[backend] upstream: 'unix:nginx.sock' is neither HOST:PORT"},
        {"ProxyProtocolV1",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "be1"
address = "10.0.0.11"
upstream = "127.0.0.1:8080"
proxy_protocol = 1
)",
         7, "only 0 (off) and 2 (PROXY v2) are supported"},
        {"ProxyProtocolWithDocroot",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
proxy_protocol = 2
)",
         7, "[backend] proxy_protocol: needs upstream"},
        {"CacheWithUpstream",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "be1"
address = "10.0.0.11"
upstream = "127.0.0.1:8080"
cache_mb = 64
)",
         7, "[backend] cache_mb: applies only to the built-in server"},
        {"AccessLogWithUpstream",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "be1"
address = "10.0.0.11"
upstream = "127.0.0.1:8080"
access_log = "/var/log/be1.log"
)",
         7, "[backend] access_log: applies only to the built-in server"},
        {"BadBackendMetrics",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
metrics = "127.0.0.1"
)",
         7, "[backend] metrics: '127.0.0.1' is not ADDR:PORT"},
        {"EmptyGroup", R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
groups = ["static", ""]
)",
         7, "[backend] groups: expected non-empty strings"},
        {"RuleGroupUnused",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[[rule]]
path = '^/img/'
group = "images"
)",
         6, "[rule] group: no backend is in group 'images'"},
        {"RuleMissingGroup",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[[rule]]
path = '^/'
)",
         4, "[rule] missing required key 'group'"},
        {"BadPolicy", R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[[rule]]
group = "static"
policy = "random"
)",
         6, "[rule] policy: 'random' is not one of lard, least-conn, round-robin, hash"},
        {"BadPathRegex", R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[[rule]]
path = '\.(png|jpg$'
group = "static"
)",
         5, "[rule] path: bad regular expression: missing ): \\.(png|jpg$"},
        {"BadHostRegex", R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[[rule]]
host = '[z-a]'
group = "static"
)",
         5, "[rule] host: bad regular expression: invalid character class range: z-a"},
        {"BackreferenceRegex",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[[rule]]
method = '(GET)\1'
group = "static"
)",
         5, "[rule] method: bad regular expression: invalid escape sequence: \\1"},
        {"EmptyRegex", R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[[rule]]
path = ''
group = "static"
)",
         5, "[rule] path: empty regular expression"},
        {"BadHeaderName", R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[[rule]]
header = { "X Tenant" = '^a$' }
group = "static"
)",
         5, "[rule] header.X Tenant: 'X Tenant' is not a valid header name"},
        {"BadHeaderRegex",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[[rule]]
header = { "X-Tenant" = '(?P<x' }
group = "static"
)",
         5, "[rule] header.X-Tenant: bad regular expression"},
        {"HeaderValueNotString",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[[rule]]
header = { "X-Tenant" = 1 }
group = "static"
)",
         5, "[rule] header.X-Tenant: expected a string, got an integer"},
        {"BadCookieRegex",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[[rule]]
cookie = { session = 'a{2,1}' }
group = "static"
)",
         5, "[rule] cookie.session: bad regular expression"},
        {"UnknownKeyInRule",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[[rule]]
url = '^/'
group = "static"
)",
         5, "unknown key 'url' in [rule]"},
        {"UnreachableRule",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[[rule]]
group = "static"
[[rule]]
path = '^/img/'
group = "img"
)",
         6, "[rule] is unreachable: the rule at line 4 has no match fields"},
        {"DuplicateRuleName",
         R"(cluster = { vip = "10.0.0.10", ports = [80], key_file = "cluster.key" }
frontend = { address = "10.0.0.1", interface = "eth0" }
backend = [{ id = "be1", address = "10.0.0.11", docroot = "/srv", groups = ["static", "img"] }]
[[rule]]
name = "a"
path = '^/a'
group = "static"
[[rule]]
name = "a"
group = "static"
)",
         9, "[rule] name: 'a' is already used at line 5"},
    }),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
