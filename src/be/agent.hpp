#pragma once
#include <string>

#include "config/config.hpp"

namespace tcpha::be {

// Runs the back-end agent `id` until SIGINT/SIGTERM: control server for the FE,
// imports of handed-off connections, and the built-in static server. Returns the
// process exit status (INTERFACE.md).
int run_backend(const config::Config& cfg, const std::string& id, const std::string& status_socket);
// Runs CARD node `id` of a file with [[node]] tables (docs/card.md): a back-end agent
// that also accepts clients on the VIP and hands what it does not serve to the owner.
int run_node(const config::Config& cfg, const std::string& id, const std::string& status_socket);

}  // namespace tcpha::be
