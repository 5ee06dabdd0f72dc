//! Hot reload: `watch` polls a directory; valid edits reach the store within a second, broken ones leave the
//! store alone and show their `file:line` in the status until a valid edit follows.

use sluice::model::{Model, ObjectKey};
use sluice::source::{self, FileSourceStatus, SOURCE};
use sluice::store::Store;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::timeout;

const INTERVAL: Duration = Duration::from_millis(50);
const WITHIN: Duration = Duration::from_secs(1);

const SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: sluice.dev/v1alpha1
kind: Workload
metadata: {name: w1, labels: {app: web}}
spec: {address: 10.0.0.1}
";

fn workload(name: &str, address: &str) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: {name}\n  labels: {{app: web}}\n\
         spec:\n  address: {address}\n"
    )
}

fn web_endpoints(model: &Model) -> Vec<String> {
    model.endpoints_of(&ObjectKey::new("default", "web")).iter().map(|e| e.name.clone()).collect()
}

/// A store loaded from `path` as the file source would be at startup.
fn loaded_store(path: &Path) -> Store {
    let store = Store::new();
    store.register_source(SOURCE);
    store.set_part(SOURCE, source::load_paths(&[path.to_path_buf()]).unwrap());
    assert!(store.is_ready());
    store
}

/// Waits for the next published model.
async fn next_model(rx: &mut watch::Receiver<Arc<Model>>) -> Arc<Model> {
    timeout(WITHIN, rx.changed()).await.expect("no reload within 1 s").unwrap();
    rx.borrow_and_update().clone()
}

async fn wait_for_error(status: &FileSourceStatus) -> String {
    timeout(WITHIN, async {
        loop {
            if let Some(e) = status.last_error() {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("no reload error within 1 s")
}

#[tokio::test]
async fn edits_reload_broken_edits_keep_the_last_model() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), SERVICE).unwrap();
    let store = loaded_store(dir.path());
    let mut rx = store.subscribe();
    rx.borrow_and_update();
    let status = FileSourceStatus::default();
    let (stop, stopped) = oneshot::channel::<()>();
    let paths = vec![dir.path().to_path_buf()];
    // A short removal grace: this test removes a file and expects its workload gone within a second.
    let options =
        source::WatchOptions { interval: INTERVAL, grace: Duration::from_millis(200), status: status.clone() };
    let task = tokio::spawn(source::watch_with(paths, store.clone(), options, async {
        let _ = stopped.await;
    }));

    // A new file in the directory adds a workload.
    let b = dir.path().join("b.yaml");
    std::fs::write(&b, workload("w2", "10.0.0.2")).unwrap();
    assert_eq!(web_endpoints(&*next_model(&mut rx).await), ["w1", "w2"]);

    // A broken edit: the store keeps its model, the status says where.
    let before = store.model();
    std::fs::write(&b, workload("w2", "10.0.0.999")).unwrap();
    let error = wait_for_error(&status).await;
    assert_eq!(
        error,
        format!("{}:7: Workload default/w2: spec.address: `10.0.0.999` is not an IP address", b.display())
    );
    assert_eq!(store.model(), before);
    assert!(!rx.has_changed().unwrap());

    // The next valid edit applies and clears the error.
    std::fs::write(&b, workload("w3", "10.0.0.3")).unwrap();
    assert_eq!(web_endpoints(&*next_model(&mut rx).await), ["w1", "w3"]);
    assert_eq!(status.last_error(), None);

    // Removing the file removes its workload.
    std::fs::remove_file(&b).unwrap();
    assert_eq!(web_endpoints(&*next_model(&mut rx).await), ["w1"]);

    stop.send(()).unwrap();
    timeout(WITHIN, task).await.expect("watch did not stop").unwrap();
}

/// One watched file holding [`SERVICE`], its store, and the watch task.
struct Watched {
    _dir: tempfile::TempDir,
    file: std::path::PathBuf,
    store: Store,
    rx: watch::Receiver<Arc<Model>>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Watched {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mesh.yaml");
        std::fs::write(&file, SERVICE).unwrap();
        let store = loaded_store(&file);
        let mut rx = store.subscribe();
        rx.borrow_and_update();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(source::watch(vec![file.clone()], store.clone(), INTERVAL, async {
            let _ = stopped.await;
        }));
        // The first poll reloads the unchanged file: nobody is woken.
        tokio::time::sleep(INTERVAL * 3).await;
        assert!(!rx.has_changed().unwrap());
        Self { _dir: dir, file, store, rx, stop, task }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        timeout(WITHIN, self.task).await.expect("watch did not stop").unwrap();
    }
}

#[tokio::test]
async fn a_watched_file_reloads_on_content_change() {
    let mut w = Watched::start().await;
    std::fs::write(&w.file, format!("{SERVICE}---\n{}", workload("w2", "10.0.0.2"))).unwrap();
    assert_eq!(web_endpoints(&*next_model(&mut w.rx).await), ["w1", "w2"]);
    w.stop().await;
}

/// A writer throttled between truncate and write leaves an empty file for a while (seconds, on a busy disk): the
/// watch never applies a file with no content, so that cannot remove the file's services. A comment clears it.
#[tokio::test]
async fn an_emptied_file_never_applies_a_comment_clears_it() {
    let mut w = Watched::start().await;
    std::fs::write(&w.file, "").unwrap();
    tokio::time::sleep(INTERVAL * 20).await;
    assert!(!w.rx.has_changed().unwrap(), "an empty file applied");
    assert_eq!(web_endpoints(&w.store.model()), ["w1"]);

    // The write completes: nothing changed, nobody is woken.
    std::fs::write(&w.file, SERVICE).unwrap();
    tokio::time::sleep(INTERVAL * 4).await;
    assert!(!w.rx.has_changed().unwrap());

    // Cleared on purpose, with a comment: applies once the file stayed so for the removal grace.
    let cleared = std::time::Instant::now();
    std::fs::write(&w.file, "# nothing here for now\n").unwrap();
    timeout(source::REMOVAL_GRACE + WITHIN, w.rx.changed()).await.expect("the removal applies").unwrap();
    assert!(w.rx.borrow_and_update().services.is_empty());
    assert!(cleared.elapsed() >= source::REMOVAL_GRACE, "not before the grace: {:?}", cleared.elapsed());
    w.stop().await;
}
