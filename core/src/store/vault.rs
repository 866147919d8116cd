//! Keys at rest: a key added at run time is stored sealed with
//! XChaCha20-Poly1305 (an AEAD), under a key derived with HKDF-SHA256 from
//! the secret the user sets (`KEY_ENCRYPTION_SECRET`). A copied database
//! file or Durable Object dump holds only the sealed form and the key's
//! non-secret id; the id is bound into the seal, so a sealed key cannot be
//! moved to another row unnoticed. The host supplies the random nonce.

use crate::wire::secret::{ApiKey, KeyId};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::Sha256;

/// Bytes of randomness a seal needs.
pub const NONCE_BYTES: usize = 24;

/// The shortest `KEY_ENCRYPTION_SECRET` accepted.
pub const MIN_SECRET_CHARS: usize = 16;

const VERSION: &str = "v1.";

/// Why a sealed key could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// Not something this vault sealed (another secret, a damaged row).
    #[error("a stored key could not be opened (was KEY_ENCRYPTION_SECRET changed?)")]
    Unopenable,
    /// The secret is too short to derive a key from.
    #[error("KEY_ENCRYPTION_SECRET must have at least {MIN_SECRET_CHARS} characters")]
    WeakSecret,
}

/// A nonce for a host whose random source failed: the clock and a process
/// counter, which never repeat within a process and, with the time, not
/// across restarts either (an XChaCha nonce needs to be unique, not secret).
pub fn fallback_nonce(now_nanos: u64) -> [u8; NONCE_BYTES] {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut n = [0u8; NONCE_BYTES];
    n[..8].copy_from_slice(&now_nanos.to_le_bytes());
    n[8..16].copy_from_slice(&COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_le_bytes());
    n[16..].copy_from_slice(b"fallback");
    n
}

/// Seals and opens keys with the key derived from one secret.
#[derive(Clone)]
pub struct Vault {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(..)")
    }
}

impl Vault {
    /// The vault of `secret` (at least [`MIN_SECRET_CHARS`] characters).
    pub fn from_secret(secret: &str) -> Result<Self, VaultError> {
        let secret = secret.trim();
        if secret.chars().count() < MIN_SECRET_CHARS {
            return Err(VaultError::WeakSecret);
        }
        let hk = hkdf::Hkdf::<Sha256>::new(Some(b"gemini-proxy key vault"), secret.as_bytes());
        let mut key = [0u8; 32];
        if hk.expand(b"xchacha20poly1305 v1", &mut key).is_err() {
            return Err(VaultError::WeakSecret);
        }
        Ok(Self { cipher: XChaCha20Poly1305::new(&key.into()) })
    }

    /// `key` sealed with `nonce` (fresh random bytes from the host).
    pub fn seal(&self, key: &ApiKey, nonce: [u8; NONCE_BYTES]) -> String {
        self.seal_with(key, &key.id(), nonce)
    }

    /// `secret` sealed with `nonce`, `aad` bound in as associated data (a
    /// key's id, or a random id of its own for a secret that is no key).
    pub fn seal_with(&self, secret: &ApiKey, aad: &KeyId, nonce: [u8; NONCE_BYTES]) -> String {
        let payload = Payload { msg: secret.expose().as_bytes(), aad: aad.as_str().as_bytes() };
        let sealed = self.cipher.encrypt(XNonce::from_slice(&nonce), payload).unwrap_or_default();
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{VERSION}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Opens what [`Vault::seal`] sealed for the key with id `id`.
    pub fn open(&self, id: &KeyId, sealed: &str) -> Result<ApiKey, VaultError> {
        let key = self.open_with(id, sealed)?;
        if key.id() != *id {
            return Err(VaultError::Unopenable);
        }
        Ok(key)
    }

    /// Opens what [`Vault::seal_with`] sealed under `aad`.
    pub fn open_with(&self, aad: &KeyId, sealed: &str) -> Result<ApiKey, VaultError> {
        let b64 = sealed.strip_prefix(VERSION).ok_or(VaultError::Unopenable)?;
        let bytes = URL_SAFE_NO_PAD.decode(b64).map_err(|_| VaultError::Unopenable)?;
        if bytes.len() <= NONCE_BYTES {
            return Err(VaultError::Unopenable);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let payload = Payload { msg: ciphertext, aad: aad.as_str().as_bytes() };
        let plain = self.cipher.decrypt(XNonce::from_slice(nonce), payload).map_err(|_| VaultError::Unopenable)?;
        Ok(ApiKey::new(String::from_utf8(plain).map_err(|_| VaultError::Unopenable)?))
    }
}

/// The keys added at run time, opened from their stored rows (each a key id
/// and the key sealed, as [`crate::store::persist::VaultRecord`] holds
/// them). Those that
/// cannot be opened (no vault: `KEY_ENCRYPTION_SECRET` unset; or another
/// secret) stay stored and out of the pool: the second value says so, for
/// the host's log.
pub fn open_sealed(vault: Option<&Vault>, sealed: Vec<(String, String)>) -> (Vec<ApiKey>, Option<String>) {
    if sealed.is_empty() {
        return (Vec::new(), None);
    }
    let Some(vault) = vault else {
        let why =
            format!("{} keys added at run time stay out of the pool: KEY_ENCRYPTION_SECRET is not set", sealed.len());
        return (Vec::new(), Some(why));
    };
    let total = sealed.len();
    let keys: Vec<ApiKey> =
        sealed.into_iter().filter_map(|(id, sealed)| vault.open(&KeyId::from_string(&id), &sealed).ok()).collect();
    let failed = total - keys.len();
    let why = (failed > 0).then(|| {
        format!(
            "{failed} keys added at run time could not be opened (was KEY_ENCRYPTION_SECRET changed?); they stay out of the pool"
        )
    });
    (keys, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a long random secret, 32 chars+";

    #[test]
    fn keys_round_trip_and_never_show_in_the_seal() {
        let v = Vault::from_secret(SECRET).expect("vault");
        for raw in
            ["AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW", "AQ.Ab8RN6KxQz1y2w3v4u5t6s7r8q9p0o_-mnbv", "odd-shaped key"]
        {
            let k = ApiKey::new(raw);
            let sealed = v.seal(&k, [7; NONCE_BYTES]);
            assert!(!sealed.contains(raw) && !sealed.contains(&raw[..12]), "{sealed}");
            assert_eq!(v.open(&k.id(), &sealed).expect("opens").expose(), raw);
        }
    }

    #[test]
    fn another_secret_another_row_or_a_damaged_seal_do_not_open() {
        let v = Vault::from_secret(SECRET).expect("vault");
        let a = ApiKey::new("AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW");
        let b = ApiKey::new("AIzaSyZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ");
        let sealed = v.seal(&a, [1; NONCE_BYTES]);
        let other = Vault::from_secret("another long random secret!!").expect("vault");
        assert_eq!(other.open(&a.id(), &sealed), Err(VaultError::Unopenable));
        assert_eq!(v.open(&b.id(), &sealed), Err(VaultError::Unopenable), "moved to another key's row");
        let mut damaged = sealed.clone();
        damaged.push('A');
        assert_eq!(v.open(&a.id(), &damaged), Err(VaultError::Unopenable));
        assert_eq!(v.open(&a.id(), "v1."), Err(VaultError::Unopenable));
        assert_eq!(Vault::from_secret("short").map(drop), Err(VaultError::WeakSecret));
        assert!(!format!("{v:?}").contains(SECRET));
    }
}
