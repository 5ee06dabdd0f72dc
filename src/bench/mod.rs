//! `sluice bench`: N simulated Envoys over real gRPC against Sluice in another process, and the same clients
//! against a floor server in the same run, so every time is also a ratio to what no server can beat.
//!
//! ```text
//!  driver (this process) ──spawn──▶ `sluice bench-child --kind sluice` (real Sluice, generated model)
//!     │ N proxy tasks over C HTTP/2 connections        ▲ stdin: churn / weight / quit; stdout: ready, ok
//!     │ Recorder: per proxy, when it ACKed each type   │ /proc: RSS, CPU
//!     └──────── then the same against `--kind floor` (responses built once, fanned out to every stream)
//! ```

mod child;
mod fixture;
mod procstat;
pub mod proxy;
mod report;

pub use child::Kind;
pub use fixture::Shape;
pub use proxy::Mode;
pub use report::Results;

use crate::xds::{Snapshot, TypeKind};
use anyhow::{Context, bail};
use proxy::Recorder;
use report::Latency;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct BenchArgs {
    /// Simulated proxies (each its own node id and ADS stream).
    #[arg(long, env = "SLUICE_BENCH_PROXIES", default_value_t = 1000)]
    pub proxies: usize,
    #[arg(long, env = "SLUICE_BENCH_SERVICES", default_value_t = 1000)]
    pub services: usize,
    #[arg(long, env = "SLUICE_BENCH_ENDPOINTS_PER_SERVICE", default_value_t = 10)]
    pub endpoints_per_service: usize,
    /// Every n-th service gets a release policy (0: none).
    #[arg(long, env = "SLUICE_BENCH_POLICY_EVERY", default_value_t = 10)]
    pub policy_every: usize,
    #[arg(long, env = "SLUICE_BENCH_MODE", value_enum, default_value = "delta")]
    pub mode: Mode,
    /// HTTP/2 connections the proxies' streams are spread over (Envoy uses one each; fewer saves the driver).
    #[arg(long, env = "SLUICE_BENCH_CONNECTIONS", default_value_t = 1000)]
    pub connections: usize,
    /// Changes measured (each: one endpoint change and one weight change).
    #[arg(long, env = "SLUICE_BENCH_ROUNDS", default_value_t = 5)]
    pub rounds: usize,
    /// Extra proxies that subscribe and then never read (backpressure check).
    #[arg(long, env = "SLUICE_BENCH_STALLED", default_value_t = 1)]
    pub stalled: usize,
    /// Sluice's --max-initial-syncs for the run (0: no bound; default: Sluice's default).
    #[arg(long, env = "SLUICE_BENCH_MAX_INITIAL_SYNCS")]
    pub max_initial_syncs: Option<usize>,
    /// Skip the floor server.
    #[arg(long, env = "SLUICE_BENCH_NO_FLOOR")]
    pub no_floor: bool,
    /// Print one JSON object instead of the table.
    #[arg(long, env = "SLUICE_BENCH_JSON")]
    pub json: bool,
    /// Only the translation figures (in this process, no server, no proxies): whole model at --services, and one
    /// endpoint change at S = 100, 1,000 and 10,000.
    #[arg(long, env = "SLUICE_BENCH_TRANSLATION_ONLY")]
    pub translation_only: bool,
    /// Serve Delta proxies whole route configurations (`serve --no-vhds`) instead of each virtual host over VHDS.
    #[arg(long, env = "SLUICE_BENCH_NO_VHDS")]
    pub no_vhds: bool,
    /// Each proxy depends on K services: proxies fall in 10 groups, each scoped by an Istio Sidecar allowing K
    /// services (half shared by every group, where the measured changes are made); 0: no Sidecar.
    #[arg(long, env = "SLUICE_BENCH_SIDECAR_EGRESS", default_value_t = 0)]
    pub sidecar_egress: usize,
    /// Every service also has an Istio VirtualService (90/10 to subsets) and DestinationRule; the run measures
    /// VirtualService edits too.
    #[arg(long, env = "SLUICE_BENCH_ISTIO")]
    pub istio: bool,
}

/// `sluice bench-child`: one server process of the benchmark (spawned by the driver, not for people).
#[derive(clap::Args, Debug)]
pub struct ChildArgs {
    #[arg(long, value_enum)]
    pub kind: Kind,
    #[arg(long)]
    pub services: usize,
    #[arg(long)]
    pub endpoints_per_service: usize,
    #[arg(long)]
    pub policy_every: usize,
    /// At least this many streams are let in (the driver's proxies, which may pass the default limit).
    #[arg(long, default_value_t = 0)]
    pub max_streams: usize,
    #[arg(long)]
    pub max_initial_syncs: Option<usize>,
    #[arg(long)]
    pub no_vhds: bool,
    #[arg(long, default_value_t = 0)]
    pub sidecar_egress: usize,
    #[arg(long)]
    pub istio: bool,
}

pub async fn child(args: ChildArgs) -> anyhow::Result<()> {
    let shape = Shape {
        services: args.services,
        endpoints_per_service: args.endpoints_per_service,
        policy_every: args.policy_every,
        sidecar_egress: args.sidecar_egress,
        istio: args.istio,
    };
    child::run(args.kind, shape, args.max_streams, args.max_initial_syncs, !args.no_vhds).await
}

const TIMEOUT: Duration = Duration::from_secs(300);

pub async fn run(args: BenchArgs) -> anyhow::Result<Results> {
    let shape = Shape {
        services: args.services,
        endpoints_per_service: args.endpoints_per_service,
        policy_every: args.policy_every,
        sidecar_egress: args.sidecar_egress,
        istio: args.istio,
    };
    if args.proxies == 0 || args.services == 0 || args.rounds == 0 {
        bail!("--proxies, --services and --rounds must be at least 1");
    }
    let mut r = Results {
        proxies: args.proxies,
        services: args.services,
        endpoints: args.services * args.endpoints_per_service,
        mode: format!("{:?}", args.mode).to_lowercase(),
        stalled_proxies: args.stalled,
        sidecar_egress: args.sidecar_egress,
        istio: args.istio,
        ..Default::default()
    };
    translation(&shape, &mut r)?;
    if args.translation_only {
        return Ok(r);
    }
    let s = phase(Kind::Sluice, &args, &shape).await?;
    (r.connect_s, r.rss_mb, r.baseline_rss_mb, r.idle_cpu_percent) = (s.connect_s, s.rss_mb, s.baseline_mb, s.idle_cpu);
    r.rss_per_proxy_kb = (s.rss_mb - s.baseline_mb).max(0.0) * 1024.0 / args.proxies as f64;
    (r.churn_p50_ms, r.churn_p99_ms, r.churn_max_ms) = (s.churn.p50_ms, s.churn.p99_ms, s.churn.max_ms);
    (r.weight_p50_ms, r.weight_p99_ms, r.weight_max_ms) = (s.weight.p50_ms, s.weight.p99_ms, s.weight.max_ms);
    (r.vs_edit_p50_ms, r.vs_edit_p99_ms, r.vs_edit_bytes_per_proxy) =
        (s.vs_edit.p50_ms, s.vs_edit.p99_ms, s.vs_edit_bytes);
    (r.churn_bytes_per_proxy, r.weight_bytes_per_proxy) = (s.churn_bytes, s.weight_bytes);
    (r.storm_reconnects, r.reconnects) = (s.storm_reconnects, s.reconnects);
    r.reconnect_reasons = s.reconnect_reasons;
    (r.storm_server_cpu_s, r.storm_driver_cpu_s) = (s.storm_server_cpu_s, s.storm_driver_cpu_s);
    r.storm_bytes_per_proxy = s.storm_bytes.iter().sum();
    r.storm_bytes_by_type = s.storm_bytes;
    if !args.no_floor {
        let f = phase(Kind::Floor, &args, &shape).await?;
        (r.floor_connect_s, r.floor_churn_p50_ms, r.floor_churn_p99_ms) = (f.connect_s, f.churn.p50_ms, f.churn.p99_ms);
        (r.floor_churn_bytes_per_proxy, r.floor_weight_p99_ms) = (f.churn_bytes, f.weight.p99_ms);
        (r.floor_storm_server_cpu_s, r.floor_storm_driver_cpu_s) = (f.storm_server_cpu_s, f.storm_driver_cpu_s);
    }
    r.finish();
    Ok(r)
}

/// Pure translation figures, in this process: the whole model, and one endpoint change at S = 100, 1,000 and
/// 10,000. A change is timed along the path a real one takes: the store edits its part and publishes the merged
/// model, the snapshot is built from the previous one, and a proxy's view of it is taken.
fn translation(shape: &Shape, r: &mut Results) -> anyhow::Result<()> {
    let model = Arc::new(fixture::model(shape));
    let started = Instant::now();
    let snap = Snapshot::build(1, model, None)?;
    let _ = snap.view(&proxy_info());
    r.translate_ms = started.elapsed().as_secs_f64() * 1e3;
    let sizes = [
        (100, &mut r.endpoint_change_us_s100),
        (1_000, &mut r.endpoint_change_us_s1000),
        (10_000, &mut r.endpoint_change_us_s10000),
    ];
    for (services, out) in sizes {
        let s = Shape { services, ..*shape };
        let store = crate::store::Store::new();
        store.set_model(fixture::model(&s));
        let mut prev = Snapshot::build(1, store.model(), None)?;
        let _ = prev.view(&proxy_info());
        let rounds = 20;
        let mut total = Duration::ZERO;
        for round in 0..rounds {
            let started = Instant::now();
            store.update(|m| fixture::churn(m, (round * 37 + 1) % services, round));
            let next = Snapshot::build(2 + round as u64, store.model(), Some(&prev))?;
            let _ = next.view(&proxy_info());
            total += started.elapsed();
            prev = next;
        }
        *out = total.as_secs_f64() * 1e6 / rounds as f64;
    }
    Ok(())
}

fn proxy_info() -> crate::model::ProxyInfo {
    crate::model::ProxyInfo {
        id: "bench".into(),
        namespace: "default".into(),
        mode: crate::model::InterceptionMode::Intercept,
        labels: Default::default(),
        inbound_ports: vec![],
        visibility: Default::default(),
        mtls: false,
        vhds: false,
    }
}

/// What one server measured.
struct Phase {
    connect_s: f64,
    churn: Latency,
    weight: Latency,
    vs_edit: Latency,
    churn_bytes: f64,
    weight_bytes: f64,
    vs_edit_bytes: f64,
    rss_mb: f64,
    baseline_mb: f64,
    idle_cpu: f64,
    /// Streams opened again during the connect storm, and over the whole phase.
    storm_reconnects: u64,
    reconnects: u64,
    reconnect_reasons: std::collections::BTreeMap<String, u64>,
    /// CPU seconds the server and the driver used during the connect storm, and bytes each proxy received in it.
    storm_server_cpu_s: f64,
    storm_driver_cpu_s: f64,
    storm_bytes: [f64; 5],
}

fn cpu(pid: u32) -> f64 {
    procstat::cpu_time(pid).unwrap_or_default().as_secs_f64()
}

struct ServerProc {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    addr: String,
    pid: u32,
}

async fn spawn(kind: Kind, shape: &Shape, args: &BenchArgs) -> anyhow::Result<ServerProc> {
    let exe = std::env::current_exe().context("finding the sluice binary")?;
    // A profiler to run Sluice's process under (e.g. `heaptrack`), for finding where its time or memory goes.
    let wrap =
        if kind == Kind::Sluice { std::env::var("SLUICE_BENCH_WRAP").unwrap_or_default() } else { String::new() };
    let mut words: Vec<std::ffi::OsString> = wrap.split_whitespace().map(Into::into).collect();
    words.push(exe.into());
    let mut child = tokio::process::Command::new(&words[0])
        .args(&words[1..])
        .args(["bench-child", "--kind", if kind == Kind::Sluice { "sluice" } else { "floor" }])
        .args([
            "--services",
            &shape.services.to_string(),
            "--endpoints-per-service",
            &shape.endpoints_per_service.to_string(),
        ])
        .args(["--policy-every", &shape.policy_every.to_string(), "--log", "warn"])
        .args(["--sidecar-egress", &shape.sidecar_egress.to_string()])
        .args(shape.istio.then_some("--istio"))
        .args(["--max-streams", &(args.proxies + args.stalled + 16).to_string()])
        .args(args.max_initial_syncs.iter().flat_map(|n| ["--max-initial-syncs".to_string(), n.to_string()]))
        .args(args.no_vhds.then_some("--no-vhds"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the server process")?;
    let pid = child.id().context("server pid")?;
    let stdin = child.stdin.take().context("stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
    // A profiler wrapping the child may print lines of its own first.
    let ready = async {
        while let Some(line) = stdout.next_line().await? {
            if let Some(addr) = line.strip_prefix("ready ") {
                return Ok(addr.to_string());
            }
        }
        anyhow::bail!("server did not print `ready ADDR`")
    };
    let addr = tokio::time::timeout(TIMEOUT, ready).await.context("server start timed out")??;
    Ok(ServerProc { child, stdin, stdout, addr, pid })
}

impl ServerProc {
    async fn command(&mut self, cmd: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await?;
        let line = tokio::time::timeout(TIMEOUT, self.stdout.next_line()).await.context("no answer")??;
        if line.as_deref() != Some("ok") {
            bail!("server answered {line:?} to `{cmd}`");
        }
        Ok(())
    }
}

async fn phase(kind: Kind, args: &BenchArgs, shape: &Shape) -> anyhow::Result<Phase> {
    let mut server = spawn(kind, shape, args).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = procstat::rss_bytes(server.pid).unwrap_or(0);
    let n = args.proxies;
    let rec = Recorder::new(n + args.stalled);
    let channels = connections(&server.addr, args.connections.clamp(1, n + args.stalled))?;
    let started = Instant::now();
    let (server_cpu0, driver_cpu0) = (cpu(server.pid), cpu(std::process::id()));
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reconnects = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reasons: Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>> = Default::default();
    let tasks: Vec<_> = (0..n + args.stalled)
        .map(|i| {
            let ch = channels[i % channels.len()].clone();
            let (rec, mode, stopping, reconnects) = (rec.clone(), args.mode, stopping.clone(), reconnects.clone());
            let grouped = args.sidecar_egress > 0;
            let reasons = reasons.clone();
            tokio::spawn(async move {
                // Like Envoy: a failed or closed stream is opened again after a jittered backoff.
                let mut backoff = Duration::from_millis(50);
                loop {
                    let result = proxy::run(ch.clone(), i, mode, rec.clone(), i >= n, grouped).await;
                    if stopping.load(Ordering::Relaxed) || result.is_ok() {
                        return;
                    }
                    reconnects.fetch_add(1, Ordering::Relaxed);
                    if let Err(status) = &result {
                        let why = format!("{:?}: {}", status.code(), status.message());
                        *reasons.lock().unwrap_or_else(|e| e.into_inner()).entry(why).or_default() += 1;
                    }
                    let jitter = Duration::from_millis((i as u64 * 7919) % backoff.as_millis().max(1) as u64);
                    tokio::time::sleep(backoff + jitter).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            })
        })
        .collect();
    wait_all(&rec, n, |s| s.synced.load(Ordering::Acquire) > 0).await.context("connect storm")?;
    let connect_s = started.elapsed().as_secs_f64();
    let storm_server_cpu_s = cpu(server.pid) - server_cpu0;
    let storm_driver_cpu_s = cpu(std::process::id()) - driver_cpu0;
    let storm_bytes = TypeKind::ALL.map(|k| {
        rec.slots()[..n].iter().map(|s| s.bytes[k.index()].load(Ordering::Relaxed)).sum::<u64>() as f64 / n as f64
    });
    let storm_reconnects = reconnects.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu0 = procstat::cpu_time(server.pid).unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_cpu =
        (procstat::cpu_time(server.pid).unwrap_or_default().saturating_sub(cpu0)).as_secs_f64() / 3.0 * 100.0;
    let rss = procstat::rss_bytes(server.pid).unwrap_or(0);
    let (churn, churn_bytes) = changes(&mut server, &rec, n, args, Measure::Churn, shape).await?;
    let (weight, weight_bytes) = changes(&mut server, &rec, n, args, Measure::Weight, shape).await?;
    let (vs_edit, vs_edit_bytes) = match shape.istio {
        true => changes(&mut server, &rec, n, args, Measure::VirtualService, shape).await?,
        false => (Latency::default(), 0.0),
    };
    stopping.store(true, Ordering::Relaxed);
    let _ = server.command("quit").await;
    for t in tasks {
        t.abort();
    }
    let _ = server.child.kill().await;
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    Ok(Phase {
        connect_s,
        churn,
        weight,
        vs_edit,
        churn_bytes,
        weight_bytes,
        vs_edit_bytes,
        rss_mb: mb(rss),
        baseline_mb: mb(baseline),
        idle_cpu,
        storm_reconnects,
        reconnects: reconnects.load(Ordering::Relaxed),
        reconnect_reasons: std::mem::take(&mut *reasons.lock().unwrap_or_else(|e| e.into_inner())),
        storm_server_cpu_s,
        storm_driver_cpu_s,
        storm_bytes,
    })
}

/// What a round of [`changes`] changes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Measure {
    /// One endpoint of one service.
    Churn,
    /// One release's canary weight.
    Weight,
    /// One service's VirtualService split (`--istio`).
    VirtualService,
}

/// Makes `rounds` changes of one kind; per proxy, the time from the command to its ACK of the type carrying it.
async fn changes(
    server: &mut ServerProc,
    rec: &Recorder,
    n: usize,
    args: &BenchArgs,
    what: Measure,
    shape: &Shape,
) -> anyhow::Result<(Latency, f64)> {
    let policies = fixture::changed_services(shape, true);
    if what == Measure::Weight && policies.is_empty() {
        return Ok((Latency::default(), 0.0));
    }
    // Over VHDS a route change is one virtual host; else the port's whole route configuration.
    let kind = match what {
        Measure::Churn => TypeKind::Endpoint,
        _ if args.mode == Mode::Delta && !args.no_vhds => TypeKind::VirtualHost,
        _ => TypeKind::Route,
    };
    // With Sidecars, services every proxy depends on (else the change reaches no proxy); a VirtualService edit on
    // a service without a release policy (whose split would override the edited weights).
    let churned: Vec<usize> = match shape.sidecar_egress {
        0 => (0..shape.services).collect(),
        _ => fixture::shared_services(shape),
    };
    let plain = fixture::changed_services(shape, false);
    let pick = |round: usize, stride: usize, from: &[usize]| from[(round * stride + 1) % from.len().max(1)];
    let mut samples = Vec::with_capacity(n * args.rounds);
    let mut bytes = 0u64;
    for round in 0..args.rounds {
        // Bytes of every type: what the change cost each proxy, whichever types carried it.
        let received =
            || -> u64 { rec.slots()[..n].iter().flat_map(|s| &s.bytes).map(|b| b.load(Ordering::Relaxed)).sum() };
        let before = received();
        let t = rec.now();
        let cmd = match what {
            Measure::Weight => format!("weight {} {}", policies[round % policies.len()], 2000 + round * 100),
            Measure::Churn => format!("churn {} {round}", pick(round, 37, &churned)),
            Measure::VirtualService => format!("vs {} {}", pick(round, 53, &plain), 20 + round % 60),
        };
        server.command(&cmd).await?;
        wait_all(rec, n, |s| s.acked[kind.index()].load(Ordering::Acquire) > t).await.with_context(|| cmd.clone())?;
        samples.extend(rec.slots()[..n].iter().map(|s| s.acked[kind.index()].load(Ordering::Acquire) - t));
        // A change's later types (if any) arrive before the bytes are counted.
        tokio::time::sleep(Duration::from_millis(200)).await;
        bytes += received() - before;
    }
    Ok((Latency::of(samples), bytes as f64 / (n * args.rounds) as f64))
}

fn connections(addr: &str, count: usize) -> anyhow::Result<Vec<tonic::transport::Channel>> {
    (0..count)
        .map(|_| {
            Ok(tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .initial_stream_window_size(Some(16 << 20))
                .initial_connection_window_size(Some(64 << 20))
                .http2_adaptive_window(false)
                .connect_lazy())
        })
        .collect()
}

async fn wait_all(rec: &Recorder, n: usize, done: impl Fn(&proxy::Slot) -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = rec.slots()[..n].iter().filter(|s| !done(s)).count();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{left} of {n} proxies did not get there within {TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
