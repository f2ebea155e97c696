// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {Test} from "./utils/Test.sol";
import {AttestationAnchor} from "../src/AttestationAnchor.sol";
import {IAttestationAnchor} from "../src/interfaces/IAttestationAnchor.sol";

contract AttestationAnchorTest is Test {
    AttestationAnchor internal anchors;
    address internal governance = makeAddr("governance");
    address internal anchorer = makeAddr("anchorer");
    address internal stranger = makeAddr("stranger");

    bytes32[4] internal leaves;
    bytes32 internal root;

    function setUp() public {
        vm.warp(1_700_000_000);
        vm.roll(1_000);
        anchors = new AttestationAnchor(governance);
        bytes32 role = anchors.ANCHOR_ROLE();
        vm.prank(governance);
        anchors.grantRole(role, anchorer);

        for (uint256 i; i < 4; ++i) {
            leaves[i] = keccak256(bytes.concat(keccak256(abi.encode("attestation", i))));
        }
        root = _hashPair(_hashPair(leaves[0], leaves[1]), _hashPair(leaves[2], leaves[3]));
    }

    /// @dev OpenZeppelin's tree convention: parent = keccak256 of the sorted pair.
    function _hashPair(bytes32 a, bytes32 b) internal pure returns (bytes32) {
        return a < b ? keccak256(abi.encode(a, b)) : keccak256(abi.encode(b, a));
    }

    function _anchor(bytes32 batchRoot, uint64 count, uint64 first) internal returns (uint256) {
        vm.prank(anchorer);
        return anchors.anchor(batchRoot, count, first, "ipfs://batch");
    }

    function test_anchor_storesTheBatchAndEmits() public {
        vm.expectEmit(address(anchors));
        emit IAttestationAnchor.BatchAnchored(0, root, 4, 0, uint64(block.timestamp), "ipfs://batch");
        uint256 batchId = _anchor(root, 4, 0);

        assertEq(batchId, 0);
        assertEq(anchors.batchCount(), 1);
        assertEq(anchors.nextSequence(), 4);
        IAttestationAnchor.Batch memory batch = anchors.getBatch(0);
        assertEq(batch.root, root);
        assertEq(batch.count, 4);
        assertEq(batch.firstSequence, 0);
        assertEq(batch.timestamp, block.timestamp);
        assertEq(batch.blockNumber, 1_000);
        assertEq(batch.uri, "ipfs://batch");

        assertEq(_anchor(keccak256("next"), 10, 4), 1);
        assertEq(anchors.nextSequence(), 14);
    }

    function test_RevertWhen_anchorByStranger() public {
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, stranger, keccak256("ANCHOR_ROLE")
            )
        );
        anchors.anchor(root, 4, 0, "");
    }

    function test_RevertWhen_anchorZeroRoot() public {
        vm.prank(anchorer);
        vm.expectRevert(IAttestationAnchor.ZeroRoot.selector);
        anchors.anchor(bytes32(0), 4, 0, "");
    }

    function test_RevertWhen_anchorEmptyBatch() public {
        vm.prank(anchorer);
        vm.expectRevert(IAttestationAnchor.EmptyBatch.selector);
        anchors.anchor(root, 0, 0, "");
    }

    function test_RevertWhen_anchorOutOfSequence() public {
        _anchor(root, 4, 0);
        vm.startPrank(anchorer);
        vm.expectRevert(abi.encodeWithSelector(IAttestationAnchor.SequenceMismatch.selector, 4, 0));
        anchors.anchor(root, 4, 0, ""); // replay
        vm.expectRevert(abi.encodeWithSelector(IAttestationAnchor.SequenceMismatch.selector, 4, 5));
        anchors.anchor(root, 4, 5, ""); // gap
        vm.stopPrank();
    }

    function test_verify_acceptsMembersAndRejectsOthers() public {
        _anchor(root, 4, 0);
        bytes32[] memory proof = new bytes32[](2);
        proof[0] = leaves[3];
        proof[1] = _hashPair(leaves[0], leaves[1]);
        assertTrue(anchors.verify(0, leaves[2], proof));
        assertFalse(anchors.verify(0, leaves[0], proof));
        assertFalse(anchors.verify(0, keccak256("forged"), proof));

        proof[0] = leaves[1];
        proof[1] = _hashPair(leaves[2], leaves[3]);
        assertTrue(anchors.verify(0, leaves[0], proof));
    }

    function test_RevertWhen_verifyUnknownBatch() public {
        vm.expectRevert(abi.encodeWithSelector(IAttestationAnchor.UnknownBatch.selector, 0));
        anchors.verify(0, leaves[0], new bytes32[](0));
    }

    function test_RevertWhen_getBatchUnknown() public {
        _anchor(root, 4, 0);
        vm.expectRevert(abi.encodeWithSelector(IAttestationAnchor.UnknownBatch.selector, 1));
        anchors.getBatch(1);
    }

    function testFuzz_anchor_sequencesStayContiguous(uint64[8] memory counts) public {
        uint64 next;
        for (uint256 i; i < counts.length; ++i) {
            uint64 count = uint64(bound(counts[i], 1, 1_000_000));
            _anchor(keccak256(abi.encode(i)), count, next);
            assertEq(anchors.getBatch(i).firstSequence, next);
            next += count;
            assertEq(anchors.nextSequence(), next);
        }
    }
}
