//! What a disk file is, before anything is uploaded: a bastion image (a GPT disk whose ESP holds
//! a Unified Kernel Image at the UEFI removable-media path, with `ID=bastion` in its `.osrel`),
//! its architecture and version, and which 512 KiB blocks hold data.
//!
//! Every check says what was found and what was expected; a file that is not such an image is
//! an error, never a panic.

use crate::arch::Arch;
use crate::{esp, gpt, uki};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The EBS direct APIs' block.
pub const BLOCK: u64 = 512 << 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    pub arch: Arch,
    /// `VERSION_ID` of the image's os-release.
    pub version: String,
    pub size: u64,
    /// Indices of the 512 KiB blocks that are not all zeros.
    pub nonzero_blocks: Vec<u64>,
}

impl ImageFacts {
    /// The volume size of the snapshot: the file's size in GiB, rounded up, at least 1.
    pub fn volume_gib(&self) -> u64 {
        self.size.div_ceil(1 << 30).max(1)
    }
}

/// The AMI architecture name.
pub fn ami_architecture(arch: Arch) -> &'static str {
    match arch {
        Arch::Aarch64 => "arm64",
        Arch::X86_64 => "x86_64",
    }
}

const EXPECTED: &str = "expected a disk image made by `bastion-image build` (`make image` writes out/ARCH/disk.img)";

pub fn inspect(path: &Path) -> Result<ImageFacts, String> {
    let shown = path.display();
    let mut file = File::open(path).map_err(|e| format!("{shown}: cannot open: {e}"))?;
    let size = file.metadata().map_err(|e| format!("{shown}: {e}"))?.len();
    if size < 4 << 20 || size % gpt::SECTOR != 0 {
        return Err(format!("{shown}: {size} bytes is not a disk image; {EXPECTED}"));
    }
    let mut header = [0u8; 512];
    read_at(&mut file, gpt::SECTOR, &mut header).map_err(|e| format!("{shown}: {e}"))?;
    if &header[..8] != b"EFI PART" {
        return Err(format!("{shown}: no GPT header (no \"EFI PART\" at byte 512); {EXPECTED}"));
    }
    let u32_at = |o: usize| u32::from_le_bytes(header[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(header[o..o + 8].try_into().expect("8 bytes"));
    let (entries_lba, entries, entry_size) = (u64_at(72), u32_at(80) as u64, u32_at(84) as u64);
    if !(128..=4096).contains(&entry_size) || entries == 0 || entries > 1024 || entries_lba == 0 {
        return Err(format!("{shown}: the GPT header's partition array is not plausible; {EXPECTED}"));
    }
    let mut array = vec![0u8; (entries * entry_size) as usize];
    read_at(&mut file, entries_lba * gpt::SECTOR, &mut array)
        .map_err(|e| format!("{shown}: reading the partition array: {e}"))?;
    let esp = array
        .chunks(entry_size as usize)
        .find(|e| e[..16] == gpt::ESP_TYPE.0)
        .ok_or_else(|| format!("{shown}: the GPT has no EFI System Partition; {EXPECTED}"))?;
    let first = u64::from_le_bytes(esp[32..40].try_into().expect("8 bytes"));
    let last = u64::from_le_bytes(esp[40..48].try_into().expect("8 bytes"));
    let esp_bytes = last
        .checked_sub(first)
        .map(|n| (n + 1) * gpt::SECTOR)
        .filter(|&n| n <= 1 << 30 && first * gpt::SECTOR + n <= size);
    let esp_bytes = esp_bytes
        .ok_or_else(|| format!("{shown}: the ESP's bounds ({first}–{last}) do not fit the disk; {EXPECTED}"))?;
    let mut volume = vec![0u8; esp_bytes as usize];
    read_at(&mut file, first * gpt::SECTOR, &mut volume).map_err(|e| format!("{shown}: reading the ESP: {e}"))?;
    // fatfs is not written for hostile volumes: a broken one must be an error, not a crash.
    let found = std::panic::catch_unwind(|| {
        [Arch::Aarch64, Arch::X86_64]
            .into_iter()
            .find_map(|arch| esp::read_file(&volume, arch.efi_boot_path()).ok().map(|uki| (arch, uki)))
    })
    .ok()
    .flatten();
    let (arch, uki_bytes) =
        found.ok_or_else(|| format!("{shown}: the ESP holds no EFI/BOOT/BOOTAA64.EFI or BOOTX64.EFI; {EXPECTED}"))?;
    let pe = uki::parse(&uki_bytes).map_err(|e| format!("{shown}: {}: {e}; {EXPECTED}", arch.efi_boot_path()))?;
    if pe.machine != arch.pe_machine() {
        return Err(format!(
            "{shown}: {} is a PE image for machine {:#x}, not {}",
            arch.efi_boot_path(),
            pe.machine,
            arch.name()
        ));
    }
    let osrel = pe
        .sections
        .iter()
        .find(|s| s.name == ".osrel")
        .and_then(|s| {
            uki_bytes.get(s.raw_offset as usize..(s.raw_offset as usize + s.virtual_size.min(s.raw_size) as usize))
        })
        .ok_or_else(|| {
            format!("{shown}: the boot file is not a Unified Kernel Image (no .osrel section); {EXPECTED}")
        })?;
    let osrel = String::from_utf8_lossy(osrel);
    let field = |name: &str| {
        osrel
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .map(|v| v.trim_matches(|c| c == '"' || c == '\0').to_string())
    };
    if field("ID").as_deref() != Some("bastion") {
        return Err(format!(
            "{shown}: its os-release says ID={:?}, not bastion; {EXPECTED}",
            field("ID").unwrap_or_default()
        ));
    }
    let version = field("VERSION_ID")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{shown}: its os-release has no VERSION_ID"))?;
    let nonzero_blocks = nonzero_blocks(&mut file, size).map_err(|e| format!("{shown}: {e}"))?;
    Ok(ImageFacts { arch, version, size, nonzero_blocks })
}

fn read_at(file: &mut File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

/// The indices of the blocks with data; holes of a sparse file are skipped quickly by reading.
fn nonzero_blocks(file: &mut File, size: u64) -> std::io::Result<Vec<u64>> {
    let mut found = Vec::new();
    let mut buf = vec![0u8; BLOCK as usize];
    for index in 0..size.div_ceil(BLOCK) {
        let len = (size - index * BLOCK).min(BLOCK) as usize;
        read_at(file, index * BLOCK, &mut buf[..len])?;
        if buf[..len].iter().any(|&b| b != 0) {
            found.push(index);
        }
    }
    Ok(found)
}

/// One block's bytes, zero-padded to the full 512 KiB (the last block of an odd-sized file).
pub fn read_block(file: &mut File, size: u64, index: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; BLOCK as usize];
    let len = size.saturating_sub(index * BLOCK).min(BLOCK) as usize;
    read_at(file, index * BLOCK, &mut buf[..len])?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str, bytes: &[u8], size: u64) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("bastion-inspect-{}-{name}", std::process::id()));
        let file = File::create(&path).unwrap();
        file.set_len(size).unwrap();
        std::fs::write(&path, bytes).unwrap();
        File::options().write(true).open(&path).unwrap().set_len(size).unwrap();
        path
    }

    #[test]
    fn files_that_are_not_bastion_images_are_refused_with_what_was_expected() {
        let cases: [(&str, Vec<u8>, u64, &str); 3] = [
            ("small", b"hello".to_vec(), 5, "is not a disk image"),
            ("zeros", vec![0u8; 1024], 8 << 20, "no GPT header"),
            (
                "gpt-no-esp",
                {
                    let mut v = vec![0u8; 2048];
                    v[512..520].copy_from_slice(b"EFI PART");
                    v[512 + 72] = 2;
                    v[512 + 80] = 128;
                    v[512 + 84] = 128;
                    v
                },
                8 << 20,
                "no EFI System Partition",
            ),
        ];
        for (name, bytes, size, expected) in cases {
            let path = scratch(name, &bytes, size);
            let e = inspect(&path).unwrap_err();
            assert!(e.contains(expected) && e.contains("bastion-image build"), "{name}: {e}");
            std::fs::remove_file(path).unwrap();
        }
        assert!(inspect(Path::new("/nonexistent/disk.img")).unwrap_err().contains("cannot open"));
    }

    #[test]
    fn data_blocks_are_found_and_the_volume_rounds_up() {
        let mut bytes = vec![0u8; (3 * BLOCK) as usize];
        bytes[10] = 1;
        bytes[(2 * BLOCK + 5) as usize] = 7;
        let path = scratch("blocks", &bytes, 3 * BLOCK + 100);
        let mut file = File::open(&path).unwrap();
        assert_eq!(nonzero_blocks(&mut file, 3 * BLOCK + 100).unwrap(), vec![0, 2]);
        let last = read_block(&mut file, 3 * BLOCK + 100, 3).unwrap();
        assert_eq!(last.len(), BLOCK as usize);
        std::fs::remove_file(path).unwrap();
        let facts =
            ImageFacts { arch: Arch::Aarch64, version: "v".into(), size: (1 << 30) + 1, nonzero_blocks: vec![] };
        assert_eq!(facts.volume_gib(), 2);
        assert_eq!(ImageFacts { size: 1, ..facts }.volume_gib(), 1);
    }
}
