//! One service per tunnel interface in a network namespace. A second `bastion run` for the
//! same interface would attach to the first one's TUN and replace its nftables table; so
//! before it touches anything, a service takes a lock named after its interface and its
//! network namespace, and refuses to start while another process holds it.
//!
//! The lock is `flock` on `/run/bastion/<interface>.net-<namespace inode>.lock` (the folder
//! checked like the control socket's: root's, writable by nobody else, so no other user can
//! hold or swap it). It goes with the process, also when the process is killed; the file holds
//! the holder's PID, for the message of the one refused. Services in different namespaces, or
//! with different interfaces, never meet here.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error(
        "another bastion service (pid {holder}) runs interface {interface} in this network namespace \
         (it holds {}); stop it first, or give this one another [interface] name", path.display()
    )]
    Running { interface: String, holder: String, path: PathBuf },
    #[error("instance lock {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Held for the life of the service.
pub struct InstanceLock {
    _file: nix::fcntl::Flock<File>,
}

/// Takes the lock of `interface` in this network namespace, in `folder`.
pub fn acquire(folder: &Path, interface: &str) -> Result<InstanceLock, InstanceError> {
    let namespace = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).unwrap_or(0);
    let path = folder.join(format!("{interface}.net-{namespace}.lock"));
    let io = |source: std::io::Error| InstanceError::Io { path: path.clone(), source };
    crate::control::prepare_folder(folder).map_err(io)?;
    let file =
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
    let mut file = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim().chars().filter(char::is_ascii_digit).take(10).collect::<String>();
            return Err(InstanceError::Running {
                interface: interface.to_string(),
                holder: if holder.is_empty() { "unknown".into() } else { holder },
                path,
            });
        }
        Err((_, errno)) => return Err(io(errno.into())),
    };
    file.set_len(0).and_then(|()| file.rewind()).and_then(|()| writeln!(file, "{}", std::process::id())).map_err(io)?;
    Ok(InstanceLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_of_the_same_interface_is_refused_and_others_are_not() {
        let folder = std::env::temp_dir().join(format!("bastion-instance-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&folder);
        let first = acquire(&folder, "wg0").unwrap();
        let e = acquire(&folder, "wg0").err().unwrap();
        let text = e.to_string();
        assert!(
            text.contains(&format!("another bastion service (pid {}) runs interface wg0", std::process::id())),
            "{text}"
        );
        let other = acquire(&folder, "wg1").expect("another interface is another lock");
        drop(first);
        let again = acquire(&folder, "wg0").expect("free again once the holder is gone");
        drop((other, again));
        std::fs::remove_dir_all(&folder).unwrap();
    }
}
