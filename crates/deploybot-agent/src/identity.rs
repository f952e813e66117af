//! Who this agent is, kept in `state_dir/agent.json`: the id the controller
//! knows it by (for people and tools on the host), and its agent token.
//!
//! The controller is the authority: the agent registers on every start (the
//! same hostname always gets the same id) and rewrites the file after every
//! registration. The saved token matters when a registration is refused (no
//! enrollment token configured, or one that expired or was used up): the
//! agent then carries on with it until the controller refuses it too. It
//! serves only the hostname and controller it was issued for, so a changed
//! `--controller` never receives another controller's token.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client::Token;

pub(crate) const FILE_NAME: &str = "agent.json";

/// `Debug` masks the token (see [`Token`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub(crate) id: String,
    pub(crate) hostname: String,
    /// The controller's base URL the token was issued by (empty in files
    /// written before tokens existed).
    #[serde(default)]
    pub(crate) controller: String,
    #[serde(default, with = "token_text")]
    pub(crate) token: Option<Token>,
}

impl Identity {
    /// The saved token, if it was issued for `hostname` by `controller`.
    pub(crate) fn token_for(&self, hostname: &str, controller: &str) -> Option<&Token> {
        let ours = self.hostname == hostname && self.controller == controller;
        self.token
            .as_ref()
            .filter(|token| ours && !token.is_empty())
    }
}

/// The token as plain text: this file is the one place it is written out.
mod token_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::client::Token;

    pub(super) fn serialize<S: Serializer>(
        token: &Option<Token>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        token.as_ref().map(Token::expose).serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Token>, D::Error> {
        Ok(Option::<String>::deserialize(deserializer)?.map(Token::new))
    }
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
/// Blocking, but a few hundred bytes once per registration. The file holds
/// the agent token: it must never be readable by anyone but the owner, not
/// even for a moment (hence the mode at creation, not a chmod after).
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
            controller: "http://ctl:8080/".into(),
            token: Some(Token::new("tok-secret")),
        };
        save(&state_dir, &identity).unwrap();
        assert_eq!(load(&state_dir), Some(identity.clone()));
        let mode = fs::metadata(path(&state_dir)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(path(&state_dir)).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "agent-1",
                "hostname": "web-01",
                "controller": "http://ctl:8080/",
                "token": "tok-secret",
            })
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
    fn the_token_serves_only_its_host_and_controller_and_never_shows_in_debug() {
        let identity = Identity {
            id: "agent-1".into(),
            hostname: "web-01".into(),
            controller: "http://ctl:8080/".into(),
            token: Some(Token::new("tok-secret")),
        };
        assert!(identity.token_for("web-01", "http://ctl:8080/").is_some());
        assert!(identity.token_for("web-02", "http://ctl:8080/").is_none());
        assert!(identity.token_for("web-01", "http://other:8080/").is_none());
        let debug = format!("{identity:?}");
        assert!(!debug.contains("tok-secret"), "{debug}");
        assert!(debug.contains("Token(***)"), "{debug}");
    }

    #[test]
    fn files_from_before_tokens_still_load() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            path(dir.path()),
            r#"{"id": "agent-1", "hostname": "web-01"}"#,
        )
        .unwrap();
        let identity = load(dir.path()).unwrap();
        assert_eq!(identity.token, None);
        assert!(identity.token_for("web-01", "").is_none());
    }

    #[test]
    fn an_unreadable_file_counts_as_none() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(path(dir.path()), "not json").unwrap();
        assert_eq!(load(dir.path()), None);
    }
}
