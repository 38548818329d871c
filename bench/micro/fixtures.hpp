#pragma once
// Inputs shared by several microbenchmarks.
#include <string>

namespace tcpha::bench {

// What a browser sends for a page asset: 9 headers, ~560 bytes.
inline const std::string kBrowserRequest =
    "GET /static/img/products/4711/front-large.jpg?v=20240611 HTTP/1.1\r\n"
    "Host: shop.example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    "Accept: image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br, zstd\r\n"
    "Referer: https://shop.example.com/products/4711\r\n"
    "Cookie: session=7f3a9c0d2b; theme=dark\r\n"
    "Connection: keep-alive\r\n"
    "Sec-Fetch-Dest: image\r\n"
    "\r\n";

}  // namespace tcpha::bench
