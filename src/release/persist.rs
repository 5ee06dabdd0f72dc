//! Release state on disk (`--state-dir`): policies created through the API and every release's record, in one
//! JSON file replaced atomically (write a temporary file, fsync, rename over, fsync the directory). A change is
//! acknowledged to the operator only after it is on disk, so `kill -9` between any two writes loses nothing
//! acknowledged.

use super::machine::Record;
use crate::model::{ObjectKey, ReleasePolicySpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const FILE: &str = "releases.json";
const FORMAT: u32 = 1;

/// What survives a restart.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Persisted {
    pub format: u32,
    /// Policies created through the API (file policies live in their files).
    pub api_policies: BTreeMap<String, StoredPolicy>,
    /// Every release's record, file and API alike, by `namespace/name`.
    pub records: BTreeMap<String, Record>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredPolicy {
    pub namespace: String,
    pub name: String,
    pub spec: ReleasePolicySpec,
}

impl StoredPolicy {
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(&self.namespace, &self.name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{path}: not a Sluice state file: {source} (start with --corrupt-state move-aside to move it aside and \
         start without release state)"
    )]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("{path}: state format {found} is newer than this Sluice understands ({FORMAT})")]
    Format { path: PathBuf, found: u32 },
}

/// What to do at start with a state file that cannot be read as one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CorruptState {
    /// Refuse to start, naming the file (the operator decides: nothing is lost by accident).
    #[default]
    Refuse,
    /// Move the file aside (`releases.json.corrupt-<unix time>`), say so in the log, and start with no state.
    MoveAside,
}

/// A state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
    on_corrupt: CorruptState,
}

impl StateDir {
    /// Creates the directory if needed (readable by its owner only: it holds every release's spec and state).
    pub fn open(dir: &Path) -> Result<Self, PersistError> {
        Self::open_with(dir, CorruptState::Refuse)
    }

    /// [`StateDir::open`], with what [`StateDir::load`] does about a corrupt file.
    pub fn open_with(dir: &Path, on_corrupt: CorruptState) -> Result<Self, PersistError> {
        use std::os::unix::fs::DirBuilderExt;
        let io = |source| PersistError::Io { path: dir.to_path_buf(), source };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        Ok(Self { dir: dir.to_path_buf(), on_corrupt })
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The stored state; empty when nothing was stored yet.
    pub fn load(&self) -> Result<Persisted, PersistError> {
        let path = self.file();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Persisted { format: FORMAT, ..Default::default() });
            }
            Err(source) => return Err(PersistError::Io { path, source }),
        };
        let state: Persisted = match serde_json::from_slice(&text) {
            Ok(s) => s,
            Err(source) if self.on_corrupt == CorruptState::MoveAside => return self.move_aside(&path, &source),
            Err(source) => return Err(PersistError::Parse { path: path.clone(), source }),
        };
        if state.format > FORMAT {
            return Err(PersistError::Format { path, found: state.format });
        }
        Ok(state)
    }

    /// Renames a corrupt state file out of the way and starts with no state.
    fn move_aside(&self, path: &Path, why: &serde_json::Error) -> Result<Persisted, PersistError> {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let aside = self.dir.join(format!("{FILE}.corrupt-{secs}"));
        std::fs::rename(path, &aside).map_err(|source| PersistError::Io { path: path.to_path_buf(), source })?;
        tracing::error!(
            file = %path.display(), moved_to = %aside.display(), error = %why,
            "the release state file is corrupt: moved aside; starting with no release state (API policies and \
             release progress are lost unless restored from that file)"
        );
        Ok(Persisted { format: FORMAT, ..Default::default() })
    }

    /// Replaces the stored state atomically and durably.
    pub fn save(&self, state: &Persisted) -> Result<(), PersistError> {
        let path = self.file();
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let io = |source| PersistError::Io { path: path.clone(), source };
        let mut body =
            serde_json::to_vec_pretty(&Persisted { format: FORMAT, ..state.clone() }).map_err(|e| io(e.into()))?;
        body.push(b'\n');
        use std::os::unix::fs::OpenOptionsExt;
        let mut f =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io)?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(&dir.path().join("state")).unwrap();
        assert_eq!(sd.load().unwrap().records.len(), 0);
        let spec = ReleasePolicySpec {
            service: "reviews".into(),
            stable: "v1".into(),
            canary: "v3".into(),
            ..Default::default()
        };
        let mut p = Persisted::default();
        p.records.insert("default/r".into(), Record::new(spec.clone(), 5));
        p.api_policies.insert("default/r".into(), StoredPolicy { namespace: "default".into(), name: "r".into(), spec });
        sd.save(&p).unwrap();
        let back = sd.load().unwrap();
        assert_eq!(back.records, p.records);
        assert_eq!(back.api_policies, p.api_policies);
        assert!(!sd.file().with_extension("json.tmp").exists());
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it_or_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(dir.path()).unwrap();
        std::fs::write(sd.file(), b"{not json").unwrap();
        let err = sd.load().unwrap_err().to_string();
        assert!(err.contains("releases.json: not a Sluice state file"), "{err}");
        assert!(err.contains("--corrupt-state move-aside"), "{err}");
        let sd = StateDir::open_with(dir.path(), CorruptState::MoveAside).unwrap();
        assert_eq!(sd.load().unwrap().records.len(), 0);
        let moved: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(moved.iter().any(|n| n.starts_with("releases.json.corrupt-")), "{moved:?}");
        assert!(!sd.file().exists());
    }

    #[test]
    fn the_state_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(&dir.path().join("state")).unwrap();
        sd.save(&Persisted::default()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&sd.file()), 0o600);
        assert_eq!(mode(&dir.path().join("state")), 0o700);
    }
}
