//! What a tenant logs into a VM with: SSH public keys (checked before anything stores them) and
//! passwords sealed to a key that only the tenant's wallet can derive.
//!
//! The sealing key is an X25519 key pair derived from the wallet's EIP-191 signature of
//! [`key_message`]: ECDSA signatures are deterministic (RFC 6979), so the same wallet derives the
//! same key on every machine, and no one without the wallet can. The signature is the input
//! keying material of HPKE's `DeriveKeyPair` (RFC 9180 §7.1.3, HKDF-SHA256). Passwords are
//! sealed with HPKE (RFC 9180) in base mode, suite DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! ChaCha20-Poly1305, and bound to their VM through the associated data, so a sealed blob of
//! one VM cannot be passed off as another's.

use alloy::signers::Signer;
use base64::Engine as _;
use hpke::{
    Deserializable, Kem as _, OpModeR, OpModeS, Serializable, aead::ChaCha20Poly1305,
    kdf::HkdfSha256, kem::X25519HkdfSha256,
};
use serde::{Deserialize, Serialize};
use std::fmt;

type Kem = X25519HkdfSha256;

/// The HPKE suite of every sealed blob, as the API names it.
pub const SEALING_SUITE: &str = "DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305";

/// Prefix of a sealed blob: names the format so a later one can be told apart.
const SEALED_PREFIX: &str = "hpke-v1:";

/// HPKE `info`: separates these blobs from any other use of the same key.
const INFO: &[u8] = b"decloud vm credentials v1";

/// Size of an X25519 public key (and of HPKE's encapsulated key for it).
const X25519_LEN: usize = 32;

/// Errors of sealing, opening and key checks.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A sealing public key is not 32 bytes of `0x` hex.
    #[error("sealing key must be 0x followed by 64 hex digits (an X25519 public key)")]
    MalformedSealingKey,
    /// A sealed blob is not in the expected format.
    #[error("sealed credentials are malformed")]
    MalformedBlob,
    /// The blob was not sealed to this key, or was sealed for another VM, or was altered.
    #[error("these credentials were not sealed to this wallet's key (another wallet or chain?)")]
    WrongKey,
    /// The opened plaintext is not a credentials document.
    #[error("opened credentials are not readable: {0}")]
    Unreadable(String),
    /// The wallet did not sign.
    #[error("wallet could not sign the key message: {0}")]
    Signing(String),
    /// HPKE refused to seal.
    #[error("sealing failed: {0}")]
    Sealing(String),
}

/// The message whose signature derives a tenant's sealing key: names the product, its purpose,
/// a version and the chain, so the signature is useless anywhere else.
pub fn key_message(chain_id: u64) -> String {
    format!(
        "DeCloud credentials key v1 · chain {chain_id}\n\n\
         Signing this derives the key that opens the passwords of your DeCloud VMs. \
         It costs nothing and sends no transaction. Sign it only on DeCloud."
    )
}

/// A tenant's sealing key pair. Its `Debug` never shows the secret.
pub struct SealingKey {
    secret: <Kem as hpke::Kem>::PrivateKey,
    public: <Kem as hpke::Kem>::PublicKey,
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealingKey")
            .field("public", &self.public_hex())
            .finish_non_exhaustive()
    }
}

impl SealingKey {
    /// The key pair derived from a signature of [`key_message`].
    pub fn from_signature(signature: &[u8]) -> Self {
        let (secret, public) = Kem::derive_keypair(signature);
        Self { secret, public }
    }

    /// Asks `signer` to sign [`key_message`] for `chain_id` (EIP-191) and derives the key pair.
    pub async fn derive(
        signer: &(impl Signer + Sync),
        chain_id: u64,
    ) -> Result<Self, CredentialsError> {
        let signature = signer
            .sign_message(key_message(chain_id).as_bytes())
            .await
            .map_err(|e| CredentialsError::Signing(e.to_string()))?;
        Ok(Self::from_signature(&signature.as_bytes()))
    }

    /// The public half, `0x` + 64 hex digits: what the orchestrator seals to.
    pub fn public_hex(&self) -> String {
        format!("0x{}", hex_encode(&self.public.to_bytes()))
    }

    /// A random key pair, for secrets that only this process must open.
    pub fn generate() -> Self {
        let (secret, public) = Kem::gen_keypair();
        Self { secret, public }
    }

    /// Opens a blob sealed by [`seal`] for `vm_id`.
    pub fn open(&self, sealed: &str, vm_id: &str) -> Result<Credentials, CredentialsError> {
        let plaintext = self.open_bytes(sealed, vm_id.as_bytes())?;
        serde_json::from_slice(&plaintext).map_err(|e| CredentialsError::Unreadable(e.to_string()))
    }

    /// Opens a blob sealed by [`seal_bytes`] with associated data `aad`.
    pub fn open_bytes(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>, CredentialsError> {
        let raw = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .filter(|b| b.len() > X25519_LEN)
            .ok_or(CredentialsError::MalformedBlob)?;
        let (encapped, ciphertext) = raw.split_at(X25519_LEN);
        let encapped = <Kem as hpke::Kem>::EncappedKey::from_bytes(encapped)
            .map_err(|_| CredentialsError::MalformedBlob)?;
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeR::Base,
            &self.secret,
            &encapped,
            INFO,
            ciphertext,
            aad,
        )
        .map_err(|_| CredentialsError::WrongKey)
    }
}

/// Checks a sealing public key (`0x` + 64 hex digits) and returns it lowercase.
pub fn parse_sealing_key(key: &str) -> Result<String, CredentialsError> {
    let bytes = decode_key(key)?;
    Ok(format!("0x{}", hex_encode(&bytes)))
}

fn decode_key(key: &str) -> Result<Vec<u8>, CredentialsError> {
    let digits = key
        .trim()
        .strip_prefix("0x")
        .ok_or(CredentialsError::MalformedSealingKey)?;
    let bytes = alloy::hex::decode(digits).map_err(|_| CredentialsError::MalformedSealingKey)?;
    if bytes.len() != X25519_LEN {
        return Err(CredentialsError::MalformedSealingKey);
    }
    Ok(bytes)
}

fn hex_encode(bytes: &[u8]) -> String {
    alloy::hex::encode(bytes)
}

/// Seals `credentials` of `vm_id` to a tenant's sealing public key; only the wallet that derived
/// the key can open the result.
pub fn seal(
    public_key: &str,
    vm_id: &str,
    credentials: &Credentials,
) -> Result<String, CredentialsError> {
    let plaintext = serde_json::to_vec(credentials).expect("credentials serialize");
    seal_bytes(public_key, vm_id.as_bytes(), &plaintext)
}

/// Seals `plaintext` to a sealing public key, bound to the associated data `aad`.
pub fn seal_bytes(
    public_key: &str,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<String, CredentialsError> {
    let public = <Kem as hpke::Kem>::PublicKey::from_bytes(&decode_key(public_key)?)
        .map_err(|_| CredentialsError::MalformedSealingKey)?;
    let (encapped, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeS::Base,
        &public,
        INFO,
        plaintext,
        aad,
    )
    .map_err(|e| CredentialsError::Sealing(e.to_string()))?;
    let mut raw = encapped.to_bytes().to_vec();
    raw.extend_from_slice(&ciphertext);
    Ok(format!(
        "{SEALED_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    ))
}

/// What a tenant logs into a VM with, as sealed. Its `Debug` never shows the passwords.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The login user cloud-init creates.
    pub user: String,
    /// That user's password.
    pub password: String,
    /// The value of the template's `${DECLOUD_PASSWORD}`, when the template uses one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_password: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Key types accepted in `authorized_keys` lines: what current OpenSSH servers take (DSA is
/// gone from OpenSSH).
const SSH_KEY_TYPES: [&str; 6] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
];

/// Why an SSH public key was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed ssh public key: {0}")]
pub struct SshKeyError(String);

/// Checks one OpenSSH public key line (`<type> <base64> [comment]`, as in `id_ed25519.pub`) and
/// returns it normalised: single spaces, no trailing newline. The key blob must decode and name
/// the same type as the line, so a truncated or pasted-wrong key is caught here rather than at
/// a failed login.
pub fn parse_ssh_key(line: &str) -> Result<String, SshKeyError> {
    let line = line.trim();
    if line.is_empty() {
        return Err(SshKeyError("empty".into()));
    }
    if line.chars().any(|c| c.is_control()) {
        return Err(SshKeyError(
            "one key per line, without control characters".into(),
        ));
    }
    let mut parts = line.split_whitespace();
    let kind = parts.next().unwrap_or_default();
    if !SSH_KEY_TYPES.contains(&kind) {
        return Err(SshKeyError(format!(
            "unsupported key type {kind:?} (expected one of {})",
            SSH_KEY_TYPES.join(", ")
        )));
    }
    let blob = parts
        .next()
        .ok_or_else(|| SshKeyError("no key data after the type".into()))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|_| SshKeyError("key data is not base64".into()))?;
    // The blob starts with the type as an SSH string: a 4-byte big-endian length, then the name.
    let named = raw
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .and_then(|len| raw.get(4..4 + len));
    if named != Some(kind.as_bytes()) {
        return Err(SshKeyError(format!("key data does not hold a {kind} key")));
    }
    if raw.len() < 4 + kind.len() + 32 {
        return Err(SshKeyError("key data is too short".into()));
    }
    let comment: Vec<&str> = parts.collect();
    Ok(if comment.is_empty() {
        format!("{kind} {blob}")
    } else {
        format!("{kind} {blob} {}", comment.join(" "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::local::PrivateKeySigner;

    fn creds() -> Credentials {
        Credentials {
            user: "decloud".into(),
            password: "Zq8vHn2LwT5xRk9mBp3sYc7d".into(),
            template_password: Some("Aa1Bb2Cc3Dd4Ee5Ff6Gg7Hh8".into()),
        }
    }

    #[tokio::test]
    async fn the_same_wallet_derives_the_same_key_and_opens_what_was_sealed() {
        let wallet = PrivateKeySigner::random();
        let key = SealingKey::derive(&wallet, 31337).await.unwrap();
        let again = SealingKey::derive(&wallet, 31337).await.unwrap();
        assert_eq!(key.public_hex(), again.public_hex());
        let sealed = seal(&key.public_hex(), "vm-1", &creds()).unwrap();
        assert!(!sealed.contains("Zq8vHn2LwT5xRk9mBp3sYc7d"));
        assert_eq!(again.open(&sealed, "vm-1").unwrap(), creds());
    }

    #[tokio::test]
    async fn another_wallet_another_chain_or_another_vm_cannot_open() {
        let wallet = PrivateKeySigner::random();
        let key = SealingKey::derive(&wallet, 31337).await.unwrap();
        let sealed = seal(&key.public_hex(), "vm-1", &creds()).unwrap();
        let stranger = SealingKey::derive(&PrivateKeySigner::random(), 31337)
            .await
            .unwrap();
        assert!(matches!(
            stranger.open(&sealed, "vm-1"),
            Err(CredentialsError::WrongKey)
        ));
        let other_chain = SealingKey::derive(&wallet, 1).await.unwrap();
        assert_ne!(other_chain.public_hex(), key.public_hex());
        assert!(other_chain.open(&sealed, "vm-1").is_err());
        assert!(matches!(
            key.open(&sealed, "vm-2"),
            Err(CredentialsError::WrongKey)
        ));
        assert!(matches!(
            key.open("hpke-v1:AAAA", "vm-1"),
            Err(CredentialsError::MalformedBlob)
        ));
    }

    #[test]
    fn sealing_keys_are_checked() {
        assert!(parse_sealing_key("0x1234").is_err());
        assert!(parse_sealing_key(&"ab".repeat(32)).is_err());
        assert_eq!(
            parse_sealing_key(&format!("0x{}", "AB".repeat(32))).unwrap(),
            format!("0x{}", "ab".repeat(32))
        );
        assert!(seal("0x00", "vm", &creds()).is_err());
    }

    #[test]
    fn debug_output_hides_passwords() {
        let shown = format!("{:?}", creds());
        assert!(!shown.contains("Zq8v") && !shown.contains("Aa1B"));
    }

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIERmbRxmpvQ4hxusWzab9mGUW2vGk+MoKYYUAqvQsETX alice@laptop";

    #[test]
    fn ssh_keys_are_checked_and_normalised() {
        assert_eq!(parse_ssh_key(&format!("  {ED25519}\n")).unwrap(), ED25519);
        for bad in [
            "",
            "ssh-ed25519",
            "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
            "ssh-ed25519 not*base64",
            // An RSA blob under an ed25519 label.
            "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQC",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIERmbRxmpvQ4hxusWzab9mGUW2vGk+MoKYYUAqvQsETX a\nssh-rsa x",
        ] {
            assert!(parse_ssh_key(bad).is_err(), "{bad:?} accepted");
        }
    }
}
