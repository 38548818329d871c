"""One section of docs/BENCHMARKS.md rewritten in place, for the partial runs."""
import os


def splice(doc_path, section, begin, end):
    """Replaces the section between the markers begin and end of an existing
    BENCHMARKS.md with `section` (lines, markers included), or inserts it before the
    handoff latency section: the partial runs (BENCH_FAILOVER=only, BENCH_VARIANTS=only)
    rewrite their own section only."""
    text = open(doc_path).read() if os.path.exists(doc_path) else "# Benchmarks\n"
    block = "\n".join(section)
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        for anchor in ("## Handoff latency (tcpha)", "## Plots"):
            if anchor in text:
                i = text.index(anchor)
                text = text[:i] + block + "\n\n" + text[i:]
                break
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(doc_path, "w") as f:
        f.write(text)
