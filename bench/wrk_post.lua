-- wrk script: POSTs one fixed chat-completions request (BENCH_BODY, with
-- BENCH_TOKEN as a bearer token when set) and prints the run's figures as
-- one JSON line prefixed with "BENCHJSON " for bench/run to pick up.
-- Latencies are wrk's own per-request measurements, in microseconds.

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
local token = os.getenv("BENCH_TOKEN")
if token ~= nil and token ~= "" then
   wrk.headers["Authorization"] = "Bearer " .. token
end

function done(summary, latency, requests)
   local e = summary.errors
   local secs = summary.duration / 1e6
   io.write(string.format(
      'BENCHJSON {"requests":%d,"seconds":%.3f,"rps":%.1f,' ..
      '"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,"mean_us":%.1f,"max_us":%.1f,' ..
      '"errors":%d,"errors_status":%d,"errors_timeout":%d}\n',
      summary.requests, secs, summary.requests / secs,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.mean, latency.max,
      e.connect + e.read + e.write + e.status + e.timeout, e.status, e.timeout))
end
