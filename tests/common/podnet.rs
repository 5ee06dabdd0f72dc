//! The pod test bed: a small cluster network on this machine, for tests that send real packets through sidecars
//! that intercept them (and for `scripts/demo --pods`).
//!
//! ```text
//!  netns slp-PID-N-hub      bridge br0 10.88.0.1/24 (Sluice serves xDS here)
//!    ├── veth v10 ─── eth0  netns slp-PID-N-productpage  10.88.0.10   /etc/netns/<ns>/hosts: Service names
//!    ├── veth v11 ─── eth0  netns slp-PID-N-reviews-v1   10.88.0.11   default route via 10.88.0.1
//!    └── ...
//!  each process of a pod: setpriv --pdeathsig KILL ip netns exec <ns> unshare --pid --kill-child=KILL <cmd>
//! ```
//! Nothing is added to the machine's own network namespace: the bridge lives in the hub namespace, so the
//! 10.88.0.0/24 addresses exist only inside the test's namespaces and two test beds never meet. Each process runs
//! in its own PID namespace under `unshare --kill-child`: when the test kills it, or the test process dies in any
//! way, the kernel kills everything the process started (an agent's Envoy included). [`PodNet`]'s drop deletes
//! the namespaces and `/etc/netns` files; a test bed left by a killed test process is swept by the next one.
//!
//! The test harness reaches into a namespace by opening sockets from a thread that joined it ([`connect`]).

use anyhow::Context;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Every namespace a test bed makes is named `slp-<test process pid>-<n>-<pod>`.
const PREFIX: &str = "slp-";
/// The pods' /24 and the hub's address on it (where Sluice listens).
pub const HUB_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
/// The first pod's address; the next pods count up from here.
const FIRST_POD: u8 = 10;
/// The tools the test bed runs (iproute2, iptables, util-linux).
const TOOLS: [&str; 6] = ["ip", "iptables", "iptables-save", "iptables-restore", "setpriv", "unshare"];

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A pod: a network namespace with one address on the bridge.
#[derive(Clone, Debug)]
pub struct Netns {
    /// The pod's name in the test (`productpage`).
    pub name: String,
    /// The namespace's name (`slp-4242-0-productpage`).
    pub ns: String,
    pub ip: Ipv4Addr,
}

/// The network, its pods and the logs of what runs in them; removed on drop.
pub struct PodNet {
    id: String,
    hub: Netns,
    pods: Mutex<Vec<Netns>>,
    hosts: Mutex<Vec<(Ipv4Addr, Vec<String>)>>,
    dir: tempfile::TempDir,
    logs: Mutex<Vec<(String, PathBuf)>>,
}

impl PodNet {
    /// Builds the hub and its bridge. Panics, naming what is missing, when the machine cannot run it (not root,
    /// no `ip`/`iptables`): CI and development machines run as root, so a pod test never skips silently.
    pub fn new() -> PodNet {
        require();
        sweep_stale();
        let id = format!("{PREFIX}{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = tempfile::Builder::new().prefix("sluice-podnet").tempdir().expect("tempdir");
        // Envoy runs as uid 1337 and reads its bootstrap from here.
        set_mode(dir.path(), 0o755);
        let hub = Netns { name: "hub".into(), ns: format!("{id}-hub"), ip: HUB_IP };
        let net = PodNet {
            id,
            hub,
            pods: Mutex::new(Vec::new()),
            hosts: Mutex::new(Vec::new()),
            dir,
            logs: Mutex::new(Vec::new()),
        };
        let h = net.hub.ns.clone();
        ip(&["netns", "add", &h]);
        ip(&["-n", &h, "link", "set", "lo", "up"]);
        ip(&["-n", &h, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &h, "addr", "add", &format!("{HUB_IP}/24"), "dev", "br0"]);
        ip(&["-n", &h, "link", "set", "br0", "up"]);
        net
    }

    /// The hub namespace: where Sluice runs, at [`HUB_IP`].
    pub fn hub(&self) -> &Netns {
        &self.hub
    }

    /// A directory for the test's files (config, bootstraps), readable by every uid; removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Adds a pod: a namespace with `lo`, `eth0` on the bridge at the next address, a default route through the
    /// hub, and `/etc/hosts` with every name added so far by [`PodNet::add_host`].
    pub fn add_pod(&self, name: &str) -> Netns {
        let mut pods = self.pods.lock().unwrap();
        let n = FIRST_POD + u8::try_from(pods.len()).expect("at most 200 pods");
        assert!(n < 250, "at most 240 pods on the /24");
        let pod = Netns { name: name.into(), ns: format!("{}-{name}", self.id), ip: Ipv4Addr::new(10, 88, 0, n) };
        let veth = format!("v{n}");
        self.write_hosts(&pod.ns);
        ip(&["netns", "add", &pod.ns]);
        ip(&["-n", &self.hub.ns, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pod.ns]);
        ip(&["-n", &self.hub.ns, "link", "set", &veth, "master", "br0", "up"]);
        ip(&["-n", &pod.ns, "addr", "add", &format!("{}/24", pod.ip), "dev", "eth0"]);
        ip(&["-n", &pod.ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &pod.ns, "link", "set", "lo", "up"]);
        ip(&["-n", &pod.ns, "route", "add", "default", "via", &HUB_IP.to_string()]);
        pods.push(pod.clone());
        pod
    }

    /// Makes `names` resolve to `ip` in every pod (as cluster DNS would: add `reviews`, `reviews.default`, ...).
    /// Processes started earlier see it too (the file is rewritten in place).
    pub fn add_host(&self, ip: Ipv4Addr, names: &[&str]) {
        self.hosts.lock().unwrap().push((ip, names.iter().map(|n| n.to_string()).collect()));
        for pod in self.pods.lock().unwrap().iter() {
            self.write_hosts(&pod.ns);
        }
    }

    fn write_hosts(&self, ns: &str) {
        let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (ip, names) in self.hosts.lock().unwrap().iter() {
            text.push_str(&format!("{ip} {}\n", names.join(" ")));
        }
        let dir = PathBuf::from("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/<ns>");
        // In place, never by rename: `ip netns exec` bind-mounts this very file over /etc/hosts.
        std::fs::write(dir.join("hosts"), text).expect("write /etc/netns/<ns>/hosts");
        // No name server: a name not in hosts fails at once (glibc then asks 127.0.0.1:53, which refuses),
        // instead of waiting for the machine's resolver, which no pod can reach.
        std::fs::write(dir.join("resolv.conf"), "options timeout:1 attempts:1\n").expect("write resolv.conf");
    }

    /// Starts `program args` in `pod` (its own PID namespace), output to `<label>.log`.
    pub fn spawn(&self, pod: &Netns, label: &str, program: &Path, args: &[&str], env: &[(&str, &str)]) -> PodProc {
        self.spawn_as(pod, label, None, program, args, env)
    }

    /// [`PodNet::spawn`] as `user` (uid, gid; no supplementary groups) when given, as a container's
    /// `runAsUser`/`runAsGroup` would run it; root otherwise.
    pub fn spawn_as(
        &self,
        pod: &Netns,
        label: &str,
        user: Option<(u32, u32)>,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> PodProc {
        let log = self.dir.path().join(format!("{label}.log"));
        let out = std::fs::File::create(&log).expect("create log");
        let setpriv: Vec<String> = match user {
            Some((uid, gid)) => {
                vec![
                    "setpriv".into(),
                    format!("--reuid={uid}"),
                    format!("--regid={gid}"),
                    "--clear-groups".into(),
                    "--".into(),
                ]
            }
            None => Vec::new(),
        };
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "ip", "netns", "exec", &pod.ns])
            .args(["unshare", "--pid", "--fork", "--kill-child=KILL", "--"])
            .args(&setpriv)
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {label} in {}: {e}", pod.ns));
        self.logs.lock().unwrap().push((label.to_string(), log.clone()));
        PodProc { child, label: label.into(), log }
    }

    /// Runs `program args` in `pod` to the end (an init step such as `sluice iptables`).
    pub fn run(&self, pod: &Netns, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &pod.ns, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program} in {}: {e}", pod.ns))
    }

    /// [`PodNet::run`] that must succeed; its stdout.
    pub fn run_ok(&self, pod: &Netns, program: &str, args: &[&str]) -> String {
        let out = self.run(pod, program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} in {} failed ({}): {}",
            pod.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// One HTTP/1.1 request from inside `from` (the harness's own socket, not a pod process's).
    pub async fn http(&self, from: &Netns, req: HttpRequest<'_>) -> anyhow::Result<(u16, String)> {
        http(&from.ns, req).await
    }

    /// The last lines of every log, for a failing test's output.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for (label, path) in self.logs.lock().unwrap().iter() {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            // The apps' one line per request would push everything else out.
            let all: Vec<&str> = text.lines().filter(|l| !l.starts_with("served ")).collect();
            out.push_str(&format!("--- {label} ---\n{}\n", all[all.len().saturating_sub(lines)..].join("\n")));
        }
        out
    }

    fn namespaces(&self) -> Vec<String> {
        let mut out: Vec<String> = self.pods.lock().unwrap().iter().map(|p| p.ns.clone()).collect();
        out.push(self.hub.ns.clone());
        out
    }
}

impl Default for PodNet {
    fn default() -> Self {
        PodNet::new()
    }
}

impl Drop for PodNet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            println!("pod test bed logs (last lines):\n{}", self.log_tails(40));
        }
        for ns in self.namespaces() {
            remove_namespace(&ns);
        }
    }
}

/// A process running in a pod. Dropping it kills it and everything it started.
pub struct PodProc {
    child: Child,
    label: String,
    log: PathBuf,
}

impl PodProc {
    /// The process's pid as the machine sees it (the command itself, inside its PID namespace). Waits for the fork.
    pub fn pid(&self) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(pid) = children(self.child.id()).first() {
                return *pid;
            }
            assert!(Instant::now() < deadline, "{}: no process inside its PID namespace", self.label);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The processes this one started (e.g. the agent's Envoy), by machine pid.
    pub fn children(&self) -> Vec<u32> {
        children(self.pid())
    }

    /// Sends `signal` to the process (not to what it started).
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("pid");
        rustix::process::kill_process(pid, signal).unwrap_or_else(|e| panic!("signal {}: {e}", self.label));
    }

    /// Waits up to `timeout` for the process to end; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn label(&self) -> &str {
        &self.label
    }
}

impl Drop for PodProc {
    fn drop(&mut self) {
        // SIGKILL to unshare: its --kill-child kills the command, and with it its whole PID namespace.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request for [`http`].
#[derive(Clone, Debug)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    pub addr: SocketAddr,
    pub host: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<String>,
}

impl<'a> HttpRequest<'a> {
    pub fn get(addr: SocketAddr, path: &'a str) -> Self {
        HttpRequest { method: "GET", addr, host: "localhost", path, headers: &[], body: None }
    }

    pub fn post(addr: SocketAddr, path: &'a str, body: Option<String>) -> Self {
        HttpRequest { method: "POST", addr, host: "localhost", path, headers: &[], body }
    }
}

/// One HTTP/1.1 exchange over a socket opened inside namespace `ns` (10 s deadline).
pub async fn http(ns: &str, req: HttpRequest<'_>) -> anyhow::Result<(u16, String)> {
    use http_body_util::{BodyExt, Full};
    let exchange = async {
        let stream = connect(ns, req.addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut builder = hyper::Request::builder().method(req.method).uri(req.path).header("host", req.host);
        for (k, v) in req.headers {
            builder = builder.header(*k, *v);
        }
        let has_body = req.body.is_some();
        if has_body {
            builder = builder.header("content-type", "application/json");
        }
        let body = Full::new(bytes::Bytes::from(req.body.clone().unwrap_or_default()));
        let resp = sender.send_request(builder.body(body)?).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .with_context(|| format!("{} {}{} from {ns}: no answer in 10 s", req.method, req.addr, req.path))?
}

/// A TCP connection opened inside namespace `ns`: a fresh thread joins the namespace, connects and ends (a socket
/// keeps the namespace it was made in).
pub async fn connect(ns: &str, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let path = PathBuf::from("/var/run/netns").join(ns);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let opened = (|| -> std::io::Result<std::net::TcpStream> {
            use std::os::fd::AsFd;
            let file = std::fs::File::open(&path)?;
            rustix::thread::move_into_link_name_space(file.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))?;
            let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            stream.set_nonblocking(true)?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })();
        let _ = tx.send(opened);
    });
    let stream = rx.await.map_err(|_| std::io::Error::other("the namespace thread died"))??;
    tokio::net::TcpStream::from_std(stream)
}

/// An Envoy binary that uid 1337 can run: the venv's, or (when the checkout is in a directory that uid cannot
/// enter, such as /root) a copy in a world-readable directory made once per test process.
pub fn envoy_for_proxy_uid() -> PathBuf {
    for_proxy_uid(&real_envoy())
}

/// `exe` if uid 1337 can run it, else a copy in a world-readable directory (made once per test process and
/// executable; the directory is named by this process's id, removed by [`sweep_stale`] later).
pub fn for_proxy_uid(exe: &Path) -> PathBuf {
    static COPIES: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());
    let mut copies = COPIES.lock().unwrap();
    if let Some((_, copy)) = copies.iter().find(|(real, _)| real == exe) {
        return copy.clone();
    }
    let ok = Command::new("setpriv")
        .args(["--reuid=1337", "--regid=1337", "--clear-groups", "--", "test", "-x"])
        .arg(exe)
        .status()
        .is_ok_and(|s| s.success());
    let chosen = if ok {
        exe.to_path_buf()
    } else {
        let dir = std::env::temp_dir().join(format!("sluice-podnet-envoy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the copy directory");
        set_mode(&dir, 0o755);
        let copy = dir.join(exe.file_name().expect("a file name"));
        std::fs::copy(exe, &copy).expect("copy the executable");
        set_mode(&copy, 0o755);
        copy
    };
    copies.push((exe.to_path_buf(), chosen.clone()));
    chosen
}

/// The Envoy executable itself: `.venv/bin/envoy` is a Python launcher that execs `envoy/_bin/envoy`.
fn real_envoy() -> PathBuf {
    let launcher = super::envoy_bin();
    let bins = glob_venv_envoy(&launcher);
    bins.unwrap_or(launcher)
}

fn glob_venv_envoy(launcher: &Path) -> Option<PathBuf> {
    let venv = launcher.parent()?.parent()?;
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    lib.flatten().map(|e| e.path().join("site-packages/envoy/_bin/envoy")).find(|p| p.is_file())
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn require() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the pod test bed needs root (network namespaces, iptables, uid 1337): run the tests as root, as CI does"
    );
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> =
        path.split(':').map(PathBuf::from).chain(["/usr/sbin", "/sbin"].map(PathBuf::from)).collect();
    for tool in TOOLS {
        assert!(
            dirs.iter().any(|d| d.join(tool).is_file()),
            "the pod test bed needs `{tool}` (iproute2, iptables, util-linux): run scripts/setup, which installs them"
        );
    }
}

/// Removes namespaces left by test processes that no longer run (killed before their drop ran).
fn sweep_stale() {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let ns = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = ns.strip_prefix(PREFIX).and_then(|r| r.split('-').next()) else { continue };
        if !Path::new("/proc").join(pid).exists() {
            remove_namespace(ns);
        }
    }
    // Executables copied for uid 1337 by test processes that are gone.
    for entry in std::fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("sluice-podnet-envoy-")
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Kills what still runs in `ns`, deletes it and its `/etc/netns` directory.
fn remove_namespace(ns: &str) {
    let pids = Command::new("ip").args(["netns", "pids", ns]).output();
    for pid in pids.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default().split_whitespace() {
        if let Some(pid) = pid.parse().ok().and_then(rustix::process::Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).output();
    let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(ns));
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// The children of every thread of `pid` (from /proc).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    out
}
