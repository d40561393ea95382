# Reads a miglab latency.hlog with the PyPI `hdrhistogram` package (an implementation
# independent of miglab's) and prints, per tag, the total count and percentiles as JSON.
import json
import math
import sys

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

reader = HistogramLogReader(sys.argv[1], HdrHistogram(1, 3600000000, 3))
sums = {}
intervals = 0
while True:
    h = reader.get_next_interval_histogram()
    if h is None:
        break
    intervals += 1
    tag = h.get_tag()
    if tag not in sums:
        sums[tag] = HdrHistogram(1, 3600000000, 3)
    sums[tag].add(h)


def at_rank(h, q):
    """The value at quantile q, the target rank taken as ceil(q * count) as HdrHistogram_rust
    and HdrHistogram_c do (this package rounds it instead: with few samples the two conventions
    pick neighbouring samples, so the comparison uses one), from this package's decoding."""
    target = max(1, math.ceil(q * h.get_total_count()))
    seen = 0
    for item in h.get_recorded_iterator():
        seen += item.count_at_value_iterated_to
        if seen >= target:
            return h.get_highest_equivalent_value(item.value_iterated_to)
    return 0


out = {
    "intervals": intervals,
    "start_time_sec": reader.get_start_time_sec(),
    "tags": {
        t: {
            "count": h.get_total_count(),
            "p50": at_rank(h, 0.5),
            "p90": at_rank(h, 0.9),
            "p99": at_rank(h, 0.99),
            "p999": at_rank(h, 0.999),
            "max": h.get_max_value(),
            "own_p99": h.get_value_at_percentile(99),
        }
        for t, h in sums.items()
    },
}
print(json.dumps(out))
