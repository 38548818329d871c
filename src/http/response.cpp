#include "http/response.hpp"

#include <array>
#include <cstdio>

namespace tcpha::http {
namespace {

constexpr std::array<std::string_view, 7> kDays = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
constexpr std::array<std::string_view, 12> kMonths = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

// Reads exactly `n` decimal digits at s[at]; -1 when any is not a digit.
int digits(std::string_view s, size_t at, size_t n) {
  int v = 0;
  for (size_t i = at; i < at + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

}  // namespace

const char* reason_phrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 204:
      return "No Content";
    case 206:
      return "Partial Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 416:
      return "Range Not Satisfiable";
    case 421:
      return "Misdirected Request";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

// The date is written twice per built-in response (Date, Last-Modified) and once more
// per copy a failover backup sizes, so it is computed here rather than with gmtime_r()
// and snprintf() (3% of a back-end's CPU on small keep-alive responses: the time zone
// lock, the format interpreter). Civil date from days since 1970-01-01 in the
// proleptic Gregorian calendar, by 400-year eras (146097 days each) starting on March 1,
// so that the leap day is the last day of an era-year.
std::string format_http_date(time_t t) {
  const int64_t secs = int64_t(t);
  const int64_t days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
  const int64_t sod = secs - days * 86400;  // 0..86399
  const int64_t z = days + 719468;          // days since 0000-03-01
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;                                      // 0..146096
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;  // 0..399
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               // 0..365
  const int64_t mp = (5 * doy + 2) / 153;                                    // 0 = March
  const int64_t mday = doy - (153 * mp + 2) / 5 + 1;
  const int64_t mon = mp < 10 ? mp + 2 : mp - 10;  // 0 = January
  const int64_t year = yoe + era * 400 + (mon < 2);
  const int64_t wday = (days % 7 + 11) % 7;  // 1970-01-01 was a Thursday (4)
  if (year >= 0 && year <= 9999) {
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    std::string out = "Xxx, 00 Xxx 0000 00:00:00 GMT";
    auto put2 = [&](size_t at, int64_t v) {
      out[at] = char('0' + v / 10);
      out[at + 1] = char('0' + v % 10);
    };
    out.replace(0, 3, kDays[size_t(wday)]);
    put2(5, mday);
    out.replace(8, 3, kMonths[size_t(mon)]);
    put2(12, year / 100);
    put2(14, year % 100);
    put2(17, sod / 3600);
    put2(20, sod / 60 % 60);
    put2(23, sod % 60);
    return out;
  }
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday].data(),
                tm.tm_mday, kMonths[tm.tm_mon].data(), tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  return buf;
}

std::optional<time_t> parse_http_date(std::string_view s) {
  // "Sun, 06 Nov 1994 08:49:37 GMT": fixed positions, so check them one by one.
  if (s.size() != 29 || s.substr(3, 2) != ", " || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
      s[19] != ':' || s[22] != ':' || s.substr(25) != " GMT")
    return std::nullopt;
  bool day_ok = false;
  for (auto d : kDays) day_ok |= s.substr(0, 3) == d;
  int mon = -1;
  for (size_t i = 0; i < kMonths.size(); ++i)
    if (s.substr(8, 3) == kMonths[i]) mon = static_cast<int>(i);
  int mday = digits(s, 5, 2), year = digits(s, 12, 4), hour = digits(s, 17, 2),
      min = digits(s, 20, 2), sec = digits(s, 23, 2);
  if (!day_ok || mon < 0 || mday < 1 || mday > 31 || year < 1970 || hour < 0 || hour > 23 ||
      min < 0 || min > 59 || sec < 0 || sec > 60)
    return std::nullopt;
  struct tm tm = {};
  tm.tm_mday = mday;
  tm.tm_mon = mon;
  tm.tm_year = year - 1900;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  return timegm(&tm);
}

std::string simple_reply(int status, bool close, time_t now) {
  std::string body = std::to_string(status) + " " + reason_phrase(status) + "\n";
  std::string r = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) + "\r\n";
  r += "Date: " + format_http_date(now) + "\r\n";
  r += "Content-Type: text/plain; charset=utf-8\r\n";
  r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  if (close) r += "Connection: close\r\n";
  r += "\r\n";
  return r + body;
}

}  // namespace tcpha::http
