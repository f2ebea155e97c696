// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {IAttestationAnchor} from "./interfaces/IAttestationAnchor.sol";

/// @title AttestationAnchor
/// @notice Anchors Merkle roots of batches of signed attestations so that anyone can prove, against the chain,
///         that an attestation was published and when.
/// @dev Batches cover contiguous sequence numbers starting at 0: a batch must start at `nextSequence()`, so a
///      replayed or overlapping batch is rejected.
contract AttestationAnchor is IAttestationAnchor, AccessControl {
    /// @notice May anchor batches (the orchestrator's anchoring key).
    bytes32 public constant ANCHOR_ROLE = keccak256("ANCHOR_ROLE");

    /// @inheritdoc IAttestationAnchor
    uint64 public nextSequence;

    Batch[] private _batches;

    /// @param admin Governance: receives DEFAULT_ADMIN_ROLE and grants ANCHOR_ROLE.
    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @inheritdoc IAttestationAnchor
    function anchor(bytes32 root, uint64 count, uint64 firstSequence, string calldata uri)
        external
        onlyRole(ANCHOR_ROLE)
        returns (uint256 batchId)
    {
        if (root == bytes32(0)) revert ZeroRoot();
        if (count == 0) revert EmptyBatch();
        uint64 expected = nextSequence;
        if (firstSequence != expected) revert SequenceMismatch(expected, firstSequence);
        nextSequence = expected + count;
        batchId = _batches.length;
        uint64 nowTime = uint64(block.timestamp);
        _batches.push(
            Batch({
                root: root,
                count: count,
                firstSequence: firstSequence,
                timestamp: nowTime,
                blockNumber: uint64(block.number),
                uri: uri
            })
        );
        emit BatchAnchored(batchId, root, count, firstSequence, nowTime, uri);
    }

    /// @inheritdoc IAttestationAnchor
    function getBatch(uint256 batchId) external view returns (Batch memory) {
        return _batch(batchId);
    }

    /// @inheritdoc IAttestationAnchor
    function batchCount() external view returns (uint256) {
        return _batches.length;
    }

    /// @inheritdoc IAttestationAnchor
    function verify(uint256 batchId, bytes32 leaf, bytes32[] calldata proof) external view returns (bool) {
        return MerkleProof.verifyCalldata(proof, _batch(batchId).root, leaf);
    }

    function _batch(uint256 batchId) private view returns (Batch storage) {
        if (batchId >= _batches.length) revert UnknownBatch(batchId);
        return _batches[batchId];
    }
}
