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

-- Timeline (bench/run.sh's failover timeline): BENCH_TIMELINE_T0_US (epoch us) set
-- counts the requests each thread starts per BENCH_TIMELINE_BIN_MS (default 10) ms since
-- then. On a keep-alive connection the next request leaves the moment a response is
-- complete, so this is the rate of completed responses over time. done() adds the bins
-- (merged over threads, "timeline": {bin_ms, t0_us, counts}) and a denser set of
-- percentiles for the response-time CDF. The clock is read through LuaJIT's FFI (wrk's
-- Lua has no clock of its own).
local timeline_t0 = tonumber(os.getenv("BENCH_TIMELINE_T0_US") or "")
local timeline_bin_us = (tonumber(os.getenv("BENCH_TIMELINE_BIN_MS") or "") or 10) * 1000
local quantiles = { 1, 5, 10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 95, 97.5, 99, 99.5, 99.9, 99.99 }
if timeline_t0 then
  local ffi = require("ffi")
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clk_id, bench_timespec *tp);
  ]]
  local ts = ffi.new("bench_timespec")
  local function now_us()
    ffi.C.clock_gettime(0, ts) -- CLOCK_REALTIME: the same clock as bash's EPOCHREALTIME
    return tonumber(ts.tv_sec) * 1e6 + math.floor(tonumber(ts.tv_nsec) / 1000)
  end
  tl_bins = {} -- global: done() reads each thread's copy with thread:get()
  local inner = request
  local static = nil
  function request()
    local b = math.floor((now_us() - timeline_t0) / timeline_bin_us)
    tl_bins[b] = (tl_bins[b] or 0) + 1
    if inner then return inner() end
    static = static or wrk.format()
    return static
  end
  local tl_threads = {}
  local inner_setup = setup
  function setup(thread)
    tl_threads[#tl_threads + 1] = thread
    if inner_setup then inner_setup(thread) end
  end
  quantiles = {}
  for p = 1, 99 do quantiles[#quantiles + 1] = p end
  for _, p in ipairs({ 0.1, 0.5, 99.1, 99.2, 99.3, 99.4, 99.5, 99.6, 99.7, 99.8, 99.9, 99.95, 99.99, 99.999 }) do
    quantiles[#quantiles + 1] = p
  end
  table.sort(quantiles)
  timeline_json = function()
    local sum, lo, hi = {}, nil, nil
    for _, t in ipairs(tl_threads) do
      for b, n in pairs(t:get("tl_bins") or {}) do
        sum[b] = (sum[b] or 0) + n
        lo = (lo == nil or b < lo) and b or lo
        hi = (hi == nil or b > hi) and b or hi
      end
    end
    local counts = {}
    if lo then
      for b = math.max(lo, 0), hi do counts[#counts + 1] = tostring(sum[b] or 0) end
    end
    return string.format(', "timeline": {"bin_ms": %d, "t0_us": %d, "first_bin": %d, "counts": [%s]}',
      timeline_bin_us / 1000, timeline_t0, lo and math.max(lo, 0) or 0, table.concat(counts, ", "))
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local q = {}
  for _, p in ipairs(quantiles) do
    q[#q + 1] = string.format("[%s, %d]", tostring(p), latency:percentile(p))
  end
  io.write(string.format(
    'BENCH_JSON {"duration_us": %d, "requests": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "stdev": %.1f, "percentiles": [%s]}%s}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency.stdev, table.concat(q, ", "),
    timeline_json and timeline_json() or ""))
end
