// The status socket: its file never exists with a mode wider than 0660, whatever the
// umask; reading commands are for anyone who may connect, changing ones for root and
// the daemon's user (the SO_PEERCRED half, which needs a second uid, is in
// tests/kernel/status_peer_test.cpp).
#include "status/status_socket.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "common/fd.hpp"

namespace tcpha::status {
namespace {

namespace fs = std::filesystem;

class StatusSocket : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::path(::testing::TempDir()) / "tcpha_status.XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = (dir_ / "fe.sock").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<Server> start() {
    auto s = Server::start(path_, [this](const std::string& cmd) {
      commands_.push_back(cmd);
      return std::string("{\"ok\":true}");
    });
    EXPECT_TRUE(s.ok()) << s.error().message();
    return s.ok() ? std::move(*s) : nullptr;
  }

  fs::path dir_;
  std::string path_;
  std::vector<std::string> commands_;
};

mode_t mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode;
}

TEST_F(StatusSocket, ModeIs0660WhateverTheUmask) {
  for (mode_t mask : {mode_t(0), mode_t(022), mode_t(077)}) {
    mode_t old = ::umask(mask);
    auto server = start();
    ::umask(old);
    ASSERT_TRUE(server);
    EXPECT_TRUE(S_ISSOCK(mode_of(path_)));
    EXPECT_EQ(mode_of(path_) & 07777, 0660u) << std::oct << mask;
    auto answer = query(path_, "status");
    ASSERT_TRUE(answer.ok()) << answer.error().message();
    EXPECT_EQ(*answer, "{\"ok\":true}\n");
  }
  // Nothing of the private bind directory is left behind.
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir_)) left.push_back(e.path().filename());
  EXPECT_TRUE(left.empty()) << left.front();
}

// bind() then chmod() left a moment in which the socket existed with the umask's mode
// (0777 & ~umask: anyone could connect). The name must appear only by rename, already
// 0660: inotify reports IN_MOVED_TO for it, never IN_CREATE.
TEST_F(StatusSocket, NameAppearsOnlyByRenameWithItsFinalMode) {
  UniqueFd in(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  ASSERT_TRUE(in.valid());
  ASSERT_GE(::inotify_add_watch(in.get(), dir_.c_str(), IN_CREATE | IN_MOVED_TO), 0);
  mode_t old = ::umask(0);
  auto server = start();
  ::umask(old);
  ASSERT_TRUE(server);
  alignas(inotify_event) char buf[4096];
  ssize_t n = ::read(in.get(), buf, sizeof buf);
  ASSERT_GT(n, 0);
  bool moved_in = false;
  for (char* p = buf; p < buf + n;) {
    auto* ev = reinterpret_cast<inotify_event*>(p);
    if (ev->len > 0 && std::string(ev->name) == "fe.sock") {
      EXPECT_FALSE(ev->mask & IN_CREATE) << "the socket was created under its final name";
      moved_in |= (ev->mask & IN_MOVED_TO) != 0;
    }
    p += sizeof(inotify_event) + ev->len;
  }
  EXPECT_TRUE(moved_in);
}

TEST_F(StatusSocket, ReplacesAStaleSocketButNotALiveOne) {
  auto first = start();
  ASSERT_TRUE(first);
  auto second = Server::start(path_, [](const std::string&) { return std::string("{}"); });
  EXPECT_FALSE(second.ok());  // in use
  first.reset();              // unlinks
  // A leftover file nobody answers on (a crashed daemon's) is replaced.
  {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path_.c_str());
    ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  }
  auto third = start();
  ASSERT_TRUE(third);
  EXPECT_TRUE(query(path_, "ping").ok());
}

TEST(StatusCommands, ChangingCommandsNeedRootOrTheDaemonsUser) {
  const uid_t daemon = 1000, other = 1001;
  for (const char* cmd : {"status", "ping", ""}) {
    EXPECT_TRUE(command_allowed(cmd, other, daemon)) << cmd;
    EXPECT_TRUE(command_allowed(cmd, daemon, daemon)) << cmd;
  }
  for (const char* cmd : {"drain be1", "undrain be1", "drain", "status ", "reload", "x"}) {
    EXPECT_FALSE(command_allowed(cmd, other, daemon)) << cmd;
    EXPECT_TRUE(command_allowed(cmd, daemon, daemon)) << cmd;
    EXPECT_TRUE(command_allowed(cmd, 0, daemon)) << cmd;
  }
}

// The daemon's own user passes the peer check on the real socket.
TEST_F(StatusSocket, OwnUserMayDrain) {
  auto server = start();
  ASSERT_TRUE(server);
  auto answer = query(path_, "drain be1");
  ASSERT_TRUE(answer.ok());
  EXPECT_EQ(*answer, "{\"ok\":true}\n");
  ASSERT_EQ(commands_.size(), 1u);
  EXPECT_EQ(commands_[0], "drain be1");
}

}  // namespace
}  // namespace tcpha::status
