#pragma once
#include <string>

#include "config/config.hpp"

namespace tcpha::fe {

// Runs the front-end until SIGINT/SIGTERM, or until a successor took over. Returns the
// process exit status (INTERFACE.md: 0 clean stop, 2 the host lacks something).
// takeover: take over from the FE running with the same status socket (takeover.hpp).
int run_frontend(const config::Config& cfg, const std::string& status_socket, bool takeover = false);

}  // namespace tcpha::fe
