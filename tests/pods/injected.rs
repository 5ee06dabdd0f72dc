//! Injected pods run: Bookinfo's reviews (v1, v3) and productpage pod templates, taken unchanged from
//! `deploy/bookinfo.yaml`, go through the injection webhook (`sluice serve --inject`, HTTPS, a real client verifying
//! its CA), the JSONPatch is applied by the `json-patch` crate, and the test bed runs what the patched spec says
//! (`tests/common/podspec.rs`): the init container's `sluice iptables` args, then the app and the sidecar's
//! `sluice proxy` with its env (fieldRefs resolved, the downward-API labels file written) as uid 1337, the host's
//! `sluice` and Envoy standing in for the image.
//!
//! ```text
//!  client pod ─▶ productpage (injected) ─▶ its sidecar :15001 ─▶ reviews-v1 | reviews-v3 (injected) :15006 ─▶ app
//!                                                                   80%        20% (canaryWeight 2000)
//! ```
//! The templates keep their namespace's meaning but are created in `default`, where the test mesh's Services are.
//! One user annotation is added before injection: `sidecar.istio.io/statsInclusionPrefixes` (the listener stats
//! the test reads), which also shows that annotation reaching Envoy.
//!
//! Gateway injection: `deploy/bookinfo-gateway.yaml`'s gateway pod (`inject.istio.io/templates: gateway`,
//! `istio-proxy` with `image: auto`) through the same webhook with the CA on, run as its patched spec says:
//! ```text
//!  outsider (no sidecar) ─plaintext─▶ gateway pod :8080 (injected agent, SDS) ─mTLS─▶ productpage (STRICT)
//! ```

use crate::common::child::SluiceChild;
use crate::common::https::{ask, wait_listening};
use crate::common::podmesh::{PodMesh, Sidecar, service_yaml, sluice_bin, workload_yaml};
use crate::common::podnet::{HUB_IP, HttpRequest, envoy_for_proxy_uid};
use crate::common::podspec::{self, Images, PodMeta};
use crate::common::{free_addrs, peer, repo, venv_python};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

const URL: &str = "--url=http://productpage:9080/productpage";
/// Deployment ─▶ test-bed pod, injected through the webhook.
const INJECTED: [(&str, &str); 3] =
    [("reviews-v1", "reviews-v1"), ("reviews-v3", "reviews-v3"), ("productpage-v1", "productpage")];

/// The Deployments' pod templates in `deploy/bookinfo.yaml`, by Deployment name.
fn templates() -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(repo().join("deploy/bookinfo.yaml")).expect("deploy/bookinfo.yaml");
    serde_yaml::Deserializer::from_str(&text)
        .map(|de| Value::deserialize(de).expect("bookinfo.yaml parses"))
        .filter(|d| d["kind"] == "Deployment")
        .map(|d| (d["metadata"]["name"].as_str().unwrap().to_string(), d["spec"]["template"].clone()))
        .collect()
}

/// `deploy/bookinfo-gateway.yaml`'s documents.
fn gateway_manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join("deploy/bookinfo-gateway.yaml")).expect("bookinfo-gateway.yaml");
    serde_yaml::Deserializer::from_str(&text).map(|de| Value::deserialize(de).expect("it parses")).collect()
}

/// The image of each Bookinfo app ─▶ the Python stand-in (`tests/peers/bookinfo.py`, same role and version).
fn images(templates: &BTreeMap<String, Value>) -> Images {
    let python = venv_python().to_string_lossy().into_owned();
    let script = peer("bookinfo.py").to_string_lossy().into_owned();
    let mut entrypoints = BTreeMap::new();
    for t in templates.values() {
        let labels = &t["metadata"]["labels"];
        let (role, version) = (labels["app"].as_str().unwrap(), labels["version"].as_str().unwrap());
        let image = t["spec"]["containers"][0]["image"].as_str().unwrap().to_string();
        let line = [&python, "-u", &script, "--role", role, "--version", version, "--port", "9080"];
        entrypoints.insert(image, line.map(String::from).to_vec());
    }
    let sluice = sluice_bin().to_string_lossy().into_owned();
    entrypoints.insert("sluice:latest".into(), vec![sluice]);
    let paths = BTreeMap::from([
        ("/usr/local/bin/envoy".to_string(), envoy_for_proxy_uid()),
        ("/usr/local/bin/sluice".to_string(), sluice_bin()),
    ]);
    Images { entrypoints, paths, tokens: BTreeMap::new() }
}

/// The Pod the API server would send for `template` (namespace `default`, a ReplicaSet's generateName).
fn pod_of(deployment: &str, template: &Value) -> Value {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": template["metadata"].clone(),
                         "spec": template["spec"].clone()});
    pod["metadata"]["generateName"] = json!(format!("{deployment}-7c9f6d5b8d-"));
    pod["metadata"]["namespace"] = json!("default");
    pod["metadata"]["annotations"]["sidecar.istio.io/statsInclusionPrefixes"] = json!("http.,listener.,cluster.");
    pod
}

/// `pod` sent to the webhook as a CREATE review; the patched pod.
fn inject(webhook: std::net::SocketAddr, ca: &std::path::Path, pod: &Value) -> Value {
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "3f1c", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "namespace": "default", "operation": "CREATE", "object": pod}});
    let answers = ask(
        webhook,
        ca,
        &json!([{"path": "/inject", "headers": {"Content-Type": "application/json"},
                                             "body": review.to_string()}]),
    );
    assert_eq!(answers[0]["status"], 200, "{}", answers[0]);
    let body: Value = serde_json::from_str(answers[0]["body"].as_str().unwrap()).expect("an AdmissionReview");
    let response = &body["response"];
    assert_eq!((response["allowed"].as_bool(), response["patchType"].as_str()), (Some(true), Some("JSONPatch")));
    let bytes = base64::engine::general_purpose::STANDARD.decode(response["patch"].as_str().unwrap()).unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("an RFC 6902 patch");
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).expect("the patch applies");
    patched
}

/// A mesh CA both Sluices use (`--ca-dir`, Istio's cacerts layout) and the tokens it accepts (`--ca-tokens`).
struct MeshCa {
    dir: std::path::PathBuf,
    tokens_file: std::path::PathBuf,
    tokens: BTreeMap<String, String>,
}

impl MeshCa {
    fn new(dir: &std::path::Path, accounts: &[&str]) -> MeshCa {
        let root =
            sluice::ca::Ca::generate("test mesh root", std::time::SystemTime::now(), Duration::from_secs(86_400))
                .expect("a CA");
        let ca_dir = dir.join("cacerts");
        std::fs::create_dir_all(&ca_dir).unwrap();
        for (file, pem) in [
            ("ca-cert.pem", &root.cert_pem),
            ("ca-key.pem", &root.key_pem),
            ("root-cert.pem", &root.cert_pem),
            ("cert-chain.pem", &root.cert_pem),
        ] {
            std::fs::write(ca_dir.join(file), pem).unwrap();
        }
        let mut tokens = BTreeMap::new();
        let mut lines = String::new();
        for sa in accounts {
            let token = format!("projected-token-{sa}-{}", std::process::id());
            lines.push_str(&format!("default/{sa} {}\n", sluice::ca::authn::digest_hex(&token)));
            tokens.insert(sa.to_string(), token);
        }
        let tokens_file = dir.join("ca-tokens");
        std::fs::write(&tokens_file, lines).unwrap();
        MeshCa { dir: ca_dir, tokens_file, tokens }
    }

    /// `serve` flags for this CA, its TLS port at `tls_addr`.
    fn flags(&self, tls_addr: &str) -> Vec<String> {
        let (dir, tokens) = (self.dir.to_string_lossy(), self.tokens_file.to_string_lossy());
        ["--ca", "--ca-dir", &dir, "--ca-tokens", &tokens, "--xds-tls-addr", tls_addr].map(String::from).to_vec()
    }
}

/// Bookinfo where reviews v1, v3 and productpage are injected through the webhook (with `ca`: the webhook and
/// Sluice run that CA, and the injected sidecars get workload mTLS); details, ratings and a client pod run as
/// the other pod tests run them. With `gateway`: PeerAuthentication STRICT, the Gateway and VirtualService of
/// `deploy/bookinfo-gateway.yaml` (in `default`), its gateway pod injected and running in pod `gateway`, and an
/// `outsider` pod with neither sidecar nor rules.
async fn injected_bookinfo(ca: Option<&MeshCa>, gateway: bool) -> PodMesh {
    let templates = templates();
    let mut images = images(&templates);
    if let Some(ca) = ca {
        images.tokens = ca.tokens.clone();
    }

    // The webhook: its own `sluice serve --inject` on loopback, telling sidecars where Sluice's xDS is.
    let dir = tempfile::tempdir().unwrap();
    let (empty, state) = (dir.path().join("mesh"), dir.path().join("state"));
    std::fs::create_dir_all(&empty).unwrap();
    let [xds, admin, inject_addr, webhook_tls] = free_addrs();
    let mut args: Vec<String> = [
        "--config",
        empty.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--inject",
        "--inject-addr",
        &inject_addr.to_string(),
        "--inject-dns-names",
        "localhost",
        "--proxy-xds",
        &format!("{HUB_IP}:15010"),
    ]
    .map(String::from)
    .to_vec();
    if let Some(ca) = ca {
        args.extend(ca.flags(&webhook_tls.to_string()));
    }
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let webhook = SluiceChild::start_with(&args, &[], xds, admin, dir.path().join("webhook.log")).await;
    wait_listening(inject_addr).await;
    let webhook_ca = state.join("webhook-ca.pem");

    // The mesh: Services with cluster IPs, a Workload per pod with its template's labels, reviews at 80/20.
    let mut mesh = PodMesh::new();
    for pod in ["productpage", "details", "ratings", "reviews-v1", "reviews-v3", "client"] {
        mesh.add_pod(pod);
    }
    if gateway {
        mesh.add_pod("gateway");
        mesh.add_pod("outsider");
    }
    for svc in ["productpage", "details", "reviews", "ratings"] {
        mesh.add_service(svc);
    }
    let mut config = String::new();
    if gateway {
        for mut doc in
            gateway_manifest().into_iter().filter(|d| d["kind"] == "Gateway" || d["kind"] == "VirtualService")
        {
            doc["metadata"]["namespace"] = json!("default");
            config.push_str(&format!("---\n{}", serde_yaml::to_string(&doc).unwrap()));
        }
        config.push_str(
            "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: \
             default}\nspec:\n  mtls: {mode: STRICT}\n",
        );
    }
    for (svc, ip) in &mesh.services {
        config.push_str(&service_yaml(svc, *ip, 9080, "http"));
    }
    for (pod, app, version) in [("details", "details", "v1"), ("ratings", "ratings", "v1")] {
        config.push_str(&workload_yaml(pod, app, version, mesh.pod(pod).ip));
    }
    // The injected pods as the cluster would list them: the labels the patch gave them (tlsMode among them)
    // and their service account.
    for (deployment, pod) in INJECTED {
        let labels = &templates[deployment]["metadata"]["labels"];
        let (app, version) = (labels["app"].as_str().unwrap(), labels["version"].as_str().unwrap());
        let sa = templates[deployment]["spec"]["serviceAccountName"].as_str().unwrap();
        config.push_str(&format!(
            "---\napiVersion: sluice.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: {pod}\n  labels: {{app: {app}, \
             version: {version}, security.istio.io/tlsMode: istio}}\nspec: {{address: {}, serviceAccount: {sa}}}\n",
            mesh.pod(pod).ip
        ));
    }
    config.push_str(
        "---\napiVersion: sluice.dev/v1alpha1\nkind: ReleasePolicy\nmetadata: {name: reviews-v3}\nspec:\n  \
         service: reviews\n  stable: v1\n  canary: v3\n  traffic: {canaryWeight: 2000}\n",
    );
    mesh.write_config(&config);
    let hub_tls = format!("{HUB_IP}:15012");
    let flags = ca.map(|c| c.flags(&hub_tls)).unwrap_or_default();
    mesh.start_sluice_with(&flags.iter().map(String::as_str).collect::<Vec<_>>()).await;

    // details and ratings as the other pod tests run them; reviews and productpage as injected.
    mesh.start_bookinfo_pod("details", "details", "v1", false).await;
    mesh.start_bookinfo_pod("ratings", "ratings", "v1", false).await;
    for (deployment, pod) in INJECTED {
        let original = pod_of(deployment, &templates[deployment]);
        let injected = inject(inject_addr, &webhook_ca, &original);
        let name = format!("{deployment}-7c9f6d5b8d-x2x4q");
        podspec::run(&mut mesh, pod, &injected, PodMeta { name: &name, namespace: "default" }, &images).await;
        let running: Vec<&String> = mesh.apps.keys().filter(|k| k.starts_with(&format!("{pod}/"))).collect();
        println!("{deployment}: injected and running as {running:?}");
        assert_eq!(running.len(), 2, "the app and the sidecar run in {pod}: {running:?}");
    }
    if gateway {
        run_injected_gateway(&mut mesh, inject_addr, &webhook_ca, &images).await;
    }
    drop(webhook);
    mesh.intercept("client");
    mesh.start_agent("client", &Sidecar { labels: vec![("app".into(), "client".into())], ..Default::default() });
    mesh.wait_ready("client", Duration::from_secs(30)).await;
    let gateway_agent = gateway.then_some("gateway/istio-proxy".to_string());
    for label in INJECTED.iter().map(|(_, pod)| format!("{pod}/sluice-proxy")).chain(gateway_agent) {
        let log = mesh.apps[&label].log();
        assert!(!log.contains("ERROR"), "{label} logged an error:\n{log}");
    }
    mesh
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_bookinfo_pods_run_and_split_by_the_release_policy() {
    let _serial = crate::serial().await;
    let mesh = injected_bookinfo(None, false).await;
    let split = mesh.load("client", &[URL, "--count=2000", "--workers=8"], Duration::from_secs(240)).await;
    println!("2000 calls through injected pods: {:?} in {:.1} s ({} req/s)", split.versions, split.seconds, split.rate);
    assert_eq!(split.failed, 0, "{} of {} failed: {:?}", split.failed, split.total, split.errors);
    assert_eq!(split.ok, 2000);
    let v3 = split.share("v3");
    assert!((0.17..=0.23).contains(&v3), "v3 got {:.1}% of 2000 (want 17-23%): {:?}", v3 * 100.0, split.versions);

    // Through both sidecars: productpage's Envoy routed every call to reviews out of its outbound listener, and
    // reviews v3's Envoy took its share on its inbound one.
    let outbound = mesh.envoy_stat("productpage", "http.outbound_0.0.0.0_9080.downstream_rq_total").await;
    assert!(outbound >= 4000, "productpage's sidecar routed {outbound} calls (2000 to reviews, 2000 to details)");
    let inbound = mesh.envoy_stat("reviews-v3", "http.inbound_0.0.0.0_9080.downstream_rq_total").await;
    assert!(inbound >= split.versions["v3"], "reviews-v3's sidecar saw {inbound} inbound requests");
    // The sidecar runs as the injected runAsUser 1337, the agent and Envoy both (no root in the sidecar).
    let processes = processes_in(&mesh.pod("reviews-v3").ns);
    println!("reviews-v3 processes (name, uid): {processes:?}");
    for name in ["sluice", "envoy"] {
        let uids: Vec<u32> = processes.iter().filter(|(n, _)| n == name).map(|(_, uid)| *uid).collect();
        assert!(!uids.is_empty() && uids.iter().all(|u| *u == 1337), "{name} in reviews-v3 runs as {uids:?}");
    }
}

/// With the CA on (`serve --inject --ca`), what the webhook injects is enough for workload mTLS: the root in
/// `SLUICE_CA_ROOT_PEM`, the projected token, the CA's default address (the xDS host, 15012). productpage reaches
/// reviews over mTLS (reviews' app sees productpage's SPIFFE id), the plain pods keep plaintext, nothing fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_pods_get_workload_mtls_when_sluice_runs_its_ca() {
    let _serial = crate::serial().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = MeshCa::new(dir.path(), &["bookinfo-reviews", "bookinfo-productpage"]);
    let mesh = injected_bookinfo(Some(&ca), false).await;
    let load = mesh.load("client", &[URL, "--count=300", "--workers=4"], Duration::from_secs(120)).await;
    assert_eq!(load.failed, 0, "{} of {} failed: {:?}", load.failed, load.total, load.errors);
    let productpage = SocketAddr::from((mesh.services["productpage"], 9080));
    let req = HttpRequest { host: "productpage:9080", ..HttpRequest::get(productpage, "/productpage") };
    let (status, body) = mesh.net.http(mesh.pod("client"), req).await.expect("productpage");
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    let xfcc = page["reviews"]["xfcc"].as_str().unwrap_or_default();
    assert!(xfcc.contains("URI=spiffe://cluster.local/ns/default/sa/bookinfo-productpage"), "reviews saw: {page}");
    assert!(page["details"].get("xfcc").is_none(), "details has no sidecar certificate: plaintext: {page}");
    for (_, pod) in INJECTED {
        let log = mesh.apps[&format!("{pod}/sluice-proxy")].log();
        assert!(log.contains("sluice::agent::cert: workload certificate "), "{pod} got no certificate:\n{log}");
    }
}

/// The gateway Deployment's pod from `deploy/bookinfo-gateway.yaml` (its Gateway named in `default`, where the
/// test's Gateway is), injected through the webhook and run in pod `gateway`: one container, the agent.
async fn run_injected_gateway(mesh: &mut PodMesh, webhook: SocketAddr, webhook_ca: &std::path::Path, images: &Images) {
    let manifest = gateway_manifest();
    let deployment = manifest.iter().find(|d| d["kind"] == "Deployment").expect("the gateway Deployment");
    let mut pod = pod_of("bookinfo-gateway", &deployment["spec"]["template"]);
    let env = pod["spec"]["containers"][0]["env"].as_array_mut().expect("the proxy container's env");
    let gateway = env.iter_mut().find(|e| e["name"] == "SLUICE_GATEWAY").expect("SLUICE_GATEWAY");
    gateway["value"] = json!("default/bookinfo-gateway");
    let injected = inject(webhook, webhook_ca, &pod);
    assert!(injected["spec"]["initContainers"].is_null(), "no init container: {}", injected["spec"]);
    let name = "bookinfo-gateway-7c9f6d5b8d-g8w2k";
    podspec::run(mesh, "gateway", &injected, PodMeta { name, namespace: "default" }, images).await;
    let running: Vec<&String> = mesh.apps.keys().filter(|k| k.starts_with("gateway/")).collect();
    println!("bookinfo-gateway: injected and running as {running:?}");
    assert_eq!(running, ["gateway/istio-proxy"], "the gateway pod runs only its agent");
}

/// With the CA on, the gateway pod of `deploy/bookinfo-gateway.yaml`, injected, is a gateway with workload mTLS:
/// it takes plaintext from a pod outside the mesh and calls productpage, which refuses plaintext (STRICT), over mTLS
/// with its own identity; 300 requests through it, none failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_gateway_takes_plaintext_from_outside_and_reaches_strict_workloads_over_mtls() {
    let _serial = crate::serial().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = MeshCa::new(dir.path(), &["bookinfo-reviews", "bookinfo-productpage", "bookinfo-gateway"]);
    let mesh = injected_bookinfo(Some(&ca), true).await;

    // STRICT holds: the outsider's plaintext straight to productpage's pod is refused.
    let direct = SocketAddr::from((mesh.pod("productpage").ip, 9080));
    let req = HttpRequest { host: "productpage:9080", ..HttpRequest::get(direct, "/productpage") };
    let refused = mesh.net.http(mesh.pod("outsider"), req).await.map(|(s, _)| s);
    assert!(refused.as_ref().is_ok_and(|s| *s != 200) || refused.is_err(), "STRICT let plaintext in: {refused:?}");

    // Through the gateway: productpage sees the gateway's identity.
    let at_gateway = SocketAddr::from((mesh.pod("gateway").ip, 8080));
    let req = HttpRequest { host: "bookinfo.example.com", ..HttpRequest::get(at_gateway, "/productpage") };
    let (status, body) = mesh.net.http(mesh.pod("outsider"), req).await.expect("the gateway answers");
    assert_eq!(status, 200, "through the gateway under STRICT: {body}");
    let page: Value = serde_json::from_str(&body).expect("productpage JSON");
    let xfcc = page["xfcc"].as_str().unwrap_or_default();
    assert!(xfcc.contains("URI=spiffe://cluster.local/ns/default/sa/bookinfo-gateway"), "productpage saw: {page}");
    let url = format!("--url=http://{at_gateway}/productpage");
    let load = mesh.load("outsider", &[&url, "--count=300", "--workers=4"], Duration::from_secs(60)).await;
    println!("outsider → injected gateway → productpage (STRICT): {} requests, {} failed", load.total, load.failed);
    assert!(load.total >= 300 && load.failed == 0, "{load:?}");
    let handshakes =
        mesh.envoy_stat("gateway", "cluster.outbound|9080||productpage.default.svc.cluster.local.ssl.handshake").await;
    assert!(handshakes > 0, "the gateway's calls to productpage are mTLS: {handshakes} handshakes");
    let log = mesh.apps["gateway/istio-proxy"].log();
    assert!(log.contains("sluice::agent::cert: workload certificate "), "the gateway got no certificate:\n{log}");
    let processes = processes_in(&mesh.pod("gateway").ns);
    let uids: Vec<u32> = processes.iter().filter(|(n, _)| n == "sluice" || n == "envoy").map(|(_, u)| *u).collect();
    assert!(uids.len() >= 2 && uids.iter().all(|u| *u == 1337), "the gateway's agent and Envoy run as {uids:?}");
}

/// (process name, real uid) of every process in network namespace `ns`.
fn processes_in(ns: &str) -> Vec<(String, u32)> {
    let out = std::process::Command::new("ip").args(["netns", "pids", ns]).output().expect("ip netns pids");
    let mut found = Vec::new();
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().next());
        if let Some(uid) = uid.and_then(|u| u.parse().ok()) {
            found.push((comm, uid));
        }
    }
    found
}
