//! The data directory holds personal data (the database, SP packages) and the master key, so it
//! and everything in it is owner-only, whatever the process umask (spec D48):
//!
//! - the directories the server creates (the data directory itself, `packages/`) are 0700;
//! - the files it creates (`mydata.sqlite`, before SQLite opens it, so that SQLite gives the
//!   same mode to `-wal` and `-shm`; `packages/{id}.zip`; `master.key`) are 0600;
//! - an existing data directory that group or others may read, write or enter is refused unless
//!   `allow_shared_data_dir` says the sharing is intended ([`prepare`]);
//! - existing database files, `master.key`, `packages/` and package files found with wider modes
//!   are tightened to 0600 (0700 for `packages/`) when the data directory is opened, with or
//!   without `allow_shared_data_dir`: that setting accepts the directory, never the files.
//!
//! The modes are set explicitly (`mode` at creation, then `chmod` if the umask took owner bits
//! away), never through the umask. On other systems than Unix these functions only create.

use std::path::Path;

use crate::error::{ServerError, ServerResult};

/// Mode of the directories the server creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files the server creates.
pub const FILE_MODE: u32 = 0o600;

/// The file names of the SQLite database in the data directory that [`prepare`] tightens
/// (the database and its WAL and shared-memory files).
const DB_FILES: [&str; 3] = ["mydata.sqlite", "mydata.sqlite-wal", "mydata.sqlite-shm"];

fn io_err(path: &Path, e: std::io::Error) -> ServerError {
    ServerError::Storage(format!("{}: {e}", path.display()))
}

/// Creates directory `path` (and missing parents) with mode 0700; an existing directory is
/// left as it is.
pub fn create_dir(path: &Path) -> ServerResult<()> {
    if path.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(DIR_MODE);
    }
    b.create(path).map_err(|e| io_err(path, e))?;
    // The umask may have taken bits of 0700 away; set it exactly.
    set_mode(path, DIR_MODE)
}

/// Opens `path` for writing, creating it with mode 0600 or truncating it; an existing file
/// with another mode is set to 0600 through the open handle.
pub fn create_file(path: &Path) -> ServerResult<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(FILE_MODE);
    }
    let f = o.open(path).map_err(|e| io_err(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let m = f.metadata().map_err(|e| io_err(path, e))?;
        if m.permissions().mode() & 0o777 != FILE_MODE {
            f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
                .map_err(|e| io_err(path, e))?;
        }
    }
    Ok(f)
}

/// Makes sure the file `path` exists with mode 0600 without changing its content: created
/// empty with 0600 if missing, set to 0600 if it has another mode (the SQLite database before
/// SQLite opens it).
pub fn ensure_private_file(path: &Path) -> ServerResult<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(FILE_MODE);
    }
    o.open(path).map_err(|e| io_err(path, e))?;
    tighten(path, FILE_MODE)
}

/// Sets the permission bits of `path` to `mode` if they differ.
fn set_mode(path: &Path, mode: u32) -> ServerResult<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
        if m.permissions().mode() & 0o777 != mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| io_err(path, e))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Sets the file `path` to mode 0600 if it exists with another mode (a symbolic link is left
/// alone).
pub fn tighten_file(path: &Path) -> ServerResult<()> {
    tighten(path, FILE_MODE)
}

/// [`set_mode`] on `path` if it exists and is not a symbolic link (a link is left alone).
fn tighten(path: &Path, mode: u32) -> ServerResult<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Ok(()),
        Ok(_) => set_mode(path, mode),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path, e)),
    }
}

/// The permission bits of `path` (0 on other systems than Unix).
pub fn mode_of(path: &Path) -> ServerResult<u32> {
    let m = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Ok(m.permissions().mode() & 0o7777)
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        Ok(0)
    }
}

/// Prepares the data directory `dir` before anything in it is opened:
///
/// - missing: created with mode 0700 (missing parents too);
/// - present, and group or others may read, write or enter it (`mode & 0o077 != 0`): refused
///   with a [`ServerError::Config`] that says how to fix it (`chmod 700`) and names
///   `allow_shared_data_dir`, unless `allow_shared` is set;
/// - then the database files, `master.key`, `packages/` and the package files in it are
///   tightened to 0600 (0700 for `packages/`) where they have wider modes.
pub fn prepare(dir: &Path, allow_shared: bool) -> ServerResult<()> {
    if !dir.exists() {
        return create_dir(dir);
    }
    if !dir.is_dir() {
        return Err(ServerError::Config(format!(
            "data directory {}: not a directory",
            dir.display()
        )));
    }
    let mode = mode_of(dir)?;
    if mode & 0o077 != 0 && !allow_shared {
        return Err(ServerError::Config(format!(
            "data directory {d} has mode {mode:04o}: other users may read or enter it, and it \
             holds personal data. Make it owner-only with `chmod 700 {d}`, or, if sharing it \
             is intended, set allow_shared_data_dir = true (MYDATA_ALLOW_SHARED_DATA_DIR=1)",
            d = dir.display()
        )));
    }
    for f in DB_FILES.iter().chain(&["master.key"]) {
        tighten(&dir.join(f), FILE_MODE)?;
    }
    let packages = dir.join("packages");
    if packages.is_dir() && !std::fs::symlink_metadata(&packages).is_ok_and(|m| m.is_symlink()) {
        set_mode(&packages, DIR_MODE)?;
        for e in std::fs::read_dir(&packages).map_err(|e| io_err(&packages, e))? {
            let e = e.map_err(|e| io_err(&packages, e))?;
            if e.file_type().is_ok_and(|t| t.is_file()) {
                tighten(&e.path(), FILE_MODE)?;
            }
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn creates_owner_only_and_refuses_a_shared_directory() {
        assert_eq!(DB_FILES[0], crate::storage::SQLITE_FILE);
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        prepare(&dir, false).unwrap();
        assert_eq!(mode_of(&dir).unwrap(), 0o700);
        assert_eq!(mode_of(&root.path().join("a")).unwrap(), 0o700);
        chmod(&dir, 0o750);
        let e = prepare(&dir, false).unwrap_err().to_string();
        assert!(e.contains(&format!("chmod 700 {}", dir.display())), "{e}");
        assert!(e.contains("allow_shared_data_dir"), "{e}");
        prepare(&dir, true).unwrap();
        assert_eq!(
            mode_of(&dir).unwrap(),
            0o750,
            "the directory is accepted as it is"
        );
        // Files with wider modes are tightened, also in an accepted shared directory.
        let db = dir.join("mydata.sqlite");
        std::fs::write(&db, b"x").unwrap();
        chmod(&db, 0o644);
        std::fs::create_dir(dir.join("packages")).unwrap();
        chmod(&dir.join("packages"), 0o755);
        let zip = dir.join("packages/t.zip");
        std::fs::write(&zip, b"z").unwrap();
        chmod(&zip, 0o664);
        prepare(&dir, true).unwrap();
        assert_eq!(mode_of(&db).unwrap(), 0o600);
        assert_eq!(mode_of(&dir.join("packages")).unwrap(), 0o700);
        assert_eq!(mode_of(&zip).unwrap(), 0o600);
        assert_eq!(std::fs::read(&db).unwrap(), b"x");
        // A file in place of the directory.
        let f = root.path().join("file");
        std::fs::write(&f, b"").unwrap();
        assert!(prepare(&f, true).is_err());
    }

    #[test]
    fn files_are_created_0600_and_existing_ones_set_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"old").unwrap();
        chmod(&p, 0o644);
        use std::io::Write;
        create_file(&p).unwrap().write_all(b"new").unwrap();
        assert_eq!(mode_of(&p).unwrap(), 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let q = dir.path().join("g");
        ensure_private_file(&q).unwrap();
        assert_eq!(mode_of(&q).unwrap(), 0o600);
        std::fs::write(&q, b"keep").unwrap();
        chmod(&q, 0o666);
        ensure_private_file(&q).unwrap();
        assert_eq!(mode_of(&q).unwrap(), 0o600);
        assert_eq!(std::fs::read(&q).unwrap(), b"keep");
    }
}
