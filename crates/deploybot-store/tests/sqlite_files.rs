//! The SQLite backend's directory and files: the controller's user only.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_new_database_is_readable_by_its_owner_only_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").join("nested");
    let db = data.join("deploybot.db");
    // The test process's umask (usually 022) would leave both open to all.
    let store = deploybot_store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    store.ping().await.unwrap();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&db), 0o600);
    for suffix in ["-wal", "-shm"] {
        let file = data.join(format!("deploybot.db{suffix}"));
        if file.exists() {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    }
}
