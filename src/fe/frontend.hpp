#pragma once
#include <string>

#include "config/config.hpp"

namespace tcpha::fe {

// Runs the front-end until SIGINT/SIGTERM. Returns the process exit status
// (INTERFACE.md: 0 clean stop, 2 the host lacks something).
int run_frontend(const config::Config& cfg, const std::string& status_socket);

}  // namespace tcpha::fe
