//! The Kubernetes API emulator (PyPI `kmock`, served by `tests/peers/kmock_server.py`) as a child process on
//! 127.0.0.1, with a kubeconfig pointing at it and a client. Objects survive [`Kmock::restart`] (a state file),
//! as a real API server's objects survive in etcd. kmock assigns no `resourceVersion`: [`obj`] sets one.

use super::SluiceChild;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Kmock {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Kmock {
    /// Starts the emulator on a port the kernel picks.
    pub fn start() -> Kmock {
        Kmock::start_omitting(&[])
    }

    /// Starts the emulator without serving these resources (`group/version/plural`), as a cluster without
    /// their CRDs.
    pub fn start_omitting(resources: &[&str]) -> Kmock {
        let dir = tempfile::tempdir().expect("tempdir");
        let extra: Vec<&str> = resources.iter().flat_map(|r| ["--omit", r]).collect();
        let (child, port) = spawn(&dir, 0, &extra);
        let kmock = Kmock { child, port, dir };
        std::fs::write(kmock.kubeconfig(), kubeconfig(port)).expect("writing kubeconfig");
        kmock
    }

    /// Kills the emulator (by PID) and starts it again on the same port with the objects it had.
    pub fn restart(&mut self) {
        self.stop();
        self.respawn(&[]);
    }

    /// Starts the stopped emulator again, answering the first watch of each resource with `410 Gone` (its
    /// history is gone, as after an API server restart with a compacted etcd): clients must relist.
    pub fn restart_expiring_watches(&mut self) {
        self.stop();
        self.respawn(&["--expire-watches"]);
    }

    fn respawn(&mut self, extra: &[&str]) {
        let (child, port) = spawn(&self.dir, self.port, extra);
        assert_eq!(port, self.port);
        self.child = child;
    }

    /// Removes an object from the stopped emulator's stored state, so no watch ever reports its deletion
    /// (`resource` as `group/version/plural`, `v1/plural` for the core group).
    pub fn drop_object(&self, resource: &str, name: &str) {
        let path = self.dir.path().join("objects.json");
        let text = std::fs::read_to_string(&path).expect("kmock state file");
        let mut objects: Vec<Value> = serde_json::from_str(&text).expect("kmock state is JSON");
        let before = objects.len();
        objects.retain(|o| !(o["resource"] == resource && o["name"] == name));
        assert_eq!(objects.len() + 1, before, "{resource} {name} was not stored");
        std::fs::write(&path, serde_json::to_string(&objects).unwrap()).expect("writing kmock state");
    }

    /// Kills the emulator (by PID); [`Kmock::restart`] brings it back.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// A client for the emulator, configured from the kubeconfig as `sluice serve --kube` would be.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig()).expect("kubeconfig parses");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig loads");
        kube::Client::try_from(config).expect("client")
    }
}

impl Drop for Kmock {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(dir: &tempfile::TempDir, port: u16, extra: &[&str]) -> (Child, u16) {
    let state = dir.path().join("objects.json");
    let mut child = Command::new(super::venv_python())
        .arg(super::peer("kmock_server.py"))
        .args(["--port", &port.to_string(), "--state"])
        .arg(&state)
        .args(extra)
        // Closed when the test process dies: the emulator then stops by itself.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::OpenOptions::new().create(true).append(true).open(dir.path().join("kmock.log")).expect("log file"),
        ))
        .spawn()
        .expect("spawning kmock_server.py");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("reading kmock stdout");
    match line.strip_prefix("PORT ").and_then(|p| p.trim().parse().ok()) {
        Some(port) => (child, port),
        None => {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.path().join("kmock.log")).unwrap_or_default();
            panic!("kmock_server.py did not print `PORT n` (got {line:?}):\n{log}")
        }
    }
}

fn kubeconfig(port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kmock\n  cluster: {{server: \"http://127.0.0.1:{port}\"}}\n\
         users:\n- name: test\n  user: {{}}\ncontexts:\n- name: kmock\n  context: {{cluster: kmock, user: test, namespace: default}}\n\
         current-context: kmock\n"
    )
}

static VERSION: AtomicU64 = AtomicU64::new(1);

/// A fresh `resourceVersion` (kmock assigns none).
pub fn resource_version() -> String {
    VERSION.fetch_add(1, Ordering::Relaxed).to_string()
}

/// An object as `kubectl apply` would send it, with a fresh `resourceVersion`.
pub fn obj(api_version: &str, kind: &str, name: &str, labels: Value, rest: Value) -> Value {
    let mut o = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": "default", "labels": labels, "resourceVersion": resource_version()},
    });
    for (k, v) in rest.as_object().expect("an object").clone() {
        o[k] = v;
    }
    o
}

/// The namespaced (`default`) API of any kind, by `apiVersion` (`group/version`, or `v1` for the core group).
pub fn api(client: &kube::Client, api_version: &str, kind: &str) -> Api<DynamicObject> {
    api_in(client, api_version, kind, Some("default"))
}

/// [`api`] in namespace `ns`, or for a cluster-scoped kind (`None`).
pub fn api_in(client: &kube::Client, api_version: &str, kind: &str, ns: Option<&str>) -> Api<DynamicObject> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// Creates `o` (from [`obj`]) in the emulator, in its `metadata.namespace` (cluster-scoped without one).
pub async fn create(client: &kube::Client, o: Value) {
    let ns = o["metadata"]["namespace"].as_str();
    let a = api_in(client, o["apiVersion"].as_str().unwrap(), o["kind"].as_str().unwrap(), ns);
    let name = o["metadata"]["name"].as_str().unwrap().to_string();
    a.create(&PostParams::default(), &serde_json::from_value(o).unwrap())
        .await
        .unwrap_or_else(|e| panic!("creating {name}: {e}"));
}

/// A JSON merge patch, with a fresh resourceVersion as an API server would assign.
pub async fn patch(client: &kube::Client, api_version: &str, kind: &str, name: &str, mut p: Value) {
    p["metadata"]["resourceVersion"] = json!(resource_version());
    let a = api(client, api_version, kind);
    a.patch(name, &PatchParams::default(), &Patch::Merge(p)).await.unwrap_or_else(|e| panic!("patching {name}: {e}"));
}

/// The Service `reviews` (port 9080) and the ReleasePolicy `reviews` with `spec` at generation 1, created in
/// `default`; returns the policies' API.
pub async fn reviews_release(client: &kube::Client, spec: Value) -> Api<DynamicObject> {
    let svc = obj("v1", "Service", "reviews", json!({}), json!({"spec": {"ports": [{"name": "http", "port": 9080}]}}));
    create(client, svc).await;
    let mut policy = obj("sluice.dev/v1alpha1", "ReleasePolicy", "reviews", json!({}), json!({ "spec": spec }));
    policy["metadata"]["generation"] = json!(1);
    create(client, policy).await;
    api(client, "sluice.dev/v1alpha1", "ReleasePolicy")
}

impl Kmock {
    /// A `sluice serve --kube` child against this emulator, named `id` in the Lease, its log in `dir/ID.log`.
    pub async fn replica(&self, id: &str, lease_secs: u64, dir: &std::path::Path) -> SluiceChild {
        self.replica_with(id, lease_secs, dir, &[]).await
    }

    /// [`Kmock::replica`] with `extra` flags.
    pub async fn replica_with(&self, id: &str, lease_secs: u64, dir: &std::path::Path, extra: &[&str]) -> SluiceChild {
        let [xds, admin] = super::free_addrs();
        let mut args: Vec<std::ffi::OsString> =
            ["--kube", "--identity", id, "--lease-duration-secs", &lease_secs.to_string()].map(Into::into).to_vec();
        args.extend(extra.iter().map(Into::into));
        let env = [("KUBECONFIG", self.kubeconfig().into_os_string())];
        let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        SluiceChild::start_with(&args, &env, xds, admin, dir.join(format!("{id}.log"))).await
    }
}
