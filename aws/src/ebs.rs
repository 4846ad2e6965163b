//! The EBS direct APIs (REST with JSON): write a snapshot block by block without an instance,
//! and read it back. Checksums are SHA-256 of each 512 KiB block, and for the whole snapshot
//! the SHA-256 of those checksums in block order ("linear" aggregation).

use crate::client::{Call, Client, Protocol};
use crate::error::AwsError;
use crate::retry::RetryPolicy;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

/// The block size of the EBS direct APIs.
pub const BLOCK_SIZE: usize = 512 << 10;

/// Answers that mean "not ready yet" right after StartSnapshot (and throttling's own spelling).
const NOT_READY: &[&str] = &["ResourceNotFoundException", "ConflictException", "RequestThrottledException"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub snapshot_id: String,
    /// What the service says its block size is (the real API: 524288).
    pub block_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub blocks: Vec<(u64, String)>,
    pub next_token: Option<String>,
    pub block_size: u64,
}

/// `x-amz-Checksum` of a whole snapshot: SHA-256 over the blocks' SHA-256s, in index order.
pub fn linear_checksum(block_sha256s: &[[u8; 32]]) -> String {
    let mut all = Vec::with_capacity(block_sha256s.len() * 32);
    for digest in block_sha256s {
        all.extend_from_slice(digest);
    }
    BASE64.encode(ring::digest::digest(&ring::digest::SHA256, &all))
}

fn json(action: &str, text: &str) -> Result<serde_json::Value, AwsError> {
    serde_json::from_str(text).map_err(|e| AwsError::BadAnswer { action: action.into(), why: format!("not JSON: {e}") })
}

impl Client {
    pub fn start_snapshot(
        &self,
        volume_gib: u64,
        description: &str,
        tags: &[(String, String)],
        client_token: &str,
        timeout_minutes: u32,
    ) -> Result<Started, AwsError> {
        let action = "ebs:StartSnapshot";
        let body = serde_json::json!({
            "VolumeSize": volume_gib,
            "Description": description,
            "Tags": tags.iter().map(|(k, v)| serde_json::json!({"Key": k, "Value": v})).collect::<Vec<_>>(),
            "ClientToken": client_token,
            "Timeout": timeout_minutes,
        });
        let mut call = Call::new("ebs", action, "POST", "/snapshots", Protocol::RestJson);
        call.headers.push(("content-type".into(), "application/json".into()));
        call.body = body.to_string().into_bytes();
        let answer = json(action, &self.call(&call)?.text())?;
        let snapshot_id = answer["SnapshotId"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| AwsError::BadAnswer { action: action.into(), why: "no SnapshotId".into() })?;
        Ok(Started { snapshot_id, block_size: answer["BlockSize"].as_u64().unwrap_or(BLOCK_SIZE as u64) })
    }

    /// Writes one block; `sha256` is the block's digest (sent as its checksum and signed as
    /// the payload hash, so the block is hashed once).
    pub fn put_snapshot_block(
        &self,
        snapshot_id: &str,
        index: u64,
        data: &[u8],
        sha256: &[u8; 32],
        progress: Option<u8>,
    ) -> Result<(), AwsError> {
        let mut call = Call::new(
            "ebs",
            "ebs:PutSnapshotBlock",
            "PUT",
            format!("/snapshots/{snapshot_id}/blocks/{index}"),
            Protocol::RestJson,
        );
        call.headers.extend([
            ("content-type".to_string(), "application/octet-stream".to_string()),
            ("x-amz-data-length".to_string(), data.len().to_string()),
            ("x-amz-checksum".to_string(), BASE64.encode(sha256)),
            ("x-amz-checksum-algorithm".to_string(), "SHA256".to_string()),
        ]);
        if let Some(p) = progress {
            call.headers.push(("x-amz-progress".into(), p.min(100).to_string()));
        }
        call.body = data.to_vec();
        call.payload_sha256 = Some(crate::sigv4::hex(sha256));
        call.retry_codes = NOT_READY;
        call.retry = RetryPolicy::UPLOAD;
        self.call(&call).map(drop)
    }

    /// Seals the snapshot; its status (`pending` while EBS finishes, or `completed`).
    pub fn complete_snapshot(
        &self,
        snapshot_id: &str,
        changed_blocks: u64,
        checksum: &str,
    ) -> Result<String, AwsError> {
        let action = "ebs:CompleteSnapshot";
        let mut call =
            Call::new("ebs", action, "POST", format!("/snapshots/completion/{snapshot_id}"), Protocol::RestJson);
        call.headers.extend([
            ("x-amz-changedblockscount".to_string(), changed_blocks.to_string()),
            ("x-amz-checksum".to_string(), checksum.to_string()),
            ("x-amz-checksum-algorithm".to_string(), "SHA256".to_string()),
            ("x-amz-checksum-aggregation-method".to_string(), "LINEAR".to_string()),
        ]);
        call.retry_codes = NOT_READY;
        let answer = json(action, &self.call(&call)?.text())?;
        Ok(answer["Status"].as_str().unwrap_or("pending").to_string())
    }

    /// One page of the snapshot's written blocks.
    pub fn list_snapshot_blocks(&self, snapshot_id: &str, next_token: Option<&str>) -> Result<Listed, AwsError> {
        let action = "ebs:ListSnapshotBlocks";
        let mut call = Call::new("ebs", action, "GET", format!("/snapshots/{snapshot_id}/blocks"), Protocol::RestJson);
        call.query.push(("maxResults".into(), "10000".into()));
        if let Some(token) = next_token {
            call.query.push(("pageToken".into(), token.into()));
        }
        let answer = json(action, &self.call(&call)?.text())?;
        let blocks = answer["Blocks"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|b| Some((b["BlockIndex"].as_u64()?, b["BlockToken"].as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Listed {
            blocks,
            next_token: answer["NextToken"].as_str().map(str::to_string),
            block_size: answer["BlockSize"].as_u64().unwrap_or(BLOCK_SIZE as u64),
        })
    }

    /// One block's bytes.
    pub fn get_snapshot_block(&self, snapshot_id: &str, index: u64, token: &str) -> Result<Vec<u8>, AwsError> {
        let mut call = Call::new(
            "ebs",
            "ebs:GetSnapshotBlock",
            "GET",
            format!("/snapshots/{snapshot_id}/blocks/{index}"),
            Protocol::RestJson,
        );
        call.query.push(("blockToken".into(), token.into()));
        Ok(self.call(&call)?.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linear_checksum_hashes_the_block_hashes_in_order() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let mut both = a.to_vec();
        both.extend_from_slice(&b);
        assert_eq!(linear_checksum(&[a, b]), BASE64.encode(ring::digest::digest(&ring::digest::SHA256, &both)));
        assert_ne!(linear_checksum(&[a, b]), linear_checksum(&[b, a]));
    }
}
