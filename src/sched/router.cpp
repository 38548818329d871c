#include "sched/router.hpp"
#include "sched/lard.hpp"

#include <re2/re2.h>

#include <algorithm>
#include <tuple>

#include "sched/policies.hpp"

namespace tcpha::sched {

struct Router::Rule {
  std::string name;
  std::unique_ptr<RE2> method, host, path;  // null: field not given
  std::vector<std::pair<std::string, std::unique_ptr<RE2>>> headers, cookies;
  std::unique_ptr<Policy> policy;

  bool matches(const http::Request& req) const {
    auto search = [](const std::unique_ptr<RE2>& re, std::string_view s) {
      return !re || RE2::PartialMatch(s, *re);
    };
    if (!search(method, req.method) || !search(host, req.host) || !search(path, req.path))
      return false;
    for (const auto& [name, re] : headers) {
      auto v = req.header(name);
      if (!v || !RE2::PartialMatch(*v, *re)) return false;
    }
    for (const auto& [name, re] : cookies) {
      auto v = req.cookie(name);
      if (!v || !RE2::PartialMatch(*v, *re)) return false;
    }
    return true;
  }
};

namespace {

bool known_hash_key(std::string_view k) {
  bool named = (k.starts_with("header:") || k.starts_with("cookie:")) && k.size() > 7;
  return named || k == "path" || k == "url" || k == "host" || k == "client";
}

// Compiles one rule of the file; `where` is "FILE:LINE: [rule]" for error messages.
Result<std::unique_ptr<RE2>> compile(const std::string& where, std::string_view field,
                                     const std::string& pattern) {
  RE2::Options opt;
  opt.set_log_errors(false);
  auto re = std::make_unique<RE2>(pattern, opt);
  if (!re->ok())
    return app_error(where + " " + std::string(field) + ": bad regular expression: " + re->error());
  return re;
}

}  // namespace

Router::~Router() = default;

Result<std::unique_ptr<Router>> Router::build(const config::Config& cfg) {
  std::unique_ptr<Router> r(new Router);
  r->local_id_ = uint32_t(cfg.backends.size());

  for (const auto& b : cfg.backends)
    if (b.weight == 0)
      return app_error(cfg.path + ":" + std::to_string(b.line) + ": [backend] weight: 0 for '" +
                       b.id + "'; weights start at 1");

  auto members_of = [&](const std::string* group) {
    std::vector<Member> list;
    for (uint32_t i = 0; i < cfg.backends.size(); ++i) {
      const auto& b = cfg.backends[i];
      if (!group || std::find(b.groups.begin(), b.groups.end(), *group) != b.groups.end())
        list.push_back({i, b.weight, hash64(b.id)});
    }
    const auto& fe = cfg.frontend;
    if (group && std::find(fe.groups.begin(), fe.groups.end(), *group) != fe.groups.end())
      list.push_back({r->local_id_, 1, hash64(fe.id)});
    return Members(std::move(list), r->local_id_);
  };

  if (cfg.rules.empty()) {
    Rule& rule = r->rules_.emplace_back();
    rule.name = "default";
    Members all = members_of(nullptr);
    if (all.size() == 0) return app_error(cfg.path + ": no back-ends to route to");
    rule.policy = std::make_unique<RoundRobin>(std::move(all));
    return r;
  }

  for (const config::RuleSection& rs : cfg.rules) {
    Rule& rule = r->rules_.emplace_back();
    rule.name = rs.name.empty() ? "rule@" + std::to_string(rs.line) : rs.name;
    const std::string where = cfg.path + ":" + std::to_string(rs.line) + ": [rule]";

    // Empty strings mean "field not given", as in config::RuleSection.
    for (auto [field, pattern, out] :
         {std::tuple{"method", &rs.method, &rule.method}, std::tuple{"host", &rs.host, &rule.host},
          std::tuple{"path", &rs.path, &rule.path}}) {
      if (pattern->empty()) continue;
      auto re = compile(where, field, *pattern);
      if (!re) return re.error();
      *out = std::move(*re);
    }
    for (auto [field, in, out] : {std::tuple{"header", &rs.headers, &rule.headers},
                                  std::tuple{"cookie", &rs.cookies, &rule.cookies}}) {
      for (const auto& [name, pattern] : *in) {
        auto re = compile(where, std::string(field) + "." + name, pattern);
        if (!re) return re.error();
        out->emplace_back(name, std::move(*re));
      }
    }

    // config::load has checked all of this already; a Config built in code has not.
    if (rs.policy != "round-robin" && rs.policy != "least-conn" && rs.policy != "hash" &&
        rs.policy != "lard")
      return app_error(where + " policy: unknown policy '" + rs.policy + "'");
    if (rs.policy == "hash" && !known_hash_key(rs.hash_key))
      return app_error(where + " hash_key: unknown key '" + rs.hash_key + "'");
    if (rs.policy == "lard" && rs.lard_low >= rs.lard_high)
      return app_error(where + " lard_low: must be below lard_high");
    Members members = members_of(&rs.group);
    if (members.size() == 0)
      return app_error(where + " group: no back-end and not the front-end is in group '" +
                       rs.group + "'");
    rule.policy = make_policy(rs, std::move(members));
  }
  return r;
}

Decision Router::route(const http::Request& req, uint32_t client_addr_be, const LoadView& load) {
  return route_held(req, client_addr_be, load, kNoHolder);
}

Decision Router::route_held(const http::Request& req, uint32_t client_addr_be,
                            const LoadView& load, uint32_t holder) {
  for (size_t i = 0; i < rules_.size(); ++i) {
    Rule& rule = rules_[i];
    if (!rule.matches(req)) continue;
    const Members& m = rule.policy->members();
    for (size_t pos = 0; holder != kNoHolder && pos < m.size(); ++pos)
      if (m[pos].id == holder) return {Decision::Backend, holder, int(i)};
    const int pos = rule.policy->pick(req, client_addr_be, load);
    if (pos < 0) return {Decision::NoBackend, 0, int(i)};
    const uint32_t id = rule.policy->members()[size_t(pos)].id;
    if (id == local_id_) return {Decision::Local, 0, int(i)};
    return {Decision::Backend, id, int(i)};
  }
  return {Decision::NoRule, 0, -1};
}

const Members& Router::members(int rule) const { return rules_.at(size_t(rule)).policy->members(); }

int Router::pick(int rule, uint32_t client_addr_be, const LoadView& load) {
  static const http::Request kNone{};
  return rules_.at(size_t(rule)).policy->pick(kNone, client_addr_be, load);
}

std::vector<Router::LardShare> Router::take_lard_changes(size_t max) {
  std::vector<LardShare> out;
  for (size_t i = 0; i < rules_.size() && out.size() < max; ++i) {
    auto* lard = dynamic_cast<Lard*>(rules_[i].policy.get());
    if (!lard) continue;
    const Members& m = lard->members();
    for (auto& [target, servers] : lard->take_changes(max - out.size())) {
      LardShare sh{uint32_t(i), target, {}};
      for (uint32_t pos : servers) sh.members.push_back(m[pos].seed);
      out.push_back(std::move(sh));
    }
  }
  return out;
}

void Router::learn_lard(const LardShare& sh) {
  if (sh.rule >= rules_.size()) return;
  auto* lard = dynamic_cast<Lard*>(rules_[sh.rule].policy.get());
  if (!lard) return;
  const Members& m = lard->members();
  std::vector<uint32_t> servers;
  for (uint64_t seed : sh.members)
    for (size_t pos = 0; pos < m.size(); ++pos)
      if (m[pos].seed == seed) servers.push_back(uint32_t(pos));
  lard->learn(sh.target, std::move(servers), Lard::Clock::now());
}

size_t Router::rule_count() const { return rules_.size(); }

const std::string& Router::rule_name(int i) const { return rules_.at(size_t(i)).name; }

}  // namespace tcpha::sched
