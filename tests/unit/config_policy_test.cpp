// Config keys of scheduling: hash_key, the LARD thresholds and replication, heartbeat
// timing, the local node. Each bad file must give exactly one error at FILE:LINE; each
// good one must load and build a Router.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "config/config.hpp"
#include "config_fixture.hpp"
#include "sched/router.hpp"

namespace fs = std::filesystem;
using tcpha::config::load;
using tcpha::config::LoadResult;

using tcpha::testing::ConfigDir;
using tcpha::testing::joined;

namespace {


// Line 1-3 of every file; the rules and sections under test start at line 4. The key
// is the fixture's private cluster.key, next to the file.
const std::string kHead =
    "cluster = { vip = \"10.0.0.10\", ports = [80], key_file = \"cluster.key\" }\n"
    "frontend = { address = \"10.0.0.1\", interface = \"eth0\" }\n"
    "backend = [{ id = \"be1\", address = \"10.0.0.11\", docroot = \"/srv\", groups = [\"g\"] }]\n";


struct BadFile {
  const char* name;
  const char* toml;  // after kHead unless it starts with [cluster]
  int line;
  const char* message;  // the whole text after "FILE:LINE: "
};

class BadPolicyFile : public ConfigDir, public ::testing::WithParamInterface<BadFile> {};

TEST_P(BadPolicyFile, ReportsOneErrorAtTheLine) {
  const BadFile& bad = GetParam();
  std::string text =
      std::string_view(bad.toml).starts_with("[cluster]") ? bad.toml : kHead + bad.toml;
  std::string path = write(std::string(bad.name) + ".toml", text);
  LoadResult r = load(path);
  EXPECT_FALSE(r.config);
  ASSERT_EQ(r.errors.size(), 1u) << joined(r);
  EXPECT_EQ(r.errors[0], path + ":" + std::to_string(bad.line) + ": " + bad.message);
}

INSTANTIATE_TEST_SUITE_P(
    Config, BadPolicyFile,
    ::testing::ValuesIn(std::vector<BadFile>{
        {"HashKeyWithoutHash", "[[rule]]\ngroup = \"g\"\npolicy = \"lard\"\nhash_key = \"url\"\n",
         7, "[rule] hash_key: applies only to policy = \"hash\""},
        {"HashKeyWithDefaultPolicy", "[[rule]]\ngroup = \"g\"\nhash_key = \"path\"\n", 6,
         "[rule] hash_key: applies only to policy = \"hash\""},
        {"HashKeyUnknown", "[[rule]]\ngroup = \"g\"\npolicy = \"hash\"\nhash_key = \"body\"\n", 7,
         "[rule] hash_key: 'body' is not path, url, host, client, header:NAME or cookie:NAME"},
        {"HashKeyHeaderWithoutName",
         "[[rule]]\ngroup = \"g\"\npolicy = \"hash\"\nhash_key = \"header:\"\n", 7,
         "[rule] hash_key: 'header:' is not path, url, host, client, header:NAME or cookie:NAME"},
        {"HashKeyNotAString", "[[rule]]\ngroup = \"g\"\npolicy = \"hash\"\nhash_key = 3\n", 7,
         "[rule] hash_key: expected a string, got an integer"},
        {"LardLowWithoutLard", "[[rule]]\ngroup = \"g\"\npolicy = \"least-conn\"\nlard_low = 5\n",
         7, "[rule] lard_low: applies only to policy = \"lard\""},
        {"LardHighWithoutLard", "[[rule]]\ngroup = \"g\"\nlard_high = 50\n", 6,
         "[rule] lard_high: applies only to policy = \"lard\""},
        {"LardReplicateWithoutLard",
         "[[rule]]\ngroup = \"g\"\npolicy = \"hash\"\nlard_replicate = true\n", 7,
         "[rule] lard_replicate: applies only to policy = \"lard\""},
        {"LardLowAboveDefaultHigh", "[[rule]]\ngroup = \"g\"\npolicy = \"lard\"\nlard_low = 70\n",
         7, "[rule] lard_low: lard_low must be below lard_high"},
        {"LardHighBelowDefaultLow", "[[rule]]\ngroup = \"g\"\npolicy = \"lard\"\nlard_high = 10\n",
         7, "[rule] lard_high: lard_low must be below lard_high"},
        {"LardLowEqualsHigh",
         "[[rule]]\ngroup = \"g\"\npolicy = \"lard\"\nlard_high = 30\nlard_low = 30\n", 8,
         "[rule] lard_low: lard_low must be below lard_high"},
        {"LardHighZero", "[[rule]]\ngroup = \"g\"\npolicy = \"lard\"\nlard_high = 0\n", 7,
         "[rule] lard_high: 0 is out of range 1..1000000"},
        {"LardReplicateNotBool",
         "[[rule]]\ngroup = \"g\"\npolicy = \"lard\"\nlard_replicate = \"yes\"\n", 7,
         "[rule] lard_replicate: expected a boolean"},
        {"DeadAfterBelowTwiceHeartbeat",
         R"([cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
heartbeat_ms = 100
dead_after_ms = 199
[frontend]
address = "10.0.0.1"
interface = "eth0"
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
)",
         6,
         "[cluster] dead_after_ms: dead_after_ms must be at least twice heartbeat_ms, or one "
         "late heartbeat marks a healthy back-end down"},
        {"HeartbeatAboveHalfTheDefaultDeadAfter",
         R"([cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
heartbeat_ms = 300
[frontend]
address = "10.0.0.1"
interface = "eth0"
handoff_timeout_ms = 600
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
)",
         5,
         "[cluster] heartbeat_ms: dead_after_ms must be at least twice heartbeat_ms, or one "
         "late heartbeat marks a healthy back-end down"},
        {"HandoffTimeoutBelowTwoHeartbeats",
         R"([cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
heartbeat_ms = 200
[frontend]
address = "10.0.0.1"
interface = "eth0"
handoff_timeout_ms = 300
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
)",
         9,
         "[frontend] handoff_timeout_ms: 300 must be at least twice [cluster] heartbeat_ms (200): "
         "a back-end's lease on a handoff counts from its last heartbeat"},
        {"HeartbeatTooFast",
         R"([cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
heartbeat_ms = 5
[frontend]
address = "10.0.0.1"
interface = "eth0"
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
)",
         5, "[cluster] heartbeat_ms: 5 is out of range 10..60000"},
        {"FrontendGroupsWithoutDocroot",
         R"([cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
[frontend]
address = "10.0.0.1"
interface = "eth0"
groups = ["local"]
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
)",
         8,
         "[frontend] groups: a front-end in groups serves them itself (local node): set docroot "
         "too"},
        {"FrontendEmptyDocroot",
         R"([cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
[frontend]
address = "10.0.0.1"
interface = "eth0"
docroot = ""
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
)",
         8, "[frontend] docroot: empty path"},
    }),
    [](const ::testing::TestParamInfo<BadFile>& info) { return std::string(info.param.name); });

TEST_F(ConfigDir, EveryHashKeyValueLoadsAndBuilds) {
  for (std::string key : {"path", "url", "host", "client", "header:X-User", "cookie:sid"}) {
    std::string path = write("hash.toml", kHead + "[[rule]]\ngroup = \"g\"\npolicy = \"hash\"\n" +
                                              "hash_key = \"" + key + "\"\n");
    LoadResult r = load(path);
    ASSERT_TRUE(r.config) << key << ": " << joined(r);
    EXPECT_EQ(r.config->rules[0].hash_key, key);
    EXPECT_TRUE(tcpha::sched::Router::build(*r.config).ok()) << key;
  }
}

TEST_F(ConfigDir, PolicyDefaults) {
  std::string path = write("defaults.toml", kHead + "[[rule]]\ngroup = \"g\"\n");
  LoadResult r = load(path);
  ASSERT_TRUE(r.config) << joined(r);
  const auto& rule = r.config->rules[0];
  EXPECT_EQ(rule.policy, "round-robin");
  EXPECT_EQ(rule.hash_key, "path");
  EXPECT_EQ(rule.lard_low, 25u);
  EXPECT_EQ(rule.lard_high, 65u);
  EXPECT_FALSE(rule.lard_replicate);
  EXPECT_EQ(r.config->cluster.heartbeat_ms, 100u);
  EXPECT_EQ(r.config->cluster.dead_after_ms, 500u);
}

TEST_F(ConfigDir, LardKeysAreRead) {
  std::string path = write("lard.toml", kHead +
                                            "[[rule]]\ngroup = \"g\"\npolicy = \"lard\"\n"
                                            "lard_low = 5\nlard_high = 6\nlard_replicate = true\n");
  LoadResult r = load(path);
  ASSERT_TRUE(r.config) << joined(r);
  const auto& rule = r.config->rules[0];
  EXPECT_EQ(rule.lard_low, 5u);
  EXPECT_EQ(rule.lard_high, 6u);
  EXPECT_TRUE(rule.lard_replicate);
  EXPECT_TRUE(tcpha::sched::Router::build(*r.config).ok());
}

TEST_F(ConfigDir, HeartbeatExactlyHalfOfDeadAfterIsAccepted) {
  std::string path = write("hb.toml", R"([cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
heartbeat_ms = 250
dead_after_ms = 500
[frontend]
address = "10.0.0.1"
interface = "eth0"
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
)");
  LoadResult r = load(path);
  ASSERT_TRUE(r.config) << joined(r);
  EXPECT_EQ(r.config->cluster.heartbeat_ms, 250u);
  EXPECT_EQ(r.config->cluster.dead_after_ms, 500u);
}

// A group only the front-end is in is valid: the router serves it locally.
TEST_F(ConfigDir, GroupOfOnlyTheFrontendRoutesLocally) {
  std::string path = write("local.toml", R"([cluster]
vip = "10.0.0.10"
ports = [80]
key_file = "cluster.key"
[frontend]
address = "10.0.0.1"
interface = "eth0"
groups = ["local"]
docroot = "/srv/fe"
[[backend]]
id = "be1"
address = "10.0.0.11"
docroot = "/srv"
groups = ["g"]
[[rule]]
path = "^/status"
group = "local"
)");
  LoadResult r = load(path);
  ASSERT_TRUE(r.config) << joined(r);
  EXPECT_EQ(r.config->frontend.groups, std::vector<std::string>{"local"});
  EXPECT_EQ(r.config->frontend.docroot, "/srv/fe");
  auto router = tcpha::sched::Router::build(*r.config);
  ASSERT_TRUE(router.ok()) << router.error().message();

  struct NoneUsable : tcpha::sched::LoadView {
    bool usable(uint32_t) const override { return false; }
    int64_t active(uint32_t) const override { return 0; }
  } load;
  std::string text = "GET /status HTTP/1.1\r\nHost: x\r\n\r\n";
  tcpha::http::Request req;
  ASSERT_EQ(tcpha::http::parse_request(text, req).status, tcpha::http::ParseStatus::Complete);
  EXPECT_EQ((*router)->route(req, 0, load).kind, tcpha::sched::Decision::Local);
}

}  // namespace
