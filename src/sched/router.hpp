#pragma once
// Content-aware routing: the [[rule]] tables of the cluster file, compiled once.
//
// Rules are tried in file order and the first match wins. A rule matches when every
// match field it gives matches (AND); a rule without match fields matches everything.
// Each field is an RE2 regular expression searched (not anchored: use ^ and $) in:
//   method  the request method;
//   host    the Host value as the client sent it, port included (or the authority of
//           an absolute-form target);
//   path    the raw path, before '?', not percent-decoded;
//   header  { NAME = RE }: the first header of that name (names case-insensitive); a
//           missing header does not match;
//   cookie  { NAME = RE }: the first cookie of that name; a missing one does not match.
// RE2 runs in time linear in the input, whatever the pattern: client bytes cannot make
// matching slow.
//
// The matching rule's group is resolved to its members at build time: every back-end
// listing the group (config order), plus the FE itself when [frontend] groups lists it
// (the local node). The rule's policy picks one usable member. The local node is always
// usable and competes like any member with weight 1; its load is LoadView::active at
// index local_id() (== config.backends.size()), which the FE fills with the requests it
// serves itself.
//
// A config without [[rule]] behaves as one rule "default" that matches everything and
// round-robins over all back-ends by weight.
#include <memory>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "config/config.hpp"
#include "http/request.hpp"
#include "sched/policy.hpp"

namespace re2 {
class RE2;
}

namespace tcpha::sched {

struct Decision {
  enum Kind { Backend, Local, NoRule, NoBackend } kind = NoRule;
  uint32_t backend = 0;  // when kind == Backend (index into config.backends)
  int rule = -1;         // index of the matched rule (for logs/metrics), -1 when none
};

// Immutable after build except for the policies' state, which is thread-safe: any
// number of threads may call route() at once. A reload builds a new Router.
class Router {
 public:
  static Result<std::unique_ptr<Router>> build(const config::Config& cfg);
  ~Router();

  Decision route(const http::Request& req, uint32_t client_addr_be, const LoadView& load);
  // A later request on a connection that back-end `holder` (config index) holds
  // already: when `holder` is in the matching rule's group the answer is `holder`
  // itself, without asking the policy (the connection stays; no policy state
  // changes); otherwise as route(). Multi-handoff: the BE routes each later request.
  static constexpr uint32_t kNoHolder = UINT32_MAX;
  Decision route_held(const http::Request& req, uint32_t client_addr_be, const LoadView& load,
                      uint32_t holder);

  // Rule i's group, and its policy's choice for a connection with no request at hand
  // (drain and rebalance move idle connections; the policy sees an empty request):
  // a Members position, or -1 when no member is usable.
  const Members& members(int rule) const;
  int pick(int rule, uint32_t client_addr_be, const LoadView& load);

  // LARD tables shared between the nodes that route (multi-handoff): the assignments
  // this router's LARD rules made since the last call, at most `max`, and another
  // node's. Members are named by Member::seed (from the back-end's id), which every
  // node derives alike whatever the order of its member list; unknown ones are skipped.
  struct LardShare {
    uint32_t rule = 0;
    uint64_t target = 0;            // hash64 of the path
    std::vector<uint64_t> members;  // Member::seed of each server
  };
  std::vector<LardShare> take_lard_changes(size_t max);
  void learn_lard(const LardShare& s);

  size_t rule_count() const;
  const std::string& rule_name(int i) const;  // the rule's name, or "rule@LINE"
  uint32_t local_id() const { return local_id_; }

 private:
  struct Rule;
  Router() = default;

  std::vector<Rule> rules_;
  uint32_t local_id_ = 0;
};

}  // namespace tcpha::sched
