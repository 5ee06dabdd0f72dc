//! `sluice proxy` in a pod: readiness follows Envoy's first config from Sluice, a killed Envoy is started again
//! and serves within 2 s, and SIGTERM drains (a request in flight completes) before the agent exits 0.

use crate::common::podmesh::{PodMesh, STATUS_PORT, Sidecar, service_yaml, workload_yaml};
use crate::common::podnet::HttpRequest;
use rustix::process::Signal;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// `web` (sidecar, Bookinfo's details stand-in on 9080, Service `web`) and `client` (sidecar). Sluice is not
/// started: each test starts it when it needs to.
fn mesh(drain_seconds: u64) -> PodMesh {
    let mut mesh = PodMesh::new();
    let web = mesh.add_pod("web");
    mesh.add_pod("client");
    let vip = mesh.add_service("web");
    let mut yaml = service_yaml("web", vip, 9080, "http");
    yaml.push_str(&workload_yaml("web", "web", "v1", web.ip));
    mesh.write_config(&yaml);
    for (pod, ports) in [("web", vec![9080]), ("client", vec![])] {
        mesh.intercept(pod);
        let labels = vec![("app".to_string(), pod.to_string())];
        mesh.start_agent(pod, &Sidecar { labels, inbound_ports: ports, drain_seconds, ..Default::default() });
    }
    mesh
}

/// [`mesh`] with Sluice and web's app running and both sidecars ready.
async fn running_mesh(drain_seconds: u64) -> PodMesh {
    let mut mesh = mesh(drain_seconds);
    mesh.start_sluice().await;
    mesh.start_app("web", "web", "bookinfo.py", &["--role", "details"]).await;
    for pod in ["web", "client"] {
        mesh.wait_ready(pod, Duration::from_secs(30)).await;
    }
    mesh
}

async fn ready_status(mesh: &PodMesh, pod: &str) -> (u16, String) {
    let addr = SocketAddr::from((mesh.pod(pod).ip, STATUS_PORT));
    let hub = mesh.net.hub().clone();
    mesh.net.http(&hub, HttpRequest::get(addr, "/healthz/ready")).await.unwrap_or((0, String::new()))
}

async fn call_web(mesh: &PodMesh, path: &str) -> anyhow::Result<(u16, String)> {
    let vip = SocketAddr::from((mesh.services["web"], 9080));
    let req = HttpRequest { host: "web:9080", ..HttpRequest::get(vip, path) };
    mesh.net.http(mesh.pod("client"), req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_until_envoy_has_its_first_config_from_sluice() {
    let _serial = crate::serial().await;
    let mut mesh = mesh(1);
    mesh.start_app("web", "web", "bookinfo.py", &["--role", "details"]).await;
    // The agent answers as soon as it runs; Envoy runs too, but Sluice does not, so it has no config.
    mesh.wait(Duration::from_secs(10), "the status port", || async { ready_status(&mesh, "web").await.0 != 0 }).await;
    for _ in 0..5 {
        let (status, body) = ready_status(&mesh, "web").await;
        assert_eq!(status, 503, "not ready without config: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let started = Instant::now();
    mesh.start_sluice().await;
    mesh.wait_ready("web", Duration::from_secs(30)).await;
    println!("ready {:?} after Sluice started", started.elapsed());
    assert_eq!(ready_status(&mesh, "web").await.0, 200);
    mesh.wait_ready("client", Duration::from_secs(30)).await;
    assert_eq!(call_web(&mesh, "/details/0").await.expect("through the sidecars").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_envoy_is_started_again_and_serves_within_two_seconds() {
    let _serial = crate::serial().await;
    let mesh = running_mesh(1).await;
    assert_eq!(call_web(&mesh, "/details/0").await.expect("before").0, 200);

    let agent = &mesh.agents["client"];
    let [envoy] = agent.children()[..] else { panic!("the agent runs one Envoy: {:?}", agent.children()) };
    let pid = rustix::process::Pid::from_raw(envoy as i32).expect("pid");
    rustix::process::kill_process(pid, Signal::KILL).expect("SIGKILL Envoy");
    let killed = Instant::now();
    // The client pod's app calls on; its calls fail until the new Envoy has listeners and clusters again.
    let mut failed = 0;
    let served_again = loop {
        match call_web(&mesh, "/details/0").await {
            Ok((200, _)) => break killed.elapsed(),
            _ => failed += 1,
        }
        assert!(killed.elapsed() < Duration::from_secs(10), "no answer 10 s after Envoy was killed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("Envoy SIGKILLed: served again after {served_again:?} ({failed} calls failed meanwhile)");
    assert!(served_again <= Duration::from_secs(2), "served again after {served_again:?} (want ≤ 2 s)");
    let restarted = agent.children();
    assert!(restarted.len() == 1 && restarted[0] != envoy, "a new Envoy: {restarted:?} (was {envoy})");
    let log = agent.log();
    assert!(log.contains("Envoy exited; starting it again after the delay"), "the agent reports it:\n{log}");
    assert!(log.contains("code=-9"), "with the signal that ended it:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_request_in_flight_then_the_agent_exits_zero() {
    let _serial = crate::serial().await;
    let mesh = running_mesh(3).await;
    let mesh = std::sync::Arc::new(mesh);
    let in_flight = tokio::spawn({
        let mesh = mesh.clone();
        async move { call_web(&mesh, "/slow?ms=1500").await }
    });
    // The request reaches web's app, then web's pod is told to stop.
    mesh.wait(Duration::from_secs(5), "the slow request at web", || async { mesh.served("web", "/slow") == 1 }).await;
    let termed = Instant::now();
    mesh.agents["web"].signal(Signal::TERM);
    let (status, body) = in_flight.await.expect("join").expect("the request in flight");
    assert_eq!(status, 200, "the request in flight completes: {body}");
    println!("the request in flight completed {:?} after SIGTERM", termed.elapsed());
    let mut mesh = std::sync::Arc::into_inner(mesh).expect("one owner");
    let agent = mesh.agents.get_mut("web").expect("web agent");
    let exit = tokio::task::block_in_place(|| agent.wait_exit(Duration::from_secs(10)));
    let took = termed.elapsed();
    println!("the agent exited {took:?} after SIGTERM: {exit:?}");
    assert!(exit.is_some_and(|s| s.success()), "the agent exits 0 after draining: {exit:?}\n{}", agent.log());
    assert!(took >= Duration::from_secs(3), "it waited the drain time (3 s), took {took:?}");
    assert!(agent.log().contains("SIGTERM: draining Envoy's listeners"), "{}", agent.log());
}
