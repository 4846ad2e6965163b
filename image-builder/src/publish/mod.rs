//! `bastion-image publish IMAGE`: the raw disk becomes an AMI without a builder instance or an S3
//! bucket, as coldsnap and NixOS's upload-ami do it — the EBS direct APIs write a snapshot block
//! by block, RegisterImage makes the AMI, CopyImage and the permission calls take it further.
//!
//! A sequence of idempotent steps, each with a waiter and one line on stderr, in the manner of
//! Bottlerocket's pubsys:
//! 1. `inspect` the file (a bastion image? which architecture and version? which blocks?);
//! 2. `plan` the name, tags and sizes; `--dry-run` stops here, after read-only lookups;
//! 3. an AMI of that name already there is the result (or, with `--force`, is deregistered and
//!    its snapshots deleted);
//! 4. snapshots an interrupted run left behind (found by the `bastion:image` tag, not used by an
//!    AMI) are deleted;
//! 5. StartSnapshot, `upload` every data block, CompleteSnapshot, wait for `completed`;
//! 6. RegisterImage, wait for `available`;
//! 7. CopyImage to each `--copy-to-region` (also idempotent by name), wait for each;
//! 8. `--share-with`: launch permission on each AMI, create-volume permission on its snapshots.
//!
//! stdout gets one line per region, `REGION AMI_ID`, home region first.

mod inspect;
mod plan;
mod progress;
mod upload;

use bastion_aws::ec2::Registration;
use bastion_aws::{AwsError, Client, Environment};
use plan::{Plan, IMAGE_TAG};
use progress::Progress;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use upload::DEFAULT_JOBS;

#[derive(Debug, Clone)]
pub struct Options {
    pub image: PathBuf,
    pub region: Option<String>,
    pub name: Option<String>,
    pub force: bool,
    pub dry_run: bool,
    pub copy_to: Vec<String>,
    pub share_with: Vec<String>,
    pub jobs: usize,
}

/// How long a snapshot or an image may take to become ready before we give up (AWS's own
/// waiters use similar bounds).
const SNAPSHOT_WAIT: Duration = Duration::from_secs(60 * 60);
const IMAGE_WAIT: Duration = Duration::from_secs(60 * 60);
/// EBS gives up on a snapshot that is not completed within this many minutes.
const SNAPSHOT_TIMEOUT_MINUTES: u32 = 120;

/// Runs the publish; the `(region, AMI id)` lines, or what went wrong.
pub fn run(options: &Options) -> Result<Vec<(String, String)>, String> {
    let progress = Progress::new();
    let facts = inspect::inspect(&options.image)?;
    progress.step(format!(
        "{}: bastion {} for {}, {} MiB, {} blocks of 512 KiB with data",
        options.image.display(),
        facts.version,
        inspect::ami_architecture(facts.arch),
        facts.size >> 20,
        facts.nonzero_blocks.len()
    ));
    let env = Environment::from_process();
    let region = match options.region.clone().or_else(|| env.region()) {
        Some(r) => r,
        None => return Err(AwsError::NoRegion { hint: env.region_hint() }.to_string()),
    };
    let plan = Plan::new(&facts, options.name.as_deref(), &region, &options.copy_to, &options.share_with)?;
    let client = Client::new(env, region.clone());
    if options.dry_run {
        return dry_run(&client, &plan, &progress);
    }
    let credentials = client.credentials().map_err(|e| e.to_string())?;
    progress.step(format!("region {region}, credentials from {}", credentials.origin));

    let home = match existing(&client, &plan, options.force, &progress)? {
        Some(id) => id,
        None => {
            remove_leftovers(&client, &plan, &progress)?;
            let snapshot = upload_snapshot(&client, options, &facts, &plan, &progress)?;
            register(&client, &plan, &snapshot, &progress)?
        }
    };
    let mut results = vec![(region.clone(), home.clone())];
    for target in &plan.copy_to {
        let copy = copy(&client.in_region(target), &plan, &region, &home, options.force, &progress)?;
        results.push((target.clone(), copy));
    }
    if !plan.share_with.is_empty() {
        for (r, id) in &results {
            share(&client.in_region(r), id, &plan.share_with, &progress)?;
        }
    }
    let stats = client.stats();
    progress.step(format!(
        "done: {} requests, {} retried ({} throttled, {} server errors, {} connection problems)",
        stats.requests.load(std::sync::atomic::Ordering::Relaxed),
        stats.retries(),
        stats.retried_throttling.load(std::sync::atomic::Ordering::Relaxed),
        stats.retried_server.load(std::sync::atomic::Ordering::Relaxed),
        stats.retried_transport.load(std::sync::atomic::Ordering::Relaxed),
    ));
    Ok(results)
}

fn aws(e: AwsError) -> String {
    e.to_string()
}

fn dry_run(client: &Client, plan: &Plan, progress: &Progress) -> Result<Vec<(String, String)>, String> {
    println!("{}", plan.describe());
    // Read-only lookups, so the plan can say what would happen; no writing call is made.
    match client.images_named(&plan.name) {
        Ok(found) if !found.is_empty() => {
            println!("existing     {} is already there: nothing would be uploaded", found[0].id)
        }
        Ok(_) => println!("existing     no AMI named {} in {}: it would be uploaded", plan.name, plan.home_region),
        Err(e) => println!("existing     not checked: {e}"),
    }
    progress.step("dry run: no snapshot, image or permission was created or changed");
    Ok(Vec::new())
}

/// The AMI already published under this name, or `None` (after `--force` removed it).
fn existing(client: &Client, plan: &Plan, force: bool, progress: &Progress) -> Result<Option<String>, String> {
    let found = client.images_named(&plan.name).map_err(aws)?;
    let Some(image) = found.into_iter().next() else {
        progress.step(format!("no AMI named {} in {} yet", plan.name, client.region()));
        return Ok(None);
    };
    if !force {
        progress.step(format!(
            "AMI {} named {} is already there; nothing uploaded (--force replaces it)",
            image.id, plan.name
        ));
        return Ok(Some(image.id));
    }
    client.deregister_image(&image.id).map_err(aws)?;
    progress.step(format!("--force: deregistered {} ({})", image.id, plan.name));
    for snapshot in &image.snapshot_ids {
        client.delete_snapshot(snapshot).map_err(aws)?;
        progress.step(format!("--force: deleted its snapshot {snapshot}"));
    }
    Ok(None)
}

/// Deletes snapshots of this name that no AMI uses: what an interrupted run left.
fn remove_leftovers(client: &Client, plan: &Plan, progress: &Progress) -> Result<(), String> {
    for snapshot in client.snapshots_tagged(IMAGE_TAG, &plan.name).map_err(aws)? {
        match client.delete_snapshot(&snapshot.id) {
            Ok(()) => {
                progress.step(format!("deleted {} ({}), left behind by an earlier run", snapshot.id, snapshot.state))
            }
            // A pending direct-API snapshot may refuse deletion; EBS errors it out after its
            // timeout, and the next run deletes it then.
            Err(e) => progress.step(format!("could not delete the leftover {}: {e}", snapshot.id)),
        }
    }
    Ok(())
}

fn upload_snapshot(
    client: &Client,
    options: &Options,
    facts: &inspect::ImageFacts,
    plan: &Plan,
    progress: &Progress,
) -> Result<String, String> {
    // One token per run: a retried StartSnapshot returns the same snapshot, a new run a new one.
    let token = format!("bastion-{}-{:016x}", std::process::id(), (bastion_aws::retry::unit_random() * 1e16) as u64);
    let started = client
        .start_snapshot(plan.volume_gib, &plan.description, &plan.tags, &token, SNAPSHOT_TIMEOUT_MINUTES)
        .map_err(aws)?;
    if started.block_size != inspect::BLOCK {
        progress.step(format!(
            "note: the service reports a block size of {} bytes; uploading 512 KiB blocks as the EBS direct APIs define them",
            started.block_size
        ));
    }
    progress.step(format!("snapshot {} started ({} GiB)", started.snapshot_id, plan.volume_gib));
    progress.start_upload(facts.nonzero_blocks.len() as u64);
    upload::upload(client, &options.image, facts, &started.snapshot_id, options.jobs, progress)?;
    progress.step(format!(
        "uploaded {} blocks ({:.1} MiB) in {:.1} s; snapshot {} completing",
        facts.nonzero_blocks.len(),
        facts.nonzero_blocks.len() as f64 / 2.0,
        progress.seconds(),
        started.snapshot_id
    ));
    wait(SNAPSHOT_WAIT, &format!("snapshot {} to complete", started.snapshot_id), || {
        match client.snapshot(&started.snapshot_id).map_err(aws)? {
            Some(s) if s.state == "completed" => Ok(Some(())),
            Some(s) if s.state == "error" => Err(format!(
                "snapshot {} ended in error ({}); it is deleted on the next run",
                s.id,
                if s.state_message.is_empty() { "no reason given" } else { &s.state_message }
            )),
            _ => Ok(None),
        }
    })?;
    progress.step(format!("snapshot {} completed", started.snapshot_id));
    Ok(started.snapshot_id)
}

fn register(client: &Client, plan: &Plan, snapshot: &str, progress: &Progress) -> Result<String, String> {
    let registration = Registration {
        name: plan.name.clone(),
        description: plan.description.clone(),
        architecture: plan.architecture.to_string(),
        snapshot_id: snapshot.to_string(),
        tags: plan.tags.clone(),
    };
    let id = client.register_image(&registration).map_err(aws)?;
    progress.step(format!("registered {id} ({})", plan.name));
    wait_available(client, &id)?;
    progress.step(format!("{id} is available in {}", client.region()));
    Ok(id)
}

fn wait_available(client: &Client, id: &str) -> Result<(), String> {
    wait(IMAGE_WAIT, &format!("{id} to become available in {}", client.region()), || {
        match client.image(id).map_err(aws)? {
            Some(i) if i.state == "available" => Ok(Some(())),
            Some(i) if i.state == "failed" || i.state == "error" => Err(format!("{id} ended in state {}", i.state)),
            _ => Ok(None),
        }
    })
}

fn copy(
    target: &Client,
    plan: &Plan,
    source_region: &str,
    source: &str,
    force: bool,
    progress: &Progress,
) -> Result<String, String> {
    if let Some(id) = existing(target, plan, force, progress)? {
        return Ok(id);
    }
    let id = target.copy_image(source_region, source, &plan.name, &plan.description).map_err(aws)?;
    progress.step(format!("copying {source} to {} as {id}", target.region()));
    wait_available(target, &id)?;
    progress.step(format!("{id} is available in {}", target.region()));
    Ok(id)
}

fn share(client: &Client, id: &str, accounts: &[String], progress: &Progress) -> Result<(), String> {
    client.share_image(id, accounts).map_err(aws)?;
    let image = client.image(id).map_err(aws)?.ok_or_else(|| format!("{id} vanished in {}", client.region()))?;
    for snapshot in &image.snapshot_ids {
        client.share_snapshot(snapshot, accounts).map_err(aws)?;
    }
    progress.step(format!(
        "{id} in {}: launch permission and snapshot volume permission for {}",
        client.region(),
        accounts.join(", ")
    ));
    Ok(())
}

/// Polls `ready` (a quarter second apart, doubling to 15 s) until it says done, fails, or `limit` passes.
fn wait(limit: Duration, what: &str, mut ready: impl FnMut() -> Result<Option<()>, String>) -> Result<(), String> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        if ready()?.is_some() {
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err(format!("gave up waiting for {what} after {} s", limit.as_secs()));
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(15));
    }
}
