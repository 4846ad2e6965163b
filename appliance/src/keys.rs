//! WireGuard keys: base64 text in and out, and the `genkey`/`pubkey` commands.
//!
//! Private and preshared keys live in types whose `Debug` never shows the bytes, so a key cannot
//! reach a log line or an error message by accident. Only `genkey` prints a private key.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use boringtun::x25519;
use std::fmt;

/// Why a key string was rejected (never contains the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(pub String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn decode_key(text: &str) -> Result<[u8; 32], KeyError> {
    let text = text.trim();
    if text.len() != 44 {
        return Err(KeyError(format!(
            "expected 44 characters of base64 (a 32-byte WireGuard key), got {}",
            text.len()
        )));
    }
    let bytes = BASE64
        .decode(text)
        .map_err(|_| KeyError("expected base64 (a 32-byte WireGuard key), found other characters".into()))?;
    bytes
        .try_into()
        .map_err(|_| KeyError("expected a 32-byte WireGuard key".into()))
}

/// A peer's or our own public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        decode_key(text).map(PublicKey)
    }
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }
    pub fn to_x25519(&self) -> x25519::PublicKey {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_matches_wg_reference_vector() {
        // `echo "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=" | wg pubkey`
        let private = PrivateKey::parse("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=").unwrap();
        assert_eq!(
            private.public_key().to_base64(),
            "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
        );
    }

    #[test]
    fn garbage_is_rejected_without_echoing_it() {
        let err = PrivateKey::parse("c2VjcmV0").unwrap_err();
        assert!(!err.0.contains("c2VjcmV0"));
        assert!(PublicKey::parse("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!=").is_err());
    }

    #[test]
    fn debug_never_shows_private_bytes() {
        let key = PrivateKey::generate();
        assert!(!format!("{key:?}").contains(&key.expose_base64()));
    }
}
