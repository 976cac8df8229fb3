//! Where SP packages wait between packaging and the SP's poll (spec D47): in memory up to a
//! byte budget, in files under `packages/` in the data directory beyond it.
//!
//! A package is written once, read once when the SP takes it, and deleted then or at the
//! purge. Kept in memory, that is no file created, read and unlinked per transaction; the
//! budget bounds the memory, and a package that does not fit goes to a file as before.
//! A transaction records where its package is in `package_path`: `packages/{id}.zip` for a
//! file (relative to the data directory), `memory:{id}` for memory. Packages in memory do not
//! survive a restart; the MyData-API then answers as for a package that failed (engine).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::error::{ServerError, ServerResult};

/// The `package_path` prefix of a package kept in memory.
const MEMORY: &str = "memory:";

/// The packages waiting for their SP.
#[derive(Debug)]
pub struct Packages {
    dir: PathBuf,
    budget: usize,
    mem: Mutex<Memory>,
}

#[derive(Debug, Default)]
struct Memory {
    bytes: usize,
    map: HashMap<String, Vec<u8>>,
}

impl Packages {
    /// Packages of the data directory `data_dir`, with up to `budget` bytes in memory (0 =
    /// always files).
    pub fn new(data_dir: PathBuf, budget: usize) -> Self {
        Packages {
            dir: data_dir,
            budget,
            mem: Mutex::new(Memory::default()),
        }
    }

    fn mem(&self) -> std::sync::MutexGuard<'_, Memory> {
        // Every update is complete before the guard drops; a poisoned lock is taken over.
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the package of transaction `id`; returns its `package_path`.
    pub fn put(&self, id: &str, zip: Vec<u8>) -> ServerResult<String> {
        {
            let mut m = self.mem();
            if m.bytes + zip.len() <= self.budget {
                m.bytes += zip.len();
                if let Some(old) = m.map.insert(id.to_string(), zip) {
                    m.bytes -= old.len();
                }
                return Ok(format!("{MEMORY}{id}"));
            }
        }
        // Owner-only whatever the umask: the package holds the citizen's data in plaintext
        // (spec D48).
        let dir = self.dir.join("packages");
        crate::datadir::create_dir(&dir)?;
        let rel = format!("packages/{id}.zip");
        let path = self.dir.join(&rel);
        use std::io::Write;
        crate::datadir::create_file(&path)?
            .write_all(&zip)
            .map_err(|e| ServerError::Storage(format!("{}: {e}", path.display())))?;
        Ok(rel)
    }

    /// Takes the package at `package_path` out: it is gone from here on. `None` when it is not
    /// there (a package in memory before a restart).
    pub fn take(&self, package_path: &str) -> ServerResult<Option<Vec<u8>>> {
        if let Some(id) = package_path.strip_prefix(MEMORY) {
            let mut m = self.mem();
            let zip = m.map.remove(id);
            if let Some(z) = &zip {
                m.bytes -= z.len();
            }
            return Ok(zip);
        }
        let path = self.file(package_path)?;
        match std::fs::read(&path) {
            Ok(zip) => {
                let _ = std::fs::remove_file(&path);
                Ok(Some(zip))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ServerError::Storage(format!("{}: {e}", path.display()))),
        }
    }

    /// The package at `package_path`, left in place (it is taken only once delivered, D25).
    /// `None` when it is not there (a package in memory before a restart).
    pub fn get(&self, package_path: &str) -> ServerResult<Option<Vec<u8>>> {
        if let Some(id) = package_path.strip_prefix(MEMORY) {
            return Ok(self.mem().map.get(id).cloned());
        }
        let path = self.file(package_path)?;
        match std::fs::read(&path) {
            Ok(zip) => Ok(Some(zip)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ServerError::Storage(format!("{}: {e}", path.display()))),
        }
    }

    /// The `package_path` of transaction `id`'s package when it is kept in a file.
    pub fn file_path(id: &str) -> String {
        format!("packages/{id}.zip")
    }

    /// Deletes transaction `id`'s package wherever it is (memory or file), whatever its
    /// transaction last recorded. A file that cannot be removed is logged.
    pub fn discard(&self, id: &str) {
        {
            let mut m = self.mem();
            if let Some(z) = m.map.remove(id) {
                m.bytes -= z.len();
            }
        }
        if let Err(e) = self.discard_file(id) {
            log::error!("{e}");
        }
    }

    /// Removes transaction `id`'s package file, if there is one.
    pub fn discard_file(&self, id: &str) -> ServerResult<()> {
        let Ok(path) = self.file(&Self::file_path(id)) else {
            return Ok(());
        };
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ServerError::Storage(format!(
                "{}: not removed: {e}",
                path.display()
            ))),
        }
    }

    /// The transaction ids of every package file in `packages/` (the purge looks for files no
    /// waiting transaction owns). Other names in the directory are left alone.
    pub fn files(&self) -> ServerResult<Vec<String>> {
        let dir = self.dir.join("packages");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ServerError::Storage(format!("{}: {e}", dir.display()))),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| ServerError::Storage(format!("{}: {e}", dir.display())))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".zip")) else {
                continue;
            };
            if self.file(&Self::file_path(id)).is_ok() {
                ids.push(id.to_string());
            }
        }
        Ok(ids)
    }

    /// Deletes the package at `package_path`, wherever it is.
    pub fn remove(&self, package_path: &str) {
        if let Some(id) = package_path.strip_prefix(MEMORY) {
            let mut m = self.mem();
            if let Some(z) = m.map.remove(id) {
                m.bytes -= z.len();
            }
        } else if let Ok(path) = self.file(package_path) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Whether the package at `package_path` is here (a package in memory is not after a
    /// restart).
    pub fn holds(&self, package_path: &str) -> bool {
        match package_path.strip_prefix(MEMORY) {
            Some(id) => self.mem().map.contains_key(id),
            None => self.file(package_path).is_ok_and(|f| f.is_file()),
        }
    }

    /// Bytes of packages in memory.
    pub fn bytes_in_memory(&self) -> usize {
        self.mem().bytes
    }

    /// The file of a `package_path`: only `packages/<name>.zip`, never anything else of the
    /// data directory or outside it (the path comes from storage).
    fn file(&self, rel: &str) -> ServerResult<PathBuf> {
        let name = rel
            .strip_prefix("packages/")
            .filter(|n| {
                n.ends_with(".zip")
                    && !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                    && !n.starts_with('.')
            })
            .ok_or_else(|| ServerError::Storage(format!("bad package path {rel:?}")))?;
        Ok(self.dir.join("packages").join(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_up_to_the_budget_then_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = Packages::new(dir.path().to_path_buf(), 10);
        let a = p.put("a", vec![1; 6]).unwrap();
        assert_eq!(a, "memory:a");
        let b = p.put("b", vec![2; 6]).unwrap();
        assert_eq!(b, "packages/b.zip");
        assert!(dir.path().join("packages/b.zip").is_file());
        assert_eq!(p.bytes_in_memory(), 6);
        assert!(p.holds(&a) && p.holds(&b));
        assert!(!p.holds("memory:zz") && !p.holds("packages/zz.zip") && !p.holds("x"));
        assert_eq!(p.take(&a).unwrap().unwrap(), vec![1; 6]);
        assert!(!p.holds(&a));
        assert_eq!(p.bytes_in_memory(), 0);
        assert!(p.take(&a).unwrap().is_none(), "taken once");
        assert_eq!(p.take(&b).unwrap().unwrap(), vec![2; 6]);
        assert!(!dir.path().join("packages/b.zip").exists());
        assert!(p.take(&b).unwrap().is_none());
        // Room again: memory.
        let c = p.put("c", vec![3; 10]).unwrap();
        assert_eq!(c, "memory:c");
        p.remove(&c);
        assert_eq!(p.bytes_in_memory(), 0);
        // Budget 0: always files.
        let f = Packages::new(dir.path().to_path_buf(), 0);
        assert_eq!(f.put("d", vec![4]).unwrap(), "packages/d.zip");
        #[cfg(unix)]
        {
            let mode = |p: &str| crate::datadir::mode_of(&dir.path().join(p)).unwrap();
            assert_eq!(mode("packages"), 0o700);
            assert_eq!(mode("packages/d.zip"), 0o600);
        }
        f.remove("packages/d.zip");
        assert!(!dir.path().join("packages/d.zip").exists());
    }

    #[test]
    fn a_path_outside_packages_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("master.key"), b"k").unwrap();
        let p = Packages::new(dir.path().to_path_buf(), 0);
        for bad in [
            "master.key",
            "packages/../master.key",
            "/etc/passwd",
            "packages/",
            "packages/.zip",
            "packages/a/b.zip",
        ] {
            assert!(p.take(bad).is_err(), "{bad}");
            p.remove(bad);
        }
        assert!(dir.path().join("master.key").is_file());
    }
}
