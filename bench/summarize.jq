# summarize.jq - turns bench/run's list of measurements (one object per run)
# into the result document: per-path figures as the median over rounds, the
# ratios, the scale series, resources and the issue's targets.
# Inputs via --arg/--argjson: date cores cpu commit kernel rounds secs threads
# nginx wrk.

def median:
  map(select(. != null)) | sort
  | if length == 0 then null
    elif length % 2 == 1 then .[length / 2 | floor]
    else (.[length / 2 - 1] + .[length / 2]) / 2 end;
def r1: if . == null then null else (. * 10 | round) / 10 end;
def r3: if . == null then null else (. * 1000 | round) / 1000 end;
def div($a; $b): if $a == null or $b == null or $b == 0 then null else $a / $b end;
def sub($a; $b): if $a == null or $b == null then null else $a - $b end;
def mean: map(select(. != null)) | if length == 0 then null else add / length end;

. as $runs
| def sel($phase; $path; $kind): $runs | map(select(.phase == $phase and .path == $path and .kind == $kind));
  def med($phase; $path; $kind; $f): sel($phase; $path; $kind) | map(.[$f]) | median;
  def cpu($path; $kind):
    sel("main"; $path; $kind) | map(.cpu_pct // {}) as $c
    | ($c | map(keys) | add // [] | unique)
    | map(. as $k | {key: $k, value: ([$c[][$k]] | median | r1)}) | from_entries;

  (["direct", "nginx", "relay", "mcpd"] | map({key: ., value: {
      c1_p50_us: med("main"; .; "c1"; "p50_us") | r1,
      c1_p99_us: med("main"; .; "c1"; "p99_us") | r1,
      c1_rps: med("main"; .; "c1"; "rps") | r1,
      c64_rps: med("main"; .; "c64"; "rps") | r1,
      c64_p50_us: med("main"; .; "c64"; "p50_us") | r1,
      c64_p99_us: med("main"; .; "c64"; "p99_us") | r1,
      ttft_p50_us: med("main"; .; "stream_ttft"; "ttft_p50_us") | r1,
      ttft_p99_us: med("main"; .; "stream_ttft"; "ttft_p99_us") | r1,
      chunks_per_sec: med("main"; .; "stream_rate"; "chunks_per_sec") | r1,
      cpu_pct_c64: cpu(.; "c64"),
      cpu_pct_stream_rate: cpu(.; "stream_rate")
    }}) | from_entries) as $p

| ($runs | map(select(.phase == "scale" and (.path == "relay" or .path == "mcpd")))
   | group_by(.round)
   | map({
       step: .[0].round,
       idle: .[0].idle,
       mcpd_rss_kb: .[0].mcpd_rss_kb,
       c64_rps: (map(select(.path == "relay" and .kind == "c64")) | .[0].rps | r1),
       c64_p99_us: (map(select(.path == "relay" and .kind == "c64")) | .[0].p99_us | r1),
       mcpd_c64_rps: (map(select(.path == "mcpd" and .kind == "c64")) | .[0].rps | r1),
       c1_p50_us: (map(select(.path == "relay" and .kind == "c1")) | .[0].p50_us | r1),
       c1_p99_us: (map(select(.path == "relay" and .kind == "c1")) | .[0].p99_us | r1),
       c1_max_us: (map(select(.path == "relay" and .kind == "c1")) | .[0].max_us | r1),
       c1_seconds: (map(select(.path == "relay" and .kind == "c1")) | .[0].seconds),
       cpu_pct_c64: (map(select(.path == "relay" and .kind == "c64")) | .[0].cpu_pct)
     })) as $scale_raw
| ($scale_raw | map(select(.step == 0)) | .[0].mcpd_rss_kb) as $rss0
| ($scale_raw | map(. + (if .idle > 0 and $rss0 != null
      then {bytes_per_publisher: (((.mcpd_rss_kb - $rss0) * 1024 / .idle) | round)}
      else {} end))) as $scale
| ($scale | map(select(.idle == 0)) | map(.c64_rps) | mean) as $rps_none
| ($scale | map(select(.idle == 0)) | map(.mcpd_c64_rps) | mean) as $mcpd_rps_none
| ($scale | map(select(.idle > 0)) | max_by(.idle)) as $top

| ($runs | map(select(.phase == "idle")) | .[0]) as $idle
| ($runs | map(select(.phase == "end")) | .[0]) as $fin
| ($runs | map(select(.phase == "scale_tools")) | .[0].idle_tools // []) as $tools

| {
    relay_over_nginx_c64: (div($p.relay.c64_rps; $p.nginx.c64_rps) | r3),
    relay_over_direct_c64: (div($p.relay.c64_rps; $p.direct.c64_rps) | r3),
    nginx_over_direct_c64: (div($p.nginx.c64_rps; $p.direct.c64_rps) | r3),
    relay_minus_direct_p50_us: (sub($p.relay.c1_p50_us; $p.direct.c1_p50_us) | r1),
    relay_minus_direct_p99_us: (sub($p.relay.c1_p99_us; $p.direct.c1_p99_us) | r1),
    nginx_minus_direct_p50_us: (sub($p.nginx.c1_p50_us; $p.direct.c1_p50_us) | r1),
    nginx_minus_direct_p99_us: (sub($p.nginx.c1_p99_us; $p.direct.c1_p99_us) | r1),
    relay_minus_nginx_p50_us: (sub($p.relay.c1_p50_us; $p.nginx.c1_p50_us) | r1),
    relay_ttft_added_p50_us: (sub($p.relay.ttft_p50_us; $p.direct.ttft_p50_us) | r1),
    relay_ttft_added_p99_us: (sub($p.relay.ttft_p99_us; $p.direct.ttft_p99_us) | r1),
    nginx_ttft_added_p50_us: (sub($p.nginx.ttft_p50_us; $p.direct.ttft_p50_us) | r1),
    relay_over_nginx_chunks: (div($p.relay.chunks_per_sec; $p.nginx.chunks_per_sec) | r3),
    top_idle_over_none_c64: (if $top then (div($top.c64_rps; $rps_none) | r3) else null end),
    mcpd_only_top_idle_over_none_c64: (if $top then (div($top.mcpd_c64_rps; $mcpd_rps_none) | r3) else null end),
    mcpd_only_over_nginx_c64: (div($p.mcpd.c64_rps; $p.nginx.c64_rps) | r3),
    mcpd_only_minus_direct_p50_us: (sub($p.mcpd.c1_p50_us; $p.direct.c1_p50_us) | r1)
  } as $ratios

| {
    date: $date,
    machine: {cores: $cores, cpu: $cpu, kernel: $kernel},
    commit: $commit,
    config: {rounds: $rounds, seconds_per_run: $secs, mcpd_threads: $threads,
             nginx: $nginx, wrk: $wrk,
             backend: "nginx return 200 (1 worker); stream_backend for SSE",
             proxy: "nginx proxy_pass, worker_processes auto, upstream keepalive 128"},
    paths: $p,
    ratios: $ratios,
    scale: $scale,
    scale_baseline_c64_rps: ($rps_none | r1),
    scale_baseline_mcpd_c64_rps: ($mcpd_rps_none | r1),
    idle_tools: $tools,
    resources: {
      idle: $idle,
      mcplocal_peak_rss_kb: $fin.mcplocal_hwm_kb,
      mcpd_peak_rss_kb: $fin.mcpd_hwm_kb
    },
    targets: [
      {name: "relay throughput at 64 connections >= 0.5 x nginx",
       value: $ratios.relay_over_nginx_c64, unit: "x nginx", limit: 0.5,
       met: ($ratios.relay_over_nginx_c64 != null and $ratios.relay_over_nginx_c64 >= 0.5)},
      {name: "added median latency at 1 connection <= 250 us over direct",
       value: $ratios.relay_minus_direct_p50_us, unit: "us", limit: 250,
       met: ($ratios.relay_minus_direct_p50_us != null and $ratios.relay_minus_direct_p50_us <= 250)},
      {name: "relay throughput with \($top.idle // 0) idle publishers >= 0.5 x with none",
       value: $ratios.top_idle_over_none_c64, unit: "x none", limit: 0.5,
       met: ($ratios.top_idle_over_none_c64 != null and $ratios.top_idle_over_none_c64 >= 0.5)},
      {name: "mcpd memory per idle publisher <= 16 KiB",
       value: ($top.bytes_per_publisher // null), unit: "bytes", limit: 16384,
       met: (($top.bytes_per_publisher // 1e9) <= 16384)}
    ],
    errors: ($runs | map(.errors // 0) | add),
    runs_with_errors: ($runs | map(select((.errors // 0) > 0) | {phase, path, kind, round, errors, first_error})),
    runs: $runs
  }
