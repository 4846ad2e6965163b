//! The Unified Kernel Image: systemd's Linux EFI stub (a small PE program) with the OS release,
//! the kernel command line, the initramfs and the kernel appended as PE sections. The firmware
//! runs it like any EFI program; the stub finds its own sections, loads `.linux` as an EFI image,
//! offers `.initrd` through the LINUX_INITRD_MEDIA device path and passes `.cmdline`.
//!
//! What `objcopy --add-section --change-section-vma` does in the usual recipes, done here on the
//! PE headers directly: new sections start after the stub's last one, each at the next
//! `SectionAlignment` boundary computed from the sizes (never at fixed addresses, which the 27 MB
//! arm64 kernel would overlap), their data at the next `FileAlignment` boundary of the file.

const IMAGE_SCN_CNT_INITIALIZED_DATA: u32 = 0x0000_0040;
const IMAGE_SCN_MEM_READ: u32 = 0x4000_0000;
const SECTION_HEADER_SIZE: usize = 40;
const PE32_PLUS: u16 = 0x20b;

/// The PE header facts the builder needs (and the tests check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub virtual_address: u32,
    pub virtual_size: u32,
    pub raw_offset: u32,
    pub raw_size: u32,
}

#[derive(Debug)]
pub struct PeInfo {
    pub machine: u16,
    pub section_alignment: u32,
    pub file_alignment: u32,
    pub size_of_image: u32,
    pub size_of_headers: u32,
    pub sections: Vec<Section>,
    /// Byte offset of the COFF header ("PE\0\0" + 4).
    coff: usize,
    /// Byte offset of the optional header.
    opt: usize,
    /// Byte offset of the first section header.
    table: usize,
}

fn u16_at(d: &[u8], o: usize) -> Result<u16, String> {
    d.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]])).ok_or_else(|| "PE headers are truncated".into())
}
fn u32_at(d: &[u8], o: usize) -> Result<u32, String> {
    d.get(o..o + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| "PE headers are truncated".into())
}
fn put_u16(d: &mut [u8], o: usize, v: u16) {
    d[o..o + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(d: &mut [u8], o: usize, v: u32) {
    d[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn align(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Reads the headers of a PE32+ image (an EFI program or an EFI-stub kernel).
pub fn parse(d: &[u8]) -> Result<PeInfo, String> {
    if d.get(0..2) != Some(b"MZ") {
        return Err("not a PE image (no MZ header)".into());
    }
    let pe = u32_at(d, 0x3c)? as usize;
    if d.get(pe..pe + 4) != Some(b"PE\0\0") {
        return Err("not a PE image (no PE signature)".into());
    }
    let coff = pe + 4;
    let machine = u16_at(d, coff)?;
    let nsections = u16_at(d, coff + 2)? as usize;
    let opt_size = u16_at(d, coff + 16)? as usize;
    let opt = coff + 20;
    if u16_at(d, opt)? != PE32_PLUS {
        return Err("not a PE32+ (64-bit) image".into());
    }
    let section_alignment = u32_at(d, opt + 32)?;
    let file_alignment = u32_at(d, opt + 36)?;
    if !section_alignment.is_power_of_two() || !file_alignment.is_power_of_two() {
        return Err("PE alignment is not a power of two".into());
    }
    let table = opt + opt_size;
    let mut sections = Vec::with_capacity(nsections);
    for i in 0..nsections {
        let h = table + i * SECTION_HEADER_SIZE;
        let raw_name = d.get(h..h + 8).ok_or("PE section table is truncated")?;
        let end = raw_name.iter().position(|&b| b == 0).unwrap_or(8);
        sections.push(Section {
            name: String::from_utf8_lossy(&raw_name[..end]).into_owned(),
            virtual_size: u32_at(d, h + 8)?,
            virtual_address: u32_at(d, h + 12)?,
            raw_size: u32_at(d, h + 16)?,
            raw_offset: u32_at(d, h + 20)?,
        });
    }
    Ok(PeInfo {
        machine,
        section_alignment,
        file_alignment,
        size_of_image: u32_at(d, opt + 56)?,
        size_of_headers: u32_at(d, opt + 60)?,
        sections,
        coff,
        opt,
        table,
    })
}

/// Appends `sections` (name ≤ 8 bytes, data) to the stub, returning the new image.
pub fn append_sections(stub: &[u8], sections: &[(&str, &[u8])]) -> Result<Vec<u8>, String> {
    let info = parse(stub).map_err(|e| format!("EFI stub: {e}"))?;
    let table_end = info.table + (info.sections.len() + sections.len()) * SECTION_HEADER_SIZE;
    let first_data =
        info.sections.iter().map(|s| s.raw_offset).filter(|&o| o > 0).min().unwrap_or(info.size_of_headers);
    if table_end > info.size_of_headers as usize || table_end > first_data as usize {
        return Err(format!(
            "EFI stub: no room in its headers for {} more section entries ({table_end} > {})",
            sections.len(),
            info.size_of_headers.min(first_data)
        ));
    }
    let (sa, fa) = (info.section_alignment as u64, info.file_alignment as u64);
    let mut next_va = info
        .sections
        .iter()
        .map(|s| s.virtual_address as u64 + s.virtual_size.max(s.raw_size) as u64)
        .max()
        .unwrap_or(info.size_of_headers as u64);
    next_va = align(next_va.max(info.size_of_image as u64), sa);
    let mut out = stub.to_vec();
    out.resize(align(out.len() as u64, fa) as usize, 0);
    let mut added_init_data = 0u64;
    for (i, (name, data)) in sections.iter().enumerate() {
        if name.len() > 8 {
            return Err(format!("PE section name {name} is longer than 8 bytes"));
        }
        let raw_offset = out.len() as u64;
        let raw_size = align(data.len() as u64, fa);
        let too_big = |what: &str| format!("UKI section {name}: {what} exceeds the 4 GiB PE limit");
        let h = info.table + (info.sections.len() + i) * SECTION_HEADER_SIZE;
        let mut header = [0u8; SECTION_HEADER_SIZE];
        header[..name.len()].copy_from_slice(name.as_bytes());
        put_u32(&mut header, 8, u32::try_from(data.len()).map_err(|_| too_big("size"))?);
        put_u32(&mut header, 12, u32::try_from(next_va).map_err(|_| too_big("address"))?);
        put_u32(&mut header, 16, u32::try_from(raw_size).map_err(|_| too_big("size"))?);
        put_u32(&mut header, 20, u32::try_from(raw_offset).map_err(|_| too_big("offset"))?);
        put_u32(&mut header, 36, IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ);
        out[h..h + SECTION_HEADER_SIZE].copy_from_slice(&header);
        out.extend_from_slice(data);
        out.resize((raw_offset + raw_size) as usize, 0);
        next_va = align(next_va + data.len() as u64, sa);
        added_init_data += raw_size;
    }
    let nsections = info.sections.len() + sections.len();
    put_u16(&mut out, info.coff + 2, u16::try_from(nsections).map_err(|_| "too many PE sections")?);
    put_u32(&mut out, info.opt + 56, u32::try_from(next_va).map_err(|_| "UKI exceeds the 4 GiB PE limit")?);
    let init_data = u32_at(&out, info.opt + 8)? as u64 + added_init_data;
    put_u32(&mut out, info.opt + 8, u32::try_from(init_data).unwrap_or(u32::MAX));
    // The stub's checksum no longer matches; firmware ignores it for applications, so say 0
    // (not computed) rather than keep a wrong value.
    put_u32(&mut out, info.opt + 64, 0);
    Ok(out)
}

/// Builds the UKI from the stub, checking that the stub and the kernel are for `machine`.
pub fn build(
    stub: &[u8],
    kernel: &[u8],
    initrd: &[u8],
    cmdline: &str,
    os_release: &str,
    machine: u16,
) -> Result<Vec<u8>, String> {
    let stub_info = parse(stub).map_err(|e| format!("EFI stub: {e}"))?;
    if stub_info.machine != machine {
        return Err(format!("EFI stub is for PE machine {:#x}, the image is for {machine:#x}", stub_info.machine));
    }
    let kernel_info = parse(kernel).map_err(|e| format!("kernel: {e} (the kernel must be built with the EFI stub)"))?;
    if kernel_info.machine != machine {
        return Err(format!("kernel is for PE machine {:#x}, the image is for {machine:#x}", kernel_info.machine));
    }
    if stub_info.sections.iter().any(|s| s.name == ".linux") {
        return Err("EFI stub already has a .linux section (is it a UKI already?)".into());
    }
    append_sections(
        stub,
        &[(".osrel", os_release.as_bytes()), (".cmdline", cmdline.as_bytes()), (".initrd", initrd), (".linux", kernel)],
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small PE32+ image shaped like the systemd stub: headers of 0x400 bytes, FileAlignment
    /// 0x200, SectionAlignment 0x1000, two sections.
    pub(crate) fn fake_pe(machine: u16) -> Vec<u8> {
        let mut d = vec![0u8; 0x400];
        d[0..2].copy_from_slice(b"MZ");
        put_u32(&mut d, 0x3c, 0x80);
        d[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        put_u16(&mut d, coff, machine);
        put_u16(&mut d, coff + 2, 2);
        put_u16(&mut d, coff + 16, 240);
        let opt = coff + 20;
        put_u16(&mut d, opt, PE32_PLUS);
        put_u32(&mut d, opt + 32, 0x1000);
        put_u32(&mut d, opt + 36, 0x200);
        put_u32(&mut d, opt + 56, 0x3000);
        put_u32(&mut d, opt + 60, 0x400);
        let table = opt + 240;
        for (i, (name, va, off)) in [(".text", 0x1000u32, 0x400u32), (".sbat", 0x2000, 0x600)].iter().enumerate() {
            let h = table + i * 40;
            d[h..h + name.len()].copy_from_slice(name.as_bytes());
            put_u32(&mut d, h + 8, 0x180);
            put_u32(&mut d, h + 12, *va);
            put_u32(&mut d, h + 16, 0x200);
            put_u32(&mut d, h + 20, *off);
        }
        d.resize(0x800, 0xcc);
        d
    }

    #[test]
    fn appended_sections_are_aligned_and_do_not_overlap() {
        let stub = fake_pe(0xaa64);
        let kernel = {
            let mut k = fake_pe(0xaa64);
            k.resize(0x12345, 7);
            k
        };
        let initrd = vec![9u8; 0x2001];
        let uki = build(&stub, &kernel, &initrd, "panic=10", "ID=bastion\n", 0xaa64).unwrap();
        let info = parse(&uki).unwrap();
        let names: Vec<&str> = info.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [".text", ".sbat", ".osrel", ".cmdline", ".initrd", ".linux"]);
        let mut prev_end = 0u64;
        for s in &info.sections {
            assert_eq!(s.virtual_address % 0x1000, 0, "{s:?}");
            assert_eq!(s.raw_offset % 0x200, 0, "{s:?}");
            assert!(s.virtual_address as u64 >= prev_end, "{s:?} overlaps the previous section");
            prev_end = s.virtual_address as u64 + s.virtual_size as u64;
        }
        assert_eq!(info.size_of_image as u64, prev_end.div_ceil(0x1000) * 0x1000);
        let get = |n: &str| {
            let s = info.sections.iter().find(|s| s.name == n).unwrap();
            &uki[s.raw_offset as usize..(s.raw_offset + s.virtual_size) as usize]
        };
        assert_eq!(get(".cmdline"), b"panic=10");
        assert_eq!(get(".osrel"), b"ID=bastion\n");
        assert_eq!(get(".initrd"), &initrd[..]);
        assert_eq!(get(".linux"), &kernel[..]);
        // The stub's own bytes are untouched apart from the header fields.
        assert_eq!(&uki[0x400..0x800], &stub[0x400..0x800]);
    }

    #[test]
    fn mismatched_machines_and_garbage_are_refused() {
        let stub = fake_pe(0xaa64);
        let e = build(&stub, &fake_pe(0x8664), b"", "", "", 0xaa64).unwrap_err();
        assert!(e.contains("kernel is for PE machine 0x8664"), "{e}");
        let e = build(&stub, b"\x7fELF", b"", "", "", 0xaa64).unwrap_err();
        assert!(e.contains("kernel: not a PE image"), "{e}");
        assert!(parse(&stub[..0x90]).is_err());
        assert!(append_sections(&stub, &[(".waytoolong", b"")]).is_err());
    }
}
