//! The database's directory and file: readable by the controller's user
//! only, whatever the umask. The file holds token hashes, deploy specs and
//! deploy output; SQLite gives its `-wal` and `-shm` files the database
//! file's mode.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::StoreError;

/// Owner only.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;
/// Bits that let anyone but the owner in.
const OTHERS: u32 = 0o077;

/// Makes the directory of `db` (0700) and the file itself (0600) unless
/// they exist; warns of existing ones others may read.
pub(super) fn prepare(db: &Path) -> Result<(), StoreError> {
    let setup = |what: &Path, err: std::io::Error| {
        StoreError::Setup(format!("cannot create {}: {err}", what.display()))
    };
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        if dir.exists() {
            warn_if_open_to_others(dir, "data directory", DIR_MODE);
        } else {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(|err| setup(dir, err))?;
            // The umask may have taken bits from the mode asked for.
            std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
                .map_err(|err| setup(dir, err))?;
        }
    }
    if db.exists() {
        warn_if_open_to_others(db, "database file", FILE_MODE);
    } else {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(db)
            .map_err(|err| setup(db, err))?;
        std::fs::set_permissions(db, Permissions::from_mode(FILE_MODE))
            .map_err(|err| setup(db, err))?;
    }
    Ok(())
}

fn warn_if_open_to_others(path: &Path, what: &str, wanted: u32) {
    let Ok(metadata) = std::fs::metadata(path) else {
        return;
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & OTHERS != 0 {
        tracing::warn!(
            path = %path.display(),
            "the {what} {} has mode {mode:o}: users other than the controller's may read it; `chmod {wanted:o} {}`",
            path.display(),
            path.display()
        );
    }
}
