//! Every kind of intercept-mode listener and chain Sluice emits, with packets through each, and the interception
//! rules' exemptions: the outbound HTTP listener (a Service by name, and `allow_any` to an unknown host), the TCP
//! listener of a Service's cluster IP, the TCP listener of a headless Service's port, `virtualOutbound`'s
//! passthrough, `virtualInbound`'s HTTP and TCP chains and its passthrough from 127.0.0.6, Prometheus on 15090, the
//! agent on 15021 (neither redirected), and what happens when the proxy's uid is not exempt (a loop).
//!
//! ```text
//!  client (sidecar; the harness's sockets are its app)
//!     ├─ http://web:9080          ─▶ 0.0.0.0_9080 (RDS) ─▶ web's virtualInbound HTTP chain ─▶ app :9080
//!     ├─ http://outside:9080      ─▶ 0.0.0.0_9080 allow_any ─▶ PassthroughCluster ─▶ outside (no sidecar)
//!     ├─ outside:8000             ─▶ virtualOutbound default chain ─▶ PassthroughCluster
//!     ├─ echo:7000 (cluster IP)   ─▶ 10.96.0.x_7000 tcp_proxy ─▶ web's TCP chain ─▶ app :7000
//!     ├─ echo-direct:7001 (headless, the pod's IP) ─▶ 0.0.0.0_7001 tcp_proxy ─▶ web's TCP chain
//!     └─ web's IP:7002 (no Service) ─▶ PassthroughCluster ─▶ web's InboundPassthroughClusterIpv4 (from 127.0.0.6)
//! ```

use crate::common::podmesh::{PROMETHEUS_PORT, PodMesh, STATUS_PORT, Sidecar, service_yaml, workload_yaml};
use crate::common::podnet::{HttpRequest, Netns, connect};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// One line to a TCP server from inside `from`, and its one-line answer.
async fn tcp_line(from: &Netns, addr: SocketAddr, line: &str) -> String {
    let exchange = async {
        let mut stream = connect(&from.ns, addr).await?;
        stream.write_all(format!("{line}\n").as_bytes()).await?;
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).await?;
        std::io::Result::Ok(answer.trim().to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("{addr} from {}: no answer in 10 s", from.name))
        .unwrap_or_else(|e| panic!("{addr} from {}: {e}", from.name))
}

async fn get(mesh: &PodMesh, from: &str, addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let req = HttpRequest { host, ..HttpRequest::get(addr, path) };
    mesh.net.http(mesh.pod(from), req).await.unwrap_or_else(|e| panic!("GET {host}{path} from {from}: {e}"))
}

/// Builds: web (sidecar; HTTP 9080, TCP 7000/7001/7002), client (sidecar), looper (sidecar) and outside (no
/// sidecar, no Service). Services: `web` (HTTP), `echo` (TCP, cluster IP), `echo-direct` (TCP, headless).
async fn mesh() -> PodMesh {
    let mut mesh = PodMesh::new();
    let web = mesh.add_pod("web");
    for pod in ["client", "looper", "outside"] {
        mesh.add_pod(pod);
    }
    let web_ip = mesh.add_service("web");
    let echo_ip = mesh.add_service("echo");
    mesh.net.add_host(web.ip, &["echo-direct", "echo-direct.default.svc.cluster.local"]);
    mesh.net.add_host(mesh.pod("outside").ip, &["outside"]);
    let mut yaml = service_yaml("web", web_ip, 9080, "http");
    yaml.push_str(&service_yaml("echo", echo_ip, 7000, "tcp").replace("{app: echo}", "{app: web}"));
    yaml.push_str(
        &service_yaml("echo-direct", Ipv4Addr::UNSPECIFIED, 7001, "tcp")
            .replace("clusterIP: 0.0.0.0", "clusterIP: None")
            .replace("{app: echo-direct}", "{app: web}"),
    );
    yaml.push_str(&workload_yaml("web", "web", "v1", web.ip));
    mesh.write_config(&yaml);
    mesh.start_sluice().await;

    mesh.intercept("web");
    let labels = vec![("app".to_string(), "web".to_string()), ("version".to_string(), "v1".to_string())];
    let sidecar = Sidecar { labels, inbound_ports: vec![9080, 7000, 7001], drain_seconds: 1, ..Default::default() };
    mesh.start_agent("web", &sidecar);
    mesh.start_app("web", "web", "bookinfo.py", &["--role", "details"]).await;
    mesh.start_app("web", "web-tcp", "tcp_echo.py", &["--name", "web", "--ports", "7000,7001,7002"]).await;
    for pod in ["client", "looper"] {
        mesh.intercept(pod);
        let labels = vec![("app".to_string(), pod.to_string())];
        mesh.start_agent(pod, &Sidecar { labels, drain_seconds: 1, ..Default::default() });
    }
    for port in ["9080", "8000"] {
        let label = format!("outside-{port}");
        let args = ["--host", "0.0.0.0", "--port", port, "--name", &label];
        mesh.start_app("outside", &label, "backend.py", &args).await;
    }
    for pod in ["web", "client", "looper"] {
        mesh.wait_ready(pod, Duration::from_secs(30)).await;
    }
    mesh
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_intercept_listener_carries_traffic_and_exempt_ports_and_uids_are_not_redirected() {
    let _serial = crate::serial().await;
    let mesh = mesh().await;
    let web = mesh.pod("web").clone();
    let client = mesh.pod("client").clone();
    let outside = mesh.pod("outside").ip;
    let stat = |pod: &'static str, name: String| {
        let mesh = &mesh;
        async move { mesh.envoy_stat(pod, &name).await }
    };

    // HTTP to a Service by name: client's 0.0.0.0_9080 (RDS 9080), web's virtualInbound HTTP chain.
    let web_vip = SocketAddr::from((mesh.services["web"], 9080));
    let (status, body) = get(&mesh, "client", web_vip, "web:9080", "/details/0").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"service\": \"details\""), "{body}");
    assert!(stat("client", "http.outbound_0.0.0.0_9080.downstream_rq_total".into()).await >= 1);
    assert!(stat("web", "http.inbound_0.0.0.0_9080.downstream_rq_total".into()).await >= 1);

    // HTTP on a mesh port to a host no Service names: allow_any, then PassthroughCluster to where it was going.
    let (status, body) = get(&mesh, "client", SocketAddr::from((outside, 9080)), "outside:9080", "/").await;
    assert_eq!((status, body.as_str()), (200, "outside-9080"));
    assert!(stat("client", "cluster.PassthroughCluster.upstream_rq_total".into()).await >= 1, "allow_any");
    // A port no listener knows: virtualOutbound's default chain, a TCP passthrough.
    let (status, body) = get(&mesh, "client", SocketAddr::from((outside, 8000)), "outside:8000", "/").await;
    assert_eq!((status, body.as_str()), (200, "outside-8000"));
    assert!(stat("client", "tcp.PassthroughCluster.downstream_cx_total".into()).await >= 1, "default chain");

    // TCP to a Service's cluster IP: its own listener; web's inbound TCP chain delivers from 127.0.0.1.
    let echo_vip = SocketAddr::from((mesh.services["echo"], 7000));
    assert_eq!(tcp_line(&client, echo_vip, "hi").await, "web 7000 127.0.0.1 hi");
    let name = format!("tcp.outbound_{}_7000.downstream_cx_total", mesh.services["echo"]);
    assert!(stat("client", name).await >= 1);
    assert!(stat("web", "tcp.inbound_0.0.0.0_7000.downstream_cx_total".into()).await >= 1);
    // TCP to a headless Service (the pod's own address, as cluster DNS answers): the port's listener.
    assert_eq!(tcp_line(&client, SocketAddr::from((web.ip, 7001)), "hey").await, "web 7001 127.0.0.1 hey");
    assert!(stat("client", "tcp.outbound_0.0.0.0_7001.downstream_cx_total".into()).await >= 1);
    assert!(stat("web", "tcp.inbound_0.0.0.0_7001.downstream_cx_total".into()).await >= 1);
    // A port of the pod that no Service and no inbound chain names: the inbound passthrough, from 127.0.0.6.
    assert_eq!(tcp_line(&client, SocketAddr::from((web.ip, 7002)), "yo").await, "web 7002 127.0.0.6 yo");
    assert!(stat("web", "tcp.InboundPassthroughClusterIpv4.downstream_cx_total".into()).await >= 1);

    // 15021 and 15090 answer callers outside the pod (a kubelet, Prometheus) without going through Envoy's
    // inbound listener; the app's port does.
    let inbound = || stat("web", "listener.0.0.0.0_15006.downstream_cx_total".into());
    let before = inbound().await;
    let hub = mesh.net.hub().clone();
    let ready = mesh.net.http(&hub, HttpRequest::get(SocketAddr::from((web.ip, STATUS_PORT)), "/healthz/ready")).await;
    assert_eq!(ready.expect("15021").0, 200);
    let prom = SocketAddr::from((web.ip, PROMETHEUS_PORT));
    let (status, metrics) = mesh.net.http(&hub, HttpRequest::get(prom, "/stats/prometheus")).await.expect("15090");
    assert_eq!(status, 200);
    assert!(metrics.contains("envoy_cluster_upstream_cx_total"), "Prometheus text from Envoy");
    assert_eq!(inbound().await, before, "15021 and 15090 were not redirected to 15006");
    let (status, _) = mesh.net.http(&hub, HttpRequest::get(SocketAddr::from((web.ip, 9080)), "/health")).await.unwrap();
    assert_eq!(status, 200);
    assert!(inbound().await > before, "the app's port is redirected to 15006");

    the_proxys_uid_must_be_exempt(&mesh, web_vip).await;
}

/// In `looper` the rules are re-applied for another uid (4242), so nothing exempts Envoy (1337): Envoy's call to
/// web is sent back into its own outbound listener, which sends it on again, and the app's request never
/// completes. The same request works from `client`, whose rules exempt 1337.
async fn the_proxys_uid_must_be_exempt(mesh: &PodMesh, web_vip: SocketAddr) {
    let bin = crate::common::podmesh::sluice_bin();
    mesh.net.run_ok(mesh.pod("looper"), bin.to_str().unwrap(), &["iptables", "-u", "4242", "-g", "4242"]);
    let req = HttpRequest { host: "web:9080", ..HttpRequest::get(web_vip, "/details/0") };
    let looped = tokio::time::timeout(Duration::from_secs(3), mesh.net.http(mesh.pod("looper"), req.clone())).await;
    let loops = mesh.envoy_stat("looper", "http.outbound_0.0.0.0_9080.downstream_rq_total").await;
    println!("with uid 1337 not exempt: {looped:?}; looper's outbound listener took {loops} requests for one call");
    assert!(!matches!(looped, Ok(Ok((200, _)))), "the call cannot succeed when Envoy's own connections loop");
    assert!(loops > 1, "one app request became {loops} in the looping Envoy");
    let (status, _) = mesh.net.http(mesh.pod("client"), req).await.expect("from client");
    assert_eq!(status, 200, "with 1337 exempt the same call works");
}
