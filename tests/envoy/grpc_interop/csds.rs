//! csds: `sluice proxy-status` (CSDS on the xDS port) shows the gRPC client's listener, routes, clusters and
//! endpoints as ACKed, with the resources themselves in `-o json`.

use super::fixture::{self, Backends, TARGET};
use std::time::Duration;

async fn sluice_cli(args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice")).args(args).output().await.expect("run");
    assert!(out.status.success(), "sluice {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csds_shows_what_the_grpc_client_acked() {
    let backends = Backends::start(&["a", "b"]);
    let sluice = fixture::sluice(&backends.yaml("echo")).await;
    let client = fixture::client(&sluice, "csds-client", 20, &[]).await;
    fixture::until(&client, 20, Duration::from_secs(20), "calls answered", |s| s.num_failures == 0).await;
    sluice.wait_acked("csds-client", Duration::from_secs(10)).await.expect("ACKed");

    let xds = format!("http://{}", sluice.xds_addr());
    let table = sluice_cli(&["proxy-status", "--xds", &xds, "csds-"]).await;
    let rows: Vec<Vec<&str>> =
        table.lines().map(|l| l.split("  ").filter(|c| !c.is_empty()).map(str::trim).collect()).collect();
    assert_eq!(rows.len(), 2, "a header and the client:\n{table}");
    assert_eq!(rows[1][0], "csds-client");
    assert!(rows[1][1..5].iter().all(|c| c.starts_with("SYNCED ")), "CDS, EDS, LDS, RDS synced:\n{table}");
    assert_eq!(rows[1][5], "-", "gRPC takes no VHDS:\n{table}");

    let json = sluice_cli(&["proxy-status", "--xds", &xds, "-o", "json", "csds-"]).await;
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let configs = v["config"][0]["genericXdsConfigs"].as_array().expect("configs").clone();
    let acked = |type_suffix: &str, name_has: &str| {
        configs.iter().any(|c| {
            c["typeUrl"].as_str().is_some_and(|t| t.ends_with(type_suffix))
                && c["name"].as_str().is_some_and(|n| n.contains(name_has))
                && c["configStatus"] == "SYNCED"
        })
    };
    assert!(acked("Listener", TARGET), "the API listener {TARGET}: {json}");
    assert!(acked("RouteConfiguration", "9090"), "port 9090's routes: {json}");
    assert!(acked("Cluster", "outbound|9090||echo.default.svc.cluster.local"), "the cluster: {json}");
    assert!(acked("ClusterLoadAssignment", "outbound|9090||echo"), "its endpoints: {json}");
    sluice.shutdown().await;
}
