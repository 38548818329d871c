-- wrk script for bench/run.sh.
--
-- Environment (read when the script loads, since wrk decides before init() whether
-- requests are static):
--   BENCH_PATHS  file with one "path weight" line per target: each request then picks
--                a target at random with probability proportional to its weight (the
--                weights carry the Zipf or uniform popularity; bench/gen_files.py
--                writes them); unset: every request asks for the URL's path.
--   BENCH_CLOSE  "1": every request carries "Connection: close" (a new connection
--                per request).
--   BENCH_SEED   seed of the per-thread random streams (deterministic runs).
-- At the end it prints one line "BENCH_JSON {...}" with the counts, the errors and the
-- latency percentiles in microseconds, which run.sh extracts.

local paths_file = os.getenv("BENCH_PATHS")
local seed = tonumber(os.getenv("BENCH_SEED") or "1")

if os.getenv("BENCH_CLOSE") == "1" then
  wrk.headers["Connection"] = "close"
end

if paths_file and paths_file:match("%.visits$") then
  local visits = {}
  local visit, pos = nil, 0

  local threads = 0
  function setup(thread)
    threads = threads + 1
    thread:set("bench_thread", threads)
  end

  function init(args)
    for line in io.lines(paths_file) do
      local v = {}
      for p in line:gmatch("%S+") do v[#v + 1] = wrk.format(nil, p) end
      if #v > 0 then visits[#visits + 1] = v end
    end
    assert(#visits > 0, "no visits in " .. paths_file)
    math.randomseed(seed * 7919 + (bench_thread or 0))
  end

  function request()
    if not visit or pos >= #visit then
      visit, pos = visits[math.random(#visits)], 0
    end
    pos = pos + 1
    return visit[pos]
  end
elseif paths_file and paths_file ~= "" then
  local paths, cdf = {}, {}

  local function load()
    local total = 0
    for line in io.lines(paths_file) do
      local p, w = line:match("^(%S+)%s+(%S+)$")
      if p then
        total = total + tonumber(w)
        paths[#paths + 1] = p
        cdf[#cdf + 1] = total
      end
    end
    assert(#paths > 0, "no targets in " .. paths_file)
    for i = 1, #cdf do cdf[i] = cdf[i] / total end
  end

  -- setup() runs in the main Lua state; thread:set() makes bench_thread a global of
  -- the thread's own state, where init() reads it: one random stream per thread.
  local threads = 0
  function setup(thread)
    threads = threads + 1
    thread:set("bench_thread", threads)
  end

  function init(args)
    load()
    math.randomseed(seed * 7919 + (bench_thread or 0))
  end

  -- Binary search of the first cumulative weight >= u.
  local function pick()
    local u, lo, hi = math.random(), 1, #cdf
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if cdf[mid] < u then lo = mid + 1 else hi = mid end
    end
    return paths[lo]
  end

  function request()
    return wrk.format(nil, pick())
  end
end

local quantiles = { 1, 5, 10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 95, 97.5, 99, 99.5, 99.9, 99.99 }

function done(summary, latency, requests)
  local e = summary.errors
  local q = {}
  for _, p in ipairs(quantiles) do
    q[#q + 1] = string.format("[%s, %d]", tostring(p), latency:percentile(p))
  end
  io.write(string.format(
    'BENCH_JSON {"duration_us": %d, "requests": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "stdev": %.1f, "percentiles": [%s]}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency.stdev, table.concat(q, ", ")))
end
