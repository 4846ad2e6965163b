//! A scratch folder per topology for configs, keys and process logs; removed on drop unless the
//! test failed, in which case it is kept and its path printed so the logs can be read.

use std::path::{Path, PathBuf};

pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// A new empty folder `$TMPDIR/bastion-tests/NAME`.
    pub fn new(name: &str) -> RunDir {
        RunDir::under(&std::env::temp_dir().join("bastion-tests"), name)
    }

    /// A new empty folder `PARENT/NAME`, for files a process under test must see where
    /// `$TMPDIR` will not do (`bastion init` mounts its own tmpfs on /tmp).
    pub fn under(parent: &Path, name: &str) -> RunDir {
        let path = parent.join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        RunDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` in this folder (mode 0600: it may hold keys).
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let file = self.path.join(name);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&file)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
        f.write_all(contents.as_bytes()).unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
        file
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("BASTION_TESTS_KEEP").is_some() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
