//! The file source end to end: bookinfo.yaml, every error path with its exact `file:line`, multi-file loads and
//! `sluice validate`. Hot reload is in `tests/source/watch.rs`.

use sluice::model::{ClientOs, ObjectKey, Target, TargetPort};
use sluice::source::{self, LoadErrors};
use std::path::PathBuf;
use std::process::ExitCode;

fn bookinfo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/bookinfo.yaml")
}

/// The errors of one text, rendered as users see them.
fn errors(text: &str) -> Vec<String> {
    match source::parse_str(text, "t.yaml") {
        Ok(m) => panic!("expected errors, got {m:?}"),
        Err(LoadErrors(errs)) => errs.iter().map(ToString::to_string).collect(),
    }
}

const SERVICE_A: &str = "\
apiVersion: v1
kind: Service
metadata: {name: a}
spec:
  selector: {app: a}
  ports: [{name: http, port: 80}]
";

/// SERVICE_A (lines 1-6), then `---` (line 7) and `rest` from line 8.
fn after_a(rest: &str) -> String {
    format!("{SERVICE_A}---\n{rest}")
}

fn policy(traffic: &str) -> String {
    after_a(&format!(
        "apiVersion: sluice.dev/v1alpha1
kind: ReleasePolicy
metadata:
  name: r
spec:
  service: a
  stable: v1
  canary: v3
  traffic:
{traffic}"
    ))
}

#[test]
fn bookinfo_loads() {
    let model = source::load_paths(&[bookinfo()]).unwrap();
    let names: Vec<_> = model.services.keys().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["details", "productpage", "ratings", "reviews"]);
    let reviews = ObjectKey::new("default", "reviews");
    let eps = model.endpoints_of(&reviews);
    let versions: Vec<_> = eps.iter().map(|e| e.label("version").unwrap()).collect();
    assert_eq!(versions, ["v1", "v2", "v3"]);
    let ports: Vec<_> = eps.iter().map(|e| e.ports[&9080]).collect();
    assert_eq!(ports, [19082, 19083, 19084]);
    assert!(eps.iter().all(|e| e.address == "127.0.0.1" && e.ready && !e.terminating));
    assert_eq!(eps[2].name, "reviews-v3");
    let policy = model.policy_for(&reviews).unwrap();
    assert_eq!(policy.spec.traffic.canary_weight, 2000);
    assert_eq!((policy.spec.stable.as_str(), policy.spec.canary.as_str()), ("v1", "v3"));
    assert_eq!(policy.spec.traffic.rules[0].matches.headers[0].exact.as_deref(), Some("jason"));
    let windows = &policy.spec.traffic.rules[1];
    assert_eq!(
        (windows.name.as_str(), windows.to, windows.matches.client_os.as_slice()),
        ("windows-users", Target::Canary, [ClientOs::Windows].as_slice())
    );
    let productpage = model.endpoints_of(&ObjectKey::new("default", "productpage"));
    assert_eq!(productpage[0].ports[&9080], 19080);
}

#[test]
fn a_syntax_error_in_the_second_document_names_its_file_line() {
    let text = after_a("apiVersion: v1\nkind: Service\nmetadata:\n  name: b: c\n");
    assert_eq!(errors(&text), ["t.yaml:11: mapping values are not allowed in this context"]);
}

#[test]
fn a_type_error_names_its_file_line_object_and_field() {
    let text = policy("    canaryWeight: lots\n");
    assert_eq!(
        errors(&text),
        [r#"t.yaml:17: ReleasePolicy default/r: spec.traffic.canaryWeight: invalid type: string "lots", expected u32"#]
    );
}

#[test]
fn a_validation_error_points_at_the_key() {
    let text = policy("    mirror: {percent: 5}\n    canaryWeight: 20000\n");
    assert_eq!(
        errors(&text),
        ["t.yaml:18: ReleasePolicy default/r: spec.traffic.canaryWeight: must be between 0 and 10000"]
    );
}

#[test]
fn analysis_errors_point_at_the_key() {
    // policy() ends inside `traffic:`; the analysis block follows at line 18.
    let text = policy("    canaryWeight: 0\n  analysis:\n    interval: 30s\n    successRate: {min: 99}\n");
    assert_eq!(
        errors(&text),
        [
            "t.yaml:20: ReleasePolicy default/r: spec.analysis.successRate.min: must be a share between 0 and 1, e.g. 0.99"
        ]
    );
    let text = policy("    canaryWeight: 0\n  analysis: {interval: 30s, latencyP99: {max: 5}}\n");
    let errs = errors(&text);
    assert!(
        errs[0].starts_with("t.yaml:18: ReleasePolicy default/r: spec.analysis: unknown field `latencyP99`"),
        "{errs:?}"
    );
}

#[test]
fn deploy_and_a_loser_action_are_refused_in_file_mode() {
    // policy() ends inside `traffic:`; `deploy` / `finalize` follow at line 18.
    let text = policy("    canaryWeight: 0\n  deploy:\n    images: {a: 'a:v3'}\n");
    assert_eq!(
        errors(&text),
        ["t.yaml:18: ReleasePolicy default/r: spec.deploy: a config file has no Deployments; only a ReleasePolicy \
             in the cluster (sluice serve --kube) can deploy the canary"]
    );
    let text = policy("    canaryWeight: 0\n  finalize:\n    scaleDownLoser: true\n");
    let errs = errors(&text);
    assert!(
        errs[0].starts_with("t.yaml:19: ReleasePolicy default/r: spec.finalize.scaleDownLoser: a config file"),
        "{errs:?}"
    );
    // Keep is what file mode does anyway, so it is accepted; a mismatch is refused wherever the policy lives.
    assert!(source::parse_str(&policy("    canaryWeight: 0\n  finalize: {loser: Keep}\n"), "t.yaml").is_ok());
    let errs = errors(&policy("    canaryWeight: 0\n  finalize:\n    loser: Keep\n    scaleDownLoser: true\n"));
    assert!(
        errs[0].starts_with("t.yaml:20: ReleasePolicy default/r: spec.finalize.scaleDownLoser: disagrees"),
        "{errs:?}"
    );
}

#[test]
fn an_unknown_field_is_refused_where_it_is() {
    let text = policy("    canaryWieght: 10\n");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("t.yaml:17: ReleasePolicy default/r: spec.traffic: unknown field `canaryWieght`"));
}

#[test]
fn unknown_kinds_and_api_versions_are_named() {
    let errs = errors(&after_a("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n"));
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("t.yaml:9: kind: unknown kind `Deployment` of apiVersion `apps/v1`"), "{errs:?}");
    let errs = errors("apiVersion: sluice.dev/v1alpha1\nkind: Service\n");
    assert!(errs[0].contains("unknown kind `Service` of apiVersion `sluice.dev/v1alpha1`"));
    assert_eq!(errors("- a\n- b\n"), ["t.yaml:1: expected an object with string fields apiVersion and kind"]);
}

#[test]
fn empty_documents_are_skipped_and_namespace_defaults() {
    let text = format!("# only a comment\n---\n---\n{SERVICE_A}---\n\n...\n");
    let model = source::parse_str(&text, "t.yaml").unwrap();
    assert!(model.services.contains_key(&ObjectKey::new("default", "a")));
    assert!(source::parse_str("", "t.yaml").unwrap().services.is_empty());
}

#[test]
fn duplicates_name_the_first_definition() {
    assert_eq!(
        errors(&after_a(SERVICE_A)),
        ["t.yaml:10: Service default/a: metadata.name: duplicate Service default/a; first defined at t.yaml:3"]
    );
}

#[test]
fn a_policy_needs_its_service_and_a_service_takes_one_policy() {
    let second = "apiVersion: sluice.dev/v1alpha1
kind: ReleasePolicy
metadata: {name: r2}
spec: {service: a, stable: v1, canary: v2}
---
apiVersion: sluice.dev/v1alpha1
kind: ReleasePolicy
metadata: {name: r3, namespace: other}
spec: {service: a, stable: v1, canary: v2}
";
    let text = format!("{}---\n{second}", policy("    canaryWeight: 1\n"));
    assert_eq!(
        errors(&text),
        [
            "t.yaml:22: ReleasePolicy default/r2: spec.service: Service default/a already has ReleasePolicy \
             default/r; one policy per service",
            "t.yaml:27: ReleasePolicy other/r3: spec.service: no Service `a` in namespace `other`",
        ]
    );
}

#[test]
fn workload_checks() {
    let text = after_a(
        "apiVersion: sluice.dev/v1alpha1
kind: Workload
metadata:
  name: A_1
  labels: {app: a}
spec:
  address: 10.0.0.300
  ports:
    http: 0
",
    );
    assert_eq!(
        errors(&text),
        [
            "t.yaml:11: Workload default/A_1: metadata.name: `A_1` is not a DNS label (at most 63 of a-z, 0-9 and \
             '-', alphanumeric at both ends)",
            "t.yaml:14: Workload default/A_1: spec.address: `10.0.0.300` is not an IP address",
            "t.yaml:16: Workload default/A_1: spec.ports.http: must be between 1 and 65535",
        ]
    );
}

#[test]
fn service_port_checks() {
    let text = "apiVersion: v1
kind: Service
metadata: {name: s}
spec:
  ports:
  - name: http
    port: 0
  - name: http
    port: 0
";
    assert_eq!(
        errors(text),
        [
            "t.yaml:7: Service default/s: spec.ports[0].port: must be between 1 and 65535",
            "t.yaml:8: Service default/s: spec.ports[1].name: duplicate port name `http`",
            "t.yaml:9: Service default/s: spec.ports[1].port: must be between 1 and 65535",
            "t.yaml:9: Service default/s: spec.ports[1].port: duplicate port 0",
        ]
    );
    let too_big = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: 70000}]\n";
    let errs = errors(too_big);
    assert!(errs[0].starts_with("t.yaml:5: Service default/s: spec.ports[0].port: invalid value: integer `70000`"));
}

#[test]
fn every_error_is_collected() {
    let text = format!(
        "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: Bad}}\nspec: {{ports: [{{port: 1}}]}}\n---\nkind: [\n",
        policy("    canaryWeight: 10001\n")
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(errs[0].starts_with("t.yaml:17: ReleasePolicy default/r: spec.traffic.canaryWeight: "));
    assert!(errs[1].starts_with("t.yaml:21: Service default/Bad: metadata.name: "));
    // libyaml notices the unclosed `[` at the end of input; the line stays within the file.
    assert_eq!(errs[2], "t.yaml:24: did not find expected node content, while parsing a flow node");
}

const SELECTION: &str = "
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: admin, port: 81, targetPort: admin-port}
  - {name: metrics, port: 82}
---
apiVersion: v1
kind: Service
metadata: {name: nothing}
spec: {ports: [{port: 1}]}
---
apiVersion: sluice.dev/v1alpha1
kind: Workload
metadata: {name: w1, labels: {app: web, version: v1}}
spec: {address: 10.0.0.1, ports: {http: 9000, admin-port: 9001}, ready: false, terminating: true}
---
apiVersion: sluice.dev/v1alpha1
kind: Workload
metadata: {name: w2, labels: {app: web}}
spec: {address: 'fd00::2'}
---
apiVersion: sluice.dev/v1alpha1
kind: Workload
metadata: {name: w3, namespace: other, labels: {app: web}}
spec: {address: 10.0.0.3}
---
apiVersion: sluice.dev/v1alpha1
kind: Workload
metadata: {name: w4, labels: {app: db}}
spec: {address: 10.0.0.4}
";

#[test]
fn services_select_workloads_and_resolve_ports() {
    let model = source::parse_str(SELECTION, "t.yaml").unwrap();
    let web = ObjectKey::new("default", "web");
    assert_eq!(model.services[&web].ports[1].target_port, TargetPort::Name("admin-port".into()));
    let eps = model.endpoints_of(&web);
    let names: Vec<_> = eps.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["w1", "w2"]);
    // w1: its own port for `http` wins over targetPort; `admin` resolves through the named targetPort.
    assert_eq!(eps[0].ports.iter().map(|(a, b)| (*a, *b)).collect::<Vec<_>>(), [(80, 9000), (81, 9001), (82, 82)]);
    assert!(!eps[0].ready && eps[0].terminating);
    assert_eq!(eps[0].label("version"), Some("v1"));
    // w2 declares no ports: numeric targetPorts apply, the named one does not resolve.
    assert_eq!(eps[1].ports.iter().map(|(a, b)| (*a, *b)).collect::<Vec<_>>(), [(80, 8080), (82, 82)]);
    assert_eq!(eps[1].address, "fd00::2");
    // An empty selector selects nothing.
    assert!(model.endpoints_of(&ObjectKey::new("default", "nothing")).is_empty());
}

#[test]
fn directories_load_together_and_name_each_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), SERVICE_A).unwrap();
    let p = "apiVersion: sluice.dev/v1alpha1\nkind: ReleasePolicy\nmetadata: {name: r}\n\
             spec: {service: a, stable: v1, canary: v2}\n";
    std::fs::write(dir.path().join("b.yml"), p).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
    let model = source::load_paths(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!((model.services.len(), model.policies.len()), (1, 1));

    std::fs::write(dir.path().join("c.yaml"), "kind: [\n").unwrap();
    let missing = dir.path().join("missing.yaml");
    let err = source::load_paths(&[dir.path().to_path_buf(), missing.clone()]).unwrap_err();
    let lines: Vec<String> = err.0.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with(&format!("{}:1: ", dir.path().join("c.yaml").display())), "{lines:?}");
    assert!(lines[1].starts_with(&format!("{}: cannot read: ", missing.display())), "{lines:?}");
}

#[test]
fn validate_reports_counts_or_every_error() {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = source::validate_to(&[bookinfo()], &mut out, &mut err).unwrap();
    assert_eq!(code, ExitCode::SUCCESS);
    assert_eq!(String::from_utf8(out).unwrap(), "ok: 4 services, 6 workloads, 1 policies, 0 routing objects\n");
    assert!(err.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, policy("    canaryWeight: 20000\n")).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = source::validate_to(std::slice::from_ref(&bad), &mut out, &mut err).unwrap();
    assert_eq!(code, ExitCode::FAILURE);
    assert!(out.is_empty());
    let expected = format!(
        "{}:17: ReleasePolicy default/r: spec.traffic.canaryWeight: must be between 0 and 10000\n",
        bad.display()
    );
    assert_eq!(String::from_utf8(err).unwrap(), expected);
    assert_eq!(source::validate_command(&[bad]), ExitCode::FAILURE);
    assert_eq!(source::validate_command(&[bookinfo()]), ExitCode::SUCCESS);
}

#[test]
fn the_readme_example_error_is_what_users_see() {
    let text = std::fs::read_to_string(bookinfo()).unwrap().replace("canaryWeight: 2000", "canaryWeight: 20000");
    let err = source::parse_str(&text, "config/bookinfo.yaml").unwrap_err();
    let expected = "config/bookinfo.yaml:134: ReleasePolicy default/reviews-v3: spec.traffic.canaryWeight: \
                    must be between 0 and 10000";
    assert_eq!(err.to_string(), expected);
    let readme = std::fs::read_to_string(bookinfo().with_file_name("README.md")).unwrap();
    assert!(readme.contains(expected), "config/README.md shows another error");
}

/// A `*.yaml` link in a config directory whose target is gone is reported (`sluice validate`, the log), not
/// skipped silently; the rest of the directory loads.
#[test]
fn a_dangling_link_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(bookinfo(), dir.path().join("bookinfo.yaml")).unwrap();
    let link = dir.path().join("gone.yaml");
    std::os::unix::fs::symlink(dir.path().join("no-such-file.yaml"), &link).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = source::validate_to(&[dir.path().to_path_buf()], &mut out, &mut err).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(code, ExitCode::SUCCESS, "{}", String::from_utf8_lossy(&err));
    let expected = format!("warning: {}: a symbolic link whose target does not exist: not read", link.display());
    assert!(out.lines().any(|l| l == expected), "{out}");
}
