// CARD cluster files (docs/card.md): [[node]] tables instead of [frontend] and
// [[backend]]. A good file loads with its nodes as the servers; each bad one gives one
// error at FILE:LINE.
#include <gtest/gtest.h>

#include <string>

#include "config/config.hpp"
#include "config_fixture.hpp"
#include "sched/router.hpp"

using tcpha::config::load;
using tcpha::config::LoadResult;
using tcpha::testing::ConfigDir;
using tcpha::testing::joined;

namespace {

const std::string kCluster = R"([cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
)";

const std::string kNodes = R"([[node]]
id = "n1"
address = "10.0.1.11"
interface = "eth0"
groups = ["pages"]
docroot = "/srv/n1"
[[node]]
id = "n2"
address = "10.0.1.12"
interface = "eth1"
groups = ["images"]
docroot = "/srv/n2"
[[rule]]
path = "^/img/"
group = "images"
[[rule]]
group = "pages"
)";

TEST_F(ConfigDir, CardNodesAreTheServers) {
  LoadResult r = load(write("card.toml", kCluster + kNodes));
  ASSERT_TRUE(r.config) << joined(r);
  const auto& c = *r.config;
  EXPECT_TRUE(c.card);
  ASSERT_EQ(c.backends.size(), 2u);
  EXPECT_EQ(c.backends[0].id, "n1");
  EXPECT_EQ(c.backends[0].interface, "eth0");
  EXPECT_EQ(c.backends[1].interface, "eth1");
  EXPECT_EQ(c.backends[1].groups, std::vector<std::string>{"images"});
  EXPECT_TRUE(c.fe_members.empty());  // no front-end at all
  ASSERT_NE(c.find_backend("n2"), nullptr);
  // Every node routes with the same rules over the same members.
  auto router = tcpha::sched::Router::build(c);
  ASSERT_TRUE(router) << router.error().message();
}

TEST_F(ConfigDir, CardNodesMayBeReachedByTunnel) {
  LoadResult r = load(write("card-tunnel.toml", R"([cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
forward = "tunnel"
)" + kNodes));
  ASSERT_TRUE(r.config) << joined(r);
  EXPECT_TRUE(r.config->backends[0].tunnel());
  EXPECT_TRUE(r.config->backends[1].tunnel());
}

TEST_F(ConfigDir, AFileWithoutNodesIsNotCard) {
  LoadResult r = load(write("fe.toml", kCluster + R"([frontend]
address = "10.0.0.1"
interface = "eth0"
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
)"));
  ASSERT_TRUE(r.config) << joined(r);
  EXPECT_FALSE(r.config->card);
}

struct BadCard {
  const char* name;
  std::string toml;
  int line;
  const char* message;
};

class BrokenCardFile : public ConfigDir, public ::testing::WithParamInterface<BadCard> {};

TEST_P(BrokenCardFile, ReportsOneErrorAtTheLine) {
  const BadCard& bad = GetParam();
  std::string path = write(std::string(bad.name) + ".toml", bad.toml);
  LoadResult r = load(path);
  EXPECT_FALSE(r.config);
  ASSERT_EQ(r.errors.size(), 1u) << joined(r);
  std::string prefix = path + ":" + std::to_string(bad.line) + ": ";
  EXPECT_EQ(r.errors[0].rfind(prefix, 0), 0u) << r.errors[0];
  EXPECT_NE(r.errors[0].find(bad.message), std::string::npos) << r.errors[0];
}

// kCluster is lines 1-4; the tables under test start at line 5.
INSTANTIATE_TEST_SUITE_P(
    Config, BrokenCardFile,
    ::testing::ValuesIn(std::vector<BadCard>{
        {"WithFrontend", kCluster + R"([frontend]
address = "10.0.0.1"
interface = "eth0"
)" + kNodes,
         5, "a CARD cluster has no front-end"},
        {"WithBackend", kCluster + kNodes + R"([[backend]]
id = "be1"
address = "10.0.0.31"
docroot = "/srv"
)",
         22, "[backend] in a file with [[node]] tables"},
        {"NoInterface", kCluster + R"([[node]]
id = "n1"
address = "10.0.1.11"
docroot = "/srv"
)",
         5, "[node] missing required key 'interface'"},
        {"DuplicateId", kCluster + R"([[node]]
id = "n1"
address = "10.0.1.11"
interface = "eth0"
docroot = "/srv"
[[node]]
id = "n1"
address = "10.0.1.12"
interface = "eth0"
docroot = "/srv"
)",
         11, "[node] id: 'n1' is already used at line 6"},
        {"Failover", R"([cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
failover = "ring"
)" + kNodes,
         1, "failover: \"ring\" is not supported with [[node]]"},
        {"UnknownGroup", kCluster + R"([[node]]
id = "n1"
address = "10.0.1.11"
interface = "eth0"
docroot = "/srv"
groups = ["a"]
[[rule]]
group = "b"
)",
         12, "no node is in group 'b'"},
    }),
    [](const ::testing::TestParamInfo<BadCard>& i) { return std::string(i.param.name); });

}  // namespace
