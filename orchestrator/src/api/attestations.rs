//! The attestation log as verifiers read it: the signer, one attestation with its evidence,
//! and the attestations of a subject.

use super::{ApiError, ApiPath, ApiQuery, AppState, ErrorBody, attestations_disabled};
use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

/// The key that signs attestations and its EIP-712 domain.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SignerView {
    /// Address of the signing key.
    pub signer: String,
    /// EIP-712 domain name.
    pub name: String,
    /// EIP-712 domain version.
    pub version: String,
    /// EIP-712 domain chain id.
    pub chain_id: u64,
    /// EIP-712 verifying contract: the AttestationAnchor holding the batch roots.
    pub verifying_contract: String,
}

/// One signed attestation, exactly as stored.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttestationView {
    /// Position in the log from 0; the attestation's id.
    pub sequence: u64,
    /// What it is about (`vm:…`, `lease:…`, `node:…`, `template:…`).
    pub subject: String,
    /// What happened (`vm.transition`, `lease.opened`, `service.distribution`, …).
    pub kind: String,
    /// The attested data, JSON text; `payload_hash` is keccak256 of these bytes.
    pub payload: String,
    /// keccak256 of `payload`.
    pub payload_hash: String,
    /// Hash of the previous attestation (zero for the first).
    pub previous: String,
    /// Unix seconds.
    pub time: u64,
    /// EIP-712 signing hash of (subject, kind, payload_hash, sequence, previous, time).
    pub hash: String,
    /// 65-byte signature of `hash`, hex.
    pub signature: String,
}

impl From<decloud_sdk::attestation::SignedAttestation> for AttestationView {
    fn from(a: decloud_sdk::attestation::SignedAttestation) -> Self {
        Self {
            sequence: a.sequence,
            subject: a.subject,
            kind: a.kind,
            payload: a.payload,
            payload_hash: a.payload_hash.to_string(),
            previous: a.previous.to_string(),
            time: a.time,
            hash: a.hash.to_string(),
            signature: a.signature.to_string(),
        }
    }
}

/// The batch of an attestation, its Merkle proof and its anchor.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InclusionView {
    /// Batch id on AttestationAnchor.
    pub batch: u64,
    /// First sequence number of the batch.
    pub first_sequence: u64,
    /// Attestations in the batch.
    pub count: u64,
    /// Merkle root (OpenZeppelin layout; leaf = keccak256(keccak256(abi.encode(hash)))).
    pub root: String,
    /// Sibling hashes from the leaf up.
    pub proof: Vec<String>,
    /// The anchoring transaction, once confirmed.
    pub tx_hash: Option<String>,
    /// Its block.
    pub block_number: Option<u64>,
}

/// An attestation with its inclusion proof and anchor.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EvidenceView {
    /// The attestation.
    pub attestation: AttestationView,
    /// Batch, proof and anchor; absent until the attestation is batched.
    pub inclusion: Option<InclusionView>,
}

/// The orchestrator's attestation signer and EIP-712 domain: what verifiers check signatures
/// against.
#[utoipa::path(get, path = "/attestations/signer", tag = "attestations",
    responses((status = 200, body = SignerView), (status = 404, body = ErrorBody)))]
async fn attestation_signer(State(state): State<AppState>) -> Result<Json<SignerView>, ApiError> {
    let info = state
        .inner
        .store
        .attestor()
        .ok_or_else(attestations_disabled)?
        .info();
    Ok(Json(SignerView {
        signer: info.signer.to_string(),
        name: info.name,
        version: info.version,
        chain_id: info.chain_id,
        verifying_contract: info.verifying_contract.to_string(),
    }))
}

/// One attestation by id (its sequence number), with its batch, Merkle proof and anchor.
#[utoipa::path(get, path = "/attestations/{id}", tag = "attestations",
    params(("id" = u64, Path, description = "sequence number")),
    responses((status = 200, body = EvidenceView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn attestation_by_id(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<EvidenceView>, ApiError> {
    let e = state
        .inner
        .store
        .evidence(id)
        .await?
        .ok_or_else(|| ApiError::not_found("attestation"))?;
    Ok(Json(EvidenceView {
        attestation: e.attestation.into(),
        inclusion: e.inclusion.map(|i| InclusionView {
            batch: i.batch,
            first_sequence: i.first_sequence,
            count: i.count,
            root: i.root.to_string(),
            proof: i.proof.iter().map(ToString::to_string).collect(),
            tx_hash: i.tx_hash.map(|t| t.to_string()),
            block_number: i.block_number,
        }),
    }))
}

/// Which attestations to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AttestationQuery {
    /// Subject, e.g. `vm:vm-7`, `lease:7`, `node:0x…`.
    pub subject: String,
    /// Only attestations after this sequence number (keyset paging).
    pub after: Option<u64>,
    /// At most this many (1–500, default 100).
    pub limit: Option<u32>,
}

/// Attestations about one subject, oldest first.
#[utoipa::path(get, path = "/attestations", tag = "attestations", params(AttestationQuery),
    responses((status = 200, body = Vec<AttestationView>), (status = 400, body = ErrorBody)))]
async fn attestations_by_subject(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AttestationQuery>,
) -> Result<Json<Vec<AttestationView>>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) || q.subject.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "subject must not be empty and limit must be 1 to 500",
        ));
    }
    let list = state
        .inner
        .store
        .attestations_of(&q.subject, q.after, limit)
        .await?;
    Ok(Json(list.into_iter().map(Into::into).collect()))
}

/// The attestation routes.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(attestation_signer))
        .routes(routes!(attestation_by_id))
        .routes(routes!(attestations_by_subject))
}
