//! The GPT disk layout: a protective MBR, the primary and backup GPT headers and partition
//! arrays, and one partition (the ESP). Only the metadata sectors are produced here; the caller
//! places them and the partition's contents into the (sparse) disk file.
//!
//! GUIDs are given by the caller (derived from the version), so the same inputs give the same
//! bytes.

pub const SECTOR: u64 = 512;
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
/// Sectors taken by a partition entry array (128 × 128 bytes).
const ARRAY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;
/// Partitions start on 1 MiB boundaries, as every partitioning tool does.
pub const FIRST_PARTITION_LBA: u64 = 2048;

/// EFI System Partition type GUID C12A7328-F81F-11D2-BA4B-00A0C93EC93B.
pub const ESP_TYPE: Guid =
    Guid([0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b]);

/// A GUID in its on-disk byte order (first three fields little-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// A version-4-shaped GUID from 16 bytes of a hash.
    pub fn from_hash(bytes: &[u8]) -> Guid {
        let mut g = [0u8; 16];
        g.copy_from_slice(&bytes[..16]);
        g[7] = (g[7] & 0x0f) | 0x40; // version 4 (the high nibble of the third field, LE)
        g[8] = (g[8] & 0x3f) | 0x80; // RFC 4122 variant
        Guid(g)
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = &self.0;
        write!(
            f,
            "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-",
            g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9]
        )?;
        for b in &g[10..] {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

pub struct Partition {
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub first_lba: u64,
    pub last_lba: u64,
    pub name: &'static str,
}

/// Metadata to write: (byte offset, bytes).
pub struct Layout {
    pub writes: Vec<(u64, Vec<u8>)>,
}

fn protective_mbr(total_sectors: u64) -> Vec<u8> {
    let mut mbr = vec![0u8; SECTOR as usize];
    let e = 446;
    mbr[e + 1..e + 4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
    mbr[e + 4] = 0xee;
    mbr[e + 5..e + 8].copy_from_slice(&[0xff, 0xff, 0xff]);
    mbr[e + 8..e + 12].copy_from_slice(&1u32.to_le_bytes());
    let size = u32::try_from(total_sectors - 1).unwrap_or(u32::MAX);
    mbr[e + 12..e + 16].copy_from_slice(&size.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    mbr
}

fn entry_array(parts: &[Partition]) -> Vec<u8> {
    let mut array = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    for (i, p) in parts.iter().enumerate() {
        let e = &mut array[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(&p.type_guid.0);
        e[16..32].copy_from_slice(&p.unique_guid.0);
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        for (j, unit) in p.name.encode_utf16().take(36).enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
        }
    }
    array
}

fn header(disk_guid: Guid, my_lba: u64, alternate_lba: u64, entries_lba: u64, total: u64, array_crc: u32) -> Vec<u8> {
    let mut h = vec![0u8; SECTOR as usize];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&my_lba.to_le_bytes());
    h[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
    h[40..48].copy_from_slice(&(2 + ARRAY_SECTORS).to_le_bytes());
    h[48..56].copy_from_slice(&(total - 2 - ARRAY_SECTORS).to_le_bytes());
    h[56..72].copy_from_slice(&disk_guid.0);
    h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
    h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
    h[88..92].copy_from_slice(&array_crc.to_le_bytes());
    let crc = crc32fast::hash(&h[..92]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The last LBA a partition may use on a disk of `total_sectors`.
pub fn last_usable_lba(total_sectors: u64) -> u64 {
    total_sectors - 2 - ARRAY_SECTORS
}

/// Lays out a GPT disk of `disk_size` bytes with `parts`.
pub fn layout(disk_size: u64, disk_guid: Guid, parts: &[Partition]) -> Result<Layout, String> {
    if !disk_size.is_multiple_of(SECTOR) {
        return Err(format!("disk size {disk_size} is not a multiple of {SECTOR}"));
    }
    let total = disk_size / SECTOR;
    if total < FIRST_PARTITION_LBA + 2 + ARRAY_SECTORS {
        return Err(format!("disk size {disk_size} is too small for a GPT"));
    }
    for p in parts {
        if p.first_lba < 2 + ARRAY_SECTORS || p.last_lba > last_usable_lba(total) || p.first_lba > p.last_lba {
            return Err(format!(
                "partition {} (LBA {}..={}) does not fit the disk's usable LBAs {}..={}",
                p.name,
                p.first_lba,
                p.last_lba,
                2 + ARRAY_SECTORS,
                last_usable_lba(total)
            ));
        }
    }
    let array = entry_array(parts);
    let array_crc = crc32fast::hash(&array);
    let backup_array_lba = total - 1 - ARRAY_SECTORS;
    Ok(Layout {
        writes: vec![
            (0, protective_mbr(total)),
            (SECTOR, header(disk_guid, 1, total - 1, 2, total, array_crc)),
            (2 * SECTOR, array.clone()),
            (backup_array_lba * SECTOR, array),
            ((total - 1) * SECTOR, header(disk_guid, total - 1, 1, backup_array_lba, total, array_crc)),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    const MIB: u64 = 1 << 20;

    fn sample_disk(path: &std::path::Path, size: u64) -> (Guid, Guid) {
        let disk_guid = Guid::from_hash(&[0x11; 32]);
        let part_guid = Guid::from_hash(&[0x22; 32]);
        let parts = [Partition {
            type_guid: ESP_TYPE,
            unique_guid: part_guid,
            first_lba: FIRST_PARTITION_LBA,
            last_lba: FIRST_PARTITION_LBA + 4 * MIB / SECTOR - 1,
            name: "EFI System Partition",
        }];
        let l = layout(size, disk_guid, &parts).unwrap();
        let mut f = std::fs::File::create(path).unwrap();
        f.set_len(size).unwrap();
        for (off, bytes) in &l.writes {
            f.seek(SeekFrom::Start(*off)).unwrap();
            f.write_all(bytes).unwrap();
        }
        (disk_guid, part_guid)
    }

    #[test]
    fn the_gpt_crate_reads_what_we_wrote() {
        let path = std::env::temp_dir().join(format!("bastion-gpt-{}.img", std::process::id()));
        let (disk_guid, part_guid) = sample_disk(&path, 16 * MIB);
        let disk = gpt::GptConfig::new().writable(false).open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let hdr = disk.primary_header().unwrap();
        assert_eq!(hdr.disk_guid.to_string().to_uppercase(), disk_guid.to_string());
        assert_eq!(hdr.first_usable, 34);
        assert_eq!(hdr.last_usable, 16 * MIB / SECTOR - 34);
        let backup = disk.backup_header().unwrap();
        assert_eq!(backup.current_lba, 16 * MIB / SECTOR - 1);
        let parts = disk.partitions();
        assert_eq!(parts.len(), 1);
        let p = parts.values().next().unwrap();
        assert_eq!(p.part_type_guid, gpt::partition_types::EFI);
        assert_eq!(p.part_guid.to_string().to_uppercase(), part_guid.to_string());
        assert_eq!(p.first_lba, 2048);
        assert_eq!(p.last_lba, 2048 + 8192 - 1);
        assert_eq!(p.name, "EFI System Partition");
    }

    #[test]
    fn protective_mbr_covers_the_disk() {
        let l = layout(16 * MIB, Guid([1; 16]), &[]).unwrap();
        let mbr = &l.writes[0].1;
        assert_eq!(mbr[446 + 4], 0xee);
        assert_eq!(u32::from_le_bytes(mbr[454..458].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(mbr[458..462].try_into().unwrap()) as u64, 16 * MIB / SECTOR - 1);
        assert_eq!(&mbr[510..], &[0x55, 0xaa]);
    }

    #[test]
    fn guids_have_version_and_variant_bits() {
        let g = Guid::from_hash(&[0xff; 32]).to_string();
        assert_eq!(&g[14..15], "4");
        assert!(matches!(&g[19..20], "8" | "9" | "A" | "B"), "{g}");
    }

    #[test]
    fn refuses_partitions_that_do_not_fit() {
        let p =
            Partition { type_guid: ESP_TYPE, unique_guid: Guid([2; 16]), first_lba: 2048, last_lba: 40_000, name: "x" };
        assert!(layout(16 * MIB, Guid([1; 16]), &[p]).is_err());
        assert!(layout(1000, Guid([1; 16]), &[]).is_err());
    }
}
