//! The interop peer pair without xDS (the client calls one server directly): the stats a case reads are right
//! before any case relies on them.

use crate::common::interop::{self, Client, RpcType, code_count, in_flight, peer_count};
use crate::common::{Peer, until};
use std::time::Duration;
use tonic::Code;

async fn direct_client(server: &Peer, args: &[&str]) -> Client {
    let target = format!("127.0.0.1:{}", server.port());
    Client::start(&[&["--server", target.as_str()], args].concat()).await
}

/// From now on the client sends only UnaryCall RPCs, each with the header `rpc-behavior: BEHAVIOR`.
async fn unary_with_behavior(client: &Client, behavior: &str, timeout_sec: i32) {
    client.configure(&[RpcType::UnaryCall], &[(RpcType::UnaryCall, "rpc-behavior", behavior)], timeout_sec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_every_rpc_on_the_server_that_answered() {
    let server = interop::server("selftest-a");
    let client = direct_client(&server, &[]).await;
    client.configure(&[RpcType::EmptyCall, RpcType::UnaryCall], &[], 0).await;

    let stats = client.stats(100, 5).await;
    assert_eq!(stats.num_failures, 0, "{stats:?}");
    assert_eq!(peer_count(&stats, "selftest-a"), 100, "{stats:?}");
    for method in ["EmptyCall", "UnaryCall"] {
        let by_peer = &stats.rpcs_by_method.get(method).unwrap_or_else(|| panic!("{method}: {stats:?}")).rpcs_by_peer;
        assert_eq!(by_peer.keys().collect::<Vec<_>>(), ["selftest-a"], "{method}: {stats:?}");
        assert!((49..=51).contains(&by_peer["selftest-a"]), "one of each type a tick: {stats:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_code_behavior_fails_only_the_rpcs_that_carry_it() {
    let server = interop::server("selftest-b");
    let args = ["--rpc", "EmptyCall,UnaryCall", "--metadata", "UnaryCall:rpc-behavior:error-code-14"];
    let client = direct_client(&server, &args).await;

    let acc = until("20 of each RPC type completed", Duration::from_secs(5), || async {
        let acc = client.accumulated().await;
        let enough =
            code_count(&acc, "UNARY_CALL", Code::Unavailable) >= 20 && code_count(&acc, "EMPTY_CALL", Code::Ok) >= 20;
        enough.then_some(acc)
    })
    .await;
    assert_eq!(code_count(&acc, "UNARY_CALL", Code::Ok), 0, "{acc:?}");
    assert_eq!(acc.num_rpcs_failed_by_method.get("EMPTY_CALL"), None, "{acc:?}");
    assert!(acc.num_rpcs_failed_by_method["UNARY_CALL"] >= 20, "{acc:?}");
    assert!(acc.num_rpcs_succeeded_by_method["EMPTY_CALL"] >= 20, "{acc:?}");

    // A failed RPC counts as a failure, never for its peer.
    let stats = client.stats(40, 5).await;
    assert!(!stats.rpcs_by_method.contains_key("UnaryCall"), "{stats:?}");
    assert_eq!(stats.num_failures + peer_count(&stats, "selftest-b"), 40, "{stats:?}");
    assert!((19..=21).contains(&stats.num_failures), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleep_longer_than_the_configured_deadline_exceeds_it() {
    let server = interop::server("selftest-c");
    let client = direct_client(&server, &[]).await;
    unary_with_behavior(&client, "sleep-2", 1).await;

    let acc = until("a DEADLINE_EXCEEDED", Duration::from_secs(5), || async {
        let acc = client.accumulated().await;
        (code_count(&acc, "UNARY_CALL", Code::DeadlineExceeded) > 0).then_some(acc)
    })
    .await;
    let expected = [Code::Ok as i32, Code::DeadlineExceeded as i32];
    let codes = &acc.stats_per_method["UNARY_CALL"].result;
    assert!(codes.keys().all(|c| expected.contains(c)), "only the RPCs before Configure succeed: {acc:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_open_rpcs_stay_in_flight() {
    let server = interop::server("selftest-d");
    let client = direct_client(&server, &["--metadata", "UnaryCall:rpc-behavior:keep-open"]).await;

    let acc = until("more than 20 RPCs in flight", Duration::from_secs(5), || async {
        let acc = client.accumulated().await;
        (in_flight(&acc, "UNARY_CALL") > 20).then_some(acc)
    })
    .await;
    assert_eq!(code_count(&acc, "UNARY_CALL", Code::Ok), 0, "{acc:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_behavior_for_another_hostname_is_skipped() {
    let server = interop::server("selftest-e");
    let client = direct_client(&server, &[]).await;

    unary_with_behavior(&client, "hostname=other error-code-14", 0).await;
    let stats = client.stats(50, 5).await;
    assert_eq!((peer_count(&stats, "selftest-e"), stats.num_failures), (50, 0), "{stats:?}");

    // The same entry naming this server applies.
    unary_with_behavior(&client, "hostname=selftest-e error-code-14", 0).await;
    let stats = client.stats(50, 5).await;
    assert_eq!((peer_count(&stats, "selftest-e"), stats.num_failures), (0, 50), "{stats:?}");
}
