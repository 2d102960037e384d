# summarize.jq - turns bench/run's list of measurements (one object per run)
# into the result document: per-path figures as the median over rounds, the
# ratios, the scale series, resources and the issue's targets; then the
# streams, gc, tls, pools and syscalls phases, each an object of its own
# (null when the phase did not run).
# Inputs via --arg/--argjson: date cores cpu commit kernel rounds secs threads
# nginx wrk stream_tokens stream_interval_us phases idle_pools.

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
def r4: if . == null then null else (. * 10000 | round) / 10000 end;
def r2: if . == null then null else (. * 100 | round) / 100 end;
# {key: median over the objects} for every key any of them has
def permed: . as $o | ($o | map(keys) | add // [] | unique)
  | map(. as $k | {key: $k, value: ([$o[][$k]] | median)}) | from_entries;

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

# ---- streams: many paced streams at once ----
| def own_cpu($k): # CPU seconds of the path's own processes in one run
    if $k == "relay" then ((.cpu_s.mcpd // 0) + (.cpu_s.mcplocal // 0))
    elif $k == "nginx" then (.cpu_s.nginx // 0) else null end;
  (["direct", "nginx", "relay"] | map(. as $k
    | ($runs | map(select(.phase == "streams" and .path == $k))) as $rs
    | {key: $k, value: (if ($rs | length) == 0 then null else {
        rounds: ($rs | length),
        streams: ($rs | map(.concurrency) | max),
        peak_live_min: ($rs | map(.peak_live) | min),
        tokens_per_sec: ($rs | map(.tokens_per_sec) | median | r1),
        offered_tokens_per_sec: ($rs | map(.offered_tokens_per_sec) | median | r1),
        delivered_over_offered: ($rs | map(.delivered_over_offered) | median | r4),
        ttft_p50_us: ($rs | map(.ttft_p50_us) | median | r1),
        ttft_p99_us: ($rs | map(.ttft_p99_us) | median | r1),
        lag_p50_us: ($rs | map(.lag_p50_us) | median | r1),
        lag_p99_us: ($rs | map(.lag_p99_us) | median | r1),
        stream_p50_us: ($rs | map(.stream_p50_us) | median | r1),
        streams_ok: ($rs | map(.ok) | add),
        errors: ($rs | map(.errors) | add),
        cpu_us_per_token: (if $k == "direct" then null else
          ($rs | map(select((.chunks // 0) > 0) | own_cpu($k) * 1e6 / .chunks) | median | r3) end),
        cpu_us_per_token_rounds: (if $k == "direct" then null else
          ($rs | sort_by(.round) | map(if (.chunks // 0) > 0 then (own_cpu($k) * 1e6 / .chunks | r3) else null end)) end),
        cpu_us_per_token_by_process: ($rs | map(select((.chunks // 0) > 0) | . as $x
          | (.cpu_s // {}) | map_values(. * 1e6 / $x.chunks)) | permed | map_values(r3))
      } end)}) | from_entries) as $sp
| (if $sp.relay == null and $sp.nginx == null and $sp.direct == null then null else
   ($sp.relay.cpu_us_per_token // null) as $rc | ($sp.nginx.cpu_us_per_token // null) as $nc
   | ($sp.relay.delivered_over_offered // null) as $rdo
   | {
    config: {streams: ([$sp[] | select(. != null) | .streams] | max),
             tokens_per_stream: $stream_tokens, interval_us: $stream_interval_us,
             note: "first token at once, then one per interval; slots start spread over one stream's length"},
    paths: $sp,
    ratios: {
      relay_cpu_per_token_over_nginx: (div($rc; $nc) | r3),
      relay_cpu_per_token_over_nginx_rounds:
        ([$runs[] | select(.phase == "streams" and (.path == "relay" or .path == "nginx"))]
         | group_by(.round) | map(
             (map(select(.path == "relay")) | .[0]) as $a | (map(select(.path == "nginx")) | .[0]) as $b
             | if $a and $b and ($a.chunks // 0) > 0 and ($b.chunks // 0) > 0
               then div($a | own_cpu("relay") / .chunks; $b | own_cpu("nginx") / .chunks) | r3 else null end)),
      relay_delivered_over_offered: $rdo,
      nginx_delivered_over_offered: ($sp.nginx.delivered_over_offered // null),
      direct_delivered_over_offered: ($sp.direct.delivered_over_offered // null),
      relay_ttft_added_p50_us: (sub($sp.relay.ttft_p50_us // null; $sp.direct.ttft_p50_us // null) | r1),
      relay_ttft_added_p99_us: (sub($sp.relay.ttft_p99_us // null; $sp.direct.ttft_p99_us // null) | r1),
      nginx_ttft_added_p50_us: (sub($sp.nginx.ttft_p50_us // null; $sp.direct.ttft_p50_us // null) | r1),
      nginx_ttft_added_p99_us: (sub($sp.nginx.ttft_p99_us // null; $sp.direct.ttft_p99_us // null) | r1)
    },
    targets: [
      {name: "relay CPU per streamed token <= 2 x nginx's", value: div($rc; $nc) | r3,
       unit: "x nginx", limit: 2, met: (div($rc; $nc) != null and div($rc; $nc) <= 2)},
      {name: "tokens delivered / offered through the relay = 1.0 (within 1 %)", value: $rdo,
       unit: "", limit: 0.99, met: ($rdo != null and $rdo >= 0.99)}
    ]
  } end) as $streams

# ---- gc: relay latency during a sweep ----
| def gcfig($path):
    ($runs | map(select(.phase == "gc" and .path == $path and .kind == "c1"))) as $rs
    | if ($rs | length) == 0 then null else {
        rounds: ($rs | length),
        c1_p50_us: ($rs | map(.p50_us) | median | r1),
        c1_p99_us: ($rs | map(.p99_us) | median | r1),
        c1_max_us: ($rs | map(.max_us) | median | r1),
        c1_rps: ($rs | map(.rps) | median | r1),
        c1_p99_us_rounds: ($rs | sort_by(.round) | map(.p99_us | r1))
      } end;
  ($runs | map(select(.phase == "gc" and .kind == "sweep_info"))) as $si
| ($runs | map(select(.phase == "gc" and .kind == "c1")) | .[0]) as $gc0
| (gcfig("gc_none")) as $gn
| (gcfig("gc_sweep")) as $gs
| (if $gn == null and $gs == null then null else {
    config: {rows: $gc0.rows, rows_kind: $gc0.rows_kind, gc_interval_ms: $gc0.gc_interval_ms,
             path: "caller -> mcpd -> echo publisher, 1 connection"},
    without: $gn,
    during: (if $gs == null then null else $gs + {
      sweeps: ($si | map(.sweeps) | median),
      rows_swept: ($si | map(.rows_swept) | median),
      rows_left_max: ($si | map(.rows_left) | max)
    } end),
    ratios: {
      p99_during_over_without: (div($gs.c1_p99_us // null; $gn.c1_p99_us // null) | r3),
      p50_during_over_without: (div($gs.c1_p50_us // null; $gn.c1_p50_us // null) | r3),
      max_during_over_without: (div($gs.c1_max_us // null; $gn.c1_max_us // null) | r3),
      p99_during_over_without_rounds:
        ([$runs[] | select(.phase == "gc" and .kind == "c1")] | group_by(.round)
         | map((map(select(.path == "gc_sweep")) | .[0].p99_us) as $a
               | (map(select(.path == "gc_none")) | .[0].p99_us) as $b | div($a; $b) | r3))
    }
  } end) as $gc

# ---- tls ----
| ($runs | map(select(.phase == "tls" and .kind == "skipped")) | .[0].skipped // null) as $tls_skip
| ($runs | map(select(.phase == "tls" and .kind == "info")) | .[0] // null) as $tls_info
| def tlsfig($path):
    if ($runs | map(select(.phase == "tls" and .path == $path)) | length) == 0 then null else {
      c1_p50_us: med("tls"; $path; "c1"; "p50_us") | r1,
      c1_p99_us: med("tls"; $path; "c1"; "p99_us") | r1,
      c64_rps: med("tls"; $path; "c64"; "rps") | r1,
      c64_p99_us: med("tls"; $path; "c64"; "p99_us") | r1,
      cpu_pct_c64: (sel("tls"; $path; "c64") | map(.cpu_pct // {}) | permed | map_values(r1))
    } end;
  (tlsfig("nginx_tls")) as $tn
| (tlsfig("relay_tls")) as $tr
| (if $tls_skip == null and $tn == null and $tr == null then null else {
    skipped: $tls_skip,
    session: (if $tls_info then $tls_info | {certificate, nginx_tls, relay_tls} else null end),
    paths: {nginx_tls: $tn, relay_tls: $tr},
    ratios: (if $tn == null or $tr == null then null else {
      relay_over_nginx_c64: (div($tr.c64_rps; $tn.c64_rps) | r3),
      relay_minus_nginx_p50_us: (sub($tr.c1_p50_us; $tn.c1_p50_us) | r1),
      relay_minus_direct_p50_us: (sub($tr.c1_p50_us; $p.direct.c1_p50_us) | r1),
      nginx_minus_direct_p50_us: (sub($tn.c1_p50_us; $p.direct.c1_p50_us) | r1),
      relay_tls_over_plain_c64: (div($tr.c64_rps; $p.relay.c64_rps) | r3),
      nginx_tls_over_plain_c64: (div($tn.c64_rps; $p.nginx.c64_rps) | r3),
      relay_cpu_us_per_request_c64: (if $tr.c64_rps then ((($tr.cpu_pct_c64.mcpd_tls // 0) + ($tr.cpu_pct_c64.mcplocal_tls // 0)) * 10000 / $tr.c64_rps | r1) else null end),
      nginx_cpu_us_per_request_c64: (if $tn.c64_rps then (($tn.cpu_pct_c64.nginx_tls // 0) * 10000 / $tn.c64_rps | r1) else null end)
    } end)
  } end) as $tls

# ---- pools: the broker's choice of a member against one Llm ----
| ($runs | map(select(.phase == "pools" and .kind == "choice"))) as $pr
| (if ($pr | length) == 0 then null else
    ($pr | map(.pool_busy_minus_single_us) | median | r4) as $busy_added
  | {
    config: {members: $pr[0].members, calls_per_round: $pr[0].calls},
    single_ns: ($pr | map(.single_ns) | median | r1),
    pool_idle_ns: ($pr | map(.pool_idle_ns) | median | r1),
    pool_busy_ns: ($pr | map(.pool_busy_ns) | median | r1),
    pool_idle_minus_single_us: ($pr | map(.pool_idle_minus_single_us) | median | r4),
    pool_busy_minus_single_us: $busy_added,
    pool_busy_minus_single_us_rounds: ($pr | map(.pool_busy_minus_single_us | r4)),
    target: {name: "routing to a pool of \($pr[0].members) costs <= 5 us over one Llm",
             value: $busy_added, unit: "us", limit: 5,
             met: ($busy_added != null and $busy_added <= 5)}
  } end) as $pools

# ---- syscalls: strace -c counts per request and per streamed token ----
| ($runs | map(select(.phase == "syscalls"))) as $yr
| def sysfig: .units as $u | {
      per_unit: (.calls | to_entries | sort_by(-.value, .key)
                 | map({key: .key, value: (.value / $u | r2)}) | from_entries),
      total: (.calls | [.[]] | add / $u | r2),
      units: $u,
      seconds: .seconds,
      errors: .errors
    };
  def syskind($k): $yr | map(select(.kind == $k))
    | if length == 0 then null else map({key: .path, value: sysfig}) | from_entries end;
  (if ($yr | length) == 0 then null else {
    config: {tool: "strace -c -f, every thread of the processes traced",
             request: {connections: 1, seconds: $secs, unit: "request"},
             stream: {streams: ($yr | map(select(.kind == "stream") | .concurrency) | max),
                      ramp_seconds: ($yr | map(select(.kind == "stream") | .ramp_seconds) | max),
                      tokens_per_stream: $stream_tokens, interval_us: $stream_interval_us,
                      unit: "token"}},
    request: syskind("request"),
    stream: syskind("stream")
  } end) as $syscalls

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
             nginx: $nginx, wrk: $wrk, phases: ($phases | split(" ")),
             idle_publisher_pools: $idle_pools,
             backend: "nginx return 200 (1 worker); stream_backend for SSE",
             proxy: "nginx proxy_pass, worker_processes auto, upstream keepalive 128"},
    paths: $p,
    ratios: $ratios,
    scale: $scale,
    scale_baseline_c64_rps: ($rps_none | r1),
    scale_baseline_mcpd_c64_rps: ($mcpd_rps_none | r1),
    streams: $streams,
    gc: $gc,
    tls: $tls,
    pools: $pools,
    syscalls: $syscalls,
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
      {name: "added median latency at 1 connection <= 100 us over direct",
       value: $ratios.relay_minus_direct_p50_us, unit: "us", limit: 100,
       met: ($ratios.relay_minus_direct_p50_us != null and $ratios.relay_minus_direct_p50_us <= 100)},
      {name: "relay throughput with \($top.idle // 0) idle publishers >= 0.8 x with none",
       value: $ratios.top_idle_over_none_c64, unit: "x none", limit: 0.8,
       met: ($ratios.top_idle_over_none_c64 != null and $ratios.top_idle_over_none_c64 >= 0.8)},
      {name: "mcpd memory per idle publisher <= 16 KiB",
       value: ($top.bytes_per_publisher // null), unit: "bytes", limit: 16384,
       met: (($top.bytes_per_publisher // 1e9) <= 16384)}
    ],
    errors: ($runs | map(.errors // 0) | add),
    runs_with_errors: ($runs | map(select((.errors // 0) > 0) | {phase, path, kind, round, errors, first_error})),
    runs: $runs
  }
