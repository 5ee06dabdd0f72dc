//! The grayscale release of reviews v3 with Bookinfo in pods: every call goes app ─▶ iptables ─▶ the caller's
//! Envoy (15001) ─▶ the callee pod's iptables ─▶ its Envoy (15006) ─▶ its app, by Service name and cluster IP.

use crate::common::podmesh::{LoadSummary, PodMesh};
use crate::common::podnet::HttpRequest;
use std::net::SocketAddr;
use std::time::Duration;

const URL: &str = "--url=http://productpage:9080/productpage";
const WINDOWS_UA: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0";
const MACOS_UA: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko)";

fn no_failures(what: &str, s: &LoadSummary) {
    assert_eq!(s.failed, 0, "{what}: {} of {} failed: {:?}", s.failed, s.total, s.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_in_pods_splits_routes_by_content_and_finalizes_without_a_failed_request() {
    let _serial = crate::serial().await;
    let mut mesh = PodMesh::bookinfo().await;

    // 1. By ratio: canaryWeight 2000 → 20% of productpage's calls to reviews reach v3; v2 gets none.
    let split = mesh.load("client", &[URL, "--count=2000", "--workers=8"], Duration::from_secs(240)).await;
    no_failures("80/20", &split);
    println!("80/20 through the pods: {:?} in {:.1} s ({} req/s)", split.versions, split.seconds, split.rate);
    assert_eq!(split.ok, 2000);
    let v3 = split.share("v3");
    assert!((0.17..=0.23).contains(&v3), "v3 got {:.1}% of 2000 (want 17-23%): {:?}", v3 * 100.0, split.versions);
    assert_eq!(split.versions.get("v2"), None, "v2 is neither stable nor canary: {:?}", split.versions);
    // Every one of those calls went through the client's outbound listener and reviews' inbound ones.
    let outbound = mesh.envoy_stat("client", "http.outbound_0.0.0.0_9080.downstream_rq_total").await;
    assert!(outbound >= 2000, "the client's Envoy routed {outbound} requests");
    let v3_inbound = mesh.envoy_stat("reviews-v3", "http.inbound_0.0.0.0_9080.downstream_rq_total").await;
    assert!(v3_inbound >= split.versions["v3"], "reviews-v3's inbound listener saw {v3_inbound}");

    // 2. By content: the User-Agent sent to productpage is forwarded to reviews, where the clientOS rule sends
    //    Windows to v3, every time; macOS keeps the split.
    let ua = format!("--header=user-agent: {WINDOWS_UA}");
    let windows = mesh.load("client", &[URL, "--count=300", "--workers=4", &ua], Duration::from_secs(120)).await;
    no_failures("Windows", &windows);
    assert_eq!(windows.versions.get("v3"), Some(&300), "Windows browsers all reach v3: {:?}", windows.versions);
    let ua = format!("--header=user-agent: {MACOS_UA}");
    let macos = mesh.load("client", &[URL, "--count=300", "--workers=4", &ua], Duration::from_secs(120)).await;
    no_failures("macOS", &macos);
    assert!(macos.share("v1") > 0.6, "macOS keeps the split: {:?}", macos.versions);
    forwarded_headers_reach_reviews(&mesh).await;

    // 3. Promote, then finalize, under a continuous paced load through the pods.
    let stop = mesh.net.dir().join("stop-background");
    let stop_flag = format!("--stop-file={}", stop.display());
    let mut background = mesh.spawn_load("client", "background", &[URL, "--rate=120", "--workers=8", &stop_flag]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    mesh.release("reviews-v3", "promote").await;
    mesh.wait_applied("reviews-v3", "Promoted").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    mesh.release("reviews-v3", "finalize").await;
    mesh.wait_applied("reviews-v3", "Finalized").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::fs::write(&stop, "").expect("stop file");
    let status = tokio::task::block_in_place(|| background.wait_exit(Duration::from_secs(30)));
    assert!(status.is_some_and(|s| s.success()), "background load: {status:?}\n{}", background.log());
    let load = LoadSummary::parse(&background.log());
    println!(
        "promote + finalize under load: {} requests in {:.1} s ({} req/s), {:?}, failed {}",
        load.total, load.seconds, load.rate, load.versions, load.failed
    );
    no_failures("promote and finalize under load", &load);
    assert!(load.rate >= 100.0, "the load ran at {} req/s (want ≥ 100): {:?}", load.rate, load.per_second);

    // 4. After finalize, reviews v1's pod still runs and receives nothing.
    let v1_before = mesh.served("reviews-v1", "/reviews/");
    let after = mesh.load("client", &[URL, "--count=500", "--workers=8"], Duration::from_secs(120)).await;
    no_failures("after finalize", &after);
    assert_eq!(after.versions.get("v3"), Some(&500), "v3 takes all traffic: {:?}", after.versions);
    let v1_after = mesh.served("reviews-v1", "/reviews/");
    assert_eq!(v1_after, v1_before, "reviews v1 served {} requests after finalize", v1_after - v1_before);
    assert!(mesh.apps.get_mut("reviews-v1").expect("reviews-v1 app").is_running(), "reviews v1 still runs");
}

/// One request as the client pod's app would send it (a socket in its namespace, redirected by its iptables):
/// reviews sees the headers the browser sent to productpage, and the request id Envoy gave the call.
async fn forwarded_headers_reach_reviews(mesh: &PodMesh) {
    let productpage = SocketAddr::from((mesh.services["productpage"], 9080));
    let headers = [
        ("user-agent", WINDOWS_UA),
        ("end-user", "jason"),
        ("cookie", "session=abc"),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
    ];
    let req =
        HttpRequest { host: "productpage:9080", headers: &headers, ..HttpRequest::get(productpage, "/productpage") };
    let (status, body) = mesh.net.http(mesh.pod("client"), req).await.expect("productpage from the client pod");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("productpage JSON");
    let seen = &v["reviews"]["headers"];
    assert_eq!(v["reviews"]["version"], "v3", "{v}");
    assert_eq!(seen["user-agent"], WINDOWS_UA, "{v}");
    assert_eq!(seen["end-user"], "jason", "{v}");
    assert_eq!(seen["cookie"], "session=abc", "{v}");
    assert_eq!(seen["x-b3-traceid"], "80f198ee56343ba864fe8b2a57d3eff7", "{v}");
    assert!(seen["x-request-id"].as_str().is_some_and(|id| !id.is_empty()), "Envoy's request id is forwarded: {v}");
}

/// The README's `scripts/demo --pods` runs to its end with no failed request (it checks that itself, and that
/// reviews v1 served nothing after finalize), and leaves no namespace behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pods_demo_runs_clean() {
    let _serial = crate::serial().await;
    let out = tokio::process::Command::new(crate::common::repo().join("scripts/demo-pods"))
        .env("SLUICE_BIN", env!("CARGO_BIN_EXE_sluice"))
        .output()
        .await
        .expect("run scripts/demo-pods");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "scripts/demo --pods failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("failed requests across the demo: 0"), "{stdout}");
    let left = std::process::Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(!left.lines().any(|l| l.starts_with("sdemo-")), "the demo left namespaces: {left}");
}
