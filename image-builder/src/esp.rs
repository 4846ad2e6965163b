//! The EFI System Partition: a FAT32 file system, built in memory by the `fatfs` crate, holding
//! the files the firmware boots. Deterministic: the volume ID is given, and with fatfs's
//! `chrono` feature off every timestamp is the DOS epoch (1980-01-01).

use std::io::{Cursor, Read, Write};

/// The smallest ESP this builder makes: FAT32 needs at least 65525 data clusters, and at 1 KiB
/// per cluster that takes 64 MiB plus the FATs; 80 MiB leaves a margin.
pub const MIN_SIZE: u64 = 80 << 20;
const CLUSTER: u32 = 1024;

/// Makes a FAT32 volume of `size` bytes holding `files` (path with `/` separators, contents).
pub fn build(size: u64, volume_id: u32, files: &[(&str, &[u8])]) -> Result<Vec<u8>, String> {
    if size < MIN_SIZE || !size.is_multiple_of(512) {
        return Err(format!("ESP size {size} must be a multiple of 512 and at least {MIN_SIZE}"));
    }
    let needed: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
    // Leave room for the FATs and directories; a clear message beats fatfs's "no space".
    if needed + (size / 16) > size {
        return Err(format!("ESP of {} MiB is too small for {} MiB of boot files", size >> 20, needed >> 20));
    }
    let mut disk = Cursor::new(vec![0u8; size as usize]);
    let options = fatfs::FormatVolumeOptions::new()
        .fat_type(fatfs::FatType::Fat32)
        .bytes_per_cluster(CLUSTER)
        .volume_id(volume_id)
        .volume_label(*b"BASTION-ESP");
    fatfs::format_volume(&mut disk, options).map_err(|e| format!("formatting the ESP: {e}"))?;
    disk.set_position(0);
    {
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new())
            .map_err(|e| format!("opening the new ESP: {e}"))?;
        for (path, data) in files {
            let root = fs.root_dir();
            let parts: Vec<&str> = path.split('/').collect();
            let mut dir = root.clone();
            for part in &parts[..parts.len() - 1] {
                dir = dir.create_dir(part).map_err(|e| format!("ESP: creating {part}: {e}"))?;
            }
            let mut file = dir.create_file(parts[parts.len() - 1]).map_err(|e| format!("ESP: creating {path}: {e}"))?;
            file.truncate().map_err(|e| format!("ESP: {path}: {e}"))?;
            file.write_all(data).map_err(|e| format!("ESP: writing {path}: {e}"))?;
            file.flush().map_err(|e| format!("ESP: writing {path}: {e}"))?;
        }
        fs.unmount().map_err(|e| format!("ESP: {e}"))?;
    }
    Ok(disk.into_inner())
}

/// Reads one file back from a FAT volume (for checks and tests).
pub fn read_file(volume: &[u8], path: &str) -> Result<Vec<u8>, String> {
    let fs = fatfs::FileSystem::new(Cursor::new(volume.to_vec()), fatfs::FsOptions::new())
        .map_err(|e| format!("ESP: {e}"))?;
    let mut file = fs.root_dir().open_file(path).map_err(|e| format!("ESP: {path}: {e}"))?;
    let mut out = Vec::new();
    file.read_to_end(&mut out).map_err(|e| format!("ESP: {path}: {e}"))?;
    Ok(out)
}

#[cfg(test)]
/// The FAT type fatfs sees in a volume.
pub fn fat_type(volume: &[u8]) -> Result<fatfs::FatType, String> {
    let fs = fatfs::FileSystem::new(Cursor::new(volume.to_vec()), fatfs::FsOptions::new())
        .map_err(|e| format!("ESP: {e}"))?;
    Ok(fs.fat_type())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_fat32_volume_that_reads_back() {
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let vol = build(MIN_SIZE, 0x1234_5678, &[("EFI/BOOT/BOOTAA64.EFI", &big), ("hello.txt", b"hi")]).unwrap();
        assert_eq!(fat_type(&vol).unwrap(), fatfs::FatType::Fat32);
        assert_eq!(read_file(&vol, "EFI/BOOT/BOOTAA64.EFI").unwrap(), big);
        assert_eq!(read_file(&vol, "hello.txt").unwrap(), b"hi");
        // Boot sector: jump, "FAT32   " type string, volume ID, 0x55AA.
        assert_eq!(&vol[82..90], b"FAT32   ");
        assert_eq!(&vol[67..71], &0x1234_5678u32.to_le_bytes());
        assert_eq!(&vol[510..512], &[0x55, 0xaa]);
        assert_eq!(
            vol,
            build(MIN_SIZE, 0x1234_5678, &[("EFI/BOOT/BOOTAA64.EFI", &big), ("hello.txt", b"hi")]).unwrap()
        );
    }

    #[test]
    fn refuses_sizes_it_cannot_hold() {
        assert!(build(MIN_SIZE - 512, 1, &[]).is_err());
        let huge = vec![1u8; MIN_SIZE as usize];
        let e = build(MIN_SIZE, 1, &[("x", &huge)]).unwrap_err();
        assert!(e.contains("too small"), "{e}");
    }
}
