#pragma once
// Flow keys (struct tcpha_flow_key, bpf/tcpha_shared.h) from and to Endpoints, for
// both address families. datapath::make_key keeps its IPv4 signature; this is the
// dual-stack form the FE's workers and the BE's moves use.
#include <cstring>

#include "common/net.hpp"
#include "tcpha_shared.h"

namespace tcpha {

// The key of the connection between `client` and `vip` (one family, both).
inline tcpha_flow_key flow_key(const Endpoint& client, const Endpoint& vip) {
  tcpha_flow_key k;
  std::memset(&k, 0, sizeof k);  // hashed byte by byte: padding must be zero
  std::memcpy(k.saddr, client.addr.data(), sizeof k.saddr);
  std::memcpy(k.daddr, vip.addr.data(), sizeof k.daddr);
  k.sport = client.port;
  k.dport = vip.port;
  k.family = client.family;
  return k;
}

inline Endpoint key_client(const tcpha_flow_key& k) {
  Endpoint e;
  e.family = k.family;
  std::memcpy(e.addr.data(), k.saddr, sizeof k.saddr);
  e.port = k.sport;
  return e;
}

inline Endpoint key_vip(const tcpha_flow_key& k) {
  Endpoint e;
  e.family = k.family;
  std::memcpy(e.addr.data(), k.daddr, sizeof k.daddr);
  e.port = k.dport;
  return e;
}

}  // namespace tcpha
