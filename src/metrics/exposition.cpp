#include "metrics/exposition.hpp"

#include <charconv>
#include <cmath>

namespace tcpha::metrics {
namespace {

constexpr bool is_edge_us(uint32_t us) {
  if (us >= 1 && us <= LatencyHistogram::kFine) return true;
  if (us < LatencyHistogram::kFine) return false;
  uint64_t off = us - LatencyHistogram::kFine;
  return off % LatencyHistogram::kCoarseWidth == 0 &&
         off / LatencyHistogram::kCoarseWidth <= LatencyHistogram::kCoarse;
}

constexpr bool bounds_ok() {
  for (size_t i = 0; i < kHistogramBoundsUs.size(); ++i) {
    if (!is_edge_us(kHistogramBoundsUs[i])) return false;
    if (i > 0 && kHistogramBoundsUs[i] <= kHistogramBoundsUs[i - 1]) return false;
  }
  return true;
}
static_assert(bounds_ok(), "histogram bounds must be increasing LatencyHistogram bucket edges");

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Shortest round-trip form, laid out as Go's strconv.FormatFloat(v, 'g', -1, 64), which
// the reference client uses: le="0.0001", not "1e-04", so bucket labels match theirs.
std::string format_double(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  if (ec != std::errc{}) return "NaN";
  std::string_view sci(buf, size_t(end - buf));
  int exp = 0;
  std::string_view e = sci.substr(sci.find('e') + 1);
  std::from_chars(e.data() + (e[0] == '+'), e.data() + e.size(), exp);
  if (exp < -4 || exp >= 6) return std::string(sci);
  char fixed[64];  // at most 6 integer digits or 4 leading zeros, then 17 significant
  auto r = std::to_chars(fixed, fixed + sizeof fixed, v, std::chars_format::fixed);
  return r.ec == std::errc{} ? std::string(fixed, r.ptr) : std::string(sci);
}

// Label values escape backslash, double quote and newline; HELP text escapes only
// backslash and newline (text format 0.0.4).
std::string escape(std::string_view s, bool quote) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (c == '"' && quote)
      out += "\\\"";
    else
      out += c;
  }
  return out;
}

// Renders {a="x",b="y"} (empty when there are no labels); `le` is appended for buckets.
std::string render_labels(const Labels& labels, std::string_view le = {}) {
  if (labels.empty() && le.empty()) return {};
  std::string out = "{";
  for (const auto& [k, v] : labels) {
    if (out.size() > 1) out += ',';
    out += k + "=\"" + escape(v, true) + '"';
  }
  if (!le.empty()) {
    if (out.size() > 1) out += ',';
    out += "le=\"" + std::string(le) + '"';
  }
  return out + "}";
}

std::vector<std::string> sample_names(std::string_view name, std::string_view type) {
  std::string n(name);
  if (type == "histogram") return {n + "_bucket", n + "_sum", n + "_count"};
  return {n};
}

}  // namespace

bool valid_metric_name(std::string_view name) {
  if (name.empty() || is_digit(name[0])) return false;
  for (char c : name)
    if (!is_alpha(c) && !is_digit(c) && c != '_' && c != ':') return false;
  return true;
}

bool valid_label_name(std::string_view name) {
  if (name.empty() || is_digit(name[0]) || name.starts_with("__")) return false;
  for (char c : name)
    if (!is_alpha(c) && !is_digit(c) && c != '_') return false;
  return true;
}

Exposition::Family* Exposition::family(std::string_view name, std::string_view help,
                                       std::string_view type, const Labels& labels,
                                       std::string& rendered) {
  const std::string where = std::string(type) + " " + std::string(name);
  if (!valid_metric_name(name)) {
    errors_.push_back(where + ": invalid metric name");
    return nullptr;
  }
  std::set<std::string_view> seen;
  for (const auto& [k, v] : labels) {
    if (!valid_label_name(k) || (type == "histogram" && k == "le")) {
      errors_.push_back(where + ": invalid label name '" + k + "'");
      return nullptr;
    }
    if (!seen.insert(k).second) {
      errors_.push_back(where + ": label '" + k + "' given twice");
      return nullptr;
    }
  }
  rendered = render_labels(labels);

  Family* f = nullptr;
  if (auto it = by_name_.find(name); it != by_name_.end()) {
    f = &families_[it->second];
    if (f->type != type) {
      errors_.push_back(where + ": already declared as a " + f->type);
      return nullptr;
    }
  } else {
    // A new family must not produce sample names another family already uses (a
    // gauge "x_count" next to a histogram "x"), or the parser would mix them up.
    auto names = sample_names(name, type);
    for (const auto& s : names) {
      if (auto o = owner_.find(s); o != owner_.end()) {
        errors_.push_back(where + ": sample name " + s + " is already used by " + o->second);
        return nullptr;
      }
    }
    for (auto& s : names) owner_.emplace(std::move(s), std::string(name));
    by_name_.emplace(std::string(name), families_.size());
    f = &families_.emplace_back(Family{std::string(name), std::string(help), std::string(type)});
  }
  if (!f->series.insert(rendered).second) {
    errors_.push_back(where + ": duplicate series " + (rendered.empty() ? "{}" : rendered));
    return nullptr;
  }
  return f;
}

void Exposition::sample(Family& f, std::string_view suffix, const std::string& labels,
                        std::string_view value) {
  f.samples.append(f.name).append(suffix).append(labels).append(" ").append(value).append("\n");
}

void Exposition::counter(std::string_view name, std::string_view help, uint64_t value,
                         Labels labels) {
  std::string full(name);
  if (!full.ends_with("_total")) full += "_total";
  std::string rendered;
  if (Family* f = family(full, help, "counter", labels, rendered))
    sample(*f, "", rendered, std::to_string(value));
}

void Exposition::gauge(std::string_view name, std::string_view help, double value, Labels labels) {
  std::string rendered;
  if (Family* f = family(name, help, "gauge", labels, rendered))
    sample(*f, "", rendered, format_double(value));
}

void Exposition::histogram(std::string_view name, std::string_view help, const LatencyHistogram& h,
                           Labels labels) {
  HistogramBuckets snap{};
  h.merge_into(snap);
  histogram(name, help, snap, std::move(labels));
}

void Exposition::histogram(std::string_view name, std::string_view help,
                           const HistogramBuckets& buckets, Labels labels) {
  std::string rendered;
  Family* f = family(name, help, "histogram", labels, rendered);
  if (!f) return;
  uint64_t cumulative = 0, count = 0;
  double sum_us = 0;
  size_t next = 0;  // next bucket of `buckets` to add
  for (uint32_t bound : kHistogramBoundsUs) {
    for (; next < buckets.size() && LatencyHistogram::upper_edge_us(next) <= bound; ++next)
      cumulative += buckets[next];
    sample(*f, "_bucket", render_labels(labels, format_double(bound / 1e6)),
           std::to_string(cumulative));
  }
  for (size_t i = 0; i < buckets.size(); ++i) {
    count += buckets[i];
    const bool overflow = i + 1 == buckets.size();
    const double lower = i == 0 ? 0 : LatencyHistogram::upper_edge_us(i - 1);
    const double mid = overflow ? lower : (lower + LatencyHistogram::upper_edge_us(i)) / 2;
    sum_us += double(buckets[i]) * mid;
  }
  sample(*f, "_bucket", render_labels(labels, "+Inf"), std::to_string(count));
  sample(*f, "_sum", rendered, format_double(sum_us / 1e6));
  sample(*f, "_count", rendered, std::to_string(count));
}

std::string Exposition::str() const {
  std::string out;
  for (const Family& f : families_) {
    out += "# HELP " + f.name + " " + escape(f.help, false) + "\n";
    out += "# TYPE " + f.name + " " + f.type + "\n";
    out += f.samples;
  }
  return out;
}

}  // namespace tcpha::metrics
