//! A release at the ingress gateway, through a real Envoy 1.40 that is the only proxy (no sidecar): clients reach
//! productpage only through the gateway, and the ReleasePolicy on productpage applies in the gateway's routes.
//!
//! - `a_chrome_rule_at_the_gateway_sends_chrome_to_the_canary`: the gateway runs as `deploy/bookinfo-gateway.yaml`
//!   runs it (`sluice proxy --gateway NS/NAME`, the agent supervising Envoy); a `browser: [Chrome]` rule sends
//!   every Chrome request to v2 and every other browser to v1; SIGTERM drains it and it exits 0.
//! - `the_release_status_counts_the_gateway_once_it_acks_the_policys_routes`: `proxies` in the REST status counts
//!   the gateway: not while it is stopped (SIGSTOP) with the new routes unread, nor while it refuses (NACKs) the
//!   virtual host carrying the policy; it does once it holds them.
//! - `promote_and_finalize_through_the_gateway_fail_no_request`: ≥ 100 requests/s through the gateway while the
//!   release goes 0% → 20% → promote → finalize over the REST API; the dashboard's data (`GET /api/v1/releases`)
//!   shows each version's requests/s as the backends counted them; not one request fails.
//!
//! ```text
//!  client (User-Agent) ─▶ gateway Envoy 127.0.0.1:P (listener 127.0.0.1_P, RDS http.P) ─▶ productpage v1 / v2
//!                            ▲ ADS + stats sink                                            (in-process backends)
//!  REST /api/v1/... ───▶ Sluice (in process): status proxies acked/total, versions[].rps
//! ```

use crate::common;

use bytes::Bytes;
use common::http::{Client, client, get_response, get_with};
use common::{Backend, Envoy, LoadLoop, assert_share, envoy_bin, free_addrs, load};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use sluice::model::{ObjectKey, Rule, RuleMatch, StringMatch, Target};
use sluice::server::{Options, Sluice};
use sluice::source;
use sluice::xds::TypeKind;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const RELEASE: &str = "/api/v1/namespaces/default/releases/productpage-v2";
const HOST: &str = "bookinfo.example.com";
const CHROME: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
const CHROME_ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) \
                              Chrome/126.0.6478.71 Mobile Safari/537.36";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const EDGE: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
                    Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.68";
const SAFARI: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) \
                      Version/17.5 Safari/605.1.15";
const CURL: &str = "curl/8.5.0";

/// productpage v1 and v2 on local backends, Bookinfo's Istio Gateway with one HTTP server on `port` for every
/// host, a VirtualService bound to it sending every path to productpage, and the ReleasePolicy productpage-v2
/// (v1 → v2) at `weight` basis points, with a `browser: [Chrome]` rule when `chrome`.
fn config(v1: u16, v2: u16, port: u16, weight: u32, chrome: bool) -> String {
    let rules = if chrome { "\n    rules:\n    - {name: chrome, to: canary, match: {browser: [Chrome]}}" } else { "" };
    format!(
        r#"{}---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bookinfo-gateway}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bookinfo}}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - route:
    - destination: {{host: productpage, port: {{number: 9080}}}}
---
apiVersion: sluice.dev/v1alpha1
kind: ReleasePolicy
metadata: {{name: productpage-v2}}
spec:
  service: productpage
  stable: v1
  canary: v2
  traffic:
    canaryWeight: {weight}{rules}
"#,
        common::mesh::versions_yaml("productpage", &[("v1", v1), ("v2", v2)])
    )
}

fn key() -> ObjectKey {
    ObjectKey::new("default", "productpage-v2")
}

/// Sluice in process with `yaml` loaded, and the two backends.
async fn start_sluice(yaml: impl Fn(u16, u16) -> String) -> (Sluice, Backend, Backend) {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let sluice = Sluice::start(Options::local()).await.expect("start");
    sluice.store().set_model(source::parse_str(&yaml(v1.port(), v2.port()), "gateway.yaml").expect("config parses"));
    (sluice, v1, v2)
}

/// A gateway Envoy from `sluice bootstrap --gateway default/bookinfo-gateway --gateway-bind 127.0.0.1`.
async fn start_gateway(sluice: &Sluice, node: &str) -> Envoy {
    common::mesh::gateway_envoy(sluice, node, "default/bookinfo-gateway").await
}

/// A call to Sluice's admin API (REST, as `sluice release` and the dashboard make it) → (status, JSON).
async fn api(sluice: &Sluice, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let admin = sluice.admin_addr().expect("admin port");
    let http: HyperClient<_, Full<Bytes>> = HyperClient::builder(TokioExecutor::new()).build_http();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let resp =
        tokio::time::timeout(Duration::from_secs(10), http.request(req)).await.expect("in time").expect("answer");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("{path}: {}", String::from_utf8_lossy(&bytes))))
}

/// A release verb (or `weight`) over REST; it must be accepted.
async fn act(sluice: &Sluice, verb: &str, body: Option<Value>) {
    let (code, answer) = api(sluice, "POST", &format!("{RELEASE}/{verb}"), body).await;
    assert_eq!(code, 200, "{verb}: {answer}");
}

/// The release's `status.proxies` as REST shows it: (acked, total).
async fn proxies(sluice: &Sluice) -> (u64, u64, Value) {
    let (_, view) = api(sluice, "GET", RELEASE, None).await;
    let p = &view["status"]["proxies"];
    (p["acked"].as_u64().expect("acked"), p["total"].as_u64().expect("total"), view["status"].clone())
}

/// Polls the REST status until `done` holds of it (panics after `within`); returns that status.
async fn until_status(sluice: &Sluice, what: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (_, view) = api(sluice, "GET", RELEASE, None).await;
        if done(&view["status"]) {
            println!("{what}: after {:?}; proxies {}", started.elapsed(), view["status"]["proxies"]);
            return view["status"].clone();
        }
        assert!(started.elapsed() < within, "{what}: not within {within:?}: {:#}", view["status"]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `phase` holds and every connected proxy (at least one) has ACKed it.
async fn applied(sluice: &Sluice, phase: &str) -> Value {
    until_status(sluice, &format!("{phase} applied"), Duration::from_secs(10), |s| {
        let p = &s["proxies"];
        s["phase"] == phase && p["total"].as_u64() >= Some(1) && p["acked"] == p["total"]
    })
    .await
}

/// The versions `n` requests with User-Agent `ua` reached, 8 at a time.
async fn reached(http: &Client, addr: SocketAddr, ua: &str, n: usize) -> BTreeMap<String, usize> {
    let (mut out, headers) = (BTreeMap::new(), [("user-agent", ua)]);
    for chunk in 0..n.div_ceil(8) {
        let calls = (chunk * 8..n.min(chunk * 8 + 8)).map(|_| get_with(http, addr, HOST, "/productpage", &headers));
        for answer in futures::future::join_all(calls).await {
            let key = match answer {
                Ok((200, body)) => body,
                Ok((code, body)) => format!("HTTP {code} {body}"),
                Err(e) => format!("error: {e}"),
            };
            *out.entry(key).or_default() += 1;
        }
    }
    out
}

/// `sluice proxy --gateway` as a child process (the real binary, supervising a real Envoy), its output in a log
/// file. Dropped: SIGTERM (the agent drains and stops its Envoy), SIGKILL if it is still running after 10 s.
struct Agent {
    child: Child,
    dir: tempfile::TempDir,
    status: SocketAddr,
}

impl Agent {
    fn start(xds: SocketAddr, pod: &str, status: SocketAddr, admin: SocketAddr) -> Agent {
        let dir = tempfile::Builder::new().prefix("sluice-gateway-agent-").tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("agent.log")).expect("log");
        // As root the agent runs Envoy as --proxy-uid; here Envoy stays this user (it reads the tempdir).
        let (uid, gid) = (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("proxy")
            .args(["--gateway", "default/bookinfo-gateway", "--gateway-bind", "127.0.0.1"])
            .args(["--xds", &xds.to_string(), "--pod-name", pod, "--pod-namespace", "default"])
            .args(["--instance-ip", "127.0.0.1", "--labels", "istio=ingressgateway,app=bookinfo-gateway"])
            .arg("--labels-file")
            .arg(dir.path().join("no-labels-file"))
            .arg("--envoy-bin")
            .arg(envoy_bin())
            .arg("--config-dir")
            .arg(dir.path().join("envoy"))
            .args(["--status-port", &status.port().to_string(), "--admin-port", &admin.port().to_string()])
            .args(["--prometheus-port", "0", "--drain-seconds", "1", "--concurrency", "1"])
            .args(["--proxy-uid", &uid.to_string(), "--proxy-gid", &gid.to_string()])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn sluice proxy");
        Agent { child, dir, status }
    }

    /// Waits until the pod's readiness probe (`/healthz/ready` on the status port) answers 200.
    async fn wait_ready(&mut self, within: Duration) -> Duration {
        let (http, started) = (client(), Instant::now());
        loop {
            if let Ok((200, _)) = get_with(&http, self.status, "localhost", "/healthz/ready", &[]).await {
                return started.elapsed();
            }
            let exited = self.child.try_wait().expect("try_wait");
            assert!(exited.is_none() && started.elapsed() < within, "not ready: {exited:?}\n{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then the exit status (within `within`).
    async fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(started.elapsed() < within, "still running {within:?} after SIGTERM\n{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!("--- sluice proxy log ---\n{}", lines[lines.len().saturating_sub(30)..].join("\n"))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = rustix::process::Pid::from_child(&self.child);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let started = Instant::now();
            while matches!(self.child.try_wait(), Ok(None)) && started.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chrome_rule_at_the_gateway_sends_chrome_to_the_canary() {
    let [listen, status, admin] = free_addrs();
    let (sluice, _v1, _v2) = start_sluice(|v1, v2| config(v1, v2, listen.port(), 0, true)).await;
    let pod = "bookinfo-gateway-7d9f-x2v";
    let mut agent = Agent::start(sluice.xds_addr(), pod, status, admin);
    let took = agent.wait_ready(Duration::from_secs(30)).await;
    println!("sluice proxy --gateway: ready after {took:?}");
    let node = format!("router~127.0.0.1~{pod}.default~default.svc.cluster.local");
    sluice.wait_acked(&node, Duration::from_secs(20)).await.expect("the gateway (an Istio router node) ACKs");
    applied(&sluice, "Progressing").await;

    // canaryWeight 0: only the rule sends anything to v2, and it takes Chrome (desktop and mobile) only.
    let http = client();
    for (browser, ua, version) in [
        ("Chrome", CHROME, "v2"),
        ("Chrome on Android", CHROME_ANDROID, "v2"),
        ("Firefox", FIREFOX, "v1"),
        ("Edge", EDGE, "v1"),
        ("Safari", SAFARI, "v1"),
        ("curl", CURL, "v1"),
    ] {
        let got = reached(&http, listen, ua, 200).await;
        println!("{browser} through the gateway: {got:?}");
        assert_eq!(got, BTreeMap::from([(version.to_string(), 200)]), "{browser} requests all reach {version}");
    }
    // Without a User-Agent at all: stable.
    let plain = load(listen, HOST, 200, 8).await;
    assert_eq!((plain.of("v1"), plain.errors, plain.non_2xx), (200, 0, 0), "no User-Agent: {plain:?}");

    // Deleted from the pod, the gateway drains and exits 0 (what Kubernetes' SIGTERM does to it).
    let exit = agent.terminate(Duration::from_secs(15)).await;
    assert!(exit.success(), "sluice proxy --gateway exits 0 on SIGTERM: {exit:?}\n{}", agent.log_tail());
    sluice.shutdown().await;
}

/// The gateway's stream has a route response in flight that it has not ACKed.
fn routes_in_flight(sluice: &Sluice, node: &str) -> bool {
    sluice.registry().get(node).iter().any(|s| s.types.get(&TypeKind::Route).is_some_and(|t| t.pending))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_release_status_counts_the_gateway_once_it_acks_the_policys_routes() {
    let port = common::free_port();
    let yaml = |v1, v2| config(v1, v2, port, 0, true);
    let (sluice, v1, v2) = start_sluice(yaml).await;
    let (acked, total, _) = proxies(&sluice).await;
    assert_eq!((acked, total), (0, 0), "no proxy is connected yet");

    let node = "gateway-status";
    let envoy = start_gateway(&sluice, node).await;
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let status = applied(&sluice, "Progressing").await;
    assert_eq!(status["proxies"], json!({"acked": 1, "total": 1}), "the gateway is the one proxy, and it ACKed");
    let names: Vec<String> = sluice.registry().list().into_iter().map(|s| s.node_id).collect();
    assert_eq!(names, [node], "no sidecar: the gateway is the only connected proxy");

    // Stopped (SIGSTOP), the gateway cannot read the weight change: Sluice has sent it, and the gateway is not
    // counted until it ACKs.
    signal(&envoy, rustix::process::Signal::STOP);
    act(&sluice, "weight", Some(json!({"canaryWeight": 5000}))).await;
    let started = Instant::now();
    while !routes_in_flight(&sluice, node) {
        assert!(started.elapsed() < Duration::from_secs(10), "the new routes were never sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (acked, total, status) = proxies(&sluice).await;
    assert_eq!((acked, total), (0, 1), "sent but not ACKed: the gateway does not count yet: {status:#}");
    let traffic = status["conditions"].as_array().expect("conditions").iter().find(|c| c["type"] == "TrafficApplied");
    assert_eq!(traffic.expect("TrafficApplied")["status"], "False", "{status:#}");
    signal(&envoy, rustix::process::Signal::CONT);
    let status = applied(&sluice, "Progressing").await;
    assert_eq!(status["weights"], json!({"v1": 5000, "v2": 5000}));

    // A rule the gateway refuses (a look-ahead RE2 cannot compile, set through the library path, which skips
    // validation): Envoy NACKs the virtual host `*:PORT`, named after the outside host, not after productpage.
    // The gateway keeps serving its last good routes and is not counted as holding the release's config.
    let model = |regex: &str| {
        let mut m = source::parse_str(&config(v1.port(), v2.port(), port, 5000, true), "gateway.yaml").expect("ok");
        let policy = m.policies.get_mut(&key()).expect("policy");
        let header = StringMatch { name: "x-user".into(), regex: Some(regex.into()), ..Default::default() };
        let matches = RuleMatch { headers: vec![header], ..Default::default() };
        policy.spec.traffic.rules.push(Rule { name: "testers".into(), to: Target::Canary, matches });
        m
    };
    sluice.store().set_model(model("(?=jason).*"));
    let status = until_status(&sluice, "the refusal in status", Duration::from_secs(10), |s| {
        s["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Refused"))
    })
    .await;
    let refused = status["proxies"]["refused"].to_string();
    println!("refused: {refused}");
    assert!(refused.contains(node) && refused.contains(&format!("*:{port}")), "{refused}");
    assert_eq!(status["proxies"]["acked"], 0, "the gateway refused the policy's routes: {status:#}");
    let still = reached(&client(), listen, CHROME, 50).await;
    assert_eq!(still, BTreeMap::from([("v2".to_string(), 50)]), "the last good routes keep serving");

    // The rule fixed, the gateway takes it and counts again.
    sluice.store().set_model(model("jason"));
    let status = applied(&sluice, "Progressing").await;
    assert!(status.get("proxies").is_some_and(|p| p.get("refused").is_none()), "{status:#}");
    let http = client();
    let answer = get_response(&http, listen, HOST, "/", &[("x-user", "jason")]).await.expect("answer");
    assert_eq!(answer.body, "v2", "the fixed rule applies at the gateway");
    drop(envoy);
    sluice.shutdown().await;
}

fn signal(envoy: &Envoy, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(envoy.pid() as i32).expect("pid");
    rustix::process::kill_process(pid, sig).expect("signal Envoy");
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64
}

/// (wall-clock ms, [v1's count, v2's count]) every 50 ms.
type Samples = Arc<Mutex<Vec<(u64, [u64; 2])>>>;

/// The backends' request counts sampled every 50 ms against the wall clock, so the test can count what they
/// answered in exactly the seconds the status reports on.
struct Sampler {
    samples: Samples,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(v1: &Backend, v2: &Backend) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (into, v1, v2) = (samples.clone(), v1.counter(), v2.counter());
        let task = tokio::spawn(async move {
            loop {
                into.lock().expect("samples").push((now_ms(), [v1(), v2()]));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Sampler { samples, task }
    }

    /// Requests per second backend `which` (0: v1, 1: v2) answered in the 10 whole seconds the status read at
    /// `at` covers (those ending 2 s before `at`'s second).
    fn rate(&self, at: u64, which: usize) -> f64 {
        let samples = self.samples.lock().expect("samples");
        let end = (at / 1000 - 2) * 1000;
        let count_at = |t: u64| samples.iter().rev().find(|s| s.0 <= t).map(|s| s.1[which]).expect("a sample");
        (count_at(end) - count_at(end - 10_000)) as f64 / 10.0
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Requests/s of `version` in the dashboard's data (`GET /api/v1/releases`, what the dashboard polls).
fn dashboard_rps(list: &Value, version: &str) -> Option<f64> {
    let item = list["items"].as_array()?.iter().find(|i| i["metadata"]["name"] == "productpage-v2")?;
    item["status"]["versions"].as_array()?.iter().find(|v| v["name"] == version)?["rps"].as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_and_finalize_through_the_gateway_fail_no_request() {
    let port = common::free_port();
    let (sluice, v1, v2) = start_sluice(|v1, v2| config(v1, v2, port, 0, false)).await;
    let envoy = start_gateway(&sluice, "gateway-flow").await;
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    applied(&sluice, "Progressing").await;
    // The only client path: 4 paced loops through the gateway (a target of 200 requests/s).
    let running = LoadLoop::start(listen, HOST, 4, 50);
    let sampler = Sampler::start(&v1, &v2);

    act(&sluice, "weight", Some(json!({"canaryWeight": 2000}))).await;
    let status = applied(&sluice, "Progressing").await;
    assert_eq!(status["weights"], json!({"v1": 8000, "v2": 2000}));
    let batch = load(listen, HOST, 2000, 8).await;
    println!("20% through the gateway: {batch:?}");
    assert_eq!((batch.errors, batch.non_2xx), (0, 0), "{batch:?}");
    assert_share("ReleasePolicy 20% at the gateway: v2", batch.of("v2"), 2000, 0.2);

    // The dashboard's data: each version's requests/s as the gateway's stats sink reported them. Read once the
    // 10 s it covers hold only the steady load: they end 2 s before the read's second, and start a whole second
    // after the one the batch above ended in, so the batch's last flush (taken ≤ 1 s after it ended, and placed
    // by Envoy's snapshot time however late Sluice reads it) counts none of its requests in them.
    let quiet_from = now_ms();
    let (list, read_at) = loop {
        let read_at = now_ms();
        let (_, list) = api(&sluice, "GET", "/api/v1/releases", None).await;
        if read_at >= quiet_from + 14_000 {
            break (list, read_at);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for (i, version) in ["v1", "v2"].into_iter().enumerate() {
        let shown = dashboard_rps(&list, version).unwrap_or_else(|| panic!("no rps for {version}: {list:#}"));
        let counted = sampler.rate(read_at, i);
        println!("{version} at the gateway: dashboard {shown:.1} requests/s, the backend answered {counted:.1}/s");
        let off = (shown - counted).abs() / counted;
        assert!(off <= 0.2, "{version}: the dashboard shows {shown:.1}/s, the backend answered {counted:.1}/s");
    }

    act(&sluice, "promote", None).await;
    let status = applied(&sluice, "Promoted").await;
    assert_eq!(status["weights"], json!({"v1": 0, "v2": 10000}));
    let promoted = load(listen, HOST, 1000, 8).await;
    assert_eq!((promoted.of("v2"), promoted.errors, promoted.non_2xx), (1000, 0, 0), "after promote: {promoted:?}");

    act(&sluice, "finalize", None).await;
    applied(&sluice, "Finalized").await;
    envoy.wait_for(Duration::from_secs(10), |dump| !dump.to_string().contains("outbound|9080|v1|productpage")).await;
    let finalized = load(listen, HOST, 1000, 8).await;
    assert_eq!((finalized.of("v2"), finalized.errors, finalized.non_2xx), (1000, 0, 0), "{finalized:?}");

    let report = running.stop().await;
    println!("load through the gateway over 20% → promote → finalize: {}", report.summary());
    assert_eq!((report.counts.non_2xx, report.counts.errors), (0, 0), "{}", report.summary());
    assert!(report.rate() >= 100.0, "the load ran at {:.0}/s, below 100/s", report.rate());
    drop(envoy);
    sluice.shutdown().await;
}
