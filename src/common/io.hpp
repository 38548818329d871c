#pragma once
// Nonblocking socket I/O on byte buffers, for the control links' event loops.
#include <sys/socket.h>

#include <cerrno>
#include <string>

namespace tcpha {

inline constexpr int kPeerClosed = -1;

// Appends everything the socket holds now to `in`. Returns 0 while the connection is
// open, kPeerClosed at EOF, or the errno of a failed recv.
inline int recv_available(int fd, std::string& in) {
  char buf[65536];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      in.append(buf, size_t(n));
      continue;
    }
    if (n == 0) return kPeerClosed;
    return errno == EAGAIN ? 0 : errno;
  }
}

// Sends as much of `out` as the socket takes now and erases it. Returns 0 (also when
// the socket is full), or the errno of a failed send.
inline int send_pending(int fd, std::string& out) {
  while (!out.empty()) {
    ssize_t n = send(fd, out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) return errno == EAGAIN ? 0 : errno;
    out.erase(0, size_t(n));
  }
  return 0;
}

}  // namespace tcpha
