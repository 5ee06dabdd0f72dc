//! A mesh in the pod test bed ([`super::podnet`]): Sluice in the hub, and pods whose traffic `sluice iptables`
//! intercepts, each with a `sluice proxy` sidecar (Envoy as uid 1337) beside its app. [`PodMesh::bookinfo`]
//! builds Bookinfo (productpage, details, ratings, reviews v1/v2/v3, a client pod) with the release policy of
//! `config/bookinfo.yaml`.
//!
//! ```text
//!  pod: sluice iptables (init) ─▶ sluice proxy ─▶ Envoy :15001 :15006 :15090, agent :15021
//!                                 app :9080 (Python stand-in, calls http://reviews:9080/... by name)
//!  hub: sluice serve --config mesh.yaml (xDS 10.88.0.1:15010, admin 127.0.0.1:15014 inside the hub)
//! ```

use super::podnet::{HUB_IP, HttpRequest, Netns, PodNet, PodProc};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Sluice's ports inside the hub.
pub const XDS_PORT: u16 = 15010;
pub const ADMIN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 15014);
/// The agent's readiness port and Envoy's admin and Prometheus ports in every pod.
pub const STATUS_PORT: u16 = 15021;
pub const ENVOY_ADMIN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 15000);
pub const PROMETHEUS_PORT: u16 = 15090;
/// The first Service cluster IP (10.96.0.0/16, Kubernetes' default service range).
const FIRST_CLUSTER_IP: u8 = 10;

/// What a sidecar is told about its pod.
#[derive(Clone, Debug, Default)]
pub struct Sidecar {
    pub labels: Vec<(String, String)>,
    pub inbound_ports: Vec<u16>,
    /// State-of-the-World ADS instead of Delta.
    pub sotw: bool,
    pub drain_seconds: u64,
    /// The pod's service account (`bookinfo` when empty).
    pub service_account: String,
    /// More of the agent's environment (e.g. workload mTLS: `SLUICE_MTLS`, the CA's root and the token file).
    pub env: Vec<(String, String)>,
    /// Run the agent itself as uid/gid 1337, as an injected sidecar runs (its own calls, to the CA, are then
    /// exempt from capture); else as root, and it starts Envoy as 1337.
    pub as_proxy_uid: bool,
}

/// The processes are dropped (killed) before the network is removed: fields drop in order.
pub struct PodMesh {
    pub agents: BTreeMap<String, PodProc>,
    pub apps: BTreeMap<String, PodProc>,
    pub sluice: Option<PodProc>,
    pub pods: BTreeMap<String, Netns>,
    pub services: BTreeMap<String, Ipv4Addr>,
    pub net: PodNet,
}

impl Default for PodMesh {
    fn default() -> Self {
        PodMesh::new()
    }
}

impl PodMesh {
    pub fn new() -> PodMesh {
        PodMesh {
            agents: BTreeMap::new(),
            apps: BTreeMap::new(),
            sluice: None,
            pods: BTreeMap::new(),
            services: BTreeMap::new(),
            net: PodNet::new(),
        }
    }

    pub fn add_pod(&mut self, name: &str) -> Netns {
        let pod = self.net.add_pod(name);
        self.pods.insert(name.into(), pod.clone());
        pod
    }

    pub fn pod(&self, name: &str) -> &Netns {
        self.pods.get(name).unwrap_or_else(|| panic!("no pod {name}"))
    }

    /// Gives Service `name` (namespace default) the next cluster IP, resolvable in every pod by its DNS names.
    pub fn add_service(&mut self, name: &str) -> Ipv4Addr {
        let n = FIRST_CLUSTER_IP + u8::try_from(self.services.len()).expect("few services");
        let ip = Ipv4Addr::new(10, 96, 0, n);
        let names = [
            name.to_string(),
            format!("{name}.default"),
            format!("{name}.default.svc"),
            format!("{name}.default.svc.cluster.local"),
        ];
        self.net.add_host(ip, &names.iter().map(String::as_str).collect::<Vec<_>>());
        self.services.insert(name.into(), ip);
        ip
    }

    /// Writes `yaml` as Sluice's config (`mesh.yaml`; Sluice reloads it when it changes).
    pub fn write_config(&self, yaml: &str) {
        std::fs::write(self.config_path(), yaml).expect("write mesh.yaml");
    }

    pub fn config_path(&self) -> PathBuf {
        self.net.dir().join("mesh.yaml")
    }

    /// Starts `sluice serve` in the hub on the config written by [`PodMesh::write_config`]; waits for /readyz.
    pub async fn start_sluice(&mut self) {
        self.start_sluice_with(&[]).await;
    }

    /// [`PodMesh::start_sluice`] with `extra` flags.
    pub async fn start_sluice_with(&mut self, extra: &[&str]) {
        let xds = format!("{HUB_IP}:{XDS_PORT}");
        let admin = ADMIN.to_string();
        let config = self.config_path();
        let mut args = vec![
            "serve",
            "--config",
            config.to_str().expect("utf-8 path"),
            "--xds-addr",
            &xds,
            "--admin-addr",
            &admin,
            "--reload-interval-ms",
            "100",
        ];
        args.extend_from_slice(extra);
        let proc = self.net.spawn(self.net.hub(), "sluice", sluice_bin().as_ref(), &args, &[("RUST_LOG", "info")]);
        self.sluice = Some(proc);
        let hub = self.net.hub().clone();
        self.wait(Duration::from_secs(20), "sluice /readyz", || async {
            matches!(self.net.http(&hub, HttpRequest::get(ADMIN, "/readyz")).await, Ok((200, _)))
        })
        .await;
    }

    /// The pod's init step: `sluice iptables` with default flags (istio-iptables' defaults).
    pub fn intercept(&self, pod: &str) {
        let bin = sluice_bin();
        self.net.run_ok(self.pod(pod), bin.to_str().expect("utf-8"), &["iptables"]);
    }

    /// Starts `sluice proxy` in `pod` (Envoy as uid 1337); does not wait.
    pub fn start_agent(&mut self, pod: &str, sidecar: &Sidecar) {
        let netns = self.pod(pod).clone();
        let envoy = super::podnet::envoy_for_proxy_uid();
        let config_dir = self.net.dir().join(format!("proxy-{pod}"));
        let labels: Vec<String> = sidecar.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let ports: Vec<String> = sidecar.inbound_ports.iter().map(u16::to_string).collect();
        let xds = format!("{HUB_IP}:{XDS_PORT}");
        let ip = netns.ip.to_string();
        let drain = sidecar.drain_seconds.max(1).to_string();
        let mut env = vec![
            ("SLUICE_XDS", xds.as_str()),
            ("SLUICE_ENVOY_BIN", envoy.to_str().expect("utf-8")),
            ("POD_NAME", pod),
            ("POD_NAMESPACE", "default"),
            ("INSTANCE_IP", ip.as_str()),
            ("SERVICE_ACCOUNT", if sidecar.service_account.is_empty() { "bookinfo" } else { &sidecar.service_account }),
            ("SLUICE_LABELS_FILE", "/nonexistent"),
            ("SLUICE_CONFIG_DIR", config_dir.to_str().expect("utf-8")),
            ("SLUICE_CONCURRENCY", "1"),
            ("SLUICE_DRAIN_SECONDS", drain.as_str()),
            ("RUST_LOG", "info"),
            // The tests read these per-listener and per-cluster stats; a sidecar keeps few by default (as Istio's).
            ("SLUICE_STATS_INCLUSION_PREFIXES", "http.,tcp.,listener.,cluster."),
        ];
        let labels = labels.join(",");
        let ports = ports.join(",");
        env.push(("SLUICE_LABELS", labels.as_str()));
        env.push(("SLUICE_INBOUND_PORTS", ports.as_str()));
        if sidecar.sotw {
            env.push(("SLUICE_SOTW", "true"));
        }
        env.extend(sidecar.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let (user, program) = if sidecar.as_proxy_uid {
            std::fs::create_dir_all(&config_dir).expect("the agent's config dir");
            std::os::unix::fs::chown(&config_dir, Some(1337), Some(1337)).expect("chown the config dir");
            (Some((1337, 1337)), super::podnet::for_proxy_uid(&sluice_bin()))
        } else {
            (None, sluice_bin())
        };
        let proc = self.net.spawn_as(&netns, &format!("{pod}-proxy"), user, &program, &["proxy"], &env);
        self.agents.insert(pod.into(), proc);
    }

    /// Waits until `pod`'s agent answers 200 on `/healthz/ready` (asked from the hub, as a kubelet would).
    pub async fn wait_ready(&self, pod: &str, timeout: Duration) {
        let addr = SocketAddr::from((self.pod(pod).ip, STATUS_PORT));
        let hub = self.net.hub().clone();
        self.wait(timeout, &format!("{pod} ready"), || async {
            matches!(self.net.http(&hub, HttpRequest::get(addr, "/healthz/ready")).await, Ok((200, _)))
        })
        .await;
    }

    /// Starts a Python peer (`tests/peers/SCRIPT ARGS`) as `pod`'s app and waits for its `ready` line.
    pub async fn start_app(&mut self, pod: &str, label: &str, script: &str, args: &[&str]) {
        let netns = self.pod(pod).clone();
        let mut all = vec![super::peer(script).to_str().expect("utf-8").to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let proc = self.net.spawn(&netns, label, &super::venv_python(), &refs, &[("PYTHONUNBUFFERED", "1")]);
        let log = proc.log_path().to_path_buf();
        self.apps.insert(label.into(), proc);
        self.wait(Duration::from_secs(10), &format!("{label} ready"), || async {
            std::fs::read_to_string(&log).unwrap_or_default().lines().any(|l| l.starts_with("ready"))
        })
        .await;
    }

    /// A pod with interception, a sidecar and a Bookinfo stand-in (`role`, `version`) on 9080.
    pub async fn start_bookinfo_pod(&mut self, pod: &str, role: &str, version: &str, sotw: bool) {
        self.start_bookinfo_pod_with(pod, role, version, Sidecar { sotw, ..Default::default() }).await;
    }

    /// [`PodMesh::start_bookinfo_pod`] with `base` for the rest of the sidecar (its labels, inbound ports and
    /// drain are set here).
    pub async fn start_bookinfo_pod_with(&mut self, pod: &str, role: &str, version: &str, base: Sidecar) {
        self.intercept(pod);
        let mut labels = vec![("app".to_string(), role.to_string()), ("version".into(), version.into())];
        labels.extend(base.labels.iter().cloned());
        let sidecar = Sidecar { labels, inbound_ports: vec![9080], drain_seconds: 2, ..base };
        self.start_agent(pod, &sidecar);
        self.start_app(pod, pod, "bookinfo.py", &["--role", role, "--version", version]).await;
    }

    /// Sluice's admin API, from inside the hub.
    pub async fn admin(&self, method: &str, path: &str, body: Option<String>) -> (u16, String) {
        let req = HttpRequest { method, addr: ADMIN, host: "localhost", path, headers: &[], body };
        self.net.http(self.net.hub(), req).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A release action (`promote`, `finalize`, ...) that must be accepted.
    pub async fn release(&self, name: &str, action: &str) {
        let path = format!("/api/v1/namespaces/default/releases/{name}/{action}");
        let (status, body) = self.admin("POST", &path, None).await;
        assert!(status < 300, "{action} {name}: HTTP {status} {body}");
    }

    /// Waits until release `name` is in `phase` and every connected proxy has ACKed it.
    pub async fn wait_applied(&self, name: &str, phase: &str) {
        let path = format!("/api/v1/namespaces/default/releases/{name}");
        self.wait(Duration::from_secs(15), &format!("{name} {phase} and ACKed"), || async {
            let (_, body) = self.admin("GET", &path, None).await;
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            let s = &v["status"];
            s["phase"] == phase
                && s["proxies"]["total"].as_u64() > Some(0)
                && s["proxies"]["acked"] == s["proxies"]["total"]
        })
        .await;
    }

    /// A counter or gauge of `pod`'s Envoy (read on its admin port from inside the pod); 0 when absent.
    pub async fn envoy_stat(&self, pod: &str, name: &str) -> u64 {
        let path = format!("/stats?filter=^{}$", name.replace('|', "%7C"));
        let (_, body) = self
            .net
            .http(self.pod(pod), HttpRequest::get(ENVOY_ADMIN, &path))
            .await
            .unwrap_or_else(|e| panic!("{pod} Envoy /stats: {e}"));
        body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.trim().parse().ok()).unwrap_or(0)
    }

    /// Runs `podload.py ARGS` in `pod` to the end (at most `timeout`); its summary.
    pub async fn load(&self, pod: &str, args: &[&str], timeout: Duration) -> LoadSummary {
        let mut proc = self.spawn_load(pod, "load", args);
        let status = tokio::task::block_in_place(|| proc.wait_exit(timeout));
        assert!(status.is_some_and(|s| s.success()), "load in {pod}: {status:?}\n{}", proc.log());
        LoadSummary::parse(&proc.log())
    }

    /// Starts `podload.py ARGS` in `pod` (its summary is the last line of the returned process's log).
    pub fn spawn_load(&self, pod: &str, label: &str, args: &[&str]) -> PodProc {
        let script = super::peer("podload.py");
        let mut all = vec![script.to_str().expect("utf-8")];
        all.extend_from_slice(args);
        self.net.spawn(self.pod(pod), &format!("{pod}-{label}"), &super::venv_python(), &all, &[])
    }

    /// How many requests for paths starting with `prefix` the app `label` has served so far.
    pub fn served(&self, label: &str, prefix: &str) -> usize {
        let log = self.apps.get(label).unwrap_or_else(|| panic!("no app {label}")).log();
        log.lines().filter(|l| l.strip_prefix("served ").is_some_and(|p| p.starts_with(prefix))).count()
    }

    /// Polls `check` every 50 ms until it holds; panics after `timeout` with every log's tail.
    pub async fn wait<F, Fut>(&self, timeout: Duration, what: &str, check: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        while !check().await {
            assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `podload.py`'s closing line.
#[derive(Debug, Default, serde::Deserialize)]
pub struct LoadSummary {
    pub total: u64,
    pub ok: u64,
    pub failed: u64,
    pub versions: BTreeMap<String, u64>,
    pub errors: Vec<String>,
    pub seconds: f64,
    pub rate: f64,
    pub per_second: Vec<u64>,
}

impl LoadSummary {
    pub fn parse(log: &str) -> LoadSummary {
        let line = log.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no summary in {log}"));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("summary {line}: {e}"))
    }

    /// The share of the answers from reviews `version`.
    pub fn share(&self, version: &str) -> f64 {
        *self.versions.get(version).unwrap_or(&0) as f64 / self.ok.max(1) as f64
    }
}

pub fn sluice_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluice"))
}

/// Bookinfo in pods: the Services with cluster IPs, a Workload per pod at its address, and the release policy
/// `reviews-v3` of `config/bookinfo.yaml` unchanged (80/20, Jason and Windows users to v3).
pub const BOOKINFO_PODS: [(&str, &str, &str); 6] = [
    ("productpage", "productpage", "v1"),
    ("details", "details", "v1"),
    ("ratings", "ratings", "v1"),
    ("reviews-v1", "reviews", "v1"),
    ("reviews-v2", "reviews", "v2"),
    ("reviews-v3", "reviews", "v3"),
];

impl PodMesh {
    /// Builds Bookinfo with a `client` pod (sidecar, no app: tests run `podload.py` in it); waits until every
    /// sidecar is ready. `sotw`: the details pod's sidecar speaks State-of-the-World ADS (the others Delta).
    pub async fn bookinfo() -> PodMesh {
        let mut mesh = PodMesh::new();
        for (pod, _, _) in BOOKINFO_PODS {
            mesh.add_pod(pod);
        }
        mesh.add_pod("client");
        for svc in ["productpage", "details", "reviews", "ratings"] {
            mesh.add_service(svc);
        }
        mesh.write_config(&mesh.bookinfo_yaml());
        mesh.start_sluice().await;
        for (pod, role, version) in BOOKINFO_PODS {
            mesh.start_bookinfo_pod(pod, role, version, pod == "details").await;
        }
        mesh.intercept("client");
        let client = Sidecar { labels: vec![("app".into(), "client".into())], drain_seconds: 1, ..Default::default() };
        mesh.start_agent("client", &client);
        for pod in mesh.pods.keys().cloned().collect::<Vec<_>>() {
            mesh.wait_ready(&pod, Duration::from_secs(30)).await;
        }
        mesh
    }

    /// The mesh config for [`PodMesh::bookinfo`].
    pub fn bookinfo_yaml(&self) -> String {
        let mut out = String::new();
        for (svc, ip) in &self.services {
            out.push_str(&service_yaml(svc, *ip, 9080, "http"));
        }
        for (pod, role, version) in BOOKINFO_PODS {
            out.push_str(&workload_yaml(pod, role, version, self.pod(pod).ip));
        }
        out.push_str(&bookinfo_policy());
        out
    }
}

pub fn service_yaml(name: &str, ip: Ipv4Addr, port: u16, protocol: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  clusterIP: {ip}\n  \
         selector: {{app: {name}}}\n  ports:\n  - {{name: {protocol}, port: {port}, appProtocol: {protocol}}}\n"
    )
}

pub fn workload_yaml(name: &str, app: &str, version: &str, ip: Ipv4Addr) -> String {
    format!(
        "---\napiVersion: sluice.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: {name}\n  \
         labels: {{app: {app}, version: {version}}}\nspec: {{address: {ip}}}\n"
    )
}

/// The ReleasePolicy document of `config/bookinfo.yaml`, as it is published.
pub fn bookinfo_policy() -> String {
    let text = std::fs::read_to_string(super::repo().join("config/bookinfo.yaml")).expect("config/bookinfo.yaml");
    let doc = text.split("\n---\n").find(|d| d.contains("kind: ReleasePolicy")).expect("a ReleasePolicy document");
    format!("---\n{doc}\n")
}
