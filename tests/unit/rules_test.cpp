// Rule matching and routing: every match field, first match wins, the default rule,
// the local node, and RE2's linear time on a pattern that backtracking engines choke on.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "config_fixture.hpp"
#include "http/request.hpp"
#include "sched/router.hpp"

namespace tcpha::sched {
namespace {

struct FakeLoad : LoadView {
  std::vector<bool> up;
  std::vector<int64_t> act;
  bool usable(uint32_t i) const override { return i < up.size() && up[i]; }
  int64_t active(uint32_t i) const override { return i < act.size() ? act[i] : 0; }
};

// A parsed request with the buffer its string_views point into.
struct Req {
  std::string text;
  http::Request r;
  explicit Req(std::string t) : text(std::move(t)) {
    auto res = http::parse_request(text, r);
    EXPECT_EQ(res.status, http::ParseStatus::Complete) << res.reason << " in: " << text;
  }
  Req(const Req&) = delete;  // r points into text: never copy or move it
  Req& operator=(const Req&) = delete;
};

Req get(const std::string& target, const std::string& extra = "", const std::string& host = "x",
        const std::string& method = "GET") {
  return Req(method + " " + target + " HTTP/1.1\r\nHost: " + host + "\r\n" + extra + "\r\n");
}

// Back-ends be0..be3, be<i> alone in group g<i>, so the back-end a request lands on
// tells which rule matched.
config::Config cluster(std::vector<config::RuleSection> rules) {
  config::Config c;
  c.path = "test.toml";
  for (int i = 0; i < 4; ++i) {
    config::BackendSection b;
    b.id = "be" + std::to_string(i);
    b.groups = {"g" + std::to_string(i)};
    b.line = 10 + i;
    c.backends.push_back(b);
  }
  for (size_t i = 0; i < rules.size(); ++i)
    if (rules[i].line == 0) rules[i].line = 100 + int(i);
  c.rules = std::move(rules);
  return c;
}

config::RuleSection rule(const std::string& group) {
  config::RuleSection r;
  r.group = group;
  return r;
}

class Routing : public ::testing::Test {
 protected:
  void SetUp() override {
    load_.up.assign(5, true);
    load_.act.assign(5, 0);
  }
  void use(std::vector<config::RuleSection> rules) {
    cfg_ = cluster(std::move(rules));
    auto r = Router::build(cfg_);
    ASSERT_TRUE(r.ok()) << r.error().message();
    router_ = std::move(*r);
  }
  Decision route(const Req& req) { return router_->route(req.r, 0x0100007f, load_); }
  // The back-end index, -1 for NoRule, -2 for NoBackend, -3 for Local.
  int where(const Req& req) {
    Decision d = route(req);
    switch (d.kind) {
      case Decision::Backend:
        return int(d.backend);
      case Decision::NoRule:
        EXPECT_EQ(d.rule, -1);
        return -1;
      case Decision::NoBackend:
        return -2;
      case Decision::Local:
        return -3;
    }
    return -4;
  }

  config::Config cfg_;
  std::unique_ptr<Router> router_;
  FakeLoad load_;
};

// Multi-handoff: a BE that holds the connection keeps it when it is in the matching
// rule's group (without consulting the policy), and is routed like the FE otherwise.
TEST_F(Routing, HolderInTheGroupKeepsTheConnection) {
  auto pages = rule("g1");
  pages.path = "^/pages/";
  auto images = rule("g2");
  images.path = "^/img/";
  use({pages, images});
  auto held = [&](const Req& req, uint32_t holder) {
    return router_->route_held(req.r, 0x0100007f, load_, holder);
  };
  Decision d = held(get("/pages/a.html"), 1);
  EXPECT_EQ(d.kind, Decision::Backend);
  EXPECT_EQ(d.backend, 1u);
  EXPECT_EQ(d.rule, 0);
  d = held(get("/img/a.png"), 1);  // not be1's group: the group's member
  EXPECT_EQ(d.kind, Decision::Backend);
  EXPECT_EQ(d.backend, 2u);
  EXPECT_EQ(d.rule, 1);
  load_.up[1] = false;  // the holder keeps its own requests even when others see it down
  EXPECT_EQ(held(get("/pages/b.html"), 1).backend, 1u);
  EXPECT_EQ(held(get("/other"), 1).kind, Decision::NoRule);
  load_.up[2] = false;
  EXPECT_EQ(held(get("/img/b.png"), 1).kind, Decision::NoBackend);
}

TEST_F(Routing, Method) {
  auto r = rule("g1");
  r.method = "^(POST|PUT)$";
  use({r});
  EXPECT_EQ(where(get("/", "", "x", "POST")), 1);
  EXPECT_EQ(where(get("/", "", "x", "PUT")), 1);
  EXPECT_EQ(where(get("/", "", "x", "GET")), -1);
}

TEST_F(Routing, HostIsMatchedAsSentPortIncluded) {
  auto r = rule("g1");
  r.host = R"(^api\.example\.com(:\d+)?$)";
  auto exact = rule("g2");
  exact.host = R"(^static\.example\.com$)";
  use({r, exact});
  EXPECT_EQ(where(get("/", "", "api.example.com")), 1);
  EXPECT_EQ(where(get("/", "", "api.example.com:8080")), 1);
  EXPECT_EQ(where(get("/", "", "www.example.com")), -1);
  EXPECT_EQ(where(get("/", "", "static.example.com")), 2);
  EXPECT_EQ(where(get("/", "", "static.example.com:80")), -1);  // the port is part of it
  // The authority of an absolute-form target is the host (RFC 9112 3.2.2).
  EXPECT_EQ(where(get("http://api.example.com/x", "", "other")), 1);
}

TEST_F(Routing, PathIsRawAndExcludesTheQuery) {
  auto img = rule("g1");
  img.path = R"(\.(png|jpe?g)$)";
  auto enc = rule("g2");
  enc.path = "%C3%A9";
  use({img, enc});
  EXPECT_EQ(where(get("/img/a.png")), 1);
  EXPECT_EQ(where(get("/img/a.jpeg?size=large")), 1);  // the query is not matched
  EXPECT_EQ(where(get("/img/a.png.html")), -1);
  EXPECT_EQ(where(get("/a?x=.png")), -1);
  EXPECT_EQ(where(get("/caf%C3%A9")), 2);  // not percent-decoded
}

TEST_F(Routing, RegexesSearchUnlessAnchored) {
  auto anywhere = rule("g1");
  anywhere.path = "api";
  auto anchored = rule("g2");
  anchored.path = "^/v2/";
  use({anywhere, anchored});
  EXPECT_EQ(where(get("/v1/api/users")), 1);
  EXPECT_EQ(where(get("/rapid")), 1);
  EXPECT_EQ(where(get("/v2/users")), 2);
  EXPECT_EQ(where(get("/x/v2/users")), -1);
}

TEST_F(Routing, HeadersByCaseInsensitiveNameAllMustMatch) {
  auto r = rule("g1");
  r.headers = {{"X-Tenant", "^t[0-9]+$"}, {"accept", "json"}};
  use({r});
  EXPECT_EQ(where(get("/", "x-tenant: t42\r\nACCEPT: application/json\r\n")), 1);
  EXPECT_EQ(where(get("/", "X-TENANT: t7\r\nAccept: text/json\r\n")), 1);
  EXPECT_EQ(where(get("/", "X-Tenant: tx\r\nAccept: application/json\r\n")), -1);
  EXPECT_EQ(where(get("/", "X-Tenant: t1\r\nAccept: text/html\r\n")), -1);
  EXPECT_EQ(where(get("/", "Accept: application/json\r\n")), -1);  // missing header
  EXPECT_EQ(where(get("/", "X-Tenant: t1\r\n")), -1);
}

TEST_F(Routing, HeaderRegexCanMatchAnEmptyValueOnlyWhenPresent) {
  auto r = rule("g1");
  r.headers = {{"X-Debug", "^$"}};
  use({r});
  EXPECT_EQ(where(get("/", "X-Debug:\r\n")), 1);
  EXPECT_EQ(where(get("/")), -1);
}

TEST_F(Routing, Cookies) {
  auto r = rule("g1");
  r.cookies = {{"session", "^[a-f0-9]{8}$"}};
  use({r});
  EXPECT_EQ(where(get("/", "Cookie: theme=dark; session=deadbeef\r\n")), 1);
  EXPECT_EQ(where(get("/", "Cookie: theme=dark\r\nCookie: session=0badf00d\r\n")), 1);
  EXPECT_EQ(where(get("/", "Cookie: session=nothex!!\r\n")), -1);
  EXPECT_EQ(where(get("/", "Cookie: Session=deadbeef\r\n")), -1);  // names are case-sensitive
  EXPECT_EQ(where(get("/", "Cookie: theme=dark\r\n")), -1);
  EXPECT_EQ(where(get("/")), -1);
}

TEST_F(Routing, AllGivenFieldsMustMatch) {
  auto r = rule("g3");
  r.method = "^GET$";
  r.host = "^shop\\.";
  r.path = "^/cart";
  r.headers = {{"X-Beta", "1"}};
  r.cookies = {{"uid", "."}};
  use({r});
  const std::string ok_extra = "X-Beta: 1\r\nCookie: uid=9\r\n";
  EXPECT_EQ(where(get("/cart/1", ok_extra, "shop.example")), 3);
  EXPECT_EQ(where(get("/cart/1", ok_extra, "shop.example", "HEAD")), -1);
  EXPECT_EQ(where(get("/cart/1", ok_extra, "www.example")), -1);
  EXPECT_EQ(where(get("/list", ok_extra, "shop.example")), -1);
  EXPECT_EQ(where(get("/cart/1", "X-Beta: 0\r\nCookie: uid=9\r\n", "shop.example")), -1);
  EXPECT_EQ(where(get("/cart/1", "X-Beta: 1\r\n", "shop.example")), -1);
}

TEST_F(Routing, FirstMatchWinsAndTheDefaultCatchesTheRest) {
  auto png = rule("g1");
  png.path = R"(\.png$)";
  png.name = "images";
  auto img = rule("g2");
  img.path = "^/img/";
  auto rest = rule("g0");
  use({png, img, rest});
  EXPECT_EQ(where(get("/img/a.png")), 1);  // both the first and second match
  EXPECT_EQ(where(get("/img/a.txt")), 2);
  EXPECT_EQ(where(get("/index.html")), 0);
  Decision d = route(get("/img/a.txt"));
  EXPECT_EQ(d.rule, 1);
  ASSERT_EQ(router_->rule_count(), 3u);
  EXPECT_EQ(router_->rule_name(0), "images");
  EXPECT_EQ(router_->rule_name(1), "rule@101");
  EXPECT_EQ(router_->rule_name(2), "rule@102");
}

TEST_F(Routing, NoMatchingRuleIsNoRule) {
  auto r = rule("g1");
  r.path = "^/api/";
  use({r});
  Decision d = route(get("/index.html"));
  EXPECT_EQ(d.kind, Decision::NoRule);
  EXPECT_EQ(d.rule, -1);
}

TEST_F(Routing, NoRulesRoundRobinsOverAllBackendsByWeight) {
  cfg_ = cluster({});
  cfg_.backends[2].weight = 3;
  auto r = Router::build(cfg_);
  ASSERT_TRUE(r.ok()) << r.error().message();
  router_ = std::move(*r);
  ASSERT_EQ(router_->rule_count(), 1u);
  EXPECT_EQ(router_->rule_name(0), "default");
  std::map<int, int> hits;
  for (int i = 0; i < 600; ++i) ++hits[where(get("/any" + std::to_string(i)))];
  EXPECT_EQ(hits, (std::map<int, int>{{0, 100}, {1, 100}, {2, 300}, {3, 100}}));
}

TEST_F(Routing, NoUsableMemberIsNoBackend) {
  auto r = rule("g1");
  use({r});
  load_.up[1] = false;
  Decision d = route(get("/"));
  EXPECT_EQ(d.kind, Decision::NoBackend);
  EXPECT_EQ(d.rule, 0);
}

TEST_F(Routing, BuildErrorsNameTheRuleLine) {
  auto bad = rule("g1");
  bad.path = "(";
  cfg_ = cluster({rule("g0"), bad});
  auto r = Router::build(cfg_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(),
            "test.toml:101: [rule] path: bad regular expression: missing ): (");

  cfg_ = cluster({rule("nowhere")});
  r = Router::build(cfg_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(),
            "test.toml:100: [rule] group: no back-end and not the front-end is in group 'nowhere'");

  auto pol = rule("g1");
  pol.policy = "random";
  cfg_ = cluster({pol});
  r = Router::build(cfg_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "test.toml:100: [rule] policy: unknown policy 'random'");
}

// ^(a+)+$ against "aaaa...ab" takes a backtracking engine time exponential in the
// number of a's; 30 would already take minutes. RE2 is linear, so 8000 are instant.
// Both patterns are anchored at the start, so RE2 must scan forward over all the input
// (an end-anchored one could be rejected by a reverse scan at the last byte).
TEST_F(Routing, PathologicalRegexIsLinear) {
  auto by_path = rule("g1");
  by_path.path = "^/(a+)+$";
  auto by_header = rule("g2");
  by_header.headers = {{"X-Long", "^(x+x+)+y$"}};
  use({by_path, by_header});
  const Req req =
      get("/" + std::string(8000, 'a') + "b", "X-Long: " + std::string(8000, 'x') + "z\r\n");
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 100; ++i) EXPECT_EQ(where(req), -1);
  double us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  std::printf("^(a+)+$ and ^(x+x+)+y$ on 8 KB inputs: %.1f us per request\n", us / 100);
  EXPECT_LT(us, 5e6);  // loose: sanitizer builds are slow; a backtracker never finishes
  // The same patterns still match what they should.
  EXPECT_EQ(where(get("/" + std::string(8000, 'a'))), 1);
  EXPECT_EQ(where(get("/", "X-Long: " + std::string(8000, 'x') + "y\r\n")), 2);
}

// The FE as a local node: its groups resolve to "local", always usable, and it competes
// with weight 1, its load read at index local_id().
class LocalNode : public Routing {
 protected:
  void build_with_fe(std::vector<config::RuleSection> rules) {
    cfg_ = cluster(std::move(rules));
    cfg_.frontend.id = "fe";
    cfg_.frontend.groups = {"g1", "solo"};
    cfg_.frontend.docroot = "/srv/fe";
    auto r = Router::build(cfg_);
    ASSERT_TRUE(r.ok()) << r.error().message();
    router_ = std::move(*r);
    ASSERT_EQ(router_->local_id(), 4u);
  }
};

TEST_F(LocalNode, GroupOfOnlyTheFrontendIsLocal) {
  build_with_fe({rule("solo")});
  load_.up.assign(5, false);  // never asked about the local node
  Decision d = route(get("/"));
  EXPECT_EQ(d.kind, Decision::Local);
  EXPECT_EQ(d.rule, 0);
}

TEST_F(LocalNode, CompetesWithTheBackendsOfItsGroup) {
  build_with_fe({rule("g1")});
  std::map<int, int> hits;
  for (int i = 0; i < 100; ++i) ++hits[where(get("/"))];
  EXPECT_EQ(hits, (std::map<int, int>{{-3, 50}, {1, 50}}));

  load_.up[1] = false;  // the only back-end of the group is down: the FE serves
  for (int i = 0; i < 10; ++i) EXPECT_EQ(where(get("/")), -3);
}

TEST_F(LocalNode, ItsLoadCountsForLeastConn) {
  auto r = rule("g1");
  r.policy = "least-conn";
  build_with_fe({r});
  load_.act[1] = 5;
  load_.act[4] = 9;  // local_id(): the FE is busier than be1
  for (int i = 0; i < 10; ++i) EXPECT_EQ(where(get("/")), 1);
  load_.act[4] = 2;
  for (int i = 0; i < 10; ++i) EXPECT_EQ(where(get("/")), -3);
}

TEST(RouterFromFile, InterfaceExample) {
  auto loaded = config::load(tcpha::testing::example_config());
  ASSERT_TRUE(loaded.config) << tcpha::testing::joined(loaded);
  auto r = Router::build(*loaded.config);
  ASSERT_TRUE(r.ok()) << r.error().message();
  Router& router = **r;
  FakeLoad load;
  load.up = {true};
  load.act = {0};
  ASSERT_EQ(router.rule_count(), 2u);
  EXPECT_EQ(router.rule_name(0), "images");
  EXPECT_EQ(router.rule_name(1), "rule@31");
  Decision d = router.route(get("/pics/cat.webp").r, 0, load);
  EXPECT_EQ(d.kind, Decision::Backend);
  EXPECT_EQ(d.backend, 0u);
  EXPECT_EQ(d.rule, 0);
  d = router.route(get("/index.html").r, 0, load);
  EXPECT_EQ(d.kind, Decision::Backend);
  EXPECT_EQ(d.rule, 1);
}

}  // namespace
}  // namespace tcpha::sched
