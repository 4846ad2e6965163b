//! The "newc" cpio archive format the kernel unpacks as its initramfs: writing an archive from a
//! list of entries, and reading one back (for tests and for checking what was built).
//!
//! Written archives are deterministic: entries in the given order, inode numbers counted from 1,
//! every timestamp and owner zero.

#[cfg(test)]
use std::fmt;

const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &str = "TRAILER!!!";

pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFCHR: u32 = 0o020000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    /// A character device node (major, minor).
    CharDevice(u32, u32),
}

/// One archive member. `path` has no leading slash ("dev/console").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    /// Permission bits only (0o755); the file type comes from `kind`.
    pub mode: u32,
    pub kind: Kind,
}

impl Entry {
    pub fn dir(path: &str) -> Entry {
        Entry { path: path.to_string(), mode: 0o755, kind: Kind::Dir }
    }
    pub fn file(path: &str, mode: u32, data: Vec<u8>) -> Entry {
        Entry { path: path.to_string(), mode, kind: Kind::File(data) }
    }
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn header(out: &mut Vec<u8>, ino: u32, mode: u32, size: u32, rdev: (u32, u32), name: &str) {
    let fields = [
        ino,
        mode,
        0,
        /* uid */ 0,
        /* gid */ 1,
        /* nlink */ 0,
        /* mtime */ size,
        0,
        0, /* dev */
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, /* check */
    ];
    out.extend_from_slice(MAGIC);
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

/// Serializes `entries` (in order) followed by the trailer.
pub fn write(entries: &[Entry]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if e.path.is_empty() || e.path.starts_with('/') || e.path.contains('\0') {
            return Err(format!("cpio: bad member path {:?}", e.path));
        }
        let ino = i as u32 + 1;
        let perm = e.mode & 0o7777;
        match &e.kind {
            Kind::Dir => header(&mut out, ino, S_IFDIR | perm, 0, (0, 0), &e.path),
            Kind::CharDevice(major, minor) => header(&mut out, ino, S_IFCHR | perm, 0, (*major, *minor), &e.path),
            Kind::File(data) => {
                let size = u32::try_from(data.len()).map_err(|_| format!("cpio: {} is larger than 4 GiB", e.path))?;
                header(&mut out, ino, S_IFREG | perm, size, (0, 0), &e.path);
                out.extend_from_slice(data);
                pad4(&mut out);
            }
        }
    }
    header(&mut out, 0, 0, 0, (0, 0), TRAILER);
    Ok(out)
}

#[cfg(test)]
#[derive(Debug, PartialEq, Eq)]
pub struct ParseError(pub String);

#[cfg(test)]
impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpio: {}", self.0)
    }
}

#[cfg(test)]
/// Reads a newc archive back into entries (up to the trailer). Garbage is an error.
pub fn read(data: &[u8]) -> Result<Vec<Entry>, ParseError> {
    let bad = |m: &str| ParseError(m.to_string());
    let mut entries = Vec::new();
    let mut at = 0usize;
    loop {
        let head = data.get(at..at + 110).ok_or_else(|| bad("truncated header"))?;
        if &head[0..6] != MAGIC {
            return Err(bad("bad magic (not a newc archive)"));
        }
        let mut f = [0u32; 13];
        for (i, field) in f.iter_mut().enumerate() {
            let hex = std::str::from_utf8(&head[6 + i * 8..14 + i * 8]).map_err(|_| bad("non-ASCII header"))?;
            *field = u32::from_str_radix(hex, 16).map_err(|_| bad("non-hex header field"))?;
        }
        let (mode, size, rmajor, rminor, namesize) = (f[1], f[6] as usize, f[9], f[10], f[11] as usize);
        if namesize == 0 {
            return Err(bad("empty member name"));
        }
        let name_start = at + 110;
        let name = data.get(name_start..name_start + namesize).ok_or_else(|| bad("truncated name"))?;
        if name[namesize - 1] != 0 {
            return Err(bad("member name is not NUL-terminated"));
        }
        let name = std::str::from_utf8(&name[..namesize - 1]).map_err(|_| bad("member name is not UTF-8"))?;
        let data_start = (name_start + namesize + 3) & !3;
        if name == TRAILER {
            return Ok(entries);
        }
        let body = data.get(data_start..data_start + size).ok_or_else(|| bad("truncated member data"))?;
        let kind = match mode & 0o170000 {
            S_IFDIR => Kind::Dir,
            S_IFREG => Kind::File(body.to_vec()),
            S_IFCHR => Kind::CharDevice(rmajor, rminor),
            other => return Err(ParseError(format!("{name}: unsupported file type {other:o}"))),
        };
        entries.push(Entry { path: name.to_string(), mode: mode & 0o7777, kind });
        at = (data_start + size + 3) & !3;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Entry> {
        vec![
            Entry::dir("dev"),
            Entry { path: "dev/console".into(), mode: 0o600, kind: Kind::CharDevice(5, 1) },
            Entry::file("init", 0o755, b"\x7fELF binary".to_vec()),
            Entry::file("etc/os-release", 0o644, b"ID=bastion\n".to_vec()),
            Entry::file("empty", 0o644, Vec::new()),
        ]
    }

    #[test]
    fn round_trips_and_is_aligned() {
        let bytes = write(&sample()).unwrap();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(read(&bytes).unwrap(), sample());
        // Same input, same bytes.
        assert_eq!(bytes, write(&sample()).unwrap());
    }

    #[test]
    fn header_fields_are_what_the_kernel_expects() {
        let bytes = write(&sample()[1..2]).unwrap();
        let head = std::str::from_utf8(&bytes[..110]).unwrap();
        assert_eq!(&head[0..6], "070701");
        // mode: character device, 0600
        assert_eq!(&head[14..22], "00002180");
        // rdevmajor 5, rdevminor 1
        assert_eq!(&head[78..86], "00000005");
        assert_eq!(&head[86..94], "00000001");
        // namesize counts the NUL
        assert_eq!(&head[94..102], format!("{:08x}", "dev/console".len() + 1));
        assert!(bytes.ends_with(b"TRAILER!!!\0\0\0\0") || bytes.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn gnu_cpio_reads_it_when_installed() {
        let Ok(status) = std::process::Command::new("cpio").arg("--version").output() else {
            eprintln!("cpio not installed; skipping the cross-check");
            return;
        };
        assert!(status.status.success());
        let dir = std::env::temp_dir().join(format!("bastion-cpio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let archive = dir.join("a.cpio");
        std::fs::write(&archive, write(&sample()).unwrap()).unwrap();
        let out = std::process::Command::new("cpio").args(["-t", "-v", "-F"]).arg(&archive).output().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let listing = String::from_utf8(out.stdout).unwrap();
        assert!(listing.contains("crw-------"), "{listing}");
        assert!(listing.contains("5,   1") || listing.contains("5, 1"), "{listing}");
        assert!(listing.contains("etc/os-release"), "{listing}");
    }

    #[test]
    fn rejects_garbage() {
        assert!(read(b"").is_err());
        assert!(read(&[b'0'; 200]).is_err());
        let bytes = write(&sample()).unwrap();
        for cut in [5, 110, 120, bytes.len() / 2, bytes.len() - 8] {
            assert!(read(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(write(&[Entry::dir("/abs")]).is_err());
    }
}
