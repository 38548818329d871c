// The BE agent without a network: which HANDOFFs it accepts, and its numbers declared
// once (status JSON and Prometheus list the same fields).
#include <arpa/inet.h>
#include <stdlib.h>
#include <sys/eventfd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <sstream>

#include "be/agent_core.hpp"

namespace tcpha::be {
namespace {

config::Config cluster() {
  config::Config cfg;
  cfg.cluster.vip = "10.0.0.10";
  inet_pton(AF_INET, "10.0.0.10", &cfg.cluster.vip_addr);
  cfg.cluster.ports = {80, 8080};
  cfg.cluster.key.assign(32, 7);
  cfg.cluster.control_port = 0;  // any free port
  return cfg;
}

handoff::TcpState state(const char* local, uint16_t port) {
  handoff::TcpState st;
  in_addr a{};
  inet_pton(AF_INET, local, &a);
  st.local_addr[0] = a.s_addr;
  st.local_port = htons(port);
  return st;
}

handoff::TcpState state6(const char* local, uint16_t port) {
  handoff::TcpState st;
  st.family = AF_INET6;
  in6_addr a{};
  inet_pton(AF_INET6, local, &a);
  std::memcpy(st.local_addr.data(), &a, 16);
  st.local_port = htons(port);
  return st;
}

TEST(ImportAllowed, OnlyTheVipAndTheClusterPorts) {
  auto cfg = cluster();
  EXPECT_TRUE(import_allowed(state("10.0.0.10", 80), cfg));
  EXPECT_TRUE(import_allowed(state("10.0.0.10", 8080), cfg));
  EXPECT_FALSE(import_allowed(state("10.0.0.10", 22), cfg));      // another port of the VIP
  EXPECT_FALSE(import_allowed(state("10.0.0.11", 80), cfg));      // the BE's own address
  EXPECT_FALSE(import_allowed(state("127.0.0.1", 8080), cfg));    // loopback services
  EXPECT_FALSE(import_allowed(state("0.0.0.0", 80), cfg));
}

TEST(ImportAllowed, TheIpv6VipOnlyWhenConfigured) {
  auto cfg = cluster();
  EXPECT_FALSE(import_allowed(state6("fd00::10", 80), cfg)) << "no vip6 configured";
  cfg.cluster.vip6 = "fd00::10";
  cfg.cluster.vip6_addr = in6_addr{};
  inet_pton(AF_INET6, "fd00::10", &*cfg.cluster.vip6_addr);
  EXPECT_TRUE(import_allowed(state6("fd00::10", 80), cfg));
  EXPECT_TRUE(import_allowed(state6("fd00::10", 8080), cfg));
  EXPECT_FALSE(import_allowed(state6("fd00::10", 22), cfg));
  EXPECT_FALSE(import_allowed(state6("fd00::11", 80), cfg));
  EXPECT_FALSE(import_allowed(state6("::1", 80), cfg));
  // The IPv4 VIP's bytes under the IPv6 family are not the IPv4 VIP.
  handoff::TcpState mixed = state("10.0.0.10", 80);
  mixed.family = AF_INET6;
  EXPECT_FALSE(import_allowed(mixed, cfg));
  EXPECT_TRUE(import_allowed(state("10.0.0.10", 80), cfg));
}

// Prometheus family names (from # TYPE lines).
std::set<std::string> families(const std::string& text) {
  std::set<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream l(line);
    std::string hash, type, name;
    if (l >> hash >> type >> name && hash == "#" && type == "TYPE") out.insert(name);
  }
  return out;
}

// The Prometheus family each number of the status JSON must have (stats.cpp's naming).
std::set<std::string> expected_families(const nlohmann::json& j, const std::set<std::string>& have) {
  std::set<std::string> out;
  auto add = [&](std::string name) {
    // Counters carry _total; the JSON does not say which numbers are counters.
    out.insert(have.count(name + "_total") ? name + "_total" : name);
  };
  for (auto& [k, v] : j.items()) {
    if (k == "role" || k == "id" || k == "address" || k == "imported") continue;  // identity; alias
    if (k.size() > 3 && k.substr(k.size() - 3) == "_us") {
      out.insert("tcpha_be_" + k.substr(0, k.size() - 3) + "_seconds");
    } else if (v.is_object()) {
      for (auto& [k2, v2] : v.items())
        add("tcpha_be_" + (k == "counters" ? "" : k + "_") + k2);
    } else {
      add("tcpha_be_" + k);
    }
  }
  return out;
}

class AgentStats : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::path(::testing::TempDir()) / "tcpha_be.XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    cfg_ = cluster();
    self_.id = "be1";
    self_.address = "127.0.0.1";
    inet_pton(AF_INET, "127.0.0.1", &self_.addr);
    sig_.reset(eventfd(0, EFD_CLOEXEC));
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void same_fields() {
    Agent agent(cfg_, self_);
    ASSERT_TRUE(agent.open(sig_.get(), "lo"));  // no [[rule]]: no datapath attached
    auto j = nlohmann::json::parse(agent.status_json());
    auto have = families(agent.prometheus());
    EXPECT_EQ(expected_families(j, have), have) << j.dump(1);
  }

  std::filesystem::path dir_;
  config::Config cfg_;
  config::BackendSection self_;
  UniqueFd sig_;
};

TEST_F(AgentStats, StaticServerWithCacheSameFieldsInBothViews) {
  self_.docroot = dir_.string();
  self_.cache_mb = 1;
  same_fields();
}

TEST_F(AgentStats, RelaySameFieldsInBothViews) {
  self_.upstream = "127.0.0.1:1";
  same_fields();
}

}  // namespace
}  // namespace tcpha::be
