//! The initramfs: the whole appliance OS as a gzip-compressed newc cpio archive.
//!
//! Layout (what the init can rely on):
//! - `/init`: the bastion binary;
//! - `/dev/console` (char 5:1): the kernel opens it for the init's stdin/stdout/stderr before
//!   devtmpfs exists; empty mount points `/dev /proc /sys /run /tmp`;
//! - `/lib/modules/<kernel>/…`: the selected modules, and `/etc/bastion/modules`, their absolute
//!   paths one per line in load order (dependencies first), nothing else on a line;
//! - `/etc/os-release` with the image version; `/etc/bastion/bastion.toml` if a config was baked
//!   in (mode 0600: it may hold the private key);
//! - every file of `rootfs/`, as it is in the repository (modes normalized to 0644/0755).
//!
//! Everything is owned by root with timestamp 0, in path order, so the same inputs give the
//! same bytes.

use crate::cpio::{self, Entry, Kind};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub const MODULE_LIST: &str = "etc/bastion/modules";
pub const BAKED_CONFIG: &str = "etc/bastion/bastion.toml";

/// The archive's members by path; parents are added as directories when the archive is made.
#[derive(Default)]
pub struct Contents {
    entries: BTreeMap<String, Entry>,
}

impl Contents {
    pub fn new() -> Contents {
        let mut c = Contents::default();
        for dir in ["dev", "proc", "sys", "run", "tmp"] {
            c.entries.insert(dir.into(), Entry::dir(dir));
        }
        c.entries.insert(
            "dev/console".into(),
            Entry { path: "dev/console".into(), mode: 0o600, kind: Kind::CharDevice(5, 1) },
        );
        c
    }

    /// Adds a file; a second file at the same path is an error naming `source`.
    pub fn add_file(&mut self, path: &str, mode: u32, data: Vec<u8>, source: &str) -> Result<(), String> {
        let path = path.trim_start_matches('/').to_string();
        if self.entries.contains_key(&path) {
            return Err(format!("{source}: /{path} is already in the initramfs (from another input)"));
        }
        self.entries.insert(path.clone(), Entry::file(&path, mode, data));
        Ok(())
    }

    /// Adds every file under `dir` (the repository's `rootfs/`).
    pub fn add_tree(&mut self, dir: &Path) -> Result<usize, String> {
        let mut files = Vec::new();
        collect(dir, dir, &mut files)?;
        let count = files.len();
        for (rel, path) in files {
            let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mode = if meta.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 };
            let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            self.add_file(&rel, mode, data, &path.display().to_string())?;
        }
        Ok(count)
    }

    /// The uncompressed archive.
    pub fn archive(&self) -> Result<Vec<u8>, String> {
        let mut all = self.entries.clone();
        for path in self.entries.keys() {
            let mut up = Path::new(path).parent();
            while let Some(dir) = up.filter(|d| !d.as_os_str().is_empty()) {
                let dir_s = dir.to_string_lossy().into_owned();
                all.entry(dir_s.clone()).or_insert_with(|| Entry::dir(&dir_s));
                up = dir.parent();
            }
        }
        // BTreeMap order puts "a" before "a/b": every folder precedes its contents.
        let entries: Vec<Entry> = all.into_values().collect();
        cpio::write(&entries)
    }
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<(), String> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| format!("{}: {e}", path.display()))?;
        if kind.is_dir() {
            collect(root, &path, out)?;
        } else if kind.is_file() {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let rel = rel.to_str().ok_or_else(|| format!("{}: file name is not UTF-8", path.display()))?;
            out.push((rel.to_string(), path.clone()));
        } else {
            return Err(format!("{}: only regular files and folders can go into the initramfs", path.display()));
        }
    }
    Ok(())
}

/// gzip at the best ratio; the header carries no name and time 0.
pub fn compress(archive: &[u8]) -> Result<Vec<u8>, String> {
    let mut gz = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::best());
    gz.write_all(archive).map_err(|e| format!("compressing the initramfs: {e}"))?;
    gz.finish().map_err(|e| format!("compressing the initramfs: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn parents_are_created_and_paths_are_unique() {
        let mut c = Contents::new();
        c.add_file("/init", 0o755, b"bin".to_vec(), "binary").unwrap();
        c.add_file("lib/modules/6.1/kernel/net/tun.ko", 0o644, b"ko".to_vec(), "kernel").unwrap();
        let e = c.add_file("init", 0o644, b"x".to_vec(), "rootfs/init").unwrap_err();
        assert!(e.contains("rootfs/init: /init is already"), "{e}");
        let entries = cpio::read(&c.archive().unwrap()).unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        for dir in ["lib", "lib/modules", "lib/modules/6.1", "lib/modules/6.1/kernel/net", "dev", "proc"] {
            let e = entries.iter().find(|e| e.path == dir).unwrap_or_else(|| panic!("{dir} missing: {paths:?}"));
            assert_eq!(e.kind, Kind::Dir);
        }
        // A directory always comes before what it holds.
        for (i, e) in entries.iter().enumerate() {
            if let Some(parent) = Path::new(&e.path).parent().filter(|p| !p.as_os_str().is_empty()) {
                let at = paths.iter().position(|p| Path::new(p) == parent).unwrap();
                assert!(at < i, "{} before its parent", e.path);
            }
        }
        let console = entries.iter().find(|e| e.path == "dev/console").unwrap();
        assert_eq!((console.mode, &console.kind), (0o600, &Kind::CharDevice(5, 1)));
    }

    #[test]
    fn compression_is_deterministic_gzip() {
        let data = vec![7u8; 100_000];
        let a = compress(&data).unwrap();
        assert_eq!(a, compress(&data).unwrap());
        assert_eq!(&a[..2], &[0x1f, 0x8b]);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&a[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }
}
