//! `bastion-image build`: checks the inputs, then makes the initramfs, the UKI, the ESP and the
//! GPT disk, and reports what it made.
//!
//! The disk file is written as `<out>.partial-<pid>` and renamed over `<out>` only when it is
//! complete, so a failed build never leaves a half-written image where a complete one is
//! expected. The file is sparse: only non-zero 4 KiB chunks are written.

use crate::arch::Arch;
use crate::elf::Elf;
use crate::gpt::{self, Guid, Partition};
use crate::initramfs::{self, Contents};
use crate::modules::{ModuleTree, APPLIANCE_MODULES};
use crate::{esp, uki};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// EBS direct APIs move snapshots in blocks of this size; only non-zero ones need uploading.
pub const UPLOAD_BLOCK: u64 = 512 << 10;

pub struct Inputs {
    pub binary: PathBuf,
    /// An extracted kernel package (`boot/vmlinuz-*`, `boot/config-*`, `lib/modules/*`).
    pub kernel: PathBuf,
    /// An extracted `systemd-boot-efi` package, or the stub file itself.
    pub stub: PathBuf,
    pub rootfs: Option<PathBuf>,
    pub config: Option<PathBuf>,
    /// A bastion of the host's architecture to run `check-config` with when `binary` cannot run here.
    pub config_checker: Option<PathBuf>,
    pub version: String,
    pub disk_size: u64,
    pub esp_size: u64,
    pub cmdline: Option<String>,
    pub extra_modules: Vec<String>,
    pub out: PathBuf,
    /// Also write the compressed initramfs here (for `-kernel/-initrd` boots and inspection).
    pub initramfs_out: Option<PathBuf>,
    /// The record of the Debian packages used (pinned or fallback), put into the image.
    pub packages: Option<PathBuf>,
}

/// What `build` made.
#[derive(Debug)]
pub struct Summary {
    pub arch: Arch,
    pub kernel_version: String,
    pub kernel_size: u64,
    pub cmdline: String,
    pub modules: Vec<String>,
    pub built_in: Vec<String>,
    pub config_note: String,
    /// `N pinned` or `N pinned, M FALLBACK`, when a package record was given.
    pub packages_note: Option<String>,
    pub initramfs_raw: u64,
    pub initramfs_gz: u64,
    pub uki_size: u64,
    pub esp_size: u64,
    pub disk_size: u64,
    pub nonzero_blocks: u64,
    pub out: PathBuf,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        writeln!(
            f,
            "image      {} ({}, {:.0} MiB raw, sparse)",
            self.out.display(),
            self.arch.name(),
            mib(self.disk_size)
        )?;
        writeln!(f, "kernel     {} ({:.1} MiB)", self.kernel_version, mib(self.kernel_size))?;
        writeln!(f, "cmdline    {}", self.cmdline)?;
        writeln!(
            f,
            "initramfs  {:.1} MiB gzip ({:.1} MiB cpio), {} modules, built in: {}",
            mib(self.initramfs_gz),
            mib(self.initramfs_raw),
            self.modules.len(),
            if self.built_in.is_empty() { "-".to_string() } else { self.built_in.join(" ") }
        )?;
        writeln!(f, "config     {}", self.config_note)?;
        if let Some(note) = &self.packages_note {
            writeln!(f, "packages   {note}")?;
        }
        writeln!(f, "uki        {:.1} MiB in a {:.0} MiB FAT32 ESP", mib(self.uki_size), mib(self.esp_size))?;
        write!(
            f,
            "upload     {} non-zero 512 KiB blocks ({:.1} MiB of {:.0} MiB)",
            self.nonzero_blocks,
            mib(self.nonzero_blocks * UPLOAD_BLOCK),
            mib(self.disk_size)
        )
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// The appliance binary must be a static ELF for a supported CPU: it runs as the first process
/// of a system with no dynamic loader.
fn check_binary(path: &Path, bytes: &[u8]) -> Result<Arch, String> {
    let elf = Elf::parse(bytes).map_err(|e| format!("binary {}: {e}", path.display()))?;
    let arch = elf_arch(path, &elf)?;
    if elf.has_interpreter().map_err(|e| format!("binary {}: {e}", path.display()))? {
        return Err(format!(
            "binary {}: dynamically linked; the initramfs has no loader or libc (build the static musl target: make appliance)",
            path.display()
        ));
    }
    Ok(arch)
}

fn elf_arch(path: &Path, elf: &Elf) -> Result<Arch, String> {
    Arch::from_elf_machine(elf.machine()).ok_or_else(|| {
        format!("binary {}: ELF machine {} is neither aarch64 nor x86_64", path.display(), elf.machine())
    })
}

fn check_version(v: &str) -> Result<(), String> {
    if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || "._+~-".contains(c)) {
        return Err(format!("version {v:?}: use letters, digits and . _ + ~ - only (it goes into os-release)"));
    }
    Ok(())
}

/// Runs `check-config` on the config to bake in, with the binary itself when it runs on this
/// machine, else with the given host build of the same source.
fn check_config(config: &Path, binary: &Path, arch: Arch, checker: Option<&Path>) -> Result<String, String> {
    let runner = if Arch::host() == Some(arch) {
        binary.to_path_buf()
    } else if let Some(c) = checker {
        let bytes = read(c, "config checker")?;
        let c_arch = Elf::parse(&bytes).ok().and_then(|elf| elf_arch(c, &elf).ok());
        if c_arch != Arch::host() {
            return Err(format!(
                "config checker {}: not a binary for this machine ({})",
                c.display(),
                std::env::consts::ARCH
            ));
        }
        c.to_path_buf()
    } else {
        return Err(format!(
            "config {}: cannot validate it: the binary is {} and cannot run here; pass --check-config-with \
             a {} build of the same source (the Makefile does)",
            config.display(),
            arch.name(),
            std::env::consts::ARCH
        ));
    };
    let out = Command::new(&runner)
        .arg("check-config")
        .arg(config)
        .output()
        .map_err(|e| format!("running {} check-config: {e}", runner.display()))?;
    if !out.status.success() {
        return Err(format!(
            "config {} fails check-config:\n{}{}",
            config.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(format!("{} (checked by {})", String::from_utf8_lossy(&out.stdout).trim(), runner.display()))
}

/// The kernel image, its version, and its module folder inside an extracted kernel package.
fn find_kernel(root: &Path) -> Result<(PathBuf, String, PathBuf), String> {
    let boot = root.join("boot");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&boot).map_err(|e| {
        format!(
            "kernel package {}: {e} (expected an extracted linux-image package with boot/vmlinuz-*)",
            boot.display()
        )
    })? {
        let entry = entry.map_err(|e| format!("{}: {e}", boot.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(version) = name.strip_prefix("vmlinuz-") {
            found.push((entry.path(), version.to_string()));
        }
    }
    let (vmlinuz, version) = match found.len() {
        1 => found.remove(0),
        0 => return Err(format!("kernel package {}: no boot/vmlinuz-* in it", root.display())),
        _ => return Err(format!("kernel package {}: more than one boot/vmlinuz-*", root.display())),
    };
    let config_path = boot.join(format!("config-{version}"));
    let config =
        std::fs::read_to_string(&config_path).map_err(|e| format!("kernel config {}: {e}", config_path.display()))?;
    if !config.lines().any(|l| l == "CONFIG_RD_GZIP=y") || !config.lines().any(|l| l == "CONFIG_BLK_DEV_INITRD=y") {
        return Err(format!(
            "kernel {version}: {} lacks CONFIG_BLK_DEV_INITRD=y or CONFIG_RD_GZIP=y",
            config_path.display()
        ));
    }
    let modules = root.join("lib/modules").join(&version);
    Ok((vmlinuz, version, modules))
}

fn find_stub(path: &Path, arch: Arch) -> PathBuf {
    if path.is_dir() {
        path.join(arch.stub_path())
    } else {
        path.to_path_buf()
    }
}

/// Derives a stable 32-byte value for `purpose` from the version.
fn derive(version: &str, purpose: &str) -> [u8; 32] {
    Sha256::digest(format!("bastion-image {purpose} {version}").as_bytes()).into()
}

fn os_release(version: &str) -> String {
    format!(
        "NAME=\"bastion\"\nID=bastion\nVERSION=\"{version}\"\nVERSION_ID={version}\nPRETTY_NAME=\"bastion {version}\"\n"
    )
}

/// Removes the partial file unless the build completed.
struct Partial {
    path: PathBuf,
    done: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes the non-zero 4 KiB chunks of `data` at `offset`, noting the upload blocks touched.
fn write_sparse(file: &mut File, offset: u64, data: &[u8], blocks: &mut BTreeSet<u64>) -> std::io::Result<()> {
    for (i, chunk) in data.chunks(4096).enumerate() {
        if chunk.iter().all(|&b| b == 0) {
            continue;
        }
        let at = offset + (i as u64) * 4096;
        file.seek(SeekFrom::Start(at))?;
        file.write_all(chunk)?;
        blocks.insert(at / UPLOAD_BLOCK);
        blocks.insert((at + chunk.len() as u64 - 1) / UPLOAD_BLOCK);
    }
    Ok(())
}

pub fn build(inputs: &Inputs) -> Result<Summary, String> {
    check_version(&inputs.version)?;
    let binary = read(&inputs.binary, "binary")?;
    let arch = check_binary(&inputs.binary, &binary)?;
    let (vmlinuz_path, kernel_version, modules_dir) = find_kernel(&inputs.kernel)?;
    let kernel = read(&vmlinuz_path, "kernel")?;
    let kernel_machine =
        uki::parse(&kernel).map(|pe| pe.machine).map_err(|e| format!("kernel {}: {e}", vmlinuz_path.display()))?;
    if kernel_machine != arch.pe_machine() {
        return Err(format!(
            "binary {} is for {} but kernel {} is not (PE machine {kernel_machine:#x}); use the kernel package of the binary's architecture",
            inputs.binary.display(),
            arch.name(),
            vmlinuz_path.display()
        ));
    }
    let stub_path = find_stub(&inputs.stub, arch);
    let stub = read(&stub_path, "EFI stub (from systemd-boot-efi)")?;
    if inputs.esp_size + (4 << 20) > inputs.disk_size {
        return Err(format!(
            "disk size {} MiB leaves no room for a {} MiB ESP",
            inputs.disk_size >> 20,
            inputs.esp_size >> 20
        ));
    }

    let config_note = match &inputs.config {
        Some(c) => check_config(c, &inputs.binary, arch, inputs.config_checker.as_deref())?,
        None => "none baked in (user-data only)".to_string(),
    };

    // The initramfs.
    let tree = ModuleTree::open(&modules_dir)?;
    let mut wanted: Vec<&str> = APPLIANCE_MODULES.to_vec();
    wanted.extend(inputs.extra_modules.iter().map(String::as_str));
    let selection = tree.select(&wanted)?;
    let mut contents = Contents::new();
    contents.add_file("init", 0o755, binary, "binary")?;
    contents.add_file("etc/os-release", 0o644, os_release(&inputs.version).into_bytes(), "os-release")?;
    let module_base = format!("lib/modules/{kernel_version}");
    let mut list = String::new();
    let mut module_names = Vec::new();
    for rel in &selection.load_order {
        let rel_s = rel.to_str().ok_or_else(|| format!("module path {} is not UTF-8", rel.display()))?;
        let path = format!("{module_base}/{rel_s}");
        contents.add_file(&path, 0o644, read(&tree.root().join(rel), "kernel module")?, "kernel")?;
        list.push_str(&format!("/{path}\n"));
        module_names.push(rel.file_stem().unwrap_or_default().to_string_lossy().into_owned());
    }
    contents.add_file(initramfs::MODULE_LIST, 0o644, list.into_bytes(), "module list")?;
    if let Some(c) = &inputs.config {
        contents.add_file(initramfs::BAKED_CONFIG, 0o600, read(c, "config")?, &c.display().to_string())?;
    }
    let packages_note = match &inputs.packages {
        Some(p) => {
            let record = read(p, "package record")?;
            let text = String::from_utf8_lossy(&record);
            let count = |word: &str| text.lines().filter(|l| l.split_whitespace().nth(4) == Some(word)).count();
            let (pinned, fallback) = (count("pinned"), count("fallback"));
            contents.add_file("etc/bastion/image-packages", 0o644, record, &p.display().to_string())?;
            Some(if fallback > 0 {
                format!("{pinned} pinned, {fallback} FALLBACK (newer than image/packages.lock; see {})", p.display())
            } else {
                format!("{pinned} pinned (image/packages.lock)")
            })
        }
        None => None,
    };
    if let Some(r) = &inputs.rootfs {
        contents.add_tree(r)?;
    }
    let archive = contents.archive()?;
    let initrd = initramfs::compress(&archive)?;

    // The UKI and the ESP.
    let cmdline = inputs.cmdline.clone().unwrap_or_else(|| arch.default_cmdline().to_string());
    let uki = uki::build(&stub, &kernel, &initrd, &cmdline, &os_release(&inputs.version), arch.pe_machine())
        .map_err(|e| format!("{e} ({} / {})", stub_path.display(), vmlinuz_path.display()))?;
    let volume_id = u32::from_le_bytes(derive(&inputs.version, "esp-volume-id")[..4].try_into().unwrap());
    let esp_volume = esp::build(inputs.esp_size, volume_id, &[(arch.efi_boot_path(), &uki)])?;
    if esp::read_file(&esp_volume, arch.efi_boot_path())? != uki {
        return Err("the UKI read back from the new ESP differs from the one written".into());
    }

    // The disk.
    let sectors = inputs.esp_size / gpt::SECTOR;
    let esp_part = Partition {
        type_guid: gpt::ESP_TYPE,
        unique_guid: Guid::from_hash(&derive(&inputs.version, "esp-partition-guid")),
        first_lba: gpt::FIRST_PARTITION_LBA,
        last_lba: gpt::FIRST_PARTITION_LBA + sectors - 1,
        name: "EFI System Partition",
    };
    let layout = gpt::layout(inputs.disk_size, Guid::from_hash(&derive(&inputs.version, "disk-guid")), &[esp_part])?;

    let file_name =
        inputs.out.file_name().ok_or_else(|| format!("output {}: not a file path", inputs.out.display()))?;
    let partial_path =
        inputs.out.with_file_name(format!("{}.partial-{}", file_name.to_string_lossy(), std::process::id()));
    let mut partial = Partial { path: partial_path.clone(), done: false };
    let io = |e: std::io::Error| format!("writing {}: {e}", partial_path.display());
    let mut file = File::create(&partial_path).map_err(io)?;
    file.set_len(inputs.disk_size).map_err(io)?;
    let mut blocks = BTreeSet::new();
    for (offset, bytes) in &layout.writes {
        write_sparse(&mut file, *offset, bytes, &mut blocks).map_err(io)?;
    }
    write_sparse(&mut file, gpt::FIRST_PARTITION_LBA * gpt::SECTOR, &esp_volume, &mut blocks).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);

    if let Some(p) = &inputs.initramfs_out {
        std::fs::write(p, &initrd).map_err(|e| format!("writing {}: {e}", p.display()))?;
    }
    std::fs::rename(&partial_path, &inputs.out)
        .map_err(|e| format!("renaming {} to {}: {e}", partial_path.display(), inputs.out.display()))?;
    partial.done = true;

    Ok(Summary {
        arch,
        packages_note,
        kernel_version,
        kernel_size: kernel.len() as u64,
        cmdline,
        modules: module_names,
        built_in: selection.built_in,
        config_note,
        initramfs_raw: archive.len() as u64,
        initramfs_gz: initrd.len() as u64,
        uki_size: uki.len() as u64,
        esp_size: inputs.esp_size,
        disk_size: inputs.disk_size,
        nonzero_blocks: blocks.len() as u64,
        out: inputs.out.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::tests::build_elf;
    use crate::uki::tests::fake_pe;

    const MIB: u64 = 1 << 20;

    /// A scratch folder with a fake arm64 kernel package, stub package and appliance binary.
    struct Fixture {
        dir: PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    impl Fixture {
        fn new(name: &str) -> Fixture {
            let dir = std::env::temp_dir().join(format!("bastion-image-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let kernel = dir.join("kernel");
            std::fs::create_dir_all(kernel.join("boot")).unwrap();
            std::fs::write(kernel.join("boot/vmlinuz-6.1.0-test"), fake_pe(0xaa64)).unwrap();
            std::fs::write(kernel.join("boot/config-6.1.0-test"), "CONFIG_BLK_DEV_INITRD=y\nCONFIG_RD_GZIP=y\n")
                .unwrap();
            let modules = kernel.join("lib/modules/6.1.0-test");
            std::fs::create_dir_all(modules.join("kernel")).unwrap();
            std::fs::write(
                modules.join("modules.builtin"),
                "kernel/net/packet/af_packet.ko\nkernel/drivers/acpi/button.ko\n",
            )
            .unwrap();
            for m in APPLIANCE_MODULES.iter().filter(|m| !["af_packet", "button"].contains(*m)) {
                let info = format!("name={m}\0depends=\0");
                std::fs::write(
                    modules.join(format!("kernel/{m}.ko")),
                    build_elf(183, false, &[(".modinfo", info.as_bytes())]),
                )
                .unwrap();
            }
            let stub = dir.join("stub").join(Arch::Aarch64.stub_path());
            std::fs::create_dir_all(stub.parent().unwrap()).unwrap();
            std::fs::write(&stub, fake_pe(0xaa64)).unwrap();
            std::fs::write(dir.join("bastion"), build_elf(183, false, &[(".text", b"code")])).unwrap();
            std::fs::create_dir_all(dir.join("rootfs/etc/bastion")).unwrap();
            std::fs::write(dir.join("rootfs/etc/bastion/example.toml"), "x = 1\n").unwrap();
            Fixture { dir }
        }

        fn inputs(&self) -> Inputs {
            Inputs {
                binary: self.dir.join("bastion"),
                kernel: self.dir.join("kernel"),
                stub: self.dir.join("stub"),
                rootfs: Some(self.dir.join("rootfs")),
                config: None,
                config_checker: None,
                version: "1.2.3".into(),
                disk_size: 96 * MIB,
                esp_size: esp::MIN_SIZE,
                cmdline: None,
                extra_modules: vec![],
                out: self.dir.join("disk.img"),
                initramfs_out: None,
                packages: None,
            }
        }

        /// Nothing but the inputs is left in the folder.
        fn assert_no_output(&self) {
            let names: Vec<String> = std::fs::read_dir(&self.dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("disk.img"))
                .collect();
            assert!(names.is_empty(), "left behind: {names:?}");
        }
    }

    #[test]
    fn builds_a_bootable_layout_deterministically() {
        let fx = Fixture::new("ok");
        let summary = build(&fx.inputs()).unwrap();
        assert_eq!(summary.modules.len(), APPLIANCE_MODULES.len() - 2);
        assert_eq!(summary.built_in, ["af_packet", "button"]);
        let disk = std::fs::read(fx.dir.join("disk.img")).unwrap();
        assert_eq!(disk.len() as u64, 96 * MIB);
        // The ESP at 1 MiB holds the UKI, whose .initrd holds /init = the binary.
        let esp_bytes = &disk[MIB as usize..(MIB + esp::MIN_SIZE) as usize];
        let uki = esp::read_file(esp_bytes, "EFI/BOOT/BOOTAA64.EFI").unwrap();
        let pe = uki::parse(&uki).unwrap();
        let section = |n: &str| {
            let s = pe.sections.iter().find(|s| s.name == n).unwrap();
            uki[s.raw_offset as usize..(s.raw_offset + s.virtual_size) as usize].to_vec()
        };
        assert_eq!(section(".cmdline"), b"panic=10");
        let mut cpio_bytes = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&section(".initrd")[..]), &mut cpio_bytes)
            .unwrap();
        let entries = crate::cpio::read(&cpio_bytes).unwrap();
        let file = |p: &str| match &entries.iter().find(|e| e.path == p).unwrap_or_else(|| panic!("{p} missing")).kind {
            crate::cpio::Kind::File(d) => d.clone(),
            k => panic!("{p} is {k:?}"),
        };
        assert_eq!(file("init"), std::fs::read(fx.dir.join("bastion")).unwrap());
        assert!(String::from_utf8(file("etc/os-release")).unwrap().contains("VERSION_ID=1.2.3"));
        assert_eq!(file("etc/bastion/example.toml"), b"x = 1\n");
        let list = String::from_utf8(file("etc/bastion/modules")).unwrap();
        assert!(list.lines().all(|l| l.starts_with("/lib/modules/6.1.0-test/kernel/") && l.ends_with(".ko")), "{list}");
        for line in list.lines() {
            file(&line[1..]);
        }
        // Same inputs, same bytes; another version, other GUIDs.
        let first = Sha256::digest(&disk);
        build(&fx.inputs()).unwrap();
        assert_eq!(first, Sha256::digest(std::fs::read(fx.dir.join("disk.img")).unwrap()));
        let mut other = fx.inputs();
        other.version = "1.2.4".into();
        build(&other).unwrap();
        assert_ne!(first, Sha256::digest(std::fs::read(fx.dir.join("disk.img")).unwrap()));
    }

    #[test]
    fn bad_inputs_are_clear_errors_and_leave_nothing_behind() {
        let fx = Fixture::new("bad");
        type Change = Box<dyn Fn(&mut Inputs)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|i| i.kernel = i.kernel.join("nonexistent")), "expected an extracted linux-image package"),
            (Box::new(|i| i.binary = PathBuf::from("/bin/sh")), ""),
            (Box::new(|i| i.stub = i.stub.join("nonexistent")), "EFI stub (from systemd-boot-efi)"),
            (Box::new(|i| i.version = "1 2".into()), "version \"1 2\""),
            (Box::new(|i| i.config = Some(i.kernel.join("boot/config-6.1.0-test"))), "cannot validate it"),
        ];
        for (change, expected) in cases {
            let mut inputs = fx.inputs();
            change(&mut inputs);
            let e = build(&inputs).unwrap_err();
            assert!(e.contains(expected), "{e}");
            fx.assert_no_output();
        }
        // A dynamically linked or foreign binary.
        std::fs::write(fx.dir.join("dynamic"), build_elf(183, true, &[])).unwrap();
        let mut inputs = fx.inputs();
        inputs.binary = fx.dir.join("dynamic");
        assert!(build(&inputs).unwrap_err().contains("dynamically linked"));
        std::fs::write(fx.dir.join("x86"), build_elf(62, false, &[])).unwrap();
        inputs.binary = fx.dir.join("x86");
        let e = build(&inputs).unwrap_err();
        assert!(e.contains("is for x86_64 but kernel"), "{e}");
        fx.assert_no_output();
    }

    #[test]
    fn a_config_that_fails_check_config_is_refused() {
        if Arch::host() == Some(Arch::Aarch64) {
            return; // the fake binary would be run directly
        }
        let fx = Fixture::new("config");
        let mut inputs = fx.inputs();
        inputs.config = Some(fx.dir.join("rootfs/etc/bastion/example.toml"));
        inputs.config_checker = Some(PathBuf::from("/bin/false"));
        let e = build(&inputs).unwrap_err();
        assert!(e.contains("fails check-config"), "{e}");
        fx.assert_no_output();
        inputs.config_checker = Some(PathBuf::from("/bin/true"));
        let summary = build(&inputs).unwrap();
        assert!(summary.config_note.contains("checked by /bin/true"), "{}", summary.config_note);
    }
}
