//! Just enough ELF64 reading for the image builder: the machine and linkage of the appliance
//! binary (so a wrong-architecture or dynamically linked `/init` is refused before it becomes an
//! unbootable image), and one named section's bytes (a kernel module's `.modinfo`).
//!
//! Every offset read from the file is bounds-checked: a truncated or garbage file is an `Err`.

use std::fmt;

pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;

const PT_INTERP: u32 = 3;

/// What was wrong with a file that should have been an ELF64 little-endian object.
#[derive(Debug, PartialEq, Eq)]
pub struct ElfError(pub String);

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, ElfError> {
    Err(ElfError(msg.into()))
}

/// A checked view of an ELF64 little-endian file.
pub struct Elf<'a> {
    data: &'a [u8],
}

fn u16_at(d: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(off..off.checked_add(2)?)?.try_into().ok()?))
}
fn u32_at(d: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(off..off.checked_add(4)?)?.try_into().ok()?))
}
fn u64_at(d: &[u8], off: usize) -> Option<usize> {
    let v = u64::from_le_bytes(d.get(off..off.checked_add(8)?)?.try_into().ok()?);
    usize::try_from(v).ok()
}

impl<'a> Elf<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Self, ElfError> {
        if data.len() < 64 || &data[0..4] != b"\x7fELF" {
            return err("not an ELF file");
        }
        if data[4] != 2 {
            return err("not a 64-bit ELF file");
        }
        if data[5] != 1 {
            return err("not a little-endian ELF file");
        }
        Ok(Elf { data })
    }

    /// `e_machine`: which CPU the code is for.
    pub fn machine(&self) -> u16 {
        u16_at(self.data, 0x12).unwrap_or(0)
    }

    /// True when the file names a program interpreter (a dynamic loader), which the initramfs
    /// does not have.
    pub fn has_interpreter(&self) -> Result<bool, ElfError> {
        let d = self.data;
        let (phoff, phentsize, phnum) = (
            u64_at(d, 0x20).ok_or_else(|| ElfError("truncated ELF header".into()))?,
            u16_at(d, 0x36).unwrap_or(0) as usize,
            u16_at(d, 0x38).unwrap_or(0) as usize,
        );
        if phnum > 0 && phentsize < 56 {
            return err("ELF program header entries are too small");
        }
        for i in 0..phnum {
            let at = phentsize
                .checked_mul(i)
                .and_then(|o| o.checked_add(phoff))
                .ok_or_else(|| ElfError("ELF program header offset overflows".into()))?;
            let kind =
                u32_at(d, at).ok_or_else(|| ElfError("ELF program headers run past the end of the file".into()))?;
            if kind == PT_INTERP {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The bytes of the section called `name`, if there is one.
    pub fn section(&self, name: &str) -> Result<Option<&'a [u8]>, ElfError> {
        let d = self.data;
        let truncated = || ElfError("ELF section headers run past the end of the file".into());
        let shoff = u64_at(d, 0x28).ok_or_else(truncated)?;
        let shentsize = u16_at(d, 0x3a).unwrap_or(0) as usize;
        let shnum = u16_at(d, 0x3c).unwrap_or(0) as usize;
        let shstrndx = u16_at(d, 0x3e).unwrap_or(0) as usize;
        if shnum == 0 {
            return Ok(None);
        }
        if shentsize < 64 || shstrndx >= shnum {
            return err("ELF section header table is malformed");
        }
        let header = |i: usize| -> Result<(u32, usize, usize), ElfError> {
            let at = shentsize.checked_mul(i).and_then(|o| o.checked_add(shoff)).ok_or_else(truncated)?;
            let name = u32_at(d, at).ok_or_else(truncated)?;
            let offset = u64_at(d, at + 0x18).ok_or_else(truncated)?;
            let size = u64_at(d, at + 0x20).ok_or_else(truncated)?;
            Ok((name, offset, size))
        };
        let bytes = |offset: usize, size: usize| -> Result<&'a [u8], ElfError> {
            offset
                .checked_add(size)
                .and_then(|end| d.get(offset..end))
                .ok_or_else(|| ElfError("ELF section data runs past the end of the file".into()))
        };
        let (_, str_off, str_size) = header(shstrndx)?;
        let names = bytes(str_off, str_size)?;
        for i in 0..shnum {
            let (name_off, offset, size) = header(i)?;
            let Some(rest) = names.get(name_off as usize..) else { continue };
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            if &rest[..end] == name.as_bytes() {
                return bytes(offset, size).map(Some);
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF64 with the given machine, an optional PT_INTERP, and sections
    /// (name, bytes), laid out the way a linker would.
    pub(crate) fn build_elf(machine: u16, interp: bool, sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = vec![0u8; 64];
        out[0..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        out[6] = 1;
        out[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        // One program header.
        let phoff = out.len();
        out.resize(phoff + 56, 0);
        out[phoff..phoff + 4].copy_from_slice(&(if interp { PT_INTERP } else { 1 }).to_le_bytes());
        out[0x20..0x28].copy_from_slice(&(phoff as u64).to_le_bytes());
        out[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        out[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        // Section data, then the name table, then headers (null section first).
        let mut placed = Vec::new();
        for (_, data) in sections {
            placed.push((out.len(), data.len()));
            out.extend_from_slice(data);
        }
        let mut names = vec![0u8];
        let mut name_offs = Vec::new();
        for (name, _) in sections {
            name_offs.push(names.len());
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        let shstrtab_name = names.len();
        names.extend_from_slice(b".shstrtab\0");
        let names_off = out.len();
        out.extend_from_slice(&names);
        let shoff = out.len();
        let push_header = |out: &mut Vec<u8>, name: usize, off: usize, size: usize| {
            let mut h = [0u8; 64];
            h[0..4].copy_from_slice(&(name as u32).to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            out.extend_from_slice(&h);
        };
        push_header(&mut out, 0, 0, 0);
        for (i, (off, size)) in placed.iter().enumerate() {
            push_header(&mut out, name_offs[i], *off, *size);
        }
        push_header(&mut out, shstrtab_name, names_off, names.len());
        let shnum = sections.len() + 2;
        out[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        out[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        out[0x3c..0x3e].copy_from_slice(&(shnum as u16).to_le_bytes());
        out[0x3e..0x40].copy_from_slice(&((shnum - 1) as u16).to_le_bytes());
        out
    }

    #[test]
    fn reads_machine_interpreter_and_sections() {
        let file = build_elf(EM_AARCH64, false, &[(".text", b"code"), (".modinfo", b"a=b\0")]);
        let elf = Elf::parse(&file).unwrap();
        assert_eq!(elf.machine(), EM_AARCH64);
        assert!(!elf.has_interpreter().unwrap());
        assert_eq!(elf.section(".modinfo").unwrap(), Some(&b"a=b\0"[..]));
        assert_eq!(elf.section(".missing").unwrap(), None);
        let dynamic = build_elf(EM_X86_64, true, &[]);
        assert!(Elf::parse(&dynamic).unwrap().has_interpreter().unwrap());
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert!(Elf::parse(b"#!/bin/sh\n").is_err());
        let file = build_elf(EM_AARCH64, false, &[(".modinfo", b"a=b\0")]);
        for cut in [70, file.len() / 2, file.len() - 1] {
            let Ok(elf) = Elf::parse(&file[..cut]) else { continue };
            // Never a panic; a truncated table is an error or simply not found.
            let _ = elf.section(".modinfo");
            let _ = elf.has_interpreter();
        }
        let short = &file[..file.len() - 40]; // cuts into the name table's section header
        assert!(Elf::parse(short).unwrap().section(".modinfo").is_err());
    }
}
