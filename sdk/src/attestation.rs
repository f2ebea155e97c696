//! Signed, hash-chained, Merkle-anchored attestations: what the orchestrator signs for every
//! significant action, and every check a verifier makes of it.
//!
//! An attestation is the EIP-712 struct
//! `Attestation(string subject,string kind,bytes32 payloadHash,uint64 sequence,bytes32 previous,uint64 time)`
//! under the domain `{name: "DeCloud Attestations", version: "1", chainId, verifyingContract:
//! AttestationAnchor}`. Its hash is the EIP-712 signing hash; the next attestation's `previous`
//! is that hash (the first one's is zero), so the log is a chain that cannot be reordered or cut
//! without breaking a link. Batches of consecutive attestations are Merkle trees (the
//! [`crate::merkle`] layout, OpenZeppelin-compatible) over the leaves
//! `keccak256(keccak256(abi.encode(hash)))`, whose roots `AttestationAnchor` stores.
//!
//! ```
//! use alloy::{primitives::Address, signers::local::PrivateKeySigner};
//! use decloud_sdk::attestation::{self, AttestationBody};
//!
//! let key = PrivateKeySigner::random();
//! let domain = attestation::domain(31337, Address::repeat_byte(7));
//! let body = AttestationBody::new("vm:vm-1", "vm.transition", r#"{"to":"running"}"#, 0, Default::default(), 1_700_000_000);
//! let signed = attestation::sign(&key, &domain, body, r#"{"to":"running"}"#).unwrap();
//! attestation::check_record(&signed, &domain, key.address()).unwrap();
//! ```

use alloy::{
    primitives::{Address, B256, Bytes, U256, keccak256},
    providers::Provider,
    signers::{Signature, SignerSync, local::PrivateKeySigner},
    sol,
    sol_types::{Eip712Domain, SolStruct},
};
use serde::{Deserialize, Serialize};

use crate::{bindings::AttestationAnchor, merkle};

/// Kind of the attestation that continues a log whose earlier part the orchestrator no longer
/// holds (it was rebuilt from an empty database): it sits at the sequence number after the
/// chain's last anchored batch, its `previous` is that batch's Merkle root (the attestation
/// before it is gone; the root that covers it is on-chain), and its payload is a
/// [`Resumption`] naming the batch. See [`check_resumption`].
pub const RESUMED_KIND: &str = "log.resumed";
/// Subject of [`RESUMED_KIND`] attestations.
pub const LOG_SUBJECT: &str = "log";

/// The payload of a [`RESUMED_KIND`] attestation: the anchored batch the log continues after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumption {
    /// The batch id on AttestationAnchor.
    pub batch: u64,
    /// Its Merkle root: the resumption attestation's `previous`.
    pub root: B256,
    /// First sequence number of the batch.
    pub first_sequence: u64,
    /// Attestations in the batch.
    pub count: u64,
}

impl Resumption {
    /// The sequence number the log continues at: one past the batch.
    pub fn next_sequence(&self) -> u64 {
        self.first_sequence.saturating_add(self.count)
    }
}

/// EIP-712 domain name of attestations.
pub const DOMAIN_NAME: &str = "DeCloud Attestations";
/// EIP-712 domain version of attestations.
pub const DOMAIN_VERSION: &str = "1";

sol! {
    /// The signed EIP-712 struct.
    #[derive(Debug, PartialEq, Eq)]
    struct Attestation {
        string subject;
        string kind;
        bytes32 payloadHash;
        uint64 sequence;
        bytes32 previous;
        uint64 time;
    }
}

/// The attested fields, as [`Attestation`] (the EIP-712 struct) signs them.
pub type AttestationBody = Attestation;

impl Attestation {
    /// The struct for `payload` (hashed here with keccak256 over its bytes).
    pub fn new(
        subject: &str,
        kind: &str,
        payload: &str,
        sequence: u64,
        previous: B256,
        time: u64,
    ) -> Self {
        Self {
            subject: subject.to_string(),
            kind: kind.to_string(),
            payloadHash: payload_hash(payload),
            sequence,
            previous,
            time,
        }
    }
}

/// The EIP-712 domain of the attestations anchored in `anchor` on chain `chain_id`.
pub fn domain(chain_id: u64, anchor: Address) -> Eip712Domain {
    Eip712Domain::new(
        Some(DOMAIN_NAME.into()),
        Some(DOMAIN_VERSION.into()),
        Some(U256::from(chain_id)),
        Some(anchor),
        None,
    )
}

/// keccak256 of the payload's bytes.
pub fn payload_hash(payload: &str) -> B256 {
    keccak256(payload.as_bytes())
}

/// The Merkle leaf of an attestation hash: `keccak256(keccak256(abi.encode(hash)))`, as
/// OpenZeppelin's `StandardMerkleTree` builds a `bytes32` leaf.
pub fn leaf(hash: B256) -> B256 {
    merkle::leaf_hash_of(&(hash,))
}

/// An attestation as stored and served: the signed fields, the payload they hash, the hash and
/// the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedAttestation {
    /// Position in the log, from 0; also the attestation's id.
    pub sequence: u64,
    /// What the attestation is about, e.g. `vm:vm-7`, `lease:7`, `node:0x…`.
    pub subject: String,
    /// What happened, e.g. `vm.transition`.
    pub kind: String,
    /// The attested data (JSON text), exactly the bytes `payload_hash` hashes.
    pub payload: String,
    /// keccak256 of `payload`.
    pub payload_hash: B256,
    /// Hash of the previous attestation (zero for the first).
    pub previous: B256,
    /// Unix seconds.
    pub time: u64,
    /// The EIP-712 signing hash of the signed fields.
    pub hash: B256,
    /// 65-byte signature of `hash` by the orchestrator's key.
    pub signature: Bytes,
}

impl SignedAttestation {
    /// The signed struct as the stored fields give it.
    pub fn body(&self) -> Attestation {
        Attestation {
            subject: self.subject.clone(),
            kind: self.kind.clone(),
            payloadHash: self.payload_hash,
            sequence: self.sequence,
            previous: self.previous,
            time: self.time,
        }
    }
}

/// Signs `body` (whose payload hash must be that of `payload`).
pub fn sign(
    key: &PrivateKeySigner,
    domain: &Eip712Domain,
    body: Attestation,
    payload: &str,
) -> Result<SignedAttestation, alloy::signers::Error> {
    let hash = body.eip712_signing_hash(domain);
    let signature = key.sign_hash_sync(&hash)?;
    Ok(SignedAttestation {
        sequence: body.sequence,
        subject: body.subject,
        kind: body.kind,
        payload: payload.to_string(),
        payload_hash: body.payloadHash,
        previous: body.previous,
        time: body.time,
        hash,
        signature: Bytes::from(signature.as_bytes().to_vec()),
    })
}

/// Where an attestation sits in an anchored (or about to be anchored) batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inclusion {
    /// The batch id on AttestationAnchor.
    pub batch: u64,
    /// First sequence number of the batch.
    pub first_sequence: u64,
    /// Attestations in the batch.
    pub count: u64,
    /// Merkle root of the batch.
    pub root: B256,
    /// Siblings from the attestation's leaf up to the root.
    pub proof: Vec<B256>,
    /// The anchoring transaction, once confirmed.
    pub tx_hash: Option<B256>,
    /// Block of the anchoring transaction, once confirmed.
    pub block_number: Option<u64>,
}

/// An attestation with its inclusion proof, as the orchestrator serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The attestation.
    pub attestation: SignedAttestation,
    /// Its batch and proof; absent until the attestation is batched.
    pub inclusion: Option<Inclusion>,
}

/// The orchestrator's published signer and EIP-712 domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerInfo {
    /// Address of the key that signs attestations.
    pub signer: Address,
    /// Domain name ([`DOMAIN_NAME`]).
    pub name: String,
    /// Domain version ([`DOMAIN_VERSION`]).
    pub version: String,
    /// Chain id of the anchor.
    pub chain_id: u64,
    /// The AttestationAnchor (the domain's verifying contract).
    pub verifying_contract: Address,
}

impl SignerInfo {
    /// The EIP-712 domain these fields describe.
    pub fn domain(&self) -> Eip712Domain {
        Eip712Domain::new(
            Some(self.name.clone().into()),
            Some(self.version.clone().into()),
            Some(U256::from(self.chain_id)),
            Some(self.verifying_contract),
            None,
        )
    }
}

/// Why an attestation does not verify. Each names the check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyFailure {
    /// The payload's bytes do not hash to the signed payload hash.
    #[error(
        "payload does not match its hash: keccak256(payload) = {computed}, attested {attested}"
    )]
    PayloadMismatch {
        /// keccak256 of the served payload.
        computed: B256,
        /// The payload hash in the attestation.
        attested: B256,
    },
    /// The served hash is not the EIP-712 hash of the served fields.
    #[error(
        "attestation fields were altered: their EIP-712 hash is {computed}, the record says {stored}"
    )]
    HashMismatch {
        /// Hash of the served fields.
        computed: B256,
        /// Hash as served.
        stored: B256,
    },
    /// The signature is not a valid 65-byte ECDSA signature.
    #[error("signature is malformed: {0}")]
    MalformedSignature(String),
    /// The signature was made by another key.
    #[error("signature is not the orchestrator's: recovered {recovered}, expected {expected}")]
    WrongSigner {
        /// Address the signature recovers to.
        recovered: Address,
        /// The published signer.
        expected: Address,
    },
    /// The served attestation is not the one at the requested position.
    #[error("log position mismatch: asked for attestation {requested}, got sequence {got}")]
    WrongPosition {
        /// Requested id.
        requested: u64,
        /// Sequence of what was served.
        got: u64,
    },
    /// The previous-attestation link is broken (the log was reordered, cut or altered).
    #[error(
        "chain link broken at sequence {sequence}: previous hash should be {expected}, attestation says {attested}"
    )]
    BrokenLink {
        /// Sequence of the attestation whose link is broken.
        sequence: u64,
        /// Hash of the attestation actually before it (zero for the first).
        expected: B256,
        /// The attestation's `previous`.
        attested: B256,
    },
    /// The attestation has not been put in a batch yet.
    #[error("attestation {0} is not in a batch yet")]
    NotBatched(u64),
    /// The batch's range does not contain the attestation.
    #[error("batch {batch} covers sequences {first}..{end}, not {sequence}")]
    OutsideBatch {
        /// Batch id.
        batch: u64,
        /// First sequence of the batch.
        first: u64,
        /// One past the last sequence of the batch.
        end: u64,
        /// The attestation's sequence.
        sequence: u64,
    },
    /// The Merkle proof does not lead from the attestation's leaf to the root.
    #[error("merkle proof is invalid: it leads to {computed}, not to the batch root {root}")]
    BadProof {
        /// Root the proof leads to.
        computed: B256,
        /// The batch root.
        root: B256,
    },
    /// The batch has no anchoring transaction yet.
    #[error("batch {0} is not anchored yet")]
    NotAnchored(u64),
    /// The chain does not hold this root for the batch.
    #[error("root is not on-chain: {0}")]
    RootNotOnChain(String),
    /// The chain could not be asked.
    #[error("cannot read AttestationAnchor: {0}")]
    Chain(String),
    /// A resumption attestation does not continue the batch it names.
    #[error("log resumption is invalid: {0}")]
    BadResumption(String),
}

/// Checks one attestation on its own: payload hash, EIP-712 hash and signer.
pub fn check_record(
    a: &SignedAttestation,
    domain: &Eip712Domain,
    signer: Address,
) -> Result<(), VerifyFailure> {
    let computed = payload_hash(&a.payload);
    if computed != a.payload_hash {
        return Err(VerifyFailure::PayloadMismatch {
            computed,
            attested: a.payload_hash,
        });
    }
    let hash = a.body().eip712_signing_hash(domain);
    if hash != a.hash {
        return Err(VerifyFailure::HashMismatch {
            computed: hash,
            stored: a.hash,
        });
    }
    let signature = Signature::try_from(a.signature.as_ref())
        .map_err(|e| VerifyFailure::MalformedSignature(e.to_string()))?;
    let recovered = signature
        .recover_address_from_prehash(&hash)
        .map_err(|e| VerifyFailure::MalformedSignature(e.to_string()))?;
    if recovered != signer {
        return Err(VerifyFailure::WrongSigner {
            recovered,
            expected: signer,
        });
    }
    Ok(())
}

/// Checks that `a` is the attestation at position `requested` and links to `previous` (the
/// attestation at `requested - 1`, itself checked with [`check_record`]; `None` for the first).
pub fn check_link(
    a: &SignedAttestation,
    requested: u64,
    previous: Option<&SignedAttestation>,
) -> Result<(), VerifyFailure> {
    if a.sequence != requested {
        return Err(VerifyFailure::WrongPosition {
            requested,
            got: a.sequence,
        });
    }
    let expected = match previous {
        None if requested == 0 => B256::ZERO,
        None => {
            return Err(VerifyFailure::BrokenLink {
                sequence: requested,
                expected: B256::ZERO,
                attested: a.previous,
            });
        }
        Some(p) if p.sequence + 1 != requested => {
            return Err(VerifyFailure::WrongPosition {
                requested: requested - 1,
                got: p.sequence,
            });
        }
        Some(p) => p.hash,
    };
    if a.previous != expected {
        return Err(VerifyFailure::BrokenLink {
            sequence: requested,
            expected,
            attested: a.previous,
        });
    }
    Ok(())
}

/// Checks the Merkle proof of `a` against its batch root (not yet against the chain).
pub fn check_inclusion(a: &SignedAttestation, inclusion: &Inclusion) -> Result<(), VerifyFailure> {
    let end = inclusion.first_sequence.saturating_add(inclusion.count);
    if a.sequence < inclusion.first_sequence || a.sequence >= end {
        return Err(VerifyFailure::OutsideBatch {
            batch: inclusion.batch,
            first: inclusion.first_sequence,
            end,
            sequence: a.sequence,
        });
    }
    let computed = merkle::MerkleTree::process_proof(leaf(a.hash), &inclusion.proof);
    if computed != inclusion.root {
        return Err(VerifyFailure::BadProof {
            computed,
            root: inclusion.root,
        });
    }
    Ok(())
}

/// Checks that AttestationAnchor at `anchor` holds `inclusion`'s root for its batch, with the
/// same sequence range (`getBatch`).
pub async fn check_on_chain<P: Provider>(
    provider: &P,
    anchor: Address,
    inclusion: &Inclusion,
) -> Result<(), VerifyFailure> {
    let contract = AttestationAnchor::new(anchor, provider);
    let batch = match crate::tx::read(
        "AttestationAnchor",
        contract.getBatch(U256::from(inclusion.batch)),
    )
    .await
    {
        Ok(b) => b,
        Err(crate::Error::Revert(e)) => {
            return Err(VerifyFailure::RootNotOnChain(format!(
                "AttestationAnchor {anchor} has no batch {} ({})",
                inclusion.batch,
                e.signature()
            )));
        }
        Err(crate::Error::UnknownRevert(_)) | Err(crate::Error::Contract(_)) => {
            return Err(VerifyFailure::RootNotOnChain(format!(
                "{anchor} does not answer getBatch({}) as an AttestationAnchor",
                inclusion.batch
            )));
        }
        Err(e) => return Err(VerifyFailure::Chain(e.to_string())),
    };
    if batch.root != inclusion.root {
        return Err(VerifyFailure::RootNotOnChain(format!(
            "batch {} on-chain has root {}, not {}",
            inclusion.batch, batch.root, inclusion.root
        )));
    }
    if batch.firstSequence != inclusion.first_sequence || batch.count != inclusion.count {
        return Err(VerifyFailure::RootNotOnChain(format!(
            "batch {} on-chain covers {} attestations from {}, not {} from {}",
            inclusion.batch,
            batch.count,
            batch.firstSequence,
            inclusion.count,
            inclusion.first_sequence
        )));
    }
    Ok(())
}

/// Checks that a [`RESUMED_KIND`] attestation continues the batch its payload names: it sits
/// right after the batch and links to the batch's root. Whether the chain holds that batch is
/// [`check_resumed_on_chain`]'s question.
pub fn check_resumption(a: &SignedAttestation) -> Result<Resumption, VerifyFailure> {
    if a.kind != RESUMED_KIND {
        return Err(VerifyFailure::BadResumption(format!(
            "attestation {} is a {}, not a {RESUMED_KIND}",
            a.sequence, a.kind
        )));
    }
    let r: Resumption = serde_json::from_str(&a.payload)
        .map_err(|e| VerifyFailure::BadResumption(format!("its payload names no batch: {e}")))?;
    if a.sequence != r.next_sequence() {
        return Err(VerifyFailure::BadResumption(format!(
            "it sits at {}, but batch {} ends before {}",
            a.sequence,
            r.batch,
            r.next_sequence()
        )));
    }
    if a.previous != r.root {
        return Err(VerifyFailure::BrokenLink {
            sequence: a.sequence,
            expected: r.root,
            attested: a.previous,
        });
    }
    Ok(r)
}

/// Checks that AttestationAnchor at `anchor` holds the batch a resumption continues after.
pub async fn check_resumed_on_chain<P: Provider>(
    provider: &P,
    anchor: Address,
    r: &Resumption,
) -> Result<(), VerifyFailure> {
    let inclusion = Inclusion {
        batch: r.batch,
        first_sequence: r.first_sequence,
        count: r.count,
        root: r.root,
        proof: Vec::new(),
        tx_hash: None,
        block_number: None,
    };
    check_on_chain(provider, anchor, &inclusion).await
}

/// [`check_offline`] for a [`RESUMED_KIND`] attestation, which links to an anchored batch
/// instead of to the attestation before it: its position, record, resumption and Merkle proof.
pub fn check_offline_resumed(
    info: &SignerInfo,
    requested: u64,
    evidence: &Evidence,
) -> Result<Resumption, VerifyFailure> {
    let a = &evidence.attestation;
    if a.sequence != requested {
        return Err(VerifyFailure::WrongPosition {
            requested,
            got: a.sequence,
        });
    }
    check_record(a, &info.domain(), info.signer)?;
    let resumption = check_resumption(a)?;
    let inclusion = evidence
        .inclusion
        .as_ref()
        .ok_or(VerifyFailure::NotBatched(a.sequence))?;
    check_inclusion(a, inclusion)?;
    if inclusion.tx_hash.is_none() {
        return Err(VerifyFailure::NotAnchored(inclusion.batch));
    }
    Ok(resumption)
}

/// Every check but the chain's (the link, both records, the Merkle proof): `evidence` is the attestation at `requested`, `previous` the one
/// before it (`None` for the first), `info` the published signer and domain.
pub fn check_offline(
    info: &SignerInfo,
    requested: u64,
    evidence: &Evidence,
    previous: Option<&SignedAttestation>,
) -> Result<(), VerifyFailure> {
    let domain = info.domain();
    let a = &evidence.attestation;
    // The link first: a reordered log then fails as a broken link, which says what happened,
    // rather than as altered fields (the signed sequence no longer matches the position).
    check_link(a, requested, previous)?;
    check_record(a, &domain, info.signer)?;
    if let Some(p) = previous {
        check_record(p, &domain, info.signer)?;
    }
    let inclusion = evidence
        .inclusion
        .as_ref()
        .ok_or(VerifyFailure::NotBatched(a.sequence))?;
    check_inclusion(a, inclusion)?;
    if inclusion.tx_hash.is_none() {
        return Err(VerifyFailure::NotAnchored(inclusion.batch));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(key: &PrivateKeySigner, domain: &Eip712Domain, n: u64) -> Vec<SignedAttestation> {
        let mut out: Vec<SignedAttestation> = Vec::new();
        for i in 0..n {
            let payload = format!("{{\"i\":{i}}}");
            let previous = out.last().map(|a| a.hash).unwrap_or_default();
            let body = Attestation::new("vm:vm-1", "vm.transition", &payload, i, previous, 100 + i);
            out.push(sign(key, domain, body, &payload).unwrap());
        }
        out
    }

    #[test]
    fn untouched_attestations_verify_and_every_alteration_is_named() {
        let key = PrivateKeySigner::random();
        let domain = domain(31337, Address::repeat_byte(9));
        let log = chain(&key, &domain, 5);
        let tree = merkle::MerkleTree::new(log.iter().map(|a| leaf(a.hash))).unwrap();
        let info = SignerInfo {
            signer: key.address(),
            name: DOMAIN_NAME.into(),
            version: DOMAIN_VERSION.into(),
            chain_id: 31337,
            verifying_contract: Address::repeat_byte(9),
        };
        let evidence = |a: &SignedAttestation| Evidence {
            attestation: a.clone(),
            inclusion: Some(Inclusion {
                batch: 0,
                first_sequence: 0,
                count: 5,
                root: tree.root(),
                proof: tree.proof(&leaf(a.hash)).unwrap(),
                tx_hash: Some(B256::repeat_byte(1)),
                block_number: Some(1),
            }),
        };
        for i in 0..5 {
            let prev = (i > 0).then(|| &log[i - 1]);
            check_offline(&info, i as u64, &evidence(&log[i]), prev).unwrap();
        }

        let mut e = evidence(&log[2]);
        e.attestation.payload.push(' ');
        assert!(matches!(
            check_offline(&info, 2, &e, Some(&log[1])),
            Err(VerifyFailure::PayloadMismatch { .. })
        ));
        let mut e = evidence(&log[2]);
        e.attestation.time += 1;
        assert!(matches!(
            check_offline(&info, 2, &e, Some(&log[1])),
            Err(VerifyFailure::HashMismatch { .. })
        ));
        // Re-hashed by someone without the key: the signature no longer recovers to the signer.
        let mut e = evidence(&log[2]);
        e.attestation.time += 1;
        e.attestation.hash = e.attestation.body().eip712_signing_hash(&domain);
        assert!(matches!(
            check_offline(&info, 2, &e, Some(&log[1])),
            Err(VerifyFailure::WrongSigner { .. })
        ));
        // Reordered: what sits at position 3 is attestation 2.
        assert!(matches!(
            check_offline(&info, 3, &evidence(&log[2]), Some(&log[1])),
            Err(VerifyFailure::WrongPosition { .. })
        ));
        assert!(matches!(
            check_offline(&info, 3, &evidence(&log[3]), Some(&log[1])),
            Err(VerifyFailure::WrongPosition { .. })
        ));
        let mut e = evidence(&log[3]);
        e.inclusion.as_mut().unwrap().proof[0] = B256::repeat_byte(7);
        assert!(matches!(
            check_offline(&info, 3, &e, Some(&log[2])),
            Err(VerifyFailure::BadProof { .. })
        ));
        let mut e = evidence(&log[3]);
        e.inclusion = None;
        assert_eq!(
            check_offline(&info, 3, &e, Some(&log[2])),
            Err(VerifyFailure::NotBatched(3))
        );
        // A resumption continues the batch it names, linking to its root.
        let resumption = Resumption {
            batch: 0,
            root: tree.root(),
            first_sequence: 0,
            count: 5,
        };
        let payload = serde_json::to_string(&resumption).unwrap();
        let resume = |sequence: u64, previous: B256| {
            let body =
                Attestation::new(LOG_SUBJECT, RESUMED_KIND, &payload, sequence, previous, 200);
            sign(&key, &domain, body, &payload).unwrap()
        };
        assert_eq!(check_resumption(&resume(5, tree.root())), Ok(resumption));
        assert!(matches!(
            check_resumption(&resume(5, B256::repeat_byte(3))),
            Err(VerifyFailure::BrokenLink { .. })
        ));
        assert!(matches!(
            check_resumption(&resume(6, tree.root())),
            Err(VerifyFailure::BadResumption(_))
        ));
        assert!(matches!(
            check_resumption(&log[1]),
            Err(VerifyFailure::BadResumption(_))
        ));
        let other = PrivateKeySigner::random();
        let forged = chain(&other, &domain, 1);
        assert!(matches!(
            check_record(&forged[0], &domain, key.address()),
            Err(VerifyFailure::WrongSigner { .. })
        ));
    }
}
