//! The release families, read from the release controller at scrape time: a deleted policy's series disappear
//! with it (a gauge in the recorder would stay at its last value forever), and a series never outlives its task.
//!
//! ```text
//!  sluice_release_phase{namespace,policy,phase}    1 for the current phase, 0 for every other phase
//!  sluice_release_weight{namespace,policy,version} the version's share of traffic in percent, as routed now
//! ```

use super::names;
use crate::model::Phase;
use crate::release::ReleaseView;
use std::fmt::Write;

/// Every phase, so a dashboard sees each series exist (0) before a release enters it.
const PHASES: [Phase; 7] = [
    Phase::Pending,
    Phase::Progressing,
    Phase::Paused,
    Phase::Promoted,
    Phase::Aborted,
    Phase::Finalized,
    Phase::Failed,
];

/// The two families as Prometheus text (with HELP and TYPE), empty when there is no release.
pub fn render(releases: &[ReleaseView]) -> String {
    let mut out = String::new();
    if releases.is_empty() {
        return out;
    }
    let _ = writeln!(out, "# HELP {} 1 for the release's current phase, 0 for the others.", names::RELEASE_PHASE);
    let _ = writeln!(out, "# TYPE {} gauge", names::RELEASE_PHASE);
    for r in releases {
        for phase in PHASES {
            let value = u8::from(r.status.phase == phase);
            let _ = writeln!(
                out,
                "{}{{namespace=\"{}\",policy=\"{}\",phase=\"{phase:?}\"}} {value}",
                names::RELEASE_PHASE,
                escape(&r.metadata.namespace),
                escape(&r.metadata.name),
            );
        }
    }
    let _ = writeln!(out, "\n# HELP {} A version's share of traffic in percent, as routed now.", names::RELEASE_WEIGHT);
    let _ = writeln!(out, "# TYPE {} gauge", names::RELEASE_WEIGHT);
    for r in releases {
        for (version, basis_points) in &r.status.weights {
            let _ = writeln!(
                out,
                "{}{{namespace=\"{}\",policy=\"{}\",version=\"{}\"}} {}",
                names::RELEASE_WEIGHT,
                escape(&r.metadata.namespace),
                escape(&r.metadata.name),
                escape(version),
                f64::from(*basis_points) / 100.0,
            );
        }
    }
    out.push('\n');
    out
}

/// A label value in the text format: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
    }

    #[test]
    fn no_release_no_family() {
        assert_eq!(render(&[]), "");
    }
}
