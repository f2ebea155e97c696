// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {StorageMarketBase, FakeProofVerifier} from "./StorageMarket.t.sol";
import {IStorageMarket} from "../src/interfaces/IStorageMarket.sol";

/// @notice The owner's controls over a running deal: naming a repairer, moving replicas, ending the deal.
contract StorageMarketRepairTest is StorageMarketBase {
    uint128 internal constant PRICE = 1_000_000;
    uint256 internal constant FEE = uint256(PRICE) * FEE_BPS / 10_000;

    address internal operatorC = makeAddr("operatorC");
    address internal repairer = makeAddr("repairer");
    bytes32 internal nodeC;
    uint256 internal rootC = uint256(keccak256("root on c")) % R;

    function setUp() public {
        _deploy(new FakeProofVerifier());
        nodeC = _registerNode(operatorC, keccak256("machine-c"));
    }

    /// @dev A two-replica deal (replica 0 on node A, replica 1 on node B) with the repairer named.
    function _dealWithRepairer(uint32 epochs) internal returns (uint256 dealId) {
        dealId = _createDeal(2, 10, PRICE, epochs);
        vm.prank(owner);
        market.setRepairer(dealId, repairer);
    }

    function _rollToEpoch(uint256 dealId, uint32 epoch) internal {
        vm.roll(market.epochStartBlock(dealId, epoch) + 1);
    }

    // ---------------------------------------------------------------- setRepairer

    function test_setRepairer_setsAndClears() public {
        uint256 dealId = _createDeal(1, 10, PRICE, 2);
        assertEq(market.repairerOf(dealId), address(0));
        vm.expectEmit(address(market));
        emit IStorageMarket.RepairerSet(dealId, repairer);
        vm.prank(owner);
        market.setRepairer(dealId, repairer);
        assertEq(market.repairerOf(dealId), repairer);
        vm.expectEmit(address(market));
        emit IStorageMarket.RepairerSet(dealId, address(0));
        vm.prank(owner);
        market.setRepairer(dealId, address(0));
        assertEq(market.repairerOf(dealId), address(0));
    }

    function test_RevertWhen_setRepairerIsNotByOwnerOrDealIsUnknown() public {
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.DealNotFound.selector, 1));
        vm.prank(owner);
        market.setRepairer(1, repairer);
        uint256 dealId = _dealWithRepairer(2);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.NotDealOwner.selector, dealId, repairer));
        vm.prank(repairer);
        market.setRepairer(dealId, stranger);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.NotDealOwner.selector, dealId, stranger));
        vm.prank(stranger);
        market.setRepairer(dealId, stranger);
        assertEq(market.repairerOf(dealId), repairer);
    }

    function test_RevertWhen_repairViewsGetUnknownDealOrReplica() public {
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.DealNotFound.selector, 1));
        market.repairerOf(1);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.DealNotFound.selector, 1));
        market.replicaSince(1, 0);
        uint256 dealId = _createDeal(1, 10, PRICE, 2);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.ReplicaNotFound.selector, dealId, 1));
        market.replicaSince(dealId, 1);
    }

    // ---------------------------------------------------------------- replaceReplica by the owner

    function test_replaceReplica_byOwnerMovesReplicaAndPaysNewOperatorFromThen() public {
        uint256 dealId = _createDeal(2, 10, PRICE, 4);
        _prove(dealId, 0, 0);
        _prove(dealId, 1, 0);
        _rollToEpoch(dealId, 1);
        vm.expectEmit(address(market));
        emit IStorageMarket.ReplicaReplaced(dealId, 0, nodeA, nodeC, rootC, operatorC);
        vm.prank(owner);
        market.replaceReplica(dealId, 0, nodeC, rootC);

        IStorageMarket.Replica memory moved = market.getReplicas(dealId)[0];
        assertEq(moved.nodeId, nodeC);
        assertEq(moved.payee, operatorC);
        assertEq(moved.root, rootC);
        assertEq(market.getReplicas(dealId)[1].nodeId, nodeB);
        assertEq(market.replicaSince(dealId, 0), 1);
        assertEq(market.replicaSince(dealId, 1), 0);
        // The proven epoch keeps its payment; the next one pays the new node's operator.
        assertTrue(market.isProven(dealId, 0, 0));
        _prove(dealId, 0, 1);
        assertEq(market.earningsOf(operatorA), PRICE - FEE);
        assertEq(market.earningsOf(operatorC), PRICE - FEE);
    }

    function test_replaceReplica_neverPaysAnEpochTwice() public {
        uint256 dealId = _createDeal(1, 10, PRICE, 3);
        bytes32 randomness = _enterEpoch(dealId, 0);
        market.submitProof(dealId, 0, 0, _proofFor(dealId, 0, 0, randomness));
        vm.prank(owner);
        market.replaceReplica(dealId, 0, nodeC, rootC);
        // The new node proves the same replica-epoch with its own root: refused, the epoch is paid.
        uint256[8] memory proof = _proofFor(dealId, 0, 0, randomness);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.AlreadyProven.selector, dealId, 0, 0));
        market.submitProof(dealId, 0, 0, proof);
        assertEq(market.earningsOf(operatorC), 0);
        assertEq(market.getDeal(dealId).remaining, 2 * uint256(PRICE));
    }

    function test_replaceReplica_unprovenCurrentEpochPaysTheNewNode() public {
        uint256 dealId = _createDeal(1, 10, PRICE, 2);
        bytes32 randomness = _enterEpoch(dealId, 0);
        vm.prank(owner);
        market.replaceReplica(dealId, 0, nodeC, rootC);
        market.submitProof(dealId, 0, 0, _fakeProof(rootC, 10, _seed(randomness, dealId, 0, 0)));
        assertEq(market.earningsOf(operatorC), PRICE - FEE);
        assertEq(market.earningsOf(operatorA), 0);
    }

    function test_replaceReplica_keepsTheReplicaRootOnANewNode() public {
        uint256 dealId = _createDeal(2, 10, PRICE, 2);
        uint256 oldRoot = market.getReplicas(dealId)[1].root;
        vm.prank(owner);
        market.replaceReplica(dealId, 1, nodeC, oldRoot);
        assertEq(market.getReplicas(dealId)[1].root, oldRoot);
        assertEq(market.getReplicas(dealId)[1].nodeId, nodeC);
    }

    function test_RevertWhen_replaceReplicaTargetsMissingDealReplicaOrEndedDeal() public {
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.DealNotFound.selector, 1));
        market.replaceReplica(1, 0, nodeC, rootC);
        uint256 dealId = _createDeal(2, 10, PRICE, 2);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.ReplicaNotFound.selector, dealId, 2));
        vm.prank(owner);
        market.replaceReplica(dealId, 2, nodeC, rootC);
        uint256 end = START_BLOCK + 2 * EPOCH_BLOCKS;
        vm.roll(end);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.DealHasEnded.selector, dealId, end));
        vm.prank(owner);
        market.replaceReplica(dealId, 0, nodeC, rootC);
    }

    function test_RevertWhen_replaceReplicaNamesABadNodeOrRoot() public {
        uint256 dealId = _createDeal(2, 10, PRICE, 2);
        uint256 otherRoot = market.getReplicas(dealId)[1].root;
        vm.startPrank(owner);
        // The node of another replica, and the replica's own node.
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.DuplicateReplicaNode.selector, nodeB));
        market.replaceReplica(dealId, 0, nodeB, rootC);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.DuplicateReplicaNode.selector, nodeA));
        market.replaceReplica(dealId, 0, nodeA, rootC);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.DuplicateReplicaRoot.selector, otherRoot));
        market.replaceReplica(dealId, 0, nodeC, otherRoot);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.InvalidRoot.selector, R));
        market.replaceReplica(dealId, 0, nodeC, R);
        bytes32 unknown = keccak256("unknown node");
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.UnknownNode.selector, unknown));
        market.replaceReplica(dealId, 0, unknown, rootC);
        vm.stopPrank();
        vm.prank(operatorC);
        registry.pause(nodeC);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.NodeNotActive.selector, nodeC));
        vm.prank(owner);
        market.replaceReplica(dealId, 0, nodeC, rootC);
        assertEq(market.getReplicas(dealId)[0].nodeId, nodeA);
    }

    // ---------------------------------------------------------------- replaceReplica by the repairer

    function test_replaceReplica_byRepairerWhenNodeIsPausedOrRetired() public {
        uint256 dealId = _dealWithRepairer(4);
        vm.prank(operatorA);
        registry.pause(nodeA);
        vm.prank(repairer);
        market.replaceReplica(dealId, 0, nodeC, rootC);
        assertEq(market.getReplicas(dealId)[0].nodeId, nodeC);

        vm.prank(operatorB);
        registry.retire(nodeB);
        bytes32 nodeD = _registerNode(makeAddr("operatorD"), keccak256("machine-d"));
        vm.prank(repairer);
        market.replaceReplica(dealId, 1, nodeD, 42);
        assertEq(market.getReplicas(dealId)[1].nodeId, nodeD);
    }

    function test_replaceReplica_byRepairerAfterTwoMissedEpochs() public {
        uint256 dealId = _dealWithRepairer(6);
        _prove(dealId, 1, 0);
        _prove(dealId, 1, 1);
        // Replica 0 missed epochs 0 and 1, which are closed in epoch 2.
        _rollToEpoch(dealId, 2);
        vm.prank(repairer);
        market.replaceReplica(dealId, 0, nodeC, rootC);
        assertEq(market.getReplicas(dealId)[0].nodeId, nodeC);
    }

    function test_RevertWhen_repairerMovesAHealthyReplica() public {
        uint256 dealId = _dealWithRepairer(6);
        // Epoch 0 and 1 not closed yet: nothing missed.
        _rollToEpoch(dealId, 1);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.ReplicaHealthy.selector, dealId, 0));
        vm.prank(repairer);
        market.replaceReplica(dealId, 0, nodeC, rootC);
        // Missed epoch 1 only (epoch 0 proven): still healthy in epoch 2.
        _prove(dealId, 0, 0);
        _rollToEpoch(dealId, 2);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.ReplicaHealthy.selector, dealId, 0));
        vm.prank(repairer);
        market.replaceReplica(dealId, 0, nodeC, rootC);
        // Missed epoch 2 as well: movable in epoch 3.
        _rollToEpoch(dealId, 3);
        vm.prank(repairer);
        market.replaceReplica(dealId, 0, nodeC, rootC);
    }

    function test_RevertWhen_repairerMovesAFreshlyMovedReplica() public {
        uint256 dealId = _dealWithRepairer(8);
        _rollToEpoch(dealId, 2);
        vm.prank(repairer);
        market.replaceReplica(dealId, 0, nodeC, rootC);
        // Epochs 0 and 1 were the old node's: the new node has missed nothing yet.
        bytes32 nodeD = _registerNode(makeAddr("operatorD"), keccak256("machine-d"));
        _rollToEpoch(dealId, 3);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.ReplicaHealthy.selector, dealId, 0));
        vm.prank(repairer);
        market.replaceReplica(dealId, 0, nodeD, 7);
        // It misses epochs 2 and 3: movable in epoch 4.
        _rollToEpoch(dealId, 4);
        vm.prank(repairer);
        market.replaceReplica(dealId, 0, nodeD, 7);
        assertEq(market.replicaSince(dealId, 0), 4);
    }

    function test_RevertWhen_replaceReplicaIsByStrangerOrClearedRepairer() public {
        uint256 dealId = _dealWithRepairer(4);
        vm.prank(operatorA);
        registry.pause(nodeA);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.NotOwnerOrRepairer.selector, dealId, stranger));
        vm.prank(stranger);
        market.replaceReplica(dealId, 0, nodeC, rootC);
        // A node operator cannot move its own or another replica either.
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.NotOwnerOrRepairer.selector, dealId, operatorC));
        vm.prank(operatorC);
        market.replaceReplica(dealId, 0, nodeC, rootC);
        vm.prank(owner);
        market.setRepairer(dealId, address(0));
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.NotOwnerOrRepairer.selector, dealId, repairer));
        vm.prank(repairer);
        market.replaceReplica(dealId, 0, nodeC, rootC);
        assertEq(market.getReplicas(dealId)[0].nodeId, nodeA);
    }

    // ---------------------------------------------------------------- endDeal

    function test_endDeal_endsAfterCurrentEpochAndSettleRefundsTheRest() public {
        uint256 dealId = _createDeal(2, 10, PRICE, 10);
        _prove(dealId, 0, 0);
        _prove(dealId, 1, 0);
        _prove(dealId, 0, 1);
        uint256 end = START_BLOCK + 2 * EPOCH_BLOCKS;
        vm.expectEmit(address(market));
        emit IStorageMarket.DealEnded(dealId, 2, end);
        vm.prank(owner);
        market.endDeal(dealId);
        assertEq(market.getDeal(dealId).epochs, 2);
        // The current epoch can still be proven; the next one no longer exists.
        _prove(dealId, 1, 1);
        vm.roll(end - 1);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.DealNotEnded.selector, dealId, end));
        market.settle(dealId);
        vm.roll(end + 1);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.EpochOutOfRange.selector, dealId, 2));
        market.submitProof(dealId, 0, 2, _fakeProof(0, 10, 0));
        market.settle(dealId);
        // 20 replica-epochs bought, 4 proven.
        assertEq(usdc.balanceOf(owner), 16 * uint256(PRICE));
        assertEq(usdc.balanceOf(address(market)), 4 * uint256(PRICE));
    }

    function test_endDeal_inTheLastEpochKeepsTheEnd() public {
        uint256 dealId = _createDeal(1, 10, PRICE, 3);
        _rollToEpoch(dealId, 2);
        vm.expectEmit(address(market));
        emit IStorageMarket.DealEnded(dealId, 3, START_BLOCK + 3 * EPOCH_BLOCKS);
        vm.prank(owner);
        market.endDeal(dealId);
        assertEq(market.getDeal(dealId).epochs, 3);
    }

    function test_endDeal_twiceInOneEpochChangesNothingMore() public {
        uint256 dealId = _createDeal(1, 10, PRICE, 5);
        vm.startPrank(owner);
        market.endDeal(dealId);
        market.endDeal(dealId);
        vm.stopPrank();
        assertEq(market.getDeal(dealId).epochs, 1);
    }

    function test_RevertWhen_endDealIsNotByOwnerUnknownOrEnded() public {
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.DealNotFound.selector, 1));
        vm.prank(owner);
        market.endDeal(1);
        uint256 dealId = _dealWithRepairer(2);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.NotDealOwner.selector, dealId, repairer));
        vm.prank(repairer);
        market.endDeal(dealId);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.NotDealOwner.selector, dealId, stranger));
        vm.prank(stranger);
        market.endDeal(dealId);
        assertEq(market.getDeal(dealId).epochs, 2);
        uint256 end = START_BLOCK + 2 * EPOCH_BLOCKS;
        vm.roll(end);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.DealHasEnded.selector, dealId, end));
        vm.prank(owner);
        market.endDeal(dealId);
        market.settle(dealId);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.DealHasEnded.selector, dealId, end));
        vm.prank(owner);
        market.endDeal(dealId);
    }

    // ---------------------------------------------------------------- fuzz

    /// @dev Whatever the replicas' proofs, moves and early end, every unit of the deposit goes exactly once to
    ///      an operator, the fees or the owner's refund, and no replica-epoch is paid twice.
    function testFuzz_replaceAndEnd_conserveFunds(
        uint32 epochs,
        uint256 provenMask,
        uint32 moveEpoch,
        uint32 endEpoch,
        uint128 price
    ) public {
        epochs = uint32(bound(epochs, 1, 10));
        moveEpoch = uint32(bound(moveEpoch, 0, epochs - 1));
        endEpoch = uint32(bound(endEpoch, moveEpoch, epochs - 1));
        price = uint128(bound(price, 1, 1e12));
        uint256 dealId = _createDeal(2, 10, price, epochs);
        uint256 deposit = 2 * uint256(price) * epochs;
        uint256 proven;
        for (uint32 e; e <= endEpoch; ++e) {
            _rollToEpoch(dealId, e);
            for (uint256 r; r < 2; ++r) {
                if ((provenMask >> (2 * e + r)) & 1 == 1) {
                    _prove(dealId, r, e);
                    ++proven;
                }
            }
            if (e == moveEpoch) {
                vm.prank(owner);
                market.replaceReplica(dealId, 0, nodeC, rootC);
                // Replica 0 proven earlier in this epoch: the new node cannot be paid for it again.
                if ((provenMask >> (2 * e)) & 1 == 1) {
                    bytes32 randomness = market.epochRandomness(dealId, e);
                    uint256[8] memory proof = _proofFor(dealId, 0, e, randomness);
                    vm.expectRevert(
                        abi.encodeWithSelector(IStorageMarket.AlreadyProven.selector, dealId, 0, e)
                    );
                    market.submitProof(dealId, 0, e, proof);
                }
            }
            if (e == endEpoch) {
                vm.prank(owner);
                market.endDeal(dealId);
            }
        }
        assertEq(market.getDeal(dealId).epochs, endEpoch + 1);
        vm.roll(START_BLOCK + uint256(endEpoch + 1) * EPOCH_BLOCKS);
        market.settle(dealId);
        uint256 paid = market.earningsOf(operatorA) + market.earningsOf(operatorB)
            + market.earningsOf(operatorC) + market.accruedFees();
        assertEq(paid, uint256(price) * proven);
        assertEq(usdc.balanceOf(owner), deposit - uint256(price) * proven);
        assertEq(usdc.balanceOf(address(market)), paid);
        assertEq(market.getDeal(dealId).provenEpochs, proven);
    }

    /// @dev The repairer's right to move a replica follows exactly the rule: node not Active, or the last two
    ///      closed epochs since placement unproven.
    function testFuzz_repairerMayMoveOnlyAFailingReplica(uint256 provenMask, uint32 epoch, bool paused)
        public
    {
        epoch = uint32(bound(epoch, 0, 7));
        uint256 dealId = _dealWithRepairer(8);
        for (uint32 e; e < epoch; ++e) {
            if ((provenMask >> e) & 1 == 1) _prove(dealId, 0, e);
        }
        _rollToEpoch(dealId, epoch);
        if (paused) {
            vm.prank(operatorA);
            registry.pause(nodeA);
        }
        bool missedTwo =
            epoch >= 2 && (provenMask >> (epoch - 1)) & 1 == 0 && (provenMask >> (epoch - 2)) & 1 == 0;
        if (!paused && !missedTwo) {
            vm.expectRevert(abi.encodeWithSelector(IStorageMarket.ReplicaHealthy.selector, dealId, 0));
        }
        vm.prank(repairer);
        market.replaceReplica(dealId, 0, nodeC, rootC);
    }
}
