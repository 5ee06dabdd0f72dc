//! Release status against a proxy played by a tonic client: a weight change shows as applied only when the
//! connected proxies have ACKed it; state survives a restart on the same state dir; file-owned policies refuse
//! API edits.

use crate::client;

use client::{RDS, Sotw};
use sluice::model::*;
use sluice::release::{ReleaseError, Verb};
use sluice::server::{Options, Sluice};
use std::time::Duration;

fn model() -> Model {
    let mut m = Model::default();
    let svc = m.insert_service(Service::http("default", "reviews", 9080));
    for (v, port) in [("v1", 19082), ("v3", 19084)] {
        m.push_endpoint(
            &svc,
            Endpoint::ready(&format!("reviews-{v}"), "127.0.0.1", 9080, port).with_label("version", v),
        );
    }
    m
}

fn spec(weight: u32) -> ReleasePolicySpec {
    ReleasePolicySpec::split("reviews", "v1", "v3", weight)
}

async fn acked(s: &Sluice, key: &ObjectKey) -> (usize, usize) {
    let p = s.releases().get(key).unwrap().status.proxies;
    (p.acked, p.total)
}

#[tokio::test]
async fn a_weight_change_is_applied_in_status_only_after_the_proxies_ack_it() {
    let s = Sluice::start(Options::local()).await.unwrap();
    s.store().set_model(model());
    let key = ObjectKey::new("default", "reviews-v3");
    s.releases().apply(&key, spec(0)).unwrap();
    s.wait_published(Duration::from_secs(5)).await.unwrap();
    let mut c = Sotw::connect(s.xds_addr(), "p1").await;
    c.sync_like_envoy().await;
    s.wait_acked("p1", Duration::from_secs(5)).await.unwrap();
    assert_eq!(acked(&s, &key).await, (1, 1));

    let view = s.releases().set_weight(&key, 2000).unwrap();
    assert_eq!(view.status.weights["v3"], 2000);
    s.wait_published(Duration::from_secs(5)).await.unwrap();
    // The route change is on its way but not ACKed: status says so.
    let rds = c.recv().await;
    assert_eq!(rds.type_url, RDS);
    assert_eq!(acked(&s, &key).await, (0, 1));
    let applied = s.releases().get(&key).unwrap().status.conditions.into_iter().find(|c| c.kind == "TrafficApplied");
    assert_eq!(applied.map(|c| (c.status, c.reason)), Some(("False".into(), "WaitingForProxies".into())));
    c.ack(&rds, &["sluice-listen"]).await;
    s.wait_acked("p1", Duration::from_secs(5)).await.unwrap();
    assert_eq!(acked(&s, &key).await, (1, 1));
    s.shutdown().await;
}

#[tokio::test]
async fn release_state_survives_a_restart_on_the_same_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let key = ObjectKey::new("default", "reviews-v3");
    let options = || Options { state_dir: Some(dir.path().to_path_buf()), ..Options::local() };
    {
        let s = Sluice::start(options()).await.unwrap();
        s.store().set_model(model());
        s.releases().apply(&key, spec(1000)).unwrap();
        s.releases().set_weight(&key, 3500).unwrap();
        s.releases().act(&key, Verb::Pause).unwrap();
        drop(s); // no graceful shutdown: what was acknowledged is already on disk
    }
    let s = Sluice::start(options()).await.unwrap();
    s.store().set_model(model());
    let view = s.releases().get(&key).unwrap();
    assert_eq!(view.status.phase, Phase::Paused);
    assert_eq!(view.status.weights["v3"], 3500);
    assert_eq!(view.status.source, "api");
    s.releases().act(&key, Verb::Promote).unwrap();
    s.releases().act(&key, Verb::Finalize).unwrap();
    assert_eq!(s.releases().get(&key).unwrap().status.phase, Phase::Finalized);
    s.shutdown().await;
}

#[tokio::test]
async fn policies_from_files_take_verbs_but_not_api_edits() {
    let s = Sluice::start(Options::local()).await.unwrap();
    let mut m = model();
    let key = ObjectKey::new("default", "reviews-v3");
    let policy = ReleasePolicy {
        name: "reviews-v3".into(),
        namespace: "default".into(),
        spec: spec(2000),
        state: Default::default(),
    };
    m.policies.insert(key.clone(), policy);
    s.store().set_part(sluice::source::SOURCE, m);
    s.wait_published(Duration::from_secs(5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let view = s.releases().get(&key).unwrap();
    assert_eq!((view.status.source.as_str(), view.status.weights["v3"]), ("file", 2000));
    assert!(matches!(s.releases().apply(&key, spec(5000)), Err(ReleaseError::Conflict(_))));
    assert!(matches!(s.releases().delete(&key), Err(ReleaseError::Conflict(_))));
    let other = ObjectKey::new("default", "second");
    let err = s.releases().apply(&other, spec(1000)).unwrap_err().to_string();
    assert!(err.contains("already has release policy default/reviews-v3"), "{err}");
    assert_eq!(s.releases().set_weight(&key, 5000).unwrap().status.weights["v3"], 5000);
    let err = s.releases().act(&key, Verb::Finalize).unwrap_err().to_string();
    assert_eq!(err, "cannot finalize a Progressing release: promote or abort it first");
    let err =
        s.releases().apply(&ObjectKey::new("default", "x"), ReleasePolicySpec { service: "nope".into(), ..spec(0) });
    assert_eq!(err.unwrap_err().to_string(), "spec.service: no Service default/nope");
    s.shutdown().await;
}
