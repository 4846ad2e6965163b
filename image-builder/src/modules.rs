//! Which kernel modules go into the initramfs, and in which order the init loads them.
//!
//! Debian's kernel package ships no `modules.dep` (its postinst runs depmod), so dependencies are
//! read where depmod's own come from for loadable modules: each `.ko`'s `.modinfo` section
//! (`depends=` written by modpost, and `softdep=pre:` hints). Modules built into the kernel
//! (`modules.builtin`) need no file and are skipped. The result is a load order in which every
//! module comes after everything it depends on; the init `finit_module`s them in that order,
//! since without a modprobe the kernel cannot load a missing dependency itself.

use crate::elf::Elf;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The modules the appliance needs on EC2 (ENA) and under QEMU (virtio-net), for the TUN device,
/// the nftables NAT/filter table (inet filter with ct state, nat postrouting with masquerade,
/// reject), and the ACPI power button (`button`, PNP0C0C) with `evdev`, so the init can read
/// KEY_POWER from /dev/input/event* when EC2 stops the instance. `af_packet` (the DHCP client's
/// packet socket) and `button` are built into the arm64 cloud kernel, modules in the amd64 one.
pub const APPLIANCE_MODULES: &[&str] = &[
    "ena",
    "virtio_pci",
    "virtio_net",
    "tun",
    "nf_tables",
    "nft_ct",
    "nft_chain_nat",
    "nft_nat",
    "nft_masq",
    "nft_reject_inet",
    "af_packet",
    "button",
    "evdev",
];

/// A loadable module found in the kernel tree.
#[derive(Clone, Debug)]
struct Module {
    /// Relative to `lib/modules/<version>/`.
    rel_path: PathBuf,
    depends: Vec<String>,
    soft_pre: Vec<String>,
}

/// What the initramfs carries: module files in load order.
#[derive(Debug, PartialEq, Eq)]
pub struct Selection {
    /// Paths relative to `lib/modules/<version>/`, dependencies first.
    pub load_order: Vec<PathBuf>,
    /// Requested modules that are built into this kernel (nothing to load).
    pub built_in: Vec<String>,
}

/// Module names are spelled with `_` or `-` interchangeably; the kernel normalizes to `_`.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// Reads `name=`, `depends=` and `softdep=` from a module's `.modinfo`.
fn parse_modinfo(path: &Path, bytes: &[u8]) -> Result<(Option<String>, Module), String> {
    let elf = Elf::parse(bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let info = elf
        .section(".modinfo")
        .map_err(|e| format!("{}: {e}", path.display()))?
        .ok_or_else(|| format!("{}: no .modinfo section (not a kernel module?)", path.display()))?;
    let (mut name, mut depends, mut soft_pre) = (None, Vec::new(), Vec::new());
    for field in info.split(|&b| b == 0) {
        let Ok(field) = std::str::from_utf8(field) else { continue };
        if let Some(v) = field.strip_prefix("name=") {
            name = Some(normalize(v));
        } else if let Some(v) = field.strip_prefix("depends=") {
            depends.extend(v.split(',').filter(|s| !s.is_empty()).map(normalize));
        } else if let Some(v) = field.strip_prefix("softdep=") {
            // "pre: a b post: c"
            let mut in_pre = false;
            for word in v.split_whitespace() {
                match word {
                    "pre:" => in_pre = true,
                    "post:" => in_pre = false,
                    w if in_pre => soft_pre.push(normalize(w)),
                    _ => {}
                }
            }
        }
    }
    Ok((name, Module { rel_path: PathBuf::new(), depends, soft_pre }))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| format!("{}: {e}", path.display()))?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "ko") {
            out.push(path);
        }
    }
    Ok(())
}

/// The kernel's module tree (`lib/modules/<version>/`), indexed by module name.
pub struct ModuleTree {
    root: PathBuf,
    modules: BTreeMap<String, Module>,
    built_in: BTreeSet<String>,
}

impl ModuleTree {
    pub fn open(root: &Path) -> Result<ModuleTree, String> {
        let builtin_list = root.join("modules.builtin");
        let text = std::fs::read_to_string(&builtin_list).map_err(|e| {
            format!("{}: {e} (is this the lib/modules/<version> folder of a kernel package?)", builtin_list.display())
        })?;
        let built_in = text
            .lines()
            .filter_map(|l| Path::new(l.trim()).file_stem())
            .map(|s| normalize(&s.to_string_lossy()))
            .collect();
        let mut files = Vec::new();
        walk(&root.join("kernel"), &mut files)?;
        if files.iter().any(|f| f.to_string_lossy().ends_with(".ko.xz") || f.to_string_lossy().ends_with(".ko.zst")) {
            return Err(format!("{}: compressed modules are not supported", root.display()));
        }
        let mut modules = BTreeMap::new();
        for file in files {
            let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let (name, mut module) = parse_modinfo(&file, &bytes)?;
            let name = name.unwrap_or_else(|| normalize(&file.file_stem().unwrap_or_default().to_string_lossy()));
            module.rel_path = file.strip_prefix(root).unwrap_or(&file).to_path_buf();
            modules.insert(name, module);
        }
        Ok(ModuleTree { root: root.to_path_buf(), modules, built_in })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves `wanted` and everything it depends on into a load order.
    pub fn select(&self, wanted: &[&str]) -> Result<Selection, String> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        let mut built_in = Vec::new();
        for name in wanted {
            let name = normalize(name);
            if self.built_in.contains(&name) {
                built_in.push(name);
                continue;
            }
            if !self.modules.contains_key(&name) {
                return Err(format!(
                    "kernel module {name} is neither built into this kernel nor in {}",
                    self.root.display()
                ));
            }
            self.visit(&name, true, &mut Vec::new(), &mut done, &mut order)?;
        }
        Ok(Selection { load_order: order, built_in })
    }

    /// Depth-first, dependencies before dependents. `required`: a hard dependency that must
    /// exist; soft dependencies that name no module (crypto aliases such as `crc32c`, which is
    /// built in) are skipped.
    fn visit(
        &self,
        name: &str,
        required: bool,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        order: &mut Vec<PathBuf>,
    ) -> Result<(), String> {
        if done.contains(name) || self.built_in.contains(name) {
            return Ok(());
        }
        let Some(module) = self.modules.get(name) else {
            if required {
                return Err(format!("kernel module {} depends on {name}, which is missing", path.join(" → ")));
            }
            return Ok(());
        };
        if path.iter().any(|p| p == name) {
            return Err(format!("kernel module dependency cycle: {} → {name}", path.join(" → ")));
        }
        path.push(name.to_string());
        for dep in &module.soft_pre {
            self.visit(dep, false, path, done, order)?;
        }
        for dep in &module.depends {
            self.visit(dep, true, path, done, order)?;
        }
        path.pop();
        done.insert(name.to_string());
        order.push(module.rel_path.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::tests::build_elf;

    fn module(dir: &Path, rel: &str, modinfo: &str) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let info = modinfo.replace(';', "\0") + "\0";
        std::fs::write(path, build_elf(183, false, &[(".modinfo", info.as_bytes())])).unwrap();
    }

    fn tree() -> (PathBuf, ModuleTree) {
        let dir = std::env::temp_dir().join(format!(
            "bastion-modtree-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("modules.builtin"),
            "kernel/net/packet/af_packet.ko\nkernel/crypto/crc32c_generic.ko\n",
        )
        .unwrap();
        module(&dir, "kernel/lib/libcrc32c.ko", "softdep=pre: crc32c;name=libcrc32c");
        module(&dir, "kernel/net/nfnetlink.ko", "depends=;name=nfnetlink");
        module(&dir, "kernel/net/nf_tables.ko", "depends=nfnetlink,libcrc32c;name=nf_tables");
        module(&dir, "kernel/net/nft-ct.ko", "depends=nf_tables,nf_conntrack");
        module(&dir, "kernel/net/nf_conntrack.ko", "depends=libcrc32c;name=nf_conntrack");
        module(&dir, "kernel/net/broken.ko", "depends=absent;name=broken");
        let t = ModuleTree::open(&dir).unwrap();
        (dir, t)
    }

    #[test]
    fn dependencies_come_first_and_builtins_are_skipped() {
        let (dir, t) = tree();
        let sel = t.select(&["nft_ct", "af_packet", "nf_tables"]).unwrap();
        let order: Vec<String> = sel.load_order.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            order,
            [
                "kernel/net/nfnetlink.ko",
                "kernel/lib/libcrc32c.ko",
                "kernel/net/nf_tables.ko",
                "kernel/net/nf_conntrack.ko",
                "kernel/net/nft-ct.ko",
            ]
        );
        assert_eq!(sel.built_in, ["af_packet"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_modules_are_errors() {
        let (dir, t) = tree();
        let e = t.select(&["ena"]).unwrap_err();
        assert!(e.contains("ena is neither built into this kernel"), "{e}");
        let e = t.select(&["broken"]).unwrap_err();
        assert!(e.contains("broken depends on absent"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn not_a_module_tree_is_an_error() {
        let e = ModuleTree::open(Path::new("/nonexistent/lib/modules/x")).err().unwrap();
        assert!(e.contains("modules.builtin"), "{e}");
    }
}
