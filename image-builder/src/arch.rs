//! The two appliance architectures and everything that differs between them in the image: the
//! ELF and PE machine numbers that must agree across binary, kernel and stub, the UEFI removable
//! media boot path, and the default kernel command line.

use crate::elf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Aarch64,
    X86_64,
}

impl Arch {
    pub fn from_elf_machine(machine: u16) -> Option<Arch> {
        match machine {
            elf::EM_AARCH64 => Some(Arch::Aarch64),
            elf::EM_X86_64 => Some(Arch::X86_64),
            _ => None,
        }
    }

    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "aarch64" => Some(Arch::Aarch64),
            "x86_64" => Some(Arch::X86_64),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64",
            Arch::X86_64 => "x86_64",
        }
    }

    /// The COFF machine field of a PE image for this architecture.
    pub fn pe_machine(self) -> u16 {
        match self {
            Arch::Aarch64 => 0xaa64,
            Arch::X86_64 => 0x8664,
        }
    }

    /// Where UEFI firmware looks for a bootloader when it has no boot entry of its own (a fresh
    /// EC2 instance, a fresh copy of the QEMU variable store): the removable-media path.
    pub fn efi_boot_path(self) -> &'static str {
        match self {
            Arch::Aarch64 => "EFI/BOOT/BOOTAA64.EFI",
            Arch::X86_64 => "EFI/BOOT/BOOTX64.EFI",
        }
    }

    /// systemd's Linux EFI stub inside the `systemd-boot-efi` package.
    pub fn stub_path(self) -> &'static str {
        match self {
            Arch::Aarch64 => "usr/lib/systemd/boot/efi/linuxaa64.efi.stub",
            Arch::X86_64 => "usr/lib/systemd/boot/efi/linuxx64.efi.stub",
        }
    }

    /// The kernel command line baked into the UKI.
    ///
    /// arm64 has no `console=`: the kernel takes its console from the firmware's ACPI SPCR table,
    /// which names ttyS0 on EC2 Graviton and ttyAMA0 under QEMU `virt`, so one image prints on
    /// both. x86 kernels do not enable a console from SPCR, so x86_64 names the EC2 serial port.
    /// `panic=10`: if `/init` dies the kernel panics; the instance reboots after 10 s (the panic
    /// stays on the console) instead of hanging dead behind the load balancer.
    pub fn default_cmdline(self) -> &'static str {
        match self {
            Arch::Aarch64 => "panic=10",
            Arch::X86_64 => "console=ttyS0,115200n8 panic=10",
        }
    }
}
