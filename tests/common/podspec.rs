//! Runs a Pod object (as the API server stores it: e.g. after the injection webhook's patch) in the pod test bed
//! ([`super::podmesh`]), doing what a kubelet would with what the spec says, on this machine:
//!
//! ```text
//!  initContainers, in order ─▶ run to exit 0 (restartPolicy Always: a native sidecar, started and kept running)
//!  containers ───────────────▶ started; readinessProbe httpGet waited for (from the hub, as a kubelet)
//!  each: command/args (the image's entrypoint when no command), env (value, fieldRef resolved), runAsUser/Group,
//!        volumeMounts (emptyDir, downwardAPI and projected token volumes made as directories of the test)
//! ```
//! Images cannot run here: [`Images`] says which host program stands in for each image, and which paths inside
//! the image mean which host paths (`/usr/local/bin/envoy` is the test's Envoy). Paths under a volume's
//! `mountPath` in args and env become the volume's host directory (no mount namespace). What is not done:
//! capabilities (root has all; runAsUser 1337 has none), resources, liveness probes, restarts.

use super::podmesh::PodMesh;
use super::podnet::{HttpRequest, PodProc};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What stands in for container images.
pub struct Images {
    /// Image name ─▶ the entrypoint (program and leading args) that runs for it.
    pub entrypoints: BTreeMap<String, Vec<String>>,
    /// Paths inside every image ─▶ host paths.
    pub paths: BTreeMap<String, PathBuf>,
    /// Service account ─▶ the token a projected `serviceAccountToken` volume holds (as the kubelet writes it).
    pub tokens: BTreeMap<String, String>,
}

/// The pod's identity as the API server and kubelet fill it in.
pub struct PodMeta<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
}

/// Runs `pod` (a Pod object) as test-bed pod `netns_pod` of `mesh`: init containers to completion, then every
/// container; waits for the readiness probes. The processes join `mesh.apps` labelled `POD/CONTAINER`.
pub async fn run(mesh: &mut PodMesh, netns_pod: &str, pod: &Value, meta: PodMeta<'_>, images: &Images) {
    let spec = &pod["spec"];
    let ip = mesh.pod(netns_pod).ip;
    let volumes = make_volumes(mesh, netns_pod, pod, images);
    let fields = |path: &str| -> Option<String> {
        match path {
            "metadata.name" => Some(meta.name.into()),
            "metadata.namespace" => Some(meta.namespace.into()),
            "status.podIP" => Some(ip.to_string()),
            "spec.serviceAccountName" => Some(spec["serviceAccountName"].as_str().unwrap_or("default").into()),
            "spec.nodeName" => Some("test-node".into()),
            _ => None,
        }
    };
    let mut probes = Vec::new();
    for (list, init) in [("initContainers", true), ("containers", false)] {
        for c in spec[list].as_array().into_iter().flatten() {
            let name = c["name"].as_str().expect("a container name");
            let label = format!("{netns_pod}/{name}");
            let mounts = mounts_of(c, &volumes);
            let (program, args) = command_of(c, images, &mounts);
            let env = env_of(c, &fields, images, &mounts);
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let user = user_of(pod, c);
            if let Some((uid, gid)) = user {
                for dir in mounts.values() {
                    chown(dir, uid, gid);
                }
            }
            let program = if user.is_some_and(|(uid, _)| uid != 0) {
                super::podnet::for_proxy_uid(Path::new(&program))
            } else {
                PathBuf::from(&program)
            };
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let netns = mesh.pod(netns_pod).clone();
            let native_sidecar = init && c["restartPolicy"] == "Always";
            let user = user.filter(|(uid, _)| *uid != 0);
            if init && !native_sidecar {
                let mut proc = mesh.net.spawn_as(&netns, &label.replace('/', "-"), user, &program, &args, &env);
                let status = tokio::task::block_in_place(|| proc.wait_exit(Duration::from_secs(30)));
                assert!(status.is_some_and(|s| s.success()), "init container {label}: {status:?}\n{}", proc.log());
                continue;
            }
            let proc: PodProc = mesh.net.spawn_as(&netns, &label.replace('/', "-"), user, &program, &args, &env);
            mesh.apps.insert(label.clone(), proc);
            if let Some(probe) = c["readinessProbe"]["httpGet"].as_object() {
                let port = probe["port"].as_u64().expect("a numeric probe port") as u16;
                let path = probe["path"].as_str().unwrap_or("/").to_string();
                if native_sidecar {
                    // A native sidecar must be ready before the next container starts.
                    wait_probe(mesh, netns_pod, &label, port, &path).await;
                } else {
                    probes.push((label, port, path));
                }
            }
        }
    }
    for (label, port, path) in probes {
        wait_probe(mesh, netns_pod, &label, port, &path).await;
    }
}

async fn wait_probe(mesh: &PodMesh, netns_pod: &str, label: &str, port: u16, path: &str) {
    let addr = SocketAddr::from((mesh.pod(netns_pod).ip, port));
    let hub = mesh.net.hub().clone();
    mesh.wait(Duration::from_secs(30), &format!("{label} readiness {path}:{port}"), || async {
        matches!(mesh.net.http(&hub, HttpRequest::get(addr, path)).await, Ok((200, _)))
    })
    .await;
}

/// Volume name ─▶ its host directory (emptyDir: empty; downwardAPI: the items' files; projected: the service
/// account's token from [`Images::tokens`]).
fn make_volumes(mesh: &PodMesh, netns_pod: &str, pod: &Value, images: &Images) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().expect("a volume name");
        let dir = mesh.net.dir().join(format!("volumes-{netns_pod}")).join(name);
        std::fs::create_dir_all(&dir).expect("a volume directory");
        for item in v["downwardAPI"]["items"].as_array().into_iter().flatten() {
            let field = item["fieldRef"]["fieldPath"].as_str().unwrap_or_default();
            let map = match field {
                "metadata.labels" => &pod["metadata"]["labels"],
                "metadata.annotations" => &pod["metadata"]["annotations"],
                other => panic!("downwardAPI field {other} is not made by this test bed"),
            };
            std::fs::write(dir.join(item["path"].as_str().expect("an item path")), downward(map)).expect("write");
        }
        for source in v["projected"]["sources"].as_array().into_iter().flatten() {
            let Some(token) = source.get("serviceAccountToken") else {
                panic!("projected source {source} is not made by this test bed")
            };
            let account = pod["spec"]["serviceAccountName"].as_str().unwrap_or("default");
            let value = images.tokens.get(account).unwrap_or_else(|| panic!("no token for service account {account}"));
            std::fs::write(dir.join(token["path"].as_str().expect("a token path")), value).expect("write the token");
        }
        out.insert(name.to_string(), dir);
    }
    out
}

/// A map as the downward API writes it: `key="value"` per line, sorted, with `\n`, `"` and `\` escaped.
fn downward(map: &Value) -> String {
    let mut lines: Vec<String> = map
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let v = v.as_str().unwrap_or_default().replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    lines.sort();
    lines.join("\n") + "\n"
}

/// mountPath ─▶ host directory, for the container's volumeMounts.
fn mounts_of(c: &Value, volumes: &BTreeMap<String, PathBuf>) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().expect("a volume name");
        let dir = volumes.get(name).unwrap_or_else(|| panic!("volumeMount {name} names no volume"));
        out.insert(m["mountPath"].as_str().expect("a mountPath").to_string(), dir.clone());
    }
    out
}

/// A path or value inside the container, as the host sees it.
fn host_value(value: &str, images: &Images, mounts: &BTreeMap<String, PathBuf>) -> String {
    if let Some(host) = images.paths.get(value) {
        return host.to_string_lossy().into_owned();
    }
    for (mount, dir) in mounts {
        if let Some(rest) = value.strip_prefix(mount.as_str())
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return format!("{}{rest}", dir.display());
        }
    }
    value.to_string()
}

fn command_of(c: &Value, images: &Images, mounts: &BTreeMap<String, PathBuf>) -> (String, Vec<String>) {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().into_iter().flatten().map(|s| host_value(s.as_str().expect("a string"), images, mounts)).collect()
    };
    let image = c["image"].as_str().expect("an image");
    let mut line = if c["command"].is_array() {
        strings(&c["command"])
    } else {
        images.entrypoints.get(image).unwrap_or_else(|| panic!("no stand-in for image {image}")).clone()
    };
    line.extend(strings(&c["args"]));
    let program = line.remove(0);
    (program, line)
}

fn env_of(
    c: &Value,
    fields: &dyn Fn(&str) -> Option<String>,
    images: &Images,
    mounts: &BTreeMap<String, PathBuf>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("an env name").to_string();
        let value = if let Some(v) = e["value"].as_str() {
            host_value(v, images, mounts)
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            fields(path).unwrap_or_else(|| panic!("env {name}: fieldRef {path} is not resolved by this test bed"))
        } else {
            panic!("env {name}: only value and fieldRef are resolved by this test bed: {e}")
        };
        out.push((name, value));
    }
    out
}

/// The container's runAsUser/runAsGroup, else the pod's.
fn user_of(pod: &Value, c: &Value) -> Option<(u32, u32)> {
    let pick = |key: &str| {
        c["securityContext"][key].as_u64().or_else(|| pod["spec"]["securityContext"][key].as_u64()).map(|v| v as u32)
    };
    let uid = pick("runAsUser")?;
    Some((uid, pick("runAsGroup").unwrap_or(uid)))
}

fn chown(dir: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).unwrap_or_else(|e| panic!("chown {}: {e}", dir.display()));
}
