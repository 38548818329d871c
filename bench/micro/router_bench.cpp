// Rule matching and policy choice for one request: a few RE2 rules as a site would
// configure them, the request falling through to the third.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "config/config.hpp"
#include "fixtures.hpp"
#include "http/request.hpp"
#include "sched/router.hpp"

namespace {

struct AllUp : tcpha::sched::LoadView {
  bool usable(uint32_t) const override { return true; }
  int64_t active(uint32_t b) const override { return int64_t(b % 3); }
};

tcpha::config::RuleSection rule(std::string name, std::string group, std::string policy) {
  tcpha::config::RuleSection r;
  r.name = std::move(name);
  r.group = std::move(group);
  r.policy = std::move(policy);
  return r;
}

tcpha::config::Config site() {
  tcpha::config::Config c;
  c.path = "bench.toml";
  const char* groups[3][2] = {{"pages", "api"}, {"pages", "images"}, {"images", "api"}};
  for (int i = 0; i < 3; ++i) {
    tcpha::config::BackendSection b;
    b.id = "be" + std::to_string(i + 1);
    b.groups = {groups[i][0], groups[i][1]};
    b.line = 10 + i;
    c.backends.push_back(b);
  }
  auto api = rule("api", "api", "least-conn");
  api.path = "^/api/";
  api.headers["X-Tenant"] = "^[a-z0-9-]+$";
  auto admin = rule("admin", "pages", "hash");
  admin.host = "^admin\\.";
  auto images = rule("images", "images", "lard");
  images.path = "\\.(png|jpe?g|gif|webp|avif)$";
  c.rules = {api, admin, images, rule("default", "pages", "round-robin")};
  for (size_t i = 0; i < c.rules.size(); ++i) c.rules[i].line = 100 + int(i);
  return c;
}

void BM_RouterRoute(benchmark::State& state) {
  auto cfg = site();
  auto router = tcpha::sched::Router::build(cfg);
  if (!router) {
    state.SkipWithError(router.error().message().c_str());
    return;
  }
  tcpha::http::Request req;
  if (tcpha::http::parse_request(tcpha::bench::kBrowserRequest, req).status !=
      tcpha::http::ParseStatus::Complete) {
    state.SkipWithError("request did not parse");
    return;
  }
  AllUp load;
  for (auto _ : state) {
    auto d = (*router)->route(req, 0x0200c80a, load);
    benchmark::DoNotOptimize(d);
  }
}
BENCHMARK(BM_RouterRoute);

}  // namespace
