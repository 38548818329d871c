#pragma once
// Decision logic of the back-end's built-in static server. plan_static_reply() does the
// file-system work (open, fstat) and builds the response head; the event loop then
// writes `head` and either `inline_body` or `length` bytes of `file` from `offset`
// (StaticSession: from the file mapped, or with sendfile() when it is small).
//
// Choices worth knowing:
//  - only GET and HEAD (405 with "Allow: GET, HEAD" otherwise);
//  - the path is percent-decoded; a bad %xx, a decoded NUL or any ".." segment (also
//    when encoded, e.g. "%2e%2e" or "%2F..") -> 400: clients remove dot segments
//    before sending (RFC 3986 5.2.4), so one in a request is malformed, not a missing
//    file. Containment does not rest on that check alone: files are opened with
//    openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS), so symlinks leading out of the
//    docroot fail too (403);
//  - hidden files: a segment starting with '.' other than "." (.git, .env, .htpasswd)
//    -> 404, as if absent; only a leading /.well-known/ (RFC 8615) is served;
//  - the trailing-slash redirect's Location is always a path on this server: leading
//    slashes collapse to one ("GET //evil.example" must not send the browser away);
//  - a directory is served through its index.html; a directory path without a trailing
//    '/' is redirected (301) so relative links in the index resolve; no listings;
//  - only regular files (403 for FIFOs, devices, sockets); files are opened
//    O_NONBLOCK so a FIFO cannot stall the event loop;
//  - validators: Last-Modified and a strong ETag ("mtime-size" in hex). If-None-Match
//    takes precedence over If-Modified-Since (RFC 9110 13.2.2); If-Range is honoured;
//  - Range: one "bytes=" range only; several ranges or a malformed header are ignored
//    (200, allowed by RFC 9110 14.2); Range applies to GET only;
//  - 304 carries no Content-Length; every other reply does;
//  - HEAD gets the head GET would get, without a body.
#include <sys/types.h>

#include <cstdint>
#include <ctime>
#include <string>
#include <string_view>

#include "common/fd.hpp"
#include "http/request.hpp"
#include "http/response.hpp"

namespace tcpha::serve {

struct StaticReply {
  int status = 0;
  UniqueFd file;            // open only when length > 0
  off_t offset = 0;         // first byte of `file` to send
  uint64_t length = 0;      // body bytes of `file` to send; 0 for HEAD, 304 and errors
  std::string head;         // full response head including the final CRLFCRLF
  std::string inline_body;  // small text body of error/redirect replies (empty for HEAD)
  bool close = false;       // close the connection after this reply
};

// `docroot_fd`: a directory fd (O_PATH is enough). `server_name`: Server header value,
// omitted when empty. `now`: for Date and for judging If-Modified-Since.
StaticReply plan_static_reply(int docroot_fd, const http::Request& req,
                              std::string_view server_name, time_t now);

// Content-Type for a file name by its extension (case-insensitive);
// application/octet-stream when unknown.
std::string_view content_type_for(std::string_view file_name);

}  // namespace tcpha::serve
