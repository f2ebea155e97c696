// SPDX-License-Identifier: MIT
// EAS 1.9.0 pins `pragma solidity 0.8.29;`, so this benchmark compiles with it (profile `eas`), not with our 0.8.30.
pragma solidity 0.8.29;

import {EAS} from "@ethereum-attestation-service/eas-contracts/contracts/EAS.sol";
import {SchemaRegistry} from "@ethereum-attestation-service/eas-contracts/contracts/SchemaRegistry.sol";
import {
    AttestationRequest,
    AttestationRequestData,
    MultiAttestationRequest
} from "@ethereum-attestation-service/eas-contracts/contracts/IEAS.sol";
import {
    ISchemaResolver
} from "@ethereum-attestation-service/eas-contracts/contracts/resolver/ISchemaResolver.sol";
import {Vm} from "./utils/Vm.sol";

/// @notice The part of AttestationAnchor the benchmark calls. src/interfaces/IAttestationAnchor.sol pins 0.8.30
///         and cannot be imported here; a signature that drifted from it makes the benchmark revert, not pass.
interface IAttestationAnchorCalls {
    function ANCHOR_ROLE() external view returns (bytes32);
    function grantRole(bytes32 role, address account) external;
    function anchor(bytes32 root, uint64 count, uint64 firstSequence, string calldata uri)
        external
        returns (uint256 batchId);
    function verify(uint256 batchId, bytes32 leaf, bytes32[] calldata proof) external view returns (bool);
}

/// @title AttestationGasBench
/// @notice Gas of anchoring batches of attestations in AttestationAnchor beside the gas of attesting the same
///         attestations on-chain with the Ethereum Attestation Service, measured in one forge run, and printed as a
///         Markdown table.
/// @dev The profile runs with `isolate = true`: every call this contract makes is executed as its own transaction
///      (cold storage and accounts), and `vm.lastCallGas().gasTotalUsed` is then that transaction's gas, the 21,000
///      base and the calldata included. The table splits it into base + calldata (computed here from the calldata
///      with the cancun rules: 4 gas per zero byte, 16 per other byte) and execution (the rest).
contract AttestationGasBench {
    /// @notice Tells forge this is a test suite.
    bool public constant IS_TEST = true;

    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));
    /// @dev forge prints what is sent to `log(string)` at this address with -vv.
    address internal constant CONSOLE = 0x000000000000000000636F6e736F6c652e6c6f67;

    /// @dev Our contract as we deploy it: the default profile's artifact, built by solc 0.8.30 (bench/eas-gas builds it).
    string internal constant ANCHOR_ARTIFACT = "out/AttestationAnchor.sol/AttestationAnchor.json";
    /// @dev What one attestation says, in both systems: who it concerns, about what, a digest of the signed
    ///      statement and when.
    string internal constant SCHEMA = "bytes32 subject,bytes32 payloadHash,uint64 timestamp";
    /// @dev A batch's URI as the anchor stores it: a CIDv1 (base32, 59 characters) behind `ipfs://`.
    string internal constant BATCH_URI = "ipfs://bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";

    struct KeptProof {
        uint64 batchSize;
        bool hasUri;
        bytes32 leaf;
        bytes32[] proof;
    }

    address internal constant TENANT = address(0x7E4A47);
    uint256 internal constant BASE_TX_GAS = 21_000;

    EAS internal eas;
    bytes32 internal schemaId;
    IAttestationAnchorCalls internal anchors;
    uint64 internal nextSequence;
    /// @dev One attestation's inclusion proof per anchored batch, indexed by batch id.
    KeptProof[] internal keptProofs;
    /// @dev Attestations numbered across the whole run, so every EAS uid and every leaf differs.
    uint256 internal attestationNonce;

    function setUp() public {
        vm.warp(1_700_000_000);
        vm.roll(1_000);
        SchemaRegistry registry = new SchemaRegistry();
        eas = new EAS(registry);
        schemaId = registry.register(SCHEMA, ISchemaResolver(address(0)), false);

        anchors = IAttestationAnchorCalls(vm.deployCode(ANCHOR_ARTIFACT, abi.encode(address(this))));
        anchors.grantRole(anchors.ANCHOR_ROLE(), address(this));
    }

    function test_anchor_gasVersusEasAttest() public {
        _print("| operation | attestations | base + calldata | execution | transaction | per attestation |");
        _print("|---|---:|---:|---:|---:|---:|");

        // EAS: one attestation per transaction, then many in one `multiAttest`.
        AttestationRequestData memory single = _easRequest(_nextAttestation());
        AttestationRequest memory request = AttestationRequest({schema: schemaId, data: single});
        bytes32 uid = eas.attest(request);
        _row("EAS `attest`", 1, abi.encodeCall(eas.attest, (request)));
        vm.assertTrue(eas.isAttestationValid(uid), "EAS stored the attestation");
        _viewRow("EAS `isAttestationValid` (view)");

        _easMulti(10);
        _easMulti(100);

        // Ours: the first batch of a new contract pays once for its first writes (the sequence counter and the
        // batch list); every later batch costs the same whatever its count.
        _anchorBatch("`anchor`, the contract's first batch", 1);
        _anchorBatch("`anchor`", 1);
        _anchorBatch("`anchor`", 10);
        _anchorBatch("`anchor`", 100);
        _anchorBatch("`anchor`", 1_000);
        // What the stored URI costs: the same batch with none.
        _anchorBatch("`anchor`, empty URI", 1_000, "");

        _verifyKeptProofs();
    }

    /// @dev Attests `count` attestations in one `multiAttest` and prints its row.
    function _easMulti(uint256 count) internal {
        AttestationRequestData[] memory data = new AttestationRequestData[](count);
        for (uint256 i; i < count; ++i) {
            data[i] = _easRequest(_nextAttestation());
        }
        MultiAttestationRequest[] memory requests = new MultiAttestationRequest[](1);
        requests[0] = MultiAttestationRequest({schema: schemaId, data: data});
        bytes32[] memory uids = eas.multiAttest(requests);
        _row("EAS `multiAttest`", count, abi.encodeCall(eas.multiAttest, (requests)));
        vm.assertEq(uids.length, count, "one uid per attestation");
        vm.assertTrue(eas.isAttestationValid(uids[count - 1]), "EAS stored the last attestation");
    }

    /// @dev `_anchorBatch` with the URI of a real batch.
    function _anchorBatch(string memory label, uint64 count) internal {
        _anchorBatch(label, count, BATCH_URI);
    }

    /// @dev Anchors the Merkle root of `count` fresh attestations and prints its row; keeps the first attestation's
    ///      inclusion proof, the longest in the tree, for `_verifyKeptProofs`.
    function _anchorBatch(string memory label, uint64 count, string memory uri) internal {
        bytes32[] memory leaves = new bytes32[](count);
        for (uint256 i; i < count; ++i) {
            leaves[i] = _leaf(_nextAttestation());
        }
        (bytes32 root, bytes32[] memory proof) = _rootAndProof(leaves, 0);

        uint256 batchId = anchors.anchor(root, count, nextSequence, uri);
        _row(label, count, abi.encodeCall(anchors.anchor, (root, count, nextSequence, uri)));
        vm.assertEq(batchId, keptProofs.length, "batch ids count up from 0");
        nextSequence += count;
        keptProofs.push(
            KeptProof({batchSize: count, hasUri: bytes(uri).length > 0, leaf: leaves[0], proof: proof})
        );
    }

    /// @dev Verifies on-chain the inclusion proof kept from each batch and prints its row.
    function _verifyKeptProofs() internal view {
        // From batch 1: batch 0, the first batch, holds one attestation as batch 1 does.
        for (uint256 batchId = 1; batchId < keptProofs.length; ++batchId) {
            KeptProof memory kept = keptProofs[batchId];
            // The empty-URI batch repeats the 1,000 one's verification.
            if (!kept.hasUri) continue;
            vm.assertTrue(anchors.verify(batchId, kept.leaf, kept.proof), "the kept proof verifies");
            _viewRow(
                string.concat(
                    "`verify` (view) in a batch of ",
                    _thousands(kept.batchSize),
                    ", proof of ",
                    vm.toString(kept.proof.length),
                    " hashes"
                )
            );
            vm.assertTrue(
                !anchors.verify(batchId, keccak256(abi.encode(kept.leaf)), kept.proof),
                "a foreign leaf does not verify"
            );
        }
    }

    /// @dev One attestation's fields, distinct across the run.
    function _nextAttestation() internal returns (bytes memory fields) {
        uint256 nonce = attestationNonce++;
        fields = abi.encode(
            keccak256(abi.encode("lease", nonce)),
            keccak256(abi.encode("payload", nonce)),
            uint64(block.timestamp)
        );
    }

    function _easRequest(bytes memory fields) internal pure returns (AttestationRequestData memory) {
        return AttestationRequestData({
            recipient: TENANT, expirationTime: 0, revocable: false, refUID: bytes32(0), data: fields, value: 0
        });
    }

    /// @dev The same attestation as a leaf of our batches: OpenZeppelin's double-hashed leaf of the recipient and
    ///      the fields.
    function _leaf(bytes memory fields) internal pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(TENANT, fields))));
    }

    /// @dev The root of OpenZeppelin's sorted-pair Merkle tree over `leaves` (an odd node moves up a level
    ///      unchanged) and the inclusion proof of `leaves[index]`.
    function _rootAndProof(bytes32[] memory leaves, uint256 index)
        internal
        pure
        returns (bytes32 root, bytes32[] memory proof)
    {
        bytes32[] memory level = leaves;
        bytes32[] memory siblings = new bytes32[](256);
        uint256 depth;
        while (level.length > 1) {
            uint256 sibling = index ^ 1;
            if (sibling < level.length) siblings[depth++] = level[sibling];
            bytes32[] memory parents = new bytes32[]((level.length + 1) / 2);
            for (uint256 i; i < parents.length; ++i) {
                uint256 left = 2 * i;
                parents[i] = left + 1 < level.length ? _hashPair(level[left], level[left + 1]) : level[left];
            }
            level = parents;
            index /= 2;
        }
        root = level[0];
        proof = new bytes32[](depth);
        for (uint256 i; i < depth; ++i) {
            proof[i] = siblings[i];
        }
    }

    function _hashPair(bytes32 a, bytes32 b) internal pure returns (bytes32) {
        return a < b ? keccak256(abi.encode(a, b)) : keccak256(abi.encode(b, a));
    }

    /// @dev Prints the row of the view call just made, for one attestation. Forge isolates only state-changing calls,
    ///      so a view's gas is its execution alone, what a contract checking an attestation pays (on top of its
    ///      own call).
    function _viewRow(string memory label) internal view {
        uint256 execution = vm.lastCallGas().gasTotalUsed;
        _print(
            string.concat(
                "| ", label, " | 1 | | ", _thousands(execution), " | | ", _thousands(execution), " |"
            )
        );
    }

    /// @dev Prints the row of the transaction just made, whose calldata was `callData`, covering `count` attestations.
    function _row(string memory label, uint256 count, bytes memory callData) internal view {
        uint256 transaction = vm.lastCallGas().gasTotalUsed;
        uint256 intrinsic = _intrinsicGas(callData);
        vm.assertTrue(transaction > intrinsic, "an isolated call's gas includes its base and calldata gas");
        _print(
            string.concat(
                "| ",
                label,
                " | ",
                _thousands(count),
                " | ",
                _thousands(intrinsic),
                " | ",
                _thousands(transaction - intrinsic),
                " | ",
                _thousands(transaction),
                " | ",
                // Rounded to the nearest gas.
                _thousands((transaction + count / 2) / count),
                " |"
            )
        );
    }

    /// @dev The 21,000 base plus the calldata gas of a transaction carrying `callData` (cancun: 4 per zero byte,
    ///      16 per other byte).
    function _intrinsicGas(bytes memory callData) internal pure returns (uint256 gas) {
        gas = BASE_TX_GAS;
        for (uint256 i; i < callData.length; ++i) {
            gas += callData[i] == 0 ? 4 : 16;
        }
    }

    /// @dev `value` in decimal with thousands separators, as BENCHMARKS.md writes numbers.
    function _thousands(uint256 value) internal pure returns (string memory) {
        if (value < 1000) return vm.toString(value);
        uint256 group = value % 1000;
        string memory padding = group < 10 ? "00" : group < 100 ? "0" : "";
        return string.concat(_thousands(value / 1000), ",", padding, vm.toString(group));
    }

    function _print(string memory line) internal view {
        // The console has no code: a low-level call, since a typed call would revert on the missing code.
        (bool sent,) = CONSOLE.staticcall(abi.encodeWithSignature("log(string)", line));
        sent;
    }
}
