//! Editing a config file in place (`bastion peer add/remove`): one editor at a time, the file a
//! symlink points to edited where it is, and the new text replacing the old in one rename.
//!
//! What to write is `enroll`'s decision (no I/O); this module only does the file work
//! ([`add_peer`], [`remove_peer`]). The lock
//! is `flock` on the file's folder, held from before the file is read until after it is
//! replaced: two `peer add` at once then run one after the other, and the second sees the
//! first one's peer (so the two never get the same tunnel address). The lock goes with the
//! process, also when it is killed, and leaves no file behind.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::{self, ConfigError};
use crate::enroll::{self, AddRequest, Added};
use crate::keys;

/// Why `peer add`/`peer remove` changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The file, or what the edit would make of it, is not a valid config (`check-config`'s
    /// exit 2).
    #[error("{0}")]
    Invalid(ConfigError),
    /// The file could not be locked, read or written (exit 1); the message names it.
    #[error("{0}")]
    Io(String),
}

/// `bastion peer add`: under the lock, reads `given` (a symlink followed), adds the peer
/// (`enroll::add` decides), writes `fragment` first when asked (so the file never holds a peer
/// whose fragment is missing), then the file. The new key pair is made here and its private
/// half leaves only inside the returned client config.
pub fn add_peer(given: &Path, request: &AddRequest, fragment: Option<&Path>) -> Result<Added, EditError> {
    let (config, _lock) = lock_for_edit(given)?;
    let text = config::read_config_file(&config).map_err(EditError::Invalid)?;
    let origin = given.display().to_string();
    let client_key = keys::PrivateKey::generate();
    let added = enroll::add(&text, &origin, given.parent(), request, &client_key).map_err(EditError::Invalid)?;
    drop(client_key);
    if let Some(path) = fragment {
        write_atomically(path, added.fragment.as_bytes(), None)
            .map_err(|e| io_failed(&format!("{}: cannot write the fragment: {e}", path.display())))?;
    }
    write_atomically(&config, added.text.as_bytes(), Some(&text))
        .map_err(|e| io_failed(&format!("{origin}: not changed: {e}")))?;
    Ok(added)
}

/// `bastion peer remove`: under the lock, the peer `name` out of `given` (a symlink followed).
pub fn remove_peer(given: &Path, name: &str) -> Result<(), EditError> {
    let (config, _lock) = lock_for_edit(given)?;
    let text = config::read_config_file(&config).map_err(EditError::Invalid)?;
    let origin = given.display().to_string();
    let new_text = enroll::remove(&text, &origin, given.parent(), name).map_err(EditError::Invalid)?;
    write_atomically(&config, new_text.as_bytes(), Some(&text))
        .map_err(|e| io_failed(&format!("{origin}: not changed: {e}")))
}

/// The file to edit (a symlink followed) and the lock that makes this the only edit of it.
fn lock_for_edit(given: &Path) -> Result<(PathBuf, EditLock), EditError> {
    let failed = |e: std::io::Error| io_failed(&format!("{}: not changed: {e}", given.display()));
    let config = resolve(given).map_err(failed)?;
    let lock = lock(&config).map_err(failed)?;
    Ok((config, lock))
}

fn io_failed(message: &str) -> EditError {
    EditError::Io(keys::redact_key_like(message).into_owned())
}

/// The config file an edit works on: the file a symlink points to (followed to the end), so
/// the link stays a link; the path as given otherwise.
pub fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => std::fs::canonicalize(path),
        _ => Ok(path.to_path_buf()),
    }
}

/// Held while a file of the folder is edited; released when dropped.
pub struct EditLock {
    _folder: nix::fcntl::Flock<File>,
}

/// Waits until no other editor holds the folder of `file`, then holds it.
pub fn lock(file: &Path) -> std::io::Result<EditLock> {
    let folder = folder_of(file);
    let handle = File::open(&folder)
        .map_err(|e| std::io::Error::new(e.kind(), format!("open {} to lock it: {e}", folder.display())))?;
    let locked = nix::fcntl::Flock::lock(handle, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, errno)| {
        std::io::Error::new(std::io::Error::from(errno).kind(), format!("lock {}: {errno}", folder.display()))
    })?;
    Ok(EditLock { _folder: locked })
}

fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Replaces `path` with `bytes` so a reader sees the old file or the new one, never a part:
/// a temporary file in the same folder (same mode and owner as the file it replaces), fsync,
/// rename over, fsync of the folder. With `expected`, the file must still hold that text just
/// before the rename (an edit by something that takes no lock, an editor, is not overwritten).
pub fn write_atomically(path: &Path, bytes: &[u8], expected: Option<&str>) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let dir = folder_of(path);
    let file_name = path.file_name().ok_or_else(|| std::io::Error::other("expected a file name"))?;
    let existing = std::fs::metadata(path).ok();
    let mode = existing.as_ref().map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let temp = dir.join(format!(".{}.bastion-{}.tmp", file_name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode & 0o777).open(&temp)?;
        if let Some(m) = &existing {
            // Keep the owner when we may (as root); otherwise the file becomes ours, as any editor's.
            let _ = std::os::unix::fs::fchown(&file, Some(m.uid()), Some(m.gid()));
        }
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        if let Some(expected) = expected {
            let now = crate::config::read_config_file(path).map_err(|e| std::io::Error::other(e.to_string()))?;
            if now.as_str() != expected {
                return Err(std::io::Error::other("the file changed while it was being edited; run the command again"));
            }
        }
        std::fs::rename(&temp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bastion-edit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_symlinked_config_is_edited_where_it_points_and_stays_a_link() {
        let dir = scratch("link");
        std::fs::create_dir(dir.join("real")).unwrap();
        std::fs::write(dir.join("real/bastion.toml"), "old\n").unwrap();
        std::os::unix::fs::symlink("real/bastion.toml", dir.join("bastion.toml")).unwrap();
        let target = resolve(&dir.join("bastion.toml")).unwrap();
        assert_eq!(target, std::fs::canonicalize(dir.join("real/bastion.toml")).unwrap());
        write_atomically(&target, b"new\n", Some("old\n")).unwrap();
        assert!(std::fs::symlink_metadata(dir.join("bastion.toml")).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(dir.join("bastion.toml")).unwrap(), "new\n");
        assert_eq!(resolve(&dir.join("real/bastion.toml")).unwrap(), dir.join("real/bastion.toml"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn edits_under_the_lock_never_lose_one_another() {
        // Read-modify-write of a counter by 8 threads × 25 edits, each with its own open file
        // description (as separate processes have): without the lock some increments are lost.
        let dir = scratch("lock");
        let file = dir.join("counter");
        std::fs::write(&file, "0").unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let file = file.clone();
                let done = done.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        let _lock = lock(&file).unwrap();
                        let n: u64 = std::fs::read_to_string(&file).unwrap().parse().unwrap();
                        std::thread::yield_now();
                        write_atomically(&file, (n + 1).to_string().as_bytes(), None).unwrap();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), done.load(Ordering::Relaxed).to_string());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
