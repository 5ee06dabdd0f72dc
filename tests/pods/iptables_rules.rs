//! `sluice iptables`: the dry run against golden files, and in a real network namespace: applying twice leaves the
//! same table, `--cleanup` restores the table found, and a bad flag is refused by name.
//!
//! `UPDATE_GOLDEN=1 cargo test --test pods iptables_rules` rewrites the golden files.

use crate::common::podnet::PodNet;
use crate::common::repo;
use std::process::Command;

fn sluice() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

/// The dry run for each flag set equals `tests/golden/iptables/<name>.txt`.
#[test]
fn dry_run_prints_the_documented_rules() {
    let cases: [(&str, &[&str]); 2] = [
        ("defaults", &[]),
        (
            "flags",
            &[
                "-p",
                "15001",
                "-z",
                "15006",
                "-u",
                "1337",
                "-g",
                "1337",
                "-m",
                "REDIRECT",
                "-b",
                "9080,9443",
                "-d",
                "15020,15021,15090,22",
                "-i",
                "10.96.0.0/12",
                "-x",
                "10.96.0.10/32",
                "-o",
                "5432",
                "-q",
                "3306",
            ],
        ),
    ];
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for (name, flags) in cases {
        let out = Command::new(sluice()).args(["iptables", "--dry-run"]).args(flags).output().expect("run");
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let got = String::from_utf8(out.stdout).expect("utf-8");
        let path = repo().join(format!("tests/golden/iptables/{name}.txt"));
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(got, want, "{name}: the dry run differs from {} (UPDATE_GOLDEN=1 to accept)", path.display());
    }
}

#[test]
fn a_bad_flag_is_refused_by_name() {
    for (flags, wanted) in [
        (&["-b", "9080,http"][..], "--inbound-ports: `http` is not a port"),
        (&["-x", "10.0.0.0/40"][..], "--service-exclude-cidr: `10.0.0.0/40` is not an IPv4 CIDR"),
        (&["-m", "TPROXY"][..], "TPROXY"),
    ] {
        let out = Command::new(sluice()).args(["iptables", "--dry-run"]).args(flags).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(wanted), "{flags:?}: {err}");
    }
}

/// The nat and filter tables as `iptables-save` prints them, without its dated comment lines.
/// The pod's tables as `iptables-save` prints them, without comments and with the chains' packet counters zeroed
/// (a stray packet between two reads is not a change of rules).
fn tables(net: &PodNet, pod: &crate::common::podnet::Netns) -> String {
    let saved = net.run_ok(pod, "iptables-save", &[]);
    let zeroed = |l: &str| match (l.starts_with(':'), l.rfind(" [")) {
        (true, Some(at)) if l.ends_with(']') => format!("{} [0:0]", &l[..at]),
        _ => l.to_string(),
    };
    saved.lines().filter(|l| !l.starts_with('#')).map(|l| format!("{}\n", zeroed(l))).collect()
}

#[test]
fn applying_twice_leaves_the_same_table_and_cleanup_restores_the_one_found() {
    let net = PodNet::new();
    let pod = net.add_pod("rules");
    // Rules the pod had before: kept as they are through apply, re-apply and cleanup.
    net.run_ok(&pod, "iptables", &["-t", "nat", "-A", "OUTPUT", "-d", "10.9.9.9/32", "-j", "RETURN"]);
    net.run_ok(&pod, "iptables", &["-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport", "9", "-j", "DROP"]);
    let found = tables(&net, &pod);

    net.run_ok(&pod, sluice(), &["iptables"]);
    let once = tables(&net, &pod);
    net.run_ok(&pod, sluice(), &["iptables"]);
    let twice = tables(&net, &pod);
    assert_eq!(once, twice, "applying twice leaves the same table");
    assert!(once.contains("-A SLUICE_REDIRECT -p tcp -j REDIRECT --to-ports 15001"), "{once}");
    assert!(once.contains("-A SLUICE_OUTPUT -m owner --uid-owner 1337 -j RETURN"), "{once}");
    assert!(once.contains("-A OUTPUT -d 10.9.9.9/32 -j RETURN"), "the pod's own rule stays: {once}");
    assert!(once.contains("-A INPUT -p tcp -m tcp --dport 9 -j DROP"), "the filter table stays: {once}");
    // Every line of the dry run is in the table, spelled as iptables-save spells it.
    let dry = Command::new(sluice()).args(["iptables", "--dry-run"]).output().expect("dry run");
    for line in String::from_utf8_lossy(&dry.stdout).lines().filter(|l| l.starts_with("-A")) {
        assert!(once.lines().any(|l| l == line), "dry-run line {line:?} is not in the table:\n{once}");
    }

    // Other flags replace the rules; they do not add to them.
    net.run_ok(&pod, sluice(), &["iptables", "-b", "9080", "-u", "4242"]);
    let changed = tables(&net, &pod);
    assert!(changed.contains("--uid-owner 4242") && !changed.contains("--uid-owner 1337"), "{changed}");

    net.run_ok(&pod, sluice(), &["iptables", "--cleanup"]);
    assert_eq!(tables(&net, &pod), found, "--cleanup restores the table found");
    net.run_ok(&pod, sluice(), &["iptables", "--cleanup"]);
    assert_eq!(tables(&net, &pod), found, "a second cleanup changes nothing");
}
