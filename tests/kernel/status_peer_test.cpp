// The status socket checks its peer's credentials (SO_PEERCRED): a process of another
// user that may connect (through the socket's group) gets `status`, but `drain` and
// `undrain` are refused without reaching the daemon. Needs root, to run the client
// as another user.
#include <grp.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "status/status_socket.hpp"

namespace tcpha::status {
namespace {

namespace fs = std::filesystem;
constexpr uid_t kNobody = 65534;

// Runs query(path, cmd) in a child running as uid/gid 65534; the answer, or "ERR".
std::string query_as_nobody(const std::string& path, const std::string& cmd) {
  int p[2];
  if (::pipe(p) != 0) return "ERR pipe";
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    if (::setgroups(0, nullptr) != 0 || ::setgid(kNobody) != 0 || ::setuid(kNobody) != 0)
      ::_exit(2);
    auto a = query(path, cmd);
    std::string out = a.ok() ? *a : "ERR " + a.error().message();
    (void)!::write(p[1], out.data(), out.size());
    ::_exit(0);
  }
  ::close(p[1]);
  std::string out;
  char buf[512];
  for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) > 0;) out.append(buf, size_t(n));
  ::close(p[0]);
  int st = 0;
  ::waitpid(pid, &st, 0);
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? out : "ERR child";
}

TEST(StatusPeer, OtherUsersMayReadButNotDrain) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (to run a client as another user)";
  std::string tmpl = "/tmp/tcpha_status_peer.XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  const fs::path dir = tmpl;
  ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);  // nobody may reach the socket file
  const std::string path = (dir / "fe.sock").string();
  std::vector<std::string> seen;
  auto server = Server::start(path, [&](const std::string& cmd) {
    seen.push_back(cmd);
    return std::string("{\"ok\":true}");
  });
  ASSERT_TRUE(server.ok()) << server.error().message();

  // Mode 0660 root:root: another user cannot even connect.
  EXPECT_EQ(query_as_nobody(path, "status").rfind("ERR", 0), 0u);
  // In the socket's group it may connect: reading yes, changing no.
  ASSERT_EQ(::chown(path.c_str(), 0, kNobody), 0);
  EXPECT_EQ(query_as_nobody(path, "status"), "{\"ok\":true}\n");
  for (const char* cmd : {"drain be1", "undrain be1"}) {
    std::string answer = query_as_nobody(path, cmd);
    EXPECT_NE(answer.find("\"ok\":false"), std::string::npos) << cmd << ": " << answer;
    EXPECT_NE(answer.find("permission denied"), std::string::npos) << cmd << ": " << answer;
  }
  EXPECT_EQ(seen, std::vector<std::string>{"status"});  // the handler saw no drain
  // Root still may.
  auto answer = query(path, "drain be1");
  ASSERT_TRUE(answer.ok());
  EXPECT_EQ(*answer, "{\"ok\":true}\n");
  server->reset();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tcpha::status
