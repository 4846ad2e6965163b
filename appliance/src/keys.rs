//! WireGuard keys: base64 text in and out, and the `genkey`/`pubkey` commands.
//!
//! Private and preshared keys live in types whose `Debug` never shows the bytes, so a key cannot
//! reach a log line or an error message by accident, and whose bytes are wiped when they are
//! dropped. Only `genkey` prints a private key. `redact_key_like` hides key-like fragments of
//! what an operator typed in every diagnostic.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use boringtun::x25519;
use std::fmt;

/// Why a key string was rejected (never contains the key itself).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("expected 44 characters of base64 (a 32-byte WireGuard key), got {found}")]
    WrongLength { found: usize },
    #[error("expected base64 (a 32-byte WireGuard key), found other characters")]
    NotBase64,
    #[error("expected a 32-byte WireGuard key")]
    WrongSize,
}

fn decode_key(text: &str) -> Result<[u8; 32], KeyError> {
    let text = text.trim();
    if text.len() != 44 {
        return Err(KeyError::WrongLength { found: text.len() });
    }
    let bytes = BASE64.decode(text).map_err(|_| KeyError::NotBase64)?;
    bytes.try_into().map_err(|_| KeyError::WrongSize)
}

/// A peer's or our own public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        decode_key(text).map(PublicKey)
    }
    pub fn to_base64(self) -> String {
        BASE64.encode(self.0)
    }
    pub fn to_x25519(self) -> x25519::PublicKey {
        x25519::PublicKey::from(self.0)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// Our private key. `Debug` prints a placeholder, and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        decode_key(text).map(PrivateKey)
    }
    pub fn generate() -> Self {
        let secret = x25519::StaticSecret::random_from_rng(rand_core::OsRng);
        PrivateKey(secret.to_bytes())
    }
    #[cfg(test)]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PrivateKey(bytes)
    }
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519::PublicKey::from(&self.to_x25519()).to_bytes())
    }
    pub fn to_x25519(&self) -> x25519::StaticSecret {
        x25519::StaticSecret::from(self.0)
    }
    /// The base64 text of the key: only for `genkey` and for writing client configs the
    /// operator asked for.
    pub fn expose_base64(&self) -> String {
        BASE64.encode(self.0)
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl Drop for PresharedKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// A peer's optional preshared key. `Debug` prints a placeholder, and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct PresharedKey([u8; 32]);

impl PresharedKey {
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        decode_key(text).map(PresharedKey)
    }
    pub fn bytes(&self) -> [u8; 32] {
        self.0
    }
    pub fn expose_base64(&self) -> String {
        BASE64.encode(self.0)
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

/// The text a diagnostic shows instead of a key-like fragment.
pub const HIDDEN: &str = "<hidden>";

/// Longer words that are not keys and may appear in diagnostics (wg-quick's key names).
const SHOWN_WORDS: &[&str] = &[
    "PersistentKeepalive",
    // AWS's action names and error codes in SSM errors (`ssm:GetParametersByPath: ...`).
    "GetParametersByPath",
    "ParameterNotFound",
    "ParameterVersionNotFound",
    "AccessDeniedException",
    "ThrottlingException",
    "ExpiredTokenException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "InternalServerError",
    // ... and in [siblings]' errors (ELBv2, Auto Scaling, EC2).
    "DescribeTargetHealth",
    "DeregisterTargets",
    "SetInstanceHealth",
    "AssignPrivateIpAddresses",
    "UnassignPrivateIpAddresses",
    "DescribeNetworkInterfaces",
    "InvalidParameterValue",
    "PrivateIpAddressInUse",
    "TargetGroupNotFound",
];

/// Masks every fragment of `text` that could be (part of) a WireGuard key: each run of 16 or
/// more base64 characters (`A-Z a-z 0-9 + / =`) becomes [`HIDDEN`]. Every diagnostic that can
/// hold user-supplied text (errors, warnings, log lines, health bodies) goes through this, field
/// names and paths included; data meant to carry keys (the TOML `convert` prints, a client
/// config the operator asked for, public keys in status) does not.
///
/// What stays readable: numbers, [`SHOWN_WORDS`], and runs without a capital letter, `+` or
/// `=` whose `/`-separated pieces are plain words, plain numbers or short names (at most 7
/// characters, at most 3 digits), one of them a word of 3 letters or more: words and paths
/// such as `/etc/wireguard/wg0`. A random 16-character piece of a key looks like that with a
/// probability of about 3 in a million (measured over 2 million random pieces); a whole key,
/// far less.
pub fn redact_key_like(text: &str) -> std::borrow::Cow<'_, str> {
    let shown = SHOWN_TEXTS.lock().unwrap_or_else(|e| e.into_inner());
    if shown.is_empty() {
        return redact_runs(text);
    }
    // The operator's own paths are kept whole; what lies between them is redacted as usual.
    let mut out = String::new();
    let mut rest = text;
    let mut changed = false;
    while let Some((at, len)) =
        shown.iter().filter_map(|s| rest.find(s.as_str()).map(|at| (at, s.len()))).min_by_key(|&(at, len)| (at, !len))
    {
        let before = redact_runs(&rest[..at]);
        changed |= matches!(before, std::borrow::Cow::Owned(_));
        out.push_str(&before);
        out.push_str(&rest[at..at + len]);
        rest = &rest[at + len..];
    }
    let tail = redact_runs(rest);
    if !changed && matches!(tail, std::borrow::Cow::Borrowed(_)) {
        return std::borrow::Cow::Borrowed(text);
    }
    out.push_str(&tail);
    std::borrow::Cow::Owned(out)
}

/// Texts that diagnostics show as they are: the paths the operator named on the command line
/// (a config file in `mktemp -d`'s `/tmp/tmp.Ab3dEf9Xyz/` is not a key). See [`show_in_diagnostics`].
static SHOWN_TEXTS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// From now on, `text` is shown whole in diagnostics. Only for names that are no secret: the
/// paths the operator gave, and AWS resource names (a target group's ARN, instance ids) —
/// never for a value read from a file. Texts shorter than 16 characters are never redacted
/// anyway, and are not kept; the newest [`MAX_SHOWN_TEXTS`] are.
pub fn show_in_diagnostics(text: &str) {
    if text.len() < 16 {
        return;
    }
    let mut shown = SHOWN_TEXTS.lock().unwrap_or_else(|e| e.into_inner());
    if !shown.iter().any(|s| s == text) {
        if shown.len() >= MAX_SHOWN_TEXTS {
            shown.remove(0);
        }
        shown.push(text.to_string());
    }
}

/// How many texts [`show_in_diagnostics`] keeps (instance ids come and go for months).
pub const MAX_SHOWN_TEXTS: usize = 256;

fn redact_runs(text: &str) -> std::borrow::Cow<'_, str> {
    let is_base64 = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=';
    let mut out = String::new();
    let mut changed = false;
    let mut rest = text;
    while let Some(start) = rest.find(is_base64) {
        let len = rest[start..].find(|c: char| !is_base64(c)).unwrap_or(rest.len() - start);
        let run = &rest[start..start + len];
        out.push_str(&rest[..start]);
        if run.len() >= 16 && !readable_run(run) {
            out.push_str(HIDDEN);
            changed = true;
        } else {
            out.push_str(run);
        }
        rest = &rest[start + len..];
    }
    if !changed {
        return std::borrow::Cow::Borrowed(text);
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

fn readable_run(run: &str) -> bool {
    if SHOWN_WORDS.contains(&run) || run.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    if run.bytes().any(|b| b.is_ascii_uppercase() || b == b'+' || b == b'=') {
        return false;
    }
    let word = |piece: &str| piece.bytes().all(|b| b.is_ascii_lowercase());
    let number = |piece: &str| piece.bytes().all(|b| b.is_ascii_digit());
    let short_name = |piece: &str| piece.len() <= 7 && piece.bytes().filter(u8::is_ascii_digit).count() <= 3;
    run.split('/').all(|p| word(p) || number(p) || short_name(p)) && run.split('/').any(|p| p.len() >= 3 && word(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_like_runs_are_hidden_and_the_rest_is_kept() {
        let key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
        let cases: &[(String, String)] = &[
            (format!("unknown key \"{key}\" in [Interface]"), format!("unknown key \"{HIDDEN}\" in [Interface]")),
            // Without its `=`, split in two, or glued into a path: still hidden.
            (format!("PrivateKey {}", &key[..43]), format!("PrivateKey {HIDDEN}")),
            (format!("{}\n{}", &key[..22], &key[22..]), format!("{HIDDEN}\n{HIDDEN}")),
            (format!("cannot read /etc/bastion/{key}: No such file"), format!("cannot read {HIDDEN}: No such file")),
            // Ordinary diagnostics are untouched.
            (
                "/etc/wireguard/wg0.conf:3: Interface.PersistentKeepalive: expected".into(),
                "/etc/wireguard/wg0.conf:3: Interface.PersistentKeepalive: expected".into(),
            ),
            (
                "/tmp/bastion-tests/b5s9gx0/bastion-b5s9gx1cfg.toml".into(),
                "/tmp/bastion-tests/b5s9gx0/bastion-b5s9gx1cfg.toml".into(),
            ),
            // The test kit's names (letters only, see tests/src/lib.rs run_prefix).
            (
                "/tmp/bastion-tests/bkqzxab/bkqzxaccfg.toml:13: nat.masquerade".into(),
                "/tmp/bastion-tests/bkqzxab/bkqzxaccfg.toml:13: nat.masquerade".into(),
            ),
            (
                "found 18446744073709551615, expected a port".into(),
                "found 18446744073709551615, expected a port".into(),
            ),
            ("the configuration-file misconfigurations".into(), "the configuration-file misconfigurations".into()),
            (
                "peer alice roamed from 192.0.2.2:41000 to [2001:db8::1]:41001".into(),
                "peer alice roamed from 192.0.2.2:41000 to [2001:db8::1]:41001".into(),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_key_like(input), *expected, "{input}");
        }
    }

    #[test]
    fn paths_the_operator_named_are_shown_whole_and_keys_around_them_are_not() {
        let path = "/tmp/tmp.Ab3dEf9XyzQ/Bastion-Prod.toml";
        let key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
        let line = format!("{path}:3: peer[0].name: found \"{key}\"");
        assert_eq!(redact_key_like(&line), format!("/tmp/tmp.{HIDDEN}-Prod.toml:3: peer[0].name: found \"{HIDDEN}\""));
        show_in_diagnostics(path);
        assert_eq!(redact_key_like(&line), format!("{path}:3: peer[0].name: found \"{HIDDEN}\""));
        assert_eq!(redact_key_like(&format!("{path} {path}")), format!("{path} {path}"));
    }

    #[test]
    fn every_piece_of_random_keys_is_hidden() {
        // Whole keys, and every 16-character piece of them, as a diagnostic would quote them.
        // Deterministic keys, so a run is repeatable (see the probability above).
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2_000 {
            let mut bytes = [0u8; 32];
            for chunk in bytes.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes());
            }
            let key = PrivateKey(bytes).expose_base64();
            for piece in std::iter::once(key.as_str()).chain((0..=key.len() - 16).map(|i| &key[i..i + 16])) {
                let shown = redact_key_like(&format!("found \"{piece}\",")).into_owned();
                assert!(!shown.contains(piece), "{piece} shown in {shown}");
            }
        }
    }

    #[test]
    fn public_key_matches_wg_reference_vector() {
        // `echo "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=" | wg pubkey`
        let private = PrivateKey::parse("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=").unwrap();
        assert_eq!(private.public_key().to_base64(), "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=");
    }

    #[test]
    fn garbage_is_rejected_without_echoing_it() {
        let err = PrivateKey::parse("c2VjcmV0").unwrap_err();
        assert_eq!(err, KeyError::WrongLength { found: 8 });
        assert!(!err.to_string().contains("c2VjcmV0"));
        assert!(PublicKey::parse("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!=").is_err());
    }

    #[test]
    fn debug_never_shows_private_bytes() {
        let key = PrivateKey::generate();
        assert!(!format!("{key:?}").contains(&key.expose_base64()));
    }
}
