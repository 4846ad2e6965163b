//! Writes the image's data blocks into a started snapshot through the EBS direct APIs: several
//! PutSnapshotBlock calls in flight (each retried by the client with backoff and jitter), every
//! block hashed once (SHA-256 is both its checksum and its signed payload hash), then
//! CompleteSnapshot with the block count and the linear checksum.

use super::inspect::{self, ImageFacts};
use super::progress::Progress;
use bastion_aws::{ebs, AwsError, Client};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Calls in flight. The EBS direct APIs allow about 1,000 PutSnapshotBlock requests a second
/// per account; the limit here is the 2-core builder's CPU and the uplink.
pub const DEFAULT_JOBS: usize = 8;

pub fn upload(
    client: &Client,
    image: &Path,
    facts: &ImageFacts,
    snapshot_id: &str,
    jobs: usize,
    progress: &Progress,
) -> Result<(), String> {
    let blocks = &facts.nonzero_blocks;
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let digests: Mutex<Vec<Option<[u8; 32]>>> = Mutex::new(vec![None; blocks.len()]);
    let first_error: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(blocks.len().max(1)) {
            scope.spawn(|| {
                let mut file = match File::open(image) {
                    Ok(f) => f,
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        first_error.lock().unwrap().get_or_insert(format!("{}: {e}", image.display()));
                        return;
                    }
                };
                while !failed.load(Ordering::Relaxed) {
                    let position = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&index) = blocks.get(position) else { return };
                    let result = put_one(client, &mut file, facts.size, snapshot_id, index, position, blocks.len());
                    match result {
                        Ok(digest) => {
                            digests.lock().unwrap()[position] = Some(digest);
                            progress.block_done(ebs::BLOCK_SIZE as u64);
                        }
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            first_error.lock().unwrap().get_or_insert(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap() {
        return Err(e);
    }
    let digests: Vec<[u8; 32]> =
        digests.into_inner().unwrap().into_iter().map(|d| d.expect("every block was put")).collect();
    let checksum = ebs::linear_checksum(&digests);
    client.complete_snapshot(snapshot_id, digests.len() as u64, &checksum).map(drop).map_err(|e| e.to_string())
}

fn put_one(
    client: &Client,
    file: &mut File,
    size: u64,
    snapshot_id: &str,
    index: u64,
    position: usize,
    total: usize,
) -> Result<[u8; 32], String> {
    let data = inspect::read_block(file, size, index).map_err(|e| format!("reading block {index}: {e}"))?;
    let digest: [u8; 32] = Sha256::digest(&data).into();
    let percent = ((position + 1) * 100 / total.max(1)) as u8;
    client
        .put_snapshot_block(snapshot_id, index, &data, &digest, Some(percent))
        .map_err(|e: AwsError| format!("block {index}: {e}"))?;
    Ok(digest)
}
