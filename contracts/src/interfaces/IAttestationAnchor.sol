// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title IAttestationAnchor
/// @notice Merkle roots of batches of signed off-chain attestations. Batches cover contiguous sequence
///         numbers, so the same batch can never be anchored twice.
/// @dev Inclusion proofs follow OpenZeppelin's MerkleProof conventions (sorted pairs, keccak256).
interface IAttestationAnchor {
    /// @notice An anchored batch.
    struct Batch {
        bytes32 root;
        uint64 count;
        uint64 firstSequence;
        uint64 timestamp;
        uint64 blockNumber;
        string uri;
    }

    /// @notice Emitted when a batch root is anchored.
    event BatchAnchored(
        uint256 indexed batchId,
        bytes32 indexed root,
        uint64 count,
        uint64 firstSequence,
        uint64 timestamp,
        string uri
    );

    /// @notice Thrown when the root is zero.
    error ZeroRoot();
    /// @notice Thrown when a batch holds no attestations.
    error EmptyBatch();
    /// @notice Thrown when a batch does not start right after the previous one.
    error SequenceMismatch(uint64 expected, uint64 given);
    /// @notice Thrown when a batch id is unknown.
    error UnknownBatch(uint256 batchId);

    /// @notice Anchors the root of the attestations `firstSequence .. firstSequence + count - 1` (anchor
    ///         role only). `firstSequence` must equal `nextSequence()`.
    /// @return batchId The new batch's id (starting at 0).
    function anchor(bytes32 root, uint64 count, uint64 firstSequence, string calldata uri)
        external
        returns (uint256 batchId);

    /// @notice An anchored batch. Reverts with `UnknownBatch` for an unknown id.
    function getBatch(uint256 batchId) external view returns (Batch memory);

    /// @notice How many batches were anchored.
    function batchCount() external view returns (uint256);

    /// @notice The sequence number the next batch must start at.
    function nextSequence() external view returns (uint64);

    /// @notice Whether `leaf` is in batch `batchId` according to `proof`.
    function verify(uint256 batchId, bytes32 leaf, bytes32[] calldata proof) external view returns (bool);
}
