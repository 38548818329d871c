#pragma once
// Small building blocks for HTTP/1.1 responses, shared by the front-end's own error
// replies and the back-end's static server.
#include <ctime>
#include <optional>
#include <string>
#include <string_view>

namespace tcpha::http {

// Reason phrase for a status code ("Not Found"); "Unknown" for codes not listed.
const char* reason_phrase(int status);

// IMF-fixdate (RFC 9110 5.6.7), e.g. "Sun, 06 Nov 1994 08:49:37 GMT", independent of
// the C locale.
std::string format_http_date(time_t t);
// Parses IMF-fixdate only (the obsolete RFC 850 and asctime forms are not accepted);
// nullopt when malformed.
std::optional<time_t> parse_http_date(std::string_view s);

// A complete response with a one-line text/plain body, e.g. for 400/408/414/431/503
// sent by the front-end before any back-end is involved. `close` adds
// "Connection: close" (the caller then closes the connection after sending).
std::string simple_reply(int status, bool close, time_t now = ::time(nullptr));

}  // namespace tcpha::http
