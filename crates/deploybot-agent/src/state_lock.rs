//! One agent per state directory.
//!
//! Two agents sharing `agent.json` take turns registering the host, and
//! each registration marks the other's running job lost. The second one
//! refuses to start instead: it holds an exclusive lock on
//! `state_dir/agent.lock` (released by the kernel when the process ends,
//! however it ends), which also records its pid for the message.

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::AgentError;

const FILE_NAME: &str = "agent.lock";

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub(crate) struct StateLock {
    _file: File,
}

/// Creates the state directory (owner only) if needed and locks it.
pub(crate) fn acquire(state_dir: &Path) -> Result<StateLock, AgentError> {
    let path = state_dir.join(FILE_NAME);
    let failed = |source: io::Error| AgentError::StateDir {
        path: state_dir.to_owned(),
        source,
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(failed)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            // Best effort: the message is still right without the pid.
            let _ = file.read_to_string(&mut text);
            return Err(AgentError::StateDirInUse {
                path: state_dir.to_owned(),
                pid: text.trim().parse().ok(),
            });
        }
        Err(TryLockError::Error(err)) => return Err(failed(err)),
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(failed)?;
    Ok(StateLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let held = acquire(&state_dir).unwrap();
        let err = acquire(&state_dir).unwrap_err();
        let AgentError::StateDirInUse { pid, .. } = &err else {
            panic!("unexpected error {err}");
        };
        assert_eq!(*pid, Some(std::process::id()));
        assert!(
            err.to_string().contains(&format!(
                "in use by another agent (pid {})",
                std::process::id()
            )),
            "{err}"
        );
        drop(held);
        acquire(&state_dir).unwrap();
    }
}
