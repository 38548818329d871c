#include "common/access_log.hpp"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>

namespace tcpha {

std::shared_ptr<spdlog::logger> open_access_log(const std::string& path) {
  if (path.empty()) return nullptr;
  try {
    auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path);
    auto log = std::make_shared<spdlog::logger>("access", sink);
    log->set_pattern("%Y-%m-%dT%H:%M:%S.%f %v");
    log->flush_on(spdlog::level::info);
    return log;
  } catch (const spdlog::spdlog_ex& e) {
    spdlog::error("access log {}: {}", path, e.what());
    return nullptr;
  }
}

}  // namespace tcpha
