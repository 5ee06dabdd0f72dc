//! Load errors: each names `file:line`, the object and the field, so a user can go straight to the mistake.
//!
//! ```text
//! config/bookinfo.yaml:42: ReleasePolicy default/reviews-v3: spec.traffic.canaryWeight: must be between 0 and 10000
//! ```

use std::fmt;

/// One problem in a config file. `line` is 1-based; 0 means the whole file (it could not be read).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    pub file: String,
    pub line: usize,
    /// `Kind namespace/name` (`ReleasePolicy default/reviews-v3`), or empty before the object is known.
    pub object: String,
    /// The field's path as written (`spec.traffic.canaryWeight`), or empty.
    pub field: String,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { file, line, object, field, message } = self;
        match line {
            0 => write!(f, "{file}: ")?,
            n => write!(f, "{file}:{n}: ")?,
        }
        if !object.is_empty() {
            write!(f, "{object}: ")?;
        }
        if !field.is_empty() {
            write!(f, "{field}: ")?;
        }
        f.write_str(message)
    }
}

/// Every problem found in one load, in file order: users fix them all in one pass rather than one per run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Turns a serde_yaml error into `(line, field, message)`, with `line` counted from the start of the document
/// (`None` when serde_yaml knows no position). serde_yaml prefixes the field path (`spec.ports[0].port: invalid
/// type...`) and appends positions (`at line 3 column 5`); both move to their own fields here.
pub(crate) fn split_yaml_error(err: &serde_yaml::Error) -> (Option<usize>, String, String) {
    let line = err.location().map(|l| l.line());
    let text = strip_positions(&err.to_string());
    match text.split_once(": ") {
        Some((path, rest)) if !path.is_empty() && !path.contains(char::is_whitespace) => {
            (line, path.to_string(), rest.to_string())
        }
        _ => (line, String::new(), text),
    }
}

/// Removes ` at line N column M` and ` at position N`: those count from the document, not the file, and the
/// error's own line already says where.
fn strip_positions(text: &str) -> String {
    let mut out = text.to_string();
    for pattern in [" at line ", " at position "] {
        while let Some(start) = out.find(pattern) {
            let rest = &out[start + pattern.len()..];
            let digits = |s: &str| s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let mut end = start + pattern.len() + digits(rest);
            if let Some(col) = out[end..].strip_prefix(" column ") {
                end += " column ".len() + digits(col);
            }
            out.replace_range(start..end, "");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_line_object_and_field() {
        let e = LoadError {
            file: "config/bookinfo.yaml".into(),
            line: 42,
            object: "ReleasePolicy default/reviews-v3".into(),
            field: "spec.traffic.canaryWeight".into(),
            message: "must be between 0 and 10000".into(),
        };
        assert_eq!(
            e.to_string(),
            "config/bookinfo.yaml:42: ReleasePolicy default/reviews-v3: spec.traffic.canaryWeight: must be between 0 and 10000"
        );
        let bare = LoadError { file: "x.yaml".into(), line: 0, message: "gone".into(), ..e.clone() };
        let bare = LoadError { object: String::new(), field: String::new(), ..bare };
        assert_eq!(bare.to_string(), "x.yaml: gone");
        assert_eq!(LoadErrors(vec![bare.clone(), bare]).to_string(), "x.yaml: gone\nx.yaml: gone");
    }

    #[test]
    fn positions_are_stripped() {
        assert_eq!(
            strip_positions(
                "did not find expected key at line 5 column 3, while parsing a block mapping at line 3 column 1"
            ),
            "did not find expected key, while parsing a block mapping"
        );
        assert_eq!(strip_positions("bad at position 7"), "bad");
    }
}
