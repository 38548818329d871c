#pragma once
// Builds one Prometheus text-format document (exposition format version 0.0.4).
// Samples may be added in any order; str() prints each metric family once, with its
// # HELP and # TYPE, followed by all of its samples in the order they were added.
// Misuse (an invalid name, a family re-declared with another type, a duplicate label
// set) drops that sample and is recorded in errors(), so the document stays parseable.
#include <array>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/histogram.hpp"

namespace tcpha::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;
using HistogramBuckets = std::array<uint64_t, LatencyHistogram::kBuckets>;

// Upper bounds (le) of the exported histogram buckets, in microseconds. Each is an
// edge of LatencyHistogram's own buckets, so the cumulative counts are exact; the
// histogram cannot tell values above its last coarse edge (~17.4 ms) apart, so no
// bound lies beyond that but +Inf.
inline constexpr std::array<uint32_t, 13> kHistogramBoundsUs = {
    5, 10, 25, 50, 100, 250, 500, 1000, 2048, 4096, 8192, 16384, 17408};

bool valid_metric_name(std::string_view name);  // [a-zA-Z_:][a-zA-Z0-9_:]*
bool valid_label_name(std::string_view name);   // [a-zA-Z_][a-zA-Z0-9_]*, no "__" prefix

class Exposition {
 public:
  // A counter; "_total" is appended to the name when it lacks it.
  void counter(std::string_view name, std::string_view help, uint64_t value, Labels labels = {});
  void gauge(std::string_view name, std::string_view help, double value, Labels labels = {});
  // Cumulative buckets at kHistogramBoundsUs (le in seconds) and +Inf, _sum in seconds
  // estimated from bucket midpoints (the overflow bucket counts at its lower edge), and
  // _count. All three come from one snapshot, so +Inf always equals _count.
  void histogram(std::string_view name, std::string_view help, const LatencyHistogram& h,
                 Labels labels = {});
  // The same from buckets already summed (e.g. several workers' histograms merged).
  void histogram(std::string_view name, std::string_view help, const HistogramBuckets& buckets,
                 Labels labels = {});

  std::string str() const;
  const std::vector<std::string>& errors() const { return errors_; }

 private:
  struct Family {
    std::string name, help, type;
    std::string samples;           // rendered sample lines
    std::set<std::string> series;  // rendered label sets already present
  };
  // The family to add a sample of `type` with `labels` to, or nullptr (error recorded).
  Family* family(std::string_view name, std::string_view help, std::string_view type,
                 const Labels& labels, std::string& rendered_labels);
  void sample(Family& f, std::string_view suffix, const std::string& labels,
              std::string_view value);

  std::vector<Family> families_;                           // in order of first use
  std::map<std::string, size_t, std::less<>> by_name_;     // family name -> index
  std::map<std::string, std::string, std::less<>> owner_;  // sample name -> family name
  std::vector<std::string> errors_;
};

}  // namespace tcpha::metrics
