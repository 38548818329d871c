#include "http/forwarded.hpp"

#include <algorithm>

namespace tcpha::http {

ForwardedFor::ForwardedFor(std::string_view client, const Limits& lim)
    : lim_(lim), line_("X-Forwarded-For: " + std::string(client) + "\r\n") {}

ParseResult ForwardedFor::fail(const ParseResult& r) {
  state_ = State::Failed;
  error_ = r;
  head_.clear();
  return r;
}

ParseResult ForwardedFor::feed(std::string_view in, std::string& out) {
  while (!in.empty()) {
    switch (state_) {
      case State::Failed:
        return error_;
      case State::Tunnel:
        out.append(in);
        return {ParseStatus::NeedMore, 0};
      case State::Head: {
        // Only the head is held back; a complete one is parsed where it lies when
        // nothing of it was held (the common case: a whole request in one read).
        std::string_view buf = in;
        size_t held = head_.size();
        if (held) {
          // One byte over the limit is enough for the parser to refuse (431).
          head_.append(in.substr(0, std::min(in.size(), lim_.max_head + 1 - held)));
          buf = head_;
        }
        Request req;
        ParseResult r = parse_request(buf, req, lim_);
        if (r.status == ParseStatus::Error) return fail(r);
        if (r.status == ParseStatus::NeedMore) {
          if (!held) head_.assign(in);
          return {ParseStatus::NeedMore, 0};
        }
        // Complete: the head without its final CRLF, our line, the CRLF.
        out.append(buf.substr(0, req.head_len - 2));
        out.append(line_);
        out.append("\r\n");
        ++requests_;
        upgrade_next_ = req.upgrade;
        size_t used = req.head_len - held;  // bytes of `in` the head took
        head_.clear();
        in.remove_prefix(used);
        if (req.chunked) {
          chunked_.emplace(lim_);
          state_ = State::Chunked;
        } else {
          body_left_ = req.content_length.value_or(0);
          state_ = body_left_ ? State::Body : upgrade_next_ ? State::Tunnel : State::Head;
        }
        break;
      }
      case State::Body: {
        size_t n = size_t(std::min<uint64_t>(body_left_, in.size()));
        out.append(in.substr(0, n));
        in.remove_prefix(n);
        body_left_ -= n;
        if (!body_left_) state_ = upgrade_next_ ? State::Tunnel : State::Head;
        break;
      }
      case State::Chunked: {
        uint64_t before = chunked_->scanned();
        ParseResult r = chunked_->feed(in);
        if (r.status == ParseStatus::Error) {
          // The bytes before the offending one go on, however the body was split:
          // what is passed on never depends on how the stream arrived.
          out.append(in.substr(0, size_t(std::min<uint64_t>(r.error_pos - before, in.size()))));
          return fail(r);
        }
        out.append(in.substr(0, r.consumed));
        in.remove_prefix(r.consumed);
        if (r.status == ParseStatus::Complete) {
          chunked_.reset();
          state_ = upgrade_next_ ? State::Tunnel : State::Head;
        }
        break;
      }
    }
  }
  return {state_ == State::Failed ? ParseStatus::Error : ParseStatus::NeedMore, 0};
}

}  // namespace tcpha::http
