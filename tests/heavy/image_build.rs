//! The container image: `scripts/build-image` builds it with buildah from Debian packages (no registry), and its
//! root filesystem runs every role of a pod under `chroot`, with the image's own `PATH` and default user.
//!
//! ```text
//!   scripts/build-image sluice:test --bin target/debug/sluice   (buildah, vfs, storage in a temp dir)
//!     └─▶ buildah inspect (entrypoint, cmd, user, ports, labels)
//!     └─▶ buildah from + mount ─▶ rootfs ─▶ chroot: sluice --version, envoy --version,
//!            sluice iptables --dry-run (= the golden rules), sluice iptables applied in a throwaway network
//!            namespace (the image's iptables-save shows them), sluice serve (/readyz 200 on 127.0.0.1, SIGTERM)
//! ```
//! `podman run` cannot run containers on these machines (crun's setrlimit is refused), so the image is checked
//! file system first; the runtime's part (namespaces, cgroups, the mounts a runtime adds) is not. The chroot needs
//! no /proc: nothing is mounted. Everything made here (buildah containers, images, the storage directory, the
//! processes) goes when the guards drop, also when the test fails; storage left by a killed run is swept first.

use crate::common::{free_addrs, http, repo};
use serde_json::Value;
use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "sluice:test";
/// Temp directories of this test's buildah storage: `sluice-image-test-PID-…`.
const PREFIX: &str = "sluice-image-test-";
/// The user the image runs as by default (`sluice serve`, the control plane).
const NONROOT: &str = "65532:65532";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_holds_every_role_and_runs_it_from_its_own_root_filesystem() {
    let _serial = crate::serial().await;
    require();
    let started = Instant::now();
    let storage = Storage::new();

    let built = Instant::now();
    let out = run(Command::new(repo().join("scripts/build-image"))
        .args([IMAGE, "--bin", env!("CARGO_BIN_EXE_sluice")])
        .env("BUILDAH_ROOT", storage.root())
        .env("BUILDAH_RUNROOT", storage.runroot()));
    let printed = String::from_utf8_lossy(&out.stdout);
    println!("{printed}scripts/build-image took {:.1} s", built.elapsed().as_secs_f64());
    assert!(printed.lines().last().is_some_and(|l| l.contains(&format!("localhost/{IMAGE}"))), "{printed}");

    let config = image_config(&storage);
    let env = image_env(&config);
    let container = Container::new(&storage);
    let rootfs = container.rootfs.clone();
    files_are_in_place(&rootfs);

    let version = chroot(&rootfs, &env, Some(NONROOT), &["sluice", "--version"]);
    assert_eq!(version.trim(), format!("sluice {}", env!("CARGO_PKG_VERSION")));
    let envoy = chroot(&rootfs, &env, Some(NONROOT), &["envoy", "--version"]);
    assert!(envoy.contains("/1.40."), "envoy --version in the image: {envoy}");
    assert_eq!(
        config["Labels"]["dev.sluice.envoy.version"].as_str().map(|v| v.starts_with("1.40.")),
        Some(true),
        "{config}"
    );

    let dry_run = chroot(&rootfs, &env, None, &["sluice", "iptables", "--dry-run"]);
    let golden = std::fs::read_to_string(repo().join("tests/golden/iptables/defaults.txt")).expect("golden rules");
    assert_eq!(dry_run, golden, "sluice iptables --dry-run in the image");
    rules_apply_with_the_images_iptables(&rootfs, &env, &golden);

    serve_answers_ready(&rootfs, &env, &storage).await;
    println!("image test took {:.1} s in all", started.elapsed().as_secs_f64());
}

/// Root and buildah, or a panic naming what is missing: this test never skips.
fn require() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the image test needs root (buildah's storage, chroot, a network namespace): run the tests as root, as CI does"
    );
    match Command::new("buildah").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!("buildah --version failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => panic!("buildah is missing ({e}): run scripts/setup as root, which installs Debian's buildah"),
    }
}

/// Runs `cmd` to its end; its output, or a panic with its stderr when it fails.
fn run(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A private buildah storage (vfs) in a temp directory; dropped: every container and image in it, then the
/// directory.
struct Storage {
    dir: tempfile::TempDir,
}

impl Storage {
    fn new() -> Self {
        sweep_stale();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-", std::process::id()))
            .tempdir()
            .expect("temp dir for buildah's storage");
        Storage { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn runroot(&self) -> PathBuf {
        self.dir.path().join("runroot")
    }

    fn buildah<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&self, args: I) -> Command {
        let mut cmd = Command::new("buildah");
        cmd.args(["--storage-driver", "vfs", "--root"]).arg(self.root()).arg("--runroot").arg(self.runroot());
        cmd.args(args);
        cmd
    }

    /// `buildah ARGS` to its end; its trimmed stdout.
    fn run(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&run(&mut self.buildah(args)).stdout).trim().to_string()
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        for args in [&["rm", "--all"][..], &["rmi", "--all", "--force"]] {
            match self.buildah(args).stdin(Stdio::null()).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!("buildah {args:?}: {}", String::from_utf8_lossy(&out.stderr)),
                Err(e) => eprintln!("buildah {args:?}: {e}"),
            }
        }
        // The TempDir removes the directory after this.
    }
}

/// Storage directories of earlier runs whose process is gone (killed before its guards ran).
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|rest| rest.split('-').next()) else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The image's OCI config (`buildah inspect`), checked against what scripts/build-image promises.
fn image_config(storage: &Storage) -> Value {
    let inspect: Value = serde_json::from_str(&storage.run(&["inspect", "--type", "image", IMAGE])).expect("JSON");
    let config = inspect["OCIv1"]["config"].clone();
    assert_eq!(config["Entrypoint"], serde_json::json!(["/usr/local/bin/sluice"]), "{config}");
    assert_eq!(config["Cmd"], serde_json::json!(["serve", "--kube"]), "{config}");
    assert_eq!(config["User"], NONROOT, "{config}");
    let ports: Vec<&str> =
        config["ExposedPorts"].as_object().expect("ExposedPorts").keys().map(|k| k.as_str()).collect();
    assert_eq!(ports, ["15010", "15012", "15014", "15017"], "{config}");
    assert_eq!(config["Labels"]["org.opencontainers.image.version"], env!("CARGO_PKG_VERSION"), "{config}");
    assert_eq!(inspect["OCIv1"]["rootfs"]["diff_ids"].as_array().map(Vec::len), Some(1), "one layer, no base");
    config
}

/// The image's environment (`Env`), which every process below gets instead of the test's.
fn image_env(config: &Value) -> Vec<(String, String)> {
    let env = config["Env"].as_array().expect("Env");
    let env: Vec<(String, String)> =
        env.iter().filter_map(|e| e.as_str()?.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert!(env.iter().any(|(k, v)| k == "PATH" && v.contains("/usr/local/bin")), "{env:?}");
    env
}

/// A working container from the image and its root filesystem (vfs: a plain directory, no mount); dropped:
/// unmounted and removed.
struct Container<'a> {
    storage: &'a Storage,
    id: String,
    rootfs: PathBuf,
}

impl<'a> Container<'a> {
    fn new(storage: &'a Storage) -> Self {
        let id = storage.run(&["from", "--pull-never", IMAGE]);
        let mut container = Container { storage, id, rootfs: PathBuf::new() };
        container.rootfs = PathBuf::from(storage.run(&["mount", &container.id]));
        container
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        for args in [["umount", &self.id], ["rm", &self.id]] {
            if let Err(e) = self.storage.buildah(args).stdin(Stdio::null()).output() {
                eprintln!("buildah {args:?}: {e}");
            }
        }
    }
}

/// What the roles need besides the two binaries: users, a sticky /tmp, iptables' nf_tables tools, no docs.
fn files_are_in_place(rootfs: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).expect("/etc/passwd");
    for user in ["root:x:0:0:", "sluice-proxy:x:1337:1337:", "nonroot:x:65532:65532:"] {
        assert!(passwd.lines().any(|l| l.starts_with(user)), "no {user} in /etc/passwd:\n{passwd}");
    }
    let group = std::fs::read_to_string(rootfs.join("etc/group")).expect("/etc/group");
    assert!(group.contains("sluice-proxy:x:1337:") && group.contains("nonroot:x:65532:"), "{group}");
    let tmp = std::fs::metadata(rootfs.join("tmp")).expect("/tmp");
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777, "/tmp mode");
    for tool in ["iptables", "iptables-save", "iptables-restore"] {
        let target = std::fs::read_link(rootfs.join("usr/sbin").join(tool)).expect(tool);
        assert!(target.to_string_lossy().contains("-nft"), "{tool} -> {} (the nf_tables backend)", target.display());
    }
    assert!(!rootfs.join("usr/share/doc").exists(), "docs in the image");
}

/// `chroot ROOTFS ARGS` (as `user`, else root) with the image's environment; its stdout.
fn chroot(rootfs: &Path, env: &[(String, String)], user: Option<&str>, args: &[&str]) -> String {
    let mut cmd = chroot_command(rootfs, env, user);
    cmd.args(args);
    String::from_utf8(run(&mut cmd).stdout).expect("UTF-8")
}

fn chroot_command(rootfs: &Path, env: &[(String, String)], user: Option<&str>) -> Command {
    let mut cmd = Command::new("/usr/sbin/chroot");
    if let Some(user) = user {
        cmd.arg(format!("--userspec={user}"));
    }
    cmd.arg(rootfs).env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// The init container's job for real: `sluice iptables` (no dry run) through the image's iptables-save and
/// iptables-restore, in a network namespace that lives only as long as the shell that made it; the image's
/// iptables-save then shows every rule. A runtime gives a container /dev/null (Sluice's child processes get it as
/// stdin): the container's copy of the file system gets one here.
fn rules_apply_with_the_images_iptables(rootfs: &Path, env: &[(String, String)], golden: &str) {
    use std::os::unix::fs::PermissionsExt;
    let null = rootfs.join("dev/null");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &null,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .expect("mknod /dev/null in the container's rootfs");
    std::fs::set_permissions(&null, std::fs::Permissions::from_mode(0o666)).expect("chmod /dev/null");
    let script = r#"chroot "$0" sluice iptables && exec chroot "$0" iptables-save -t nat"#;
    let out = run(Command::new("unshare")
        .args(["--net", "--", "sh", "-c", script])
        .arg(rootfs)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v))));
    let saved = String::from_utf8_lossy(&out.stdout);
    for rule in golden.lines().filter(|l| l.starts_with("-A ")) {
        assert!(saved.lines().any(|l| l == rule), "{rule} missing from the image's iptables-save:\n{saved}");
    }
}

/// `sluice serve` (the embedded config) as the image's default user, on free ports of 127.0.0.1: `/readyz` answers
/// 200, then SIGTERM by PID ends it cleanly.
async fn serve_answers_ready(rootfs: &Path, env: &[(String, String)], storage: &Storage) {
    let [xds, admin] = free_addrs();
    let log = storage.dir.path().join("serve.log");
    let out = File::create(&log).expect("serve log");
    let child = chroot_command(rootfs, env, Some(NONROOT))
        .args(["/usr/local/bin/sluice", "serve", "--xds-addr", &xds.to_string(), "--admin-addr", &admin.to_string()])
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup log"))
        .stderr(out)
        .spawn()
        .expect("spawn chroot … sluice serve");
    let mut serve = Process { child, log };
    let client = http::client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((200, _)) = http::get_with(&client, admin, "localhost", "/readyz", &[]).await {
            break;
        }
        if let Some(status) = serve.child.try_wait().expect("try_wait") {
            panic!("sluice serve in the image exited: {status}\n{}", serve.log_tail());
        }
        assert!(Instant::now() < deadline, "sluice serve in the image not ready in 20 s\n{}", serve.log_tail());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = serve.terminate(Duration::from_secs(10));
    assert!(status.success(), "sluice serve after SIGTERM: {status}\n{}", serve.log_tail());
}

/// A child process, SIGKILLed by PID when dropped (a failed test leaves nothing running).
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    /// SIGTERM by PID, then its exit status (within `timeout`).
    fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM sluice serve");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sluice serve still runs {timeout:?} after SIGTERM\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!("--- sluice serve log ---\n{}", lines[lines.len().saturating_sub(30)..].join("\n"))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
