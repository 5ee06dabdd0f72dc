use super::*;
use crate::model::ObjectKey;
use crate::release::replicas::{Peers, ReplicaReport};
use crate::release::{Shared, StoredRecords};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, watch};

/// A controller following `leader`, whose report advertises `url`.
fn follower(leader: Option<&str>, url: &str) -> ReleaseController {
    let store = crate::store::Store::new();
    let (_snapshots_tx, snapshots) = watch::channel(None);
    let traffic = crate::telemetry::TrafficStats::new();
    let c = ReleaseController::new(store, crate::xds::Registry::new(), snapshots, None, traffic).unwrap();
    let report = |id: &str| ReplicaReport { identity: id.into(), api_url: Some(url.into()), ..Default::default() };
    let peers: Peers = leader.iter().map(|l| (l.to_string(), report(l))).collect();
    let shared = Shared {
        source: "kube".into(),
        leading: watch::channel(false).1,
        holder: watch::channel(leader.map(str::to_string)).1,
        stored: watch::channel(StoredRecords::new()).1,
        identity: "replica-b".into(),
        peers: watch::channel(peers).1,
        lease: Duration::from_millis(500),
    };
    c.share(shared);
    c
}

fn request(forwarded_by: Option<&str>) -> Request {
    Request {
        method: Method::POST,
        path: "/api/v1/namespaces/default/releases/reviews/weight".into(),
        body: Bytes::from_static(br#"{"canaryWeight": 3000}"#),
        authorization: Some("Bearer t0ken".into()),
        forwarded_by: forwarded_by.map(str::to_string),
    }
}

fn not_leader() -> Result<(), ReleaseError> {
    Err(ReleaseError::NotLeader { release: ObjectKey::new("default", "reviews"), leader: Some("replica-a".into()) })
}

/// A leader that answers each connection with the next of `answers` (`None`: reads the request, then hangs up),
/// keeping the requests it read.
async fn leader(answers: Vec<Option<(u16, &'static str)>>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        for answer in answers {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            while !String::from_utf8_lossy(&buf[..n]).contains("3000}") {
                n += tcp.read(&mut buf[n..]).await.unwrap();
            }
            kept.lock().await.push(String::from_utf8_lossy(&buf[..n]).to_lowercase());
            if let Some((status, body)) = answer {
                let head =
                    format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                tcp.write_all(format!("{head}{body}").as_bytes()).await.unwrap();
            }
        }
    });
    (url, seen)
}

#[tokio::test]
async fn a_change_is_sent_again_after_not_leader_and_relayed_with_the_leaders_answer() {
    let (url, seen) = leader(vec![Some((409, r#"{"reason":"NotLeader"}"#)), Some((200, r#"{"ok":1}"#))]).await;
    let c = follower(Some("replica-a"), &url);
    let calls = AtomicUsize::new(0);
    let answer = run(&c, &request(None), || async {
        calls.fetch_add(1, Ordering::Relaxed);
        not_leader()
    })
    .await
    .unwrap();
    let r = match answer {
        Answer::There(r) => r,
        Answer::Here(here) => panic!("answered here: {here:?}"),
    };
    assert_eq!((r.status, &r.body[..], r.leader.as_str()), (StatusCode::OK, &br#"{"ok":1}"#[..], "replica-a"));
    assert_eq!(calls.load(Ordering::Relaxed), 2, "tried here again before each forward");
    let seen = seen.lock().await;
    assert_eq!(seen.len(), 2);
    assert!(seen[1].starts_with("post /api/v1/namespaces/default/releases/reviews/weight http/1.1"), "{}", seen[1]);
    assert!(seen[1].contains("authorization: bearer t0ken") && seen[1].contains("x-sluice-forwarded-by: replica-b"));
    assert!(!seen[1].contains("origin:") && !seen[1].contains("sec-fetch"), "{}", seen[1]);
}

#[tokio::test]
async fn an_answer_lost_after_sending_is_not_sent_again() {
    let (url, seen) = leader(vec![None, Some((200, "{}"))]).await;
    let c = follower(Some("replica-a"), &url);
    let e = run(&c, &request(None), || async { not_leader() }).await.unwrap_err();
    assert!(matches!(e, ForwardError::Lost { .. }), "{e}");
    assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
    assert!(e.to_string().contains("may or may not have applied"), "{e}");
    assert_eq!(seen.lock().await.len(), 1, "sent once");
}

#[tokio::test]
async fn no_reachable_leader_is_a_503_after_the_bound_and_a_forwarded_request_is_not_forwarded_again() {
    // Bound, never listening: connections are refused while it lives, and no other process can take the port.
    let refusing = tokio::net::TcpSocket::new_v4().unwrap();
    refusing.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}", refusing.local_addr().unwrap());
    let started = std::time::Instant::now();
    let c = follower(Some("replica-a"), &url);
    let e = run(&c, &request(None), || async { not_leader() }).await.unwrap_err();
    assert!(started.elapsed() >= Duration::from_secs(2), "bounded by 2 × lease, at least 2 s");
    assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(e.to_string().contains("not reached"), "{e}");
    let e = run(&follower(None, &url), &request(None), || async { not_leader() }).await.unwrap_err();
    assert!(e.to_string().contains("no replica holds the Lease"), "{e}");

    let answer = run(&c, &request(Some("replica-c")), || async { not_leader() }).await.unwrap();
    assert!(matches!(answer, Answer::Here(Err(ReleaseError::NotLeader { .. }))), "{answer:?}");
}
