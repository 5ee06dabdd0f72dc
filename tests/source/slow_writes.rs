//! Files written badly, read by the file source of a running Sluice:
//!
//! - a 1 MB deeply nested YAML file is refused (before the YAML parser runs) within 100 ms, and the watcher goes
//!   on: a valid edit made meanwhile applies within a second;
//! - a writer that pauses 2 s mid-file (inside the ReleasePolicy document, which then parses as a valid policy
//!   without its traffic section) never reaches the store: the policy served stays the complete file's, and the
//!   operator's paused 30% release keeps its phase and weight.

use sluice::model::{ObjectKey, Phase};
use sluice::server::{Options, Sluice};
use sluice::source::{self, FileSourceStatus, SOURCE, WatchOptions};
use sluice::store::Store;
use std::io::Write;
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_millis(50);

const SERVICES: &str = "apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: sluice.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v1, labels: {app: reviews, version: v1}}
spec: {address: 10.0.0.1}
---
apiVersion: sluice.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v3, labels: {app: reviews, version: v3}}
spec: {address: 10.0.0.3}
";

/// The policy's document, cut where a slow writer pauses: the head alone is a valid policy at weight 0.
const POLICY_HEAD: &str = "---
apiVersion: sluice.dev/v1alpha1
kind: ReleasePolicy
metadata: {name: reviews-v3}
spec:
  service: reviews
  stable: v1
  canary: v3
";
const POLICY_TAIL: &str = "  traffic: {canaryWeight: 10000}\n";

async fn watched(dir: &std::path::Path, status: FileSourceStatus) -> (Store, tokio::sync::oneshot::Sender<()>) {
    let store = Store::new();
    store.register_source(SOURCE);
    store.set_part(SOURCE, source::load_paths(&[dir.to_path_buf()]).expect("the first load"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = WatchOptions { status, ..WatchOptions::new(INTERVAL) };
    tokio::spawn(source::watch_with(vec![dir.to_path_buf()], store.clone(), options, async {
        let _ = stopped.await;
    }));
    (store, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_file_is_refused_fast_and_the_watcher_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), SERVICES).unwrap();
    let deep = dir.path().join("deep.yaml");
    let text = format!("apiVersion: v1\nkind: Service\nmetadata: {}", "{a: ".repeat(250_000));
    assert!(text.len() >= 1_000_000);
    std::fs::write(&deep, &text).unwrap();
    let started = Instant::now();
    let refused = source::load_paths(std::slice::from_ref(&deep)).unwrap_err().to_string();
    let took = started.elapsed();
    println!("1 MB nested file refused in {took:?}: {refused}");
    assert!(took < Duration::from_millis(100), "{took:?}");
    assert!(refused.contains("deep.yaml:3") && refused.contains("nested more than 64 levels"), "{refused}");

    std::fs::remove_file(&deep).unwrap();
    let status = FileSourceStatus::default();
    let (store, stop) = watched(dir.path(), status.clone()).await;
    std::fs::write(&deep, &text).unwrap();
    let started = Instant::now();
    while status.last_error().is_none() {
        assert!(started.elapsed() < Duration::from_secs(1), "the refusal is reported within a second");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Meanwhile a valid edit: the nested file goes, a workload comes; it applies within a second.
    std::fs::remove_file(&deep).unwrap();
    let edit = Instant::now();
    let more = "---\napiVersion: sluice.dev/v1alpha1\nkind: Workload\nmetadata: {name: reviews-v3b, labels: {app: \
                reviews, version: v3}}\nspec: {address: 10.0.0.4}\n";
    std::fs::write(dir.path().join("a.yaml"), format!("{SERVICES}{more}")).unwrap();
    let reviews = ObjectKey::new("default", "reviews");
    while store.model().endpoints_of(&reviews).len() != 3 {
        assert!(edit.elapsed() < Duration::from_secs(1), "the valid edit applies within a second");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("valid edit applied after {:?}", edit.elapsed());
    stop.send(()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_pausing_mid_file_neither_moves_traffic_nor_resets_the_release() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.yaml");
    let complete = format!("{SERVICES}{POLICY_HEAD}{POLICY_TAIL}");
    std::fs::write(&file, &complete).unwrap();
    let (store, stop) = watched(dir.path(), FileSourceStatus::default()).await;
    let sluice = Sluice::start_with(Options::local(), store.clone(), serde_json::Value::Null).await.expect("start");
    let key = ObjectKey::new("default", "reviews-v3");
    sluice.wait_published(Duration::from_secs(5)).await.expect("published");
    // The release controller picks the policy up from the store on its own task: wait for it.
    let seen = Instant::now();
    while sluice.releases().get(&key).is_err() {
        assert!(seen.elapsed() < Duration::from_secs(5), "the release controller sees the policy within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The operator runs the release: 30%, paused.
    sluice.releases().set_weight(&key, 3000).expect("weight");
    sluice.releases().act(&key, sluice::release::Verb::Pause).expect("pause");
    let spec = store.model().policies[&key].spec.clone();

    // A slow writer: truncate, write up to the middle of the policy, pause 2 s, write the rest.
    let writer = std::thread::spawn({
        let (file, complete) = (file.clone(), complete.clone());
        move || {
            let cut = complete.len() - POLICY_TAIL.len();
            let mut f = std::fs::File::create(&file).unwrap();
            f.write_all(&complete.as_bytes()[..cut]).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_secs(2));
            f.write_all(&complete.as_bytes()[cut..]).unwrap();
        }
    });
    let started = Instant::now();
    let mut samples = 0;
    while started.elapsed() < Duration::from_secs(5) {
        let model = store.model();
        let served = model.policies.get(&key).map(|p| &p.spec);
        assert_eq!(served, Some(&spec), "the served policy is the complete file's at {:?}", started.elapsed());
        samples += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    writer.join().unwrap();
    let view = sluice.releases().get(&key).expect("the release");
    println!("{samples} samples over 5 s; release {:?} at {:?}", view.status.phase, view.status.weights);
    assert_eq!(view.status.phase, Phase::Paused, "the release keeps its phase");
    assert_eq!(view.status.weights.get("v3"), Some(&3000), "and its weight");
    stop.send(()).unwrap();
    sluice.shutdown().await;
}
