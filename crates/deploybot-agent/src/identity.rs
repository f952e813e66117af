//! Who this agent is, kept in `state_dir/agent.json` so people and tools on
//! the host can see which agent id the controller knows it by.
//!
//! The controller is the authority: the agent registers on every start (the
//! same hostname always gets the same id) and rewrites the file when what it
//! was told differs from what the file says.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub(crate) const FILE_NAME: &str = "agent.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub(crate) id: String,
    pub(crate) hostname: String,
}

pub(crate) fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// The saved identity; `None` when there is none or it cannot be read
/// (registration replaces it either way).
pub(crate) fn load(state_dir: &Path) -> Option<Identity> {
    let path = path(state_dir);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return None,
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "cannot read the agent identity");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(identity) => Some(identity),
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "ignoring an unreadable agent identity");
            None
        }
    }
}

/// Writes the identity atomically (temp file, fsync, rename, fsync of the
/// directory), readable by the owner only: a crash leaves the old file or
/// the new one, never half of one.
///
/// Blocking, but a few hundred bytes once per registration.
pub(crate) fn save(state_dir: &Path, identity: &Identity) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)?;
    let final_path = path(state_dir);
    let temp_path = state_dir.join(format!(".{FILE_NAME}.tmp"));
    // A temp file left by a crash may have other permissions: `mode` below
    // applies only to a file this call creates.
    match fs::remove_file(&temp_path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp_path)?;
    let mut body = serde_json::to_vec_pretty(identity).map_err(io::Error::other)?;
    body.push(b'\n');
    file.write_all(&body)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp_path, &final_path)?;
    File::open(state_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn saves_atomically_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("nested/state");
        assert_eq!(load(&state_dir), None);

        let identity = Identity {
            id: "agent-1".into(),
            hostname: "web-01".into(),
        };
        save(&state_dir, &identity).unwrap();
        assert_eq!(load(&state_dir), Some(identity.clone()));
        let mode = fs::metadata(path(&state_dir)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(path(&state_dir)).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id": "agent-1", "hostname": "web-01"})
        );

        // Overwriting leaves no temp file behind.
        let renamed = Identity {
            id: "agent-2".into(),
            ..identity
        };
        save(&state_dir, &renamed).unwrap();
        assert_eq!(load(&state_dir), Some(renamed));
        let names: Vec<_> = fs::read_dir(&state_dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE_NAME]);
    }

    #[test]
    fn an_unreadable_file_counts_as_none() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(path(dir.path()), "not json").unwrap();
        assert_eq!(load(dir.path()), None);
    }
}
