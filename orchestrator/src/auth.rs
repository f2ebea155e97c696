//! Sign-In with Ethereum (EIP-4361): nonces, message checks, EOA and EIP-1271 signatures, and
//! sessions bound to the signing address.

use crate::{
    config::{ConfigError, SiweConfig},
    store::{NonceProblem, SessionRecord, Store, StoreError},
};
use alloy::transports::http::reqwest::Url;
use alloy::{
    primitives::{Address, B256, Bytes, FixedBytes, keccak256},
    providers::{Provider, ProviderBuilder},
};
use rand::{Rng, distr::Alphanumeric};
use std::{collections::HashMap, str::FromStr};

alloy::sol! {
    /// EIP-1271: a contract says whether a signature is valid for it.
    #[sol(rpc)]
    interface IERC1271 {
        /// Returns 0x1626ba7e when `signature` is valid for `hash`.
        function isValidSignature(bytes32 hash, bytes signature) external view returns (bytes4 magicValue);
    }
}

/// The value `isValidSignature` returns for a valid signature.
pub const EIP1271_MAGIC: [u8; 4] = [0x16, 0x26, 0xba, 0x7e];

/// Why a sign-in was refused. Every variant is the signer's problem (4xx) except `Chain` and
/// `Store`, which are ours.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The message is not an EIP-4361 message.
    #[error("malformed sign-in message: {0}")]
    MalformedMessage(String),
    /// The signature is not hex or has the wrong length.
    #[error("malformed signature: {0}")]
    MalformedSignature(String),
    /// The message names a domain this server does not serve.
    #[error("domain {0} is not allowed")]
    DomainNotAllowed(String),
    /// The message's URI is not one of this server's.
    #[error("uri {0} is not allowed")]
    UriNotAllowed(String),
    /// The message names a chain this server does not accept.
    #[error("chain id {0} is not allowed")]
    ChainNotAllowed(u64),
    /// The nonce cannot be used.
    #[error("nonce {0}")]
    Nonce(NonceProblem),
    /// The message's expiration time has passed.
    #[error("message expired at {0}")]
    Expired(String),
    /// The message's not-before time has not come yet.
    #[error("message is not valid before {0}")]
    NotYetValid(String),
    /// The message's issued-at time is in the future or before its nonce was issued.
    #[error("issued-at {0} is outside the nonce's lifetime")]
    IssuedAt(String),
    /// The signature is not by the message's address.
    #[error("signature does not match address {0}")]
    SignatureMismatch(String),
    /// The chain could not be asked about a contract wallet.
    #[error("chain rpc failed: {0}")]
    Chain(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Nonce(p) => Self::Nonce(p),
            other => Self::Store(other),
        }
    }
}

impl AuthError {
    /// Stable machine-readable code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedMessage(_) => "invalid_message",
            Self::MalformedSignature(_) => "invalid_signature",
            Self::DomainNotAllowed(_) => "domain_not_allowed",
            Self::UriNotAllowed(_) => "uri_not_allowed",
            Self::ChainNotAllowed(_) => "chain_not_allowed",
            Self::Nonce(NonceProblem::Unknown) => "nonce_unknown",
            Self::Nonce(NonceProblem::Used) => "nonce_used",
            Self::Nonce(NonceProblem::Expired) => "nonce_expired",
            Self::Expired(_) => "message_expired",
            Self::NotYetValid(_) => "message_not_yet_valid",
            Self::IssuedAt(_) => "issued_at_invalid",
            Self::SignatureMismatch(_) => "signature_mismatch",
            Self::Chain(_) => "chain_unavailable",
            Self::Store(_) => "internal",
        }
    }
}

/// A freshly issued nonce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedNonce {
    /// The nonce to put in the message.
    pub nonce: String,
    /// Issue time, unix seconds.
    pub issued_at: i64,
    /// Expiry, unix seconds.
    pub expires_at: i64,
}

/// A successful sign-in: the bearer token (shown once, stored only as its hash) and what it
/// is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedIn {
    /// Bearer token.
    pub token: String,
    /// Address, lowercase hex.
    pub address: String,
    /// Chain id of the message.
    pub chain_id: u64,
    /// Expiry, unix seconds.
    pub expires_at: i64,
    /// Whether the signature was checked through EIP-1271.
    pub contract_wallet: bool,
}

/// Sign-in service: configuration plus the chains it can ask about contract wallets.
#[derive(Clone, Debug)]
pub struct Siwe {
    config: SiweConfig,
    rpc: HashMap<u64, Url>,
}

/// The keccak256 of a session token, as stored.
pub fn token_hash(token: &str) -> String {
    format!("{:x}", keccak256(token.as_bytes()))
}

impl Siwe {
    /// A sign-in service for `config`; fails if an RPC URL is not a URL.
    pub fn new(config: SiweConfig) -> Result<Self, ConfigError> {
        let mut rpc = HashMap::new();
        for c in &config.rpc {
            let url = c.url.parse().map_err(|e| {
                ConfigError::Invalid(format!("rpc url {} for chain {}: {e}", c.url, c.chain_id))
            })?;
            rpc.insert(c.chain_id, url);
        }
        Ok(Self { config, rpc })
    }

    /// The configuration in use.
    pub fn config(&self) -> &SiweConfig {
        &self.config
    }

    /// Issues and stores a single-use nonce.
    pub async fn issue_nonce(&self, store: &Store, now: i64) -> Result<IssuedNonce, AuthError> {
        // 96 bits of alphanumerics from the OS-seeded thread RNG; EIP-4361 asks for at least 8.
        let nonce: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(16)
            .map(char::from)
            .collect();
        let expires_at = now + self.config.nonce_ttl_secs;
        store.create_nonce(&nonce, now, expires_at).await?;
        Ok(IssuedNonce {
            nonce,
            issued_at: now,
            expires_at,
        })
    }

    /// Checks a signed message and, if everything holds, consumes its nonce and opens a session.
    /// Nothing is written when any check fails.
    pub async fn sign_in(
        &self,
        store: &Store,
        message: &str,
        signature: &str,
        now: i64,
    ) -> Result<SignedIn, AuthError> {
        let msg = siwe::Message::from_str(message)
            .map_err(|e| AuthError::MalformedMessage(e.to_string()))?;
        let domain = msg.domain.to_string();
        if !self
            .config
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&domain))
        {
            return Err(AuthError::DomainNotAllowed(domain));
        }
        let uri = msg.uri.to_string();
        if !self
            .config
            .uris
            .iter()
            .any(|prefix| uri_within(&uri, prefix))
        {
            return Err(AuthError::UriNotAllowed(uri));
        }
        if !self.config.chain_ids.contains(&msg.chain_id) {
            return Err(AuthError::ChainNotAllowed(msg.chain_id));
        }
        let skew = self.config.clock_skew_secs;
        if let Some(exp) = &msg.expiration_time
            && unix(exp.as_ref()) <= now
        {
            return Err(AuthError::Expired(exp.to_string()));
        }
        if let Some(nbf) = &msg.not_before
            && unix(nbf.as_ref()) > now + skew
        {
            return Err(AuthError::NotYetValid(nbf.to_string()));
        }
        let nonce_issued = store.usable_nonce(&msg.nonce, now).await?;
        let issued_at = unix(msg.issued_at.as_ref());
        if issued_at > now + skew || issued_at < nonce_issued - skew {
            return Err(AuthError::IssuedAt(msg.issued_at.to_string()));
        }
        let signature = parse_hex(signature)?;
        let address = Address::from(msg.address);
        let contract_wallet = self.check_signature(&msg, address, &signature).await?;

        let token = hex::encode(rand::rng().random::<[u8; 32]>());
        let mut expires_at = now + self.config.session_ttl_secs;
        if let Some(exp) = &msg.expiration_time {
            expires_at = expires_at.min(unix(exp.as_ref()));
        }
        let address = format!("{address:#x}");
        let record = SessionRecord {
            address: address.clone(),
            chain_id: msg.chain_id,
            expires_at,
        };
        store
            .consume_nonce_and_create_session(&msg.nonce, now, &token_hash(&token), &record)
            .await?;
        Ok(SignedIn {
            token,
            address,
            chain_id: msg.chain_id,
            expires_at,
            contract_wallet,
        })
    }

    /// EOA recovery first; if that fails and the chain is reachable, EIP-1271. Returns whether
    /// the contract path was used.
    async fn check_signature(
        &self,
        msg: &siwe::Message,
        address: Address,
        sig: &[u8],
    ) -> Result<bool, AuthError> {
        if let Ok(sig65) = <[u8; 65]>::try_from(sig)
            && msg.verify_eip191(&sig65).is_ok()
        {
            return Ok(false);
        }
        let mismatch = || AuthError::SignatureMismatch(format!("{address:#x}"));
        let Some(url) = self.rpc.get(&msg.chain_id) else {
            return Err(mismatch());
        };
        let provider = ProviderBuilder::new().connect_http(url.clone());
        let code = provider
            .get_code_at(address)
            .await
            .map_err(|e| AuthError::Chain(e.to_string()))?;
        if code.is_empty() {
            return Err(mismatch());
        }
        let hash = B256::from(
            msg.eip191_hash()
                .map_err(|e| AuthError::MalformedMessage(e.to_string()))?,
        );
        let wallet = IERC1271::new(address, &provider);
        match wallet
            .isValidSignature(hash, Bytes::copy_from_slice(sig))
            .call()
            .await
        {
            Ok(magic) if magic == FixedBytes(EIP1271_MAGIC) => Ok(true),
            // A revert or any other answer means "not valid" in EIP-1271.
            Ok(_) => Err(mismatch()),
            Err(alloy::contract::Error::TransportError(e)) => Err(AuthError::Chain(e.to_string())),
            Err(_) => Err(mismatch()),
        }
    }
}

/// Whether `uri` is `prefix` or lies under it (at a path, query or fragment boundary), so
/// `https://app.example` admits `https://app.example/login` but not `https://app.example.evil`.
fn uri_within(uri: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match uri.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with(['/', '?', '#']),
        None => false,
    }
}

fn unix(t: &time::OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn parse_hex(signature: &str) -> Result<Vec<u8>, AuthError> {
    let s = signature.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    let bytes = hex::decode(s).map_err(|e| AuthError::MalformedSignature(e.to_string()))?;
    if bytes.is_empty() {
        return Err(AuthError::MalformedSignature("empty".into()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_prefixes_stop_at_boundaries() {
        assert!(uri_within("https://app.example", "https://app.example"));
        assert!(uri_within(
            "https://app.example/login",
            "https://app.example/"
        ));
        assert!(!uri_within(
            "https://app.example.evil/x",
            "https://app.example"
        ));
        assert!(!uri_within("http://app.example", "https://app.example"));
    }

    #[test]
    fn signatures_must_be_hex() {
        assert!(matches!(
            parse_hex("0xzz"),
            Err(AuthError::MalformedSignature(_))
        ));
        assert!(matches!(
            parse_hex("0x"),
            Err(AuthError::MalformedSignature(_))
        ));
        assert_eq!(parse_hex("0x0102").unwrap(), vec![1, 2]);
    }
}
