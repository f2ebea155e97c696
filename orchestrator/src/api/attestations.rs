//! The attestation log as verifiers read it: the signer, one attestation with its evidence,
//! and the attestations of a subject.

use super::{ApiError, ApiPath, ApiQuery, AppState, ErrorBody, attestations_disabled};
use axum::{Json, extract::State, http::StatusCode};
use decloud_sdk::api::{
    AttestationQuery, AttestationView, EvidenceView, InclusionView, SignerView,
};
use utoipa_axum::{router::OpenApiRouter, routes};

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
