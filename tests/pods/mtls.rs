//! Workload mTLS in the pod network: Sluice runs its CA (`serve --ca`, file mode: a root in `--state-dir`, tokens
//! in `--ca-tokens`), each sidecar's agent (`sluice proxy --mtls`) gets a certificate for its service account and
//! serves it to Envoy over SDS, and a PeerAuthentication sets what the inbound side takes.
//!
//! ```text
//!  client ─mTLS─▶ productpage ─mTLS─▶ reviews v3 ─mTLS─▶ ratings        (each hop: the caller's SPIFFE id in XFCC)
//!  outsider (no sidecar, no rules) ─plaintext─▶ reviews v3's pod address:  STRICT refused, PERMISSIVE served
//!  outsider ─plaintext─▶ ingress gateway pod :8080 (`sluice proxy --gateway --mtls`) ─mTLS─▶ productpage  (STRICT)
//! ```
//! - STRICT, then PERMISSIVE, then STRICT again under ≥ 100 req/s of mesh traffic: 0 failed requests;
//! - rotation: 60 s certificates, 5 minutes of traffic, ≥ 4 new serials in Envoy's `/certs`, 0 failed requests.

use crate::common::podmesh::{PodMesh, Sidecar, service_yaml};
use crate::common::podnet::{HUB_IP, HttpRequest};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const URL: &str = "--url=http://productpage:9080/productpage";
const TD: &str = "cluster.local";
/// (pod, app, version): every one with a sidecar holding a workload certificate.
const PODS: [(&str, &str, &str); 5] = [
    ("productpage", "productpage", "v1"),
    ("details", "details", "v1"),
    ("ratings", "ratings", "v1"),
    ("reviews-v1", "reviews", "v1"),
    ("reviews-v3", "reviews", "v3"),
];

fn spiffe(sa: &str) -> String {
    format!("spiffe://{TD}/ns/default/sa/{sa}")
}

/// A Workload with a sidecar (`security.istio.io/tlsMode: istio`, as an injected pod's label) and its account.
fn workload(name: &str, app: &str, version: &str, ip: std::net::Ipv4Addr) -> String {
    format!(
        "---\napiVersion: sluice.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: {name}\n  labels: {{app: {app}, \
         version: {version}, security.istio.io/tlsMode: istio}}\nspec: {{address: {ip}, serviceAccount: bookinfo-{app}}}\n"
    )
}

fn peer_authentication(mode: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: default}}\n\
         spec:\n  mtls: {{mode: {mode}}}\n"
    )
}

/// SHA-256 of `text` in hex (coreutils' sha256sum: the token file holds hashes, never tokens).
fn sha256(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().expect("a hash").to_string()
}

struct Mtls {
    mesh: PodMesh,
    config: String,
    /// The ingress gateway's agent (`bookinfo-gateway` account, `SLUICE_GATEWAY`, mTLS), started by a test.
    gateway: Sidecar,
}

/// Bookinfo's Istio gateway: every host on 8080, the sample's productpage paths (in flow style).
const GATEWAY: &str = "---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo}
spec:
  hosts: ['*']
  gateways: [bookinfo-gateway]
  http:
  - match: [{uri: {exact: /productpage}}, {uri: {prefix: /static}}, {uri: {exact: /login}}, {uri: {exact: /logout}}, {uri: {prefix: /api/v1/products}}]
    route: [{destination: {host: productpage, port: {number: 9080}}}]
";

impl Mtls {
    /// Bookinfo with workload mTLS under `mode`, reviews all to v3 (so every call goes on to ratings); a client
    /// pod with a sidecar; an `outsider` pod with neither sidecar nor rules. `cert_ttl`: what agents ask for.
    async fn start(mode: &str, cert_ttl: u64) -> Mtls {
        let mut mesh = PodMesh::new();
        for (pod, _, _) in PODS {
            mesh.add_pod(pod);
        }
        mesh.add_pod("client");
        mesh.add_pod("outsider");
        mesh.add_pod("gateway");
        for svc in ["productpage", "details", "reviews", "ratings"] {
            mesh.add_service(svc);
        }
        let mut config = String::new();
        for (svc, ip) in &mesh.services {
            config.push_str(&service_yaml(svc, *ip, 9080, "http"));
        }
        for (pod, app, version) in PODS {
            config.push_str(&workload(pod, app, version, mesh.pod(pod).ip));
        }
        config.push_str(
            "---\napiVersion: sluice.dev/v1alpha1\nkind: ReleasePolicy\nmetadata: {name: reviews-v3}\nspec:\n  \
             service: reviews\n  stable: v1\n  canary: v3\n  traffic: {canaryWeight: 10000}\n",
        );
        config.push_str(GATEWAY);
        mesh.write_config(&format!("{config}{}", peer_authentication(mode)));

        // One token per service account; the CA's file holds their hashes.
        let dir = mesh.net.dir().to_path_buf();
        let mut lines = String::new();
        let accounts: BTreeSet<String> = PODS
            .iter()
            .map(|(_, app, _)| format!("bookinfo-{app}"))
            .chain(["bookinfo-client".into(), "bookinfo-gateway".into()])
            .collect();
        for sa in &accounts {
            let token = format!("token-{sa}-{}", std::process::id());
            std::fs::write(dir.join(format!("{sa}.token")), &token).unwrap();
            lines.push_str(&format!("default/{sa} {}\n", sha256(&token)));
        }
        std::fs::write(dir.join("ca-tokens"), lines).unwrap();
        let state = dir.join("state");
        let (state_s, tokens_s) =
            (state.to_string_lossy().into_owned(), dir.join("ca-tokens").to_string_lossy().into_owned());
        let tls_addr = format!("{HUB_IP}:15012");
        mesh.start_sluice_with(&[
            "--ca",
            "--state-dir",
            &state_s,
            "--ca-tokens",
            &tokens_s,
            "--xds-tls-addr",
            &tls_addr,
        ])
        .await;
        let root = state.join("mesh-ca.pem");
        assert!(root.exists(), "Sluice wrote its mesh CA at {}", root.display());

        let sidecar = |sa: &str| Sidecar {
            service_account: sa.into(),
            labels: vec![("security.istio.io/tlsMode".into(), "istio".into())],
            env: [
                ("SLUICE_MTLS", "true".to_string()),
                ("SLUICE_CA_ADDR", tls_addr.clone()),
                ("SLUICE_CA_ROOT_FILE", root.to_string_lossy().into_owned()),
                ("SLUICE_CA_TOKEN_FILE", dir.join(format!("{sa}.token")).to_string_lossy().into_owned()),
                ("SLUICE_CERT_TTL_SECS", cert_ttl.to_string()),
            ]
            .map(|(k, v)| (k.to_string(), v))
            .to_vec(),
            as_proxy_uid: true,
            ..Default::default()
        };
        for (pod, app, version) in PODS {
            mesh.start_bookinfo_pod_with(pod, app, version, sidecar(&format!("bookinfo-{app}"))).await;
        }
        mesh.intercept("client");
        let client =
            Sidecar { labels: vec![("app".into(), "client".into())], drain_seconds: 1, ..sidecar("bookinfo-client") };
        mesh.start_agent("client", &client);
        for pod in ["productpage", "details", "ratings", "reviews-v1", "reviews-v3", "client"] {
            mesh.wait_ready(pod, Duration::from_secs(30)).await;
        }
        // A gateway pod is no sidecar: no interception, no app; the agent runs Envoy as istiod's router would.
        let mut gateway = Sidecar {
            labels: vec![("istio".into(), "ingressgateway".into())],
            drain_seconds: 1,
            ..sidecar("bookinfo-gateway")
        };
        gateway.env.push(("SLUICE_GATEWAY".into(), "default/bookinfo-gateway".into()));
        Mtls { mesh, config, gateway }
    }

    fn set_mode(&self, mode: &str) {
        self.mesh.write_config(&format!("{}{}", self.config, peer_authentication(mode)));
    }

    /// One call from the client pod's app (through its sidecar): productpage's answer.
    async fn productpage(&self) -> Value {
        let addr = SocketAddr::from((self.mesh.services["productpage"], 9080));
        let req = HttpRequest { host: "productpage:9080", ..HttpRequest::get(addr, "/productpage") };
        let (status, body) = self.mesh.net.http(self.mesh.pod("client"), req).await.expect("productpage");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("productpage JSON")
    }

    /// The outsider calls reviews v3's pod address in plaintext: `Ok(status)` or the connection's error.
    async fn outsider_call(&self) -> Result<u16, String> {
        let addr = SocketAddr::from((self.mesh.pod("reviews-v3").ip, 9080));
        let req = HttpRequest { host: "reviews:9080", ..HttpRequest::get(addr, "/reviews/0") };
        self.mesh.net.http(self.mesh.pod("outsider"), req).await.map(|(s, _)| s).map_err(|e| e.to_string())
    }

    async fn wait_outsider(&self, served: bool, what: &str) {
        let started = Instant::now();
        loop {
            let got = self.outsider_call().await;
            if got.as_ref().is_ok_and(|s| *s == 200) == served {
                println!("{what} after {:?}: outsider got {got:?}", started.elapsed());
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(15), "{what}: outsider still gets {got:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The serial numbers of the workload certificate `pod`'s Envoy holds (its admin `/certs`).
    async fn serials(&self, pod: &str) -> BTreeSet<String> {
        let admin = crate::common::podmesh::ENVOY_ADMIN;
        let (_, body) =
            self.mesh.net.http(self.mesh.pod(pod), HttpRequest::get(admin, "/certs")).await.expect("/certs");
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        let certs = v["certificates"].as_array().cloned().unwrap_or_default();
        certs
            .iter()
            .flat_map(|c| c["cert_chain"].as_array().cloned().unwrap_or_default())
            .filter(|c| c["subject_alt_names"].to_string().contains("spiffe://"))
            .filter_map(|c| c["serial_number"].as_str().map(String::from))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mtls_carries_identities_refuses_plaintext_and_switches_modes_without_a_failed_request() {
    let _serial = crate::serial().await;
    let m = Mtls::start("STRICT", 86_400).await;

    // Every hop over mTLS, each callee seeing its caller's identity.
    let page = m.productpage().await;
    println!("productpage: {page}");
    assert_eq!(page["reviews"]["version"], "v3", "{page}");
    let xfcc = |v: &Value| v["xfcc"].as_str().unwrap_or_default().to_string();
    assert!(xfcc(&page).contains(&format!("URI={}", spiffe("bookinfo-client"))), "productpage's XFCC: {page}");
    assert!(xfcc(&page["reviews"]).contains(&format!("URI={}", spiffe("bookinfo-productpage"))), "{page}");
    assert!(xfcc(&page["reviews"]["ratings"]).contains(&format!("URI={}", spiffe("bookinfo-reviews"))), "{page}");
    assert!(xfcc(&page["details"]).contains(&format!("URI={}", spiffe("bookinfo-productpage"))), "{page}");

    // Each proxy's certificate, as the status views show it.
    let (_, syncz) = m.mesh.admin("GET", "/debug/syncz", None).await;
    let syncz: Value = serde_json::from_str(&syncz).expect("syncz JSON");
    let reviews = syncz["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node_id"].as_str().unwrap_or("").contains("reviews-v3"));
    let cert = &reviews.expect("reviews-v3 in syncz")["certificate"];
    assert_eq!(cert["identity"], spiffe("bookinfo-reviews"), "{syncz}");
    assert!(cert["not_after"].as_str().is_some_and(|t| t.ends_with('Z')), "{cert}");
    let bin = crate::common::podmesh::sluice_bin();
    let xds = format!("http://{HUB_IP}:15010");
    let status = m.mesh.net.run_ok(m.mesh.net.hub(), bin.to_str().unwrap(), &["proxy-status", "--xds", &xds]);
    println!("{status}");
    assert!(status.lines().next().is_some_and(|h| h.ends_with("CERT NOT AFTER")), "{status}");
    let row = status.lines().find(|l| l.contains("reviews-v3")).expect("a reviews-v3 row");
    assert!(row.trim_end().ends_with('Z'), "reviews-v3's certificate end: {row}");

    // The ingress gateway takes plaintext from outside and calls productpage over mTLS with its own identity.
    let mut m = m;
    let gateway = m.gateway.clone();
    m.mesh.start_agent("gateway", &gateway);
    m.mesh.wait_ready("gateway", Duration::from_secs(30)).await;
    let at_gateway = SocketAddr::from((m.mesh.pod("gateway").ip, 8080));
    let req = HttpRequest { host: "bookinfo.example.com", ..HttpRequest::get(at_gateway, "/productpage") };
    let (status, body) = m.mesh.net.http(m.mesh.pod("outsider"), req).await.expect("the gateway answers");
    if status != 200 {
        let admin = crate::common::podmesh::ENVOY_ADMIN;
        let gw = m.mesh.pod("gateway");
        let (_, stats) =
            m.mesh.net.http(gw, HttpRequest::get(admin, "/stats?filter=productpage")).await.expect("stats");
        let (_, dump) = m
            .mesh
            .net
            .http(gw, HttpRequest::get(admin, "/config_dump?resource=dynamic_active_clusters"))
            .await
            .expect("dump");
        let (_, certs) = m.mesh.net.http(gw, HttpRequest::get(admin, "/certs")).await.expect("certs");
        let pp = dump.find("productpage.default").map(|i| &dump[i.saturating_sub(200)..(i + 3000).min(dump.len())]);
        panic!("through the gateway under STRICT: {status} {body}\n{stats}\n{pp:?}\n{certs}");
    }
    let page: Value = serde_json::from_str(&body).expect("productpage JSON");
    assert!(xfcc(&page).contains(&format!("URI={}", spiffe("bookinfo-gateway"))), "productpage's XFCC: {page}");
    let gw_load = m
        .mesh
        .load(
            "outsider",
            &[&format!("--url=http://{at_gateway}/productpage"), "--count=300", "--workers=4"],
            Duration::from_secs(30),
        )
        .await;
    println!("outsider → gateway → productpage (STRICT): {} requests, {} failed", gw_load.total, gw_load.failed);
    assert!(gw_load.total >= 200 && gw_load.failed == 0, "{gw_load:?}");
    let handshakes = m
        .mesh
        .envoy_stat("gateway", "cluster.outbound|9080||productpage.default.svc.cluster.local.ssl.handshake")
        .await;
    assert!(handshakes > 0, "the gateway's calls to productpage are mTLS: {handshakes} handshakes");

    // No sidecar, no certificate: refused under STRICT; served under PERMISSIVE.
    let refused = m.outsider_call().await;
    assert!(
        refused.as_ref().is_err() || refused.as_ref().is_ok_and(|s| *s != 200),
        "STRICT let plaintext in: {refused:?}"
    );
    m.set_mode("PERMISSIVE");
    m.wait_outsider(true, "PERMISSIVE").await;
    let page = m.productpage().await;
    assert!(xfcc(&page["reviews"]).contains(&spiffe("bookinfo-productpage")), "mesh traffic stays mTLS: {page}");

    // PERMISSIVE ─▶ STRICT under load: no mesh request fails.
    let stop = m.mesh.net.dir().join("stop-load");
    let stop_flag = format!("--stop-file={}", stop.display());
    let mut load = m.mesh.spawn_load("client", "switch", &[URL, "--rate=120", "--workers=8", &stop_flag]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    m.set_mode("STRICT");
    m.wait_outsider(false, "STRICT again").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::fs::write(&stop, "").unwrap();
    let status = tokio::task::block_in_place(|| load.wait_exit(Duration::from_secs(30)));
    assert!(status.is_some_and(|s| s.success()), "load: {status:?}\n{}", load.log());
    let summary = crate::common::podmesh::LoadSummary::parse(&load.log());
    println!(
        "PERMISSIVE → STRICT under load: {} requests at {} req/s, failed {}",
        summary.total, summary.rate, summary.failed
    );
    assert_eq!(summary.failed, 0, "{:?}", summary.errors);
    assert!(summary.rate >= 100.0, "the load ran at {} req/s", summary.rate);
    // Envoys pool their connections: few handshakes carry every request, and none was plaintext.
    let handshakes = m.mesh.envoy_stat("reviews-v3", "listener.0.0.0.0_15006.ssl.handshake").await;
    assert!(handshakes > 0, "reviews v3 took {handshakes} TLS handshakes inbound");
    let ratings = m.mesh.envoy_stat("ratings", "listener.0.0.0.0_15006.ssl.handshake").await;
    assert!(ratings > 0, "ratings took {ratings} TLS handshakes inbound");
    println!("inbound TLS handshakes: reviews v3 {handshakes}, ratings {ratings}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_second_certificates_rotate_under_five_minutes_of_traffic_without_a_failed_request() {
    let _serial = crate::serial().await;
    let m = Mtls::start("STRICT", 60).await;
    let stop = m.mesh.net.dir().join("stop-load");
    let stop_flag = format!("--stop-file={}", stop.display());
    let mut load = m.mesh.spawn_load("client", "rotation", &[URL, "--rate=40", "--workers=4", &stop_flag]);
    let started = Instant::now();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    while started.elapsed() < Duration::from_secs(300) {
        let now = m.serials("reviews-v3").await;
        for s in now.difference(&seen) {
            println!("{:>5.1} s: reviews-v3's Envoy serves certificate serial {s}", started.elapsed().as_secs_f64());
        }
        seen.extend(now);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    std::fs::write(&stop, "").unwrap();
    let status = tokio::task::block_in_place(|| load.wait_exit(Duration::from_secs(30)));
    assert!(status.is_some_and(|s| s.success()), "load: {status:?}\n{}", load.log());
    let summary = crate::common::podmesh::LoadSummary::parse(&load.log());
    println!("5 minutes: {} requests, failed {}, {} serials", summary.total, summary.failed, seen.len());
    assert_eq!(summary.failed, 0, "{:?}", summary.errors);
    assert!(seen.len() >= 5, "≥ 4 rotations in 5 minutes of 60 s certificates: {seen:?}");
    let log = m.mesh.agents["reviews-v3"].log();
    let renewals = log
        .lines()
        .filter(|l| l.contains(" INFO ") && l.contains("sluice::agent::cert: workload certificate "))
        .count();
    assert!(renewals >= 5, "the agent got {renewals} certificates:\n{log}");
    assert_eq!(log.matches("Envoy started").count(), 1, "Envoy never restarted for a rotation:\n{log}");
}
