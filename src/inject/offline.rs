//! `sluice inject -f FILE`: the webhook's injection applied to manifests (as `istioctl kube-inject`). Each pod
//! template (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob) gets the same JSONPatch the
//! webhook would answer, applied with the `json-patch` crate; other objects pass through. The namespace opt-in is
//! not checked (asking is opting in); every other rule is the webhook's.

use super::{Outcome, Settings};
use serde::Deserialize;
use serde_json::Value;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Clone, Debug, clap::Args)]
pub struct InjectArgs {
    /// The manifest (multi-document YAML or JSON); `-` reads stdin.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// The namespace of objects that name none.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("{0}")]
    Read(String),
    #[error("{file}: document {doc}: {message}")]
    Document { file: String, doc: usize, message: String },
}

/// Where a kind keeps its pod template (a JSON pointer; "" for a Pod itself).
fn template_path(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "ReplicationController" => {
            Some("/spec/template")
        }
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// Injects every pod template in `text`; returns the documents as YAML and notes on what was skipped.
pub fn inject_documents(
    text: &str,
    file: &str,
    namespace: &str,
    settings: &Settings,
) -> Result<(String, Vec<String>), OfflineError> {
    let mut out = String::new();
    let mut notes = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = i + 1;
        let err = |message: String| OfflineError::Document { file: file.to_string(), doc, message };
        let mut value = Value::deserialize(de).map_err(|e| err(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        let name = value["metadata"]["name"].as_str().unwrap_or("?").to_string();
        if let Some(path) = template_path(&kind) {
            let ns = value["metadata"]["namespace"].as_str().unwrap_or(namespace).to_string();
            let template = value.pointer_mut(path).ok_or_else(|| err(format!("{kind} {name} has no pod template")))?;
            let mut pod = serde_json::json!({"metadata": template.get("metadata").cloned().unwrap_or_default(),
                                              "spec": template.get("spec").cloned().unwrap_or_default()});
            match super::inject(&pod, &ns, settings) {
                Outcome::Injected { ops, warnings } => {
                    let patch: json_patch::Patch =
                        serde_json::from_value(Value::Array(ops)).map_err(|e| err(e.to_string()))?;
                    json_patch::patch(&mut pod, &patch).map_err(|e| err(format!("applying the patch: {e}")))?;
                    template["metadata"] = pod["metadata"].take();
                    template["spec"] = pod["spec"].take();
                    notes.extend(warnings.into_iter().map(|w| format!("{kind} {ns}/{name}: {w}")));
                }
                Outcome::Skipped(why) => notes.push(format!("{kind} {ns}/{name}: not injected: {why}")),
                Outcome::Refused(bad) => return Err(err(format!("{kind} {ns}/{name}: {bad}"))),
            }
        }
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&value).map_err(|e| err(e.to_string()))?);
    }
    Ok((out, notes))
}

/// `sluice inject`: prints the injected manifest; exit 1 naming the file and document on an error.
pub fn command(args: &InjectArgs) -> ExitCode {
    let read = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map(|_| s)
    } else {
        std::fs::read_to_string(&args.file)
    };
    let run = read
        .map_err(|e| OfflineError::Read(format!("{}: {e}", args.file.display())))
        .and_then(|text| inject_documents(&text, &args.file.display().to_string(), &args.namespace, &args.settings));
    match run {
        Ok((yaml, notes)) => {
            for n in notes {
                eprintln!("sluice inject: {n}");
            }
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice inject: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_injected_and_other_objects_pass_through() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n---\n\
                    apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  template:\n    \
                    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - {name: web, image: nginx, ports: [{containerPort: 80}]}\n\
                    ---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec:\n  jobTemplate:\n    spec:\n      template:\n        \
                    metadata: {annotations: {sidecar.istio.io/inject: \"false\"}}\n        spec: {containers: [{name: c}]}\n";
        let (out, notes) = inject_documents(text, "m.yaml", "default", &Settings::default()).unwrap();
        let docs: Vec<Value> =
            serde_yaml::Deserializer::from_str(&out).map(|d| Value::deserialize(d).unwrap()).collect();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0]["kind"], "Service");
        let spec = &docs[1]["spec"]["template"]["spec"];
        assert_eq!(spec["containers"][1]["name"], "sluice-proxy");
        assert_eq!(spec["initContainers"][0]["name"], "sluice-init");
        let env = spec["containers"][1]["env"].as_array().unwrap();
        assert!(env.iter().any(|e| e["name"] == "SLUICE_INBOUND_PORTS" && e["value"] == "80"), "{env:?}");
        assert!(notes.iter().any(|n| n.contains("CronJob default/c: not injected")), "{notes:?}");
        let err =
            inject_documents("kind: Deployment\nmetadata: {name: x}\n", "m.yaml", "default", &Settings::default());
        assert!(err.unwrap_err().to_string().starts_with("m.yaml: document 1: Deployment x has no pod template"));
    }
}
