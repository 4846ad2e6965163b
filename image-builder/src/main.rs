//! `bastion-image`: builds the appliance's bootable disk image, and publishes it as an AMI.
//!
//! This file only parses the command line; `image` does the build, with one module per layer of
//! the result: `initramfs` (+ `cpio`, `modules`), `uki`, `esp`, `gpt`; `publish` turns the disk
//! into an AMI through the EBS direct APIs.

mod arch;
mod cpio;
mod elf;
mod esp;
mod gpt;
mod image;
mod initramfs;
mod modules;
mod publish;
mod uki;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "bastion-image", version, about = "Build the bastion appliance's bootable disk image")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a GPT raw disk whose ESP holds a Unified Kernel Image (kernel + initramfs with the
    /// bastion binary as /init).
    Build {
        /// The appliance binary (static; becomes /init). Its ELF header decides the architecture.
        #[arg(long)]
        binary: PathBuf,
        /// The extracted Debian kernel package (boot/vmlinuz-*, boot/config-*, lib/modules/*).
        #[arg(long)]
        kernel: PathBuf,
        /// The extracted systemd-boot-efi package, or the linux*.efi.stub file itself.
        #[arg(long)]
        stub: PathBuf,
        /// A folder whose files are copied into the initramfs as they are.
        #[arg(long)]
        rootfs: Option<PathBuf>,
        /// A configuration to bake in as /etc/bastion/bastion.toml (validated with check-config).
        #[arg(long)]
        config: Option<PathBuf>,
        /// A bastion built for this machine, to validate --config when --binary is for another CPU.
        #[arg(long)]
        check_config_with: Option<PathBuf>,
        /// The image version (os-release; also seeds the disk and partition GUIDs).
        #[arg(long)]
        version: String,
        /// Disk size, e.g. 1G or 512M.
        #[arg(long, default_value = "1G", value_parser = parse_size)]
        size: u64,
        /// ESP size.
        #[arg(long, default_value = "128M", value_parser = parse_size)]
        esp_size: u64,
        /// Replace the default kernel command line.
        #[arg(long)]
        cmdline: Option<String>,
        /// Load this kernel module too (with its dependencies); repeatable.
        #[arg(long = "module")]
        modules: Vec<String>,
        /// Also write the compressed initramfs here.
        #[arg(long)]
        initramfs_out: Option<PathBuf>,
        /// The Debian packages the kernel and stub came from (fetch-packages.sh's
        /// resolved.lock), recorded in the image as /etc/bastion/image-packages.
        #[arg(long)]
        packages: Option<PathBuf>,
        /// The disk image to write.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Turn a disk image into an AMI: EBS direct APIs (no builder instance, no S3 bucket), then
    /// RegisterImage. Prints `REGION AMI_ID` per region on stdout; progress on stderr.
    Publish {
        /// The disk image (`make image` writes out/ARCH/disk.img).
        image: PathBuf,
        /// The home region (default: AWS_REGION, AWS_DEFAULT_REGION, the profile's region).
        #[arg(long)]
        region: Option<String>,
        /// The AMI name (default: bastion-VERSION-ARCH, from the image).
        #[arg(long)]
        name: Option<String>,
        /// Deregister an AMI of the same name (and delete its snapshots), then publish.
        #[arg(long)]
        force: bool,
        /// Print the plan and make no writing call.
        #[arg(long)]
        dry_run: bool,
        /// Also copy the AMI to this region (repeatable).
        #[arg(long = "copy-to-region")]
        copy_to: Vec<String>,
        /// Give this account launch permission (and its snapshots' volume permission); repeatable.
        #[arg(long = "share-with")]
        share_with: Vec<String>,
        /// Blocks uploaded at once.
        #[arg(long, default_value_t = publish::DEFAULT_JOBS)]
        jobs: usize,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.chars().last() {
        Some('G') | Some('g') => (&s[..s.len() - 1], 1u64 << 30),
        Some('M') | Some('m') => (&s[..s.len() - 1], 1u64 << 20),
        Some('K') | Some('k') => (&s[..s.len() - 1], 1u64 << 10),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("{s:?}: expected a size such as 1G, 128M or 4096"))?;
    let v = n.checked_mul(mult).ok_or_else(|| format!("{s:?}: too large"))?;
    if v % (1 << 20) != 0 {
        return Err(format!("{s:?}: must be a whole number of MiB"));
    }
    Ok(v)
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Publish { image, region, name, force, dry_run, copy_to, share_with, jobs } => {
            let options = publish::Options { image, region, name, force, dry_run, copy_to, share_with, jobs };
            match publish::run(&options) {
                Ok(lines) => {
                    for (region, id) in lines {
                        println!("{region} {id}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("bastion-image publish: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Build {
            binary,
            kernel,
            stub,
            rootfs,
            config,
            check_config_with,
            version,
            size,
            esp_size,
            cmdline,
            modules,
            initramfs_out,
            packages,
            out,
        } => {
            let inputs = image::Inputs {
                binary,
                kernel,
                stub,
                rootfs,
                config,
                config_checker: check_config_with,
                version,
                disk_size: size,
                esp_size,
                cmdline,
                extra_modules: modules,
                out,
                initramfs_out,
                packages,
            };
            match image::build(&inputs) {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("bastion-image: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
