//! timeout, retry and fault_injection: a VirtualService's `timeout`, `retries` and `fault`, as a gRPC client
//! applies them (gRFCs A31, A44, A33), checked on how calls end.

use super::fixture::{self, Backends, outcomes, share};
use crate::common::interop::RpcType::{EmptyCall, UnaryCall};
use std::time::Duration;
use tonic::Code;

const UNARY_PATH: &str = "/grpc.testing.TestService/UnaryCall";

/// A VirtualService for `echo`: UnaryCall's route with `options` (YAML lines at the route's indent), then a
/// default route without.
fn unary_route(options: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: echo}}\nspec:\n  \
         hosts: [echo]\n  http:\n  - match: [{{uri: {{exact: {UNARY_PATH}}}}}]\n{options}    \
         route: [{{destination: {{host: echo}}}}]\n  - route: [{{destination: {{host: echo}}}}]\n"
    )
}

/// timeout (timeout_not_exceeded, timeout_different_route): UnaryCall's route has `timeout: 3s`, the default
/// route none. Calls asking the server to sleep 4 s end DEADLINE_EXCEEDED on UnaryCall and OK on EmptyCall,
/// with the client's own deadline at 20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_is_a_max_stream_duration() {
    let backends = Backends::start(&["a"]);
    let yaml = format!("{}{}", backends.yaml("echo"), unary_route("    timeout: 3s\n"));
    let sluice = fixture::sluice(&yaml).await;
    let client = fixture::client(&sluice, "timeout", 20, &["--rpc", "EmptyCall,UnaryCall"]).await;
    fixture::until(&client, 20, Duration::from_secs(20), "calls answered", |s| s.num_failures == 0).await;
    let quick = outcomes(&client, "UNARY_CALL", 2).await;
    assert_eq!(share(&quick, Code::Ok), 1.0, "timeout_not_exceeded: quick calls are OK: {quick:?}");

    let sleep = [(UnaryCall, "rpc-behavior", "sleep-4"), (EmptyCall, "rpc-behavior", "sleep-4")];
    client.configure(&[EmptyCall, UnaryCall], &sleep, 0).await;
    tokio::time::sleep(Duration::from_secs(5)).await; // the calls from before the change have ended
    let (unary, empty) = tokio::join!(outcomes(&client, "UNARY_CALL", 6), outcomes(&client, "EMPTY_CALL", 6));
    assert!(unary.values().sum::<i64>() >= 60, "enough calls ended: {unary:?}");
    assert!(share(&unary, Code::DeadlineExceeded) >= 0.9, "UnaryCall is cut at 3 s: {unary:?}");
    assert!(share(&empty, Code::Ok) >= 0.9, "EmptyCall's route has no timeout: {empty:?}");
    sluice.shutdown().await;
}

/// retry: the server fails with UNAVAILABLE until the 5th attempt (`succeed-on-retry-attempt-4`: 4 previous
/// attempts). `retries: {attempts: 3, retryOn: unavailable}` (4 attempts) fails every call; `attempts: 4`
/// (5 attempts, gRPC's most) makes every call succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_attempts_decide() {
    let backends = Backends::start(&["a"]);
    let retries = |n: u32| unary_route(&format!("    retries: {{attempts: {n}, retryOn: unavailable}}\n"));
    let sluice = fixture::sluice(&format!("{}{}", backends.yaml("echo"), retries(3))).await;
    let client = fixture::client(&sluice, "retry", 50, &[]).await;
    fixture::until(&client, 20, Duration::from_secs(20), "calls answered", |s| s.num_failures == 0).await;
    let behavior = [(UnaryCall, "rpc-behavior", "succeed-on-retry-attempt-4,error-code-14")];
    client.configure(&[UnaryCall], &behavior, 0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let three = outcomes(&client, "UNARY_CALL", 3).await;
    assert_eq!(share(&three, Code::Unavailable), 1.0, "4 attempts are not enough: {three:?}");

    fixture::apply(&sluice, "retry", &format!("{}{}", backends.yaml("echo"), retries(4))).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let four = outcomes(&client, "UNARY_CALL", 3).await;
    assert_eq!(share(&four, Code::Ok), 1.0, "the 5th attempt succeeds: {four:?}");
    sluice.shutdown().await;
}

/// fault_injection: abort with HTTP 401 at 100% (UNAUTHENTICATED for all), a gRPC status at 50% (half, ± 0.2),
/// and a 2 s delay under a 1 s deadline (DEADLINE_EXCEEDED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_aborts_and_delays() {
    let backends = Backends::start(&["a"]);
    let mesh = |fault: &str| format!("{}{}", backends.yaml("echo"), unary_route(&format!("    fault: {fault}\n")));
    let sluice = fixture::sluice(&mesh("{abort: {httpStatus: 401, percentage: {value: 100}}}")).await;
    let client = fixture::client(&sluice, "fault", 50, &[]).await;
    let first = fixture::until(&client, 20, Duration::from_secs(20), "calls end", |s| s.num_failures == 20).await;
    assert!(first.rpcs_by_peer.is_empty(), "no call reaches a server: {first:?}");
    let all = outcomes(&client, "UNARY_CALL", 2).await;
    assert_eq!(share(&all, Code::Unauthenticated), 1.0, "HTTP 401 is UNAUTHENTICATED: {all:?}");

    fixture::apply(&sluice, "fault", &mesh("{abort: {grpcStatus: PERMISSION_DENIED, percentage: {value: 50}}}")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let half = outcomes(&client, "UNARY_CALL", 4).await;
    let denied = share(&half, Code::PermissionDenied);
    assert!((0.3..=0.7).contains(&denied), "half are aborted: {half:?}");
    assert!((denied + share(&half, Code::Ok) - 1.0).abs() < 1e-9, "the others are OK: {half:?}");

    fixture::apply(&sluice, "fault", &mesh("{delay: {fixedDelay: 2s, percentage: {value: 100}}}")).await;
    client.configure(&[UnaryCall], &[], 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let late = outcomes(&client, "UNARY_CALL", 3).await;
    assert_eq!(share(&late, Code::DeadlineExceeded), 1.0, "a 2 s delay misses a 1 s deadline: {late:?}");
    sluice.shutdown().await;
}
