#pragma once
// The access log: a logger of its own (one line per request, timestamped), so that a
// reload can reopen its file and its lines never mix with the daemon's log.
#include <memory>
#include <string>

#include <spdlog/logger.h>

namespace tcpha {

// Null when path is empty, or (logged) when the file cannot be opened.
std::shared_ptr<spdlog::logger> open_access_log(const std::string& path);

}  // namespace tcpha
