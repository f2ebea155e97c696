// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {MockUSDC} from "../src/MockUSDC.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";
import {StorageMarket} from "../src/StorageMarket.sol";
import {INodeRegistry} from "../src/interfaces/INodeRegistry.sol";
import {IStorageMarket} from "../src/interfaces/IStorageMarket.sol";
import {TestBase} from "./utils/Test.sol";
import {FakeProofVerifier, StorageMarketBase, VmStorage} from "./StorageMarket.t.sol";

/// @notice Drives the market through valid actions (creates, proofs, block advances, settlements, claims, fee
///         withdrawals, repairers, replica moves, node pauses, early ends) and records what went in and out.
///         Actions the market must refuse (a second payment for a replica-epoch, a repairer moving a healthy
///         replica) are made with the expected revert, so an acceptance fails the run.
contract StorageMarketHandler is TestBase {
    VmStorage internal constant vmStorage =
        VmStorage(address(uint160(uint256(keccak256("hevm cheat code")))));

    StorageMarket internal market;
    MockUSDC internal usdc;
    NodeRegistry internal registry;
    bytes32[3] internal nodes;
    address[3] internal payees;
    address internal owner = makeAddr("dealOwner");
    address internal repairer = makeAddr("dealRepairer");

    uint256 public ghostDeposited;
    uint256 public ghostClaimed;
    uint256 public ghostFeesWithdrawn;
    uint256 public ghostRefunded;

    /// @dev What each deal took from its owner.
    mapping(uint256 dealId => uint256) public depositOf;
    /// @dev Replica-epochs this handler saw paid, independent of the market's own bookkeeping.
    mapping(uint256 dealId => mapping(uint256 replica => mapping(uint32 epoch => bool))) internal _paid;
    /// @dev Sum of `pricePerEpoch` over every accepted proof.
    uint256 public ghostProvenValue;
    uint256 public ghostDoublePaymentsRefused;
    uint256 public ghostHealthyMovesRefused;
    uint256 public ghostMoves;

    constructor(
        StorageMarket market_,
        MockUSDC usdc_,
        NodeRegistry registry_,
        bytes32[3] memory nodes_,
        address[3] memory payees_
    ) {
        market = market_;
        usdc = usdc_;
        registry = registry_;
        nodes = nodes_;
        payees = payees_;
    }

    /// @dev Deals go to active nodes only: a paused node is resumed first.
    function _activate(uint256 i) internal {
        if (registry.statusOf(nodes[i]) != INodeRegistry.NodeStatus.Active) {
            vm.prank(payees[i]);
            registry.resume(nodes[i]);
        }
    }

    function payee(uint256 i) external view returns (address) {
        return payees[i];
    }

    function createDeal(uint256 replicas, uint256 price, uint256 epochs, uint256 segments) external {
        replicas = bound(replicas, 1, 2);
        price = bound(price, 1, 1e12);
        epochs = bound(epochs, 1, 6);
        segments = bound(segments, 1, market.maxSegmentCount());
        bytes32[] memory ids = new bytes32[](replicas);
        uint256[] memory roots = new uint256[](replicas);
        for (uint256 i; i < replicas; ++i) {
            ids[i] = nodes[i];
            roots[i] = uint256(keccak256(abi.encode(market.dealCount(), i))) >> 8;
            _activate(i);
        }
        uint256 deposit = price * epochs * replicas;
        usdc.mint(owner, deposit);
        vm.startPrank(owner);
        usdc.approve(address(market), deposit);
        uint256 dealId = market.createDeal(ids, roots, uint64(segments), uint128(price), uint32(epochs));
        vm.stopPrank();
        ghostDeposited += deposit;
        depositOf[dealId] = deposit;
    }

    uint256 public ghostDuplicatesRefused;

    /// @dev Tries to put two replicas on one node, or two replicas with one root: always refused.
    function createDuplicateDeal(uint256 seed) external {
        bytes32[] memory ids = new bytes32[](2);
        uint256[] memory roots = new uint256[](2);
        bool sameNode = seed % 2 == 0;
        _activate(0);
        _activate(1);
        (ids[0], ids[1]) = sameNode ? (nodes[0], nodes[0]) : (nodes[0], nodes[1]);
        (roots[0], roots[1]) = sameNode ? (uint256(1), uint256(2)) : (uint256(3), uint256(3));
        vm.startPrank(owner);
        vm.expectRevert(
            sameNode
                ? abi.encodeWithSelector(IStorageMarket.DuplicateReplicaNode.selector, nodes[0])
                : abi.encodeWithSelector(IStorageMarket.DuplicateReplicaRoot.selector, 3)
        );
        market.createDeal(ids, roots, 1, 1, 1);
        vm.stopPrank();
        ghostDuplicatesRefused++;
    }

    function prove(uint256 dealSeed, uint256 replicaSeed) external {
        uint256 count = market.dealCount();
        if (count == 0) return;
        uint256 dealId = bound(dealSeed, 1, count);
        IStorageMarket.Deal memory deal = market.getDeal(dealId);
        uint256 replica = bound(replicaSeed, 0, market.getReplicas(dealId).length - 1);
        uint256 elapsed = block.number - deal.startBlock;
        uint32 epoch = uint32(elapsed / market.epochBlocks());
        if (epoch >= deal.epochs) return;
        uint256 start = market.epochStartBlock(dealId, epoch);
        if (block.number == start || block.number - start > 256) return;
        if (market.epochRandomness(dealId, epoch) == bytes32(0)) {
            vmStorage.setBlockhash(start, keccak256(abi.encode("hash", start)));
        }
        uint256 seed = market.epochSeed(dealId, replica, epoch);
        uint256[8] memory proof;
        proof[0] = uint256(
            keccak256(
                abi.encode([market.getReplicas(dealId)[replica].root, uint256(deal.segmentCount), seed])
            )
        );
        if (_paid[dealId][replica][epoch]) {
            // Paid before, possibly to the node the replica has since moved from: never again.
            vm.expectRevert(
                abi.encodeWithSelector(IStorageMarket.AlreadyProven.selector, dealId, replica, epoch)
            );
            market.submitProof(dealId, replica, epoch, proof);
            ghostDoublePaymentsRefused++;
            return;
        }
        market.submitProof(dealId, replica, epoch, proof);
        _paid[dealId][replica][epoch] = true;
        ghostProvenValue += deal.pricePerEpoch;
    }

    function setRepairer(uint256 dealSeed, bool clear) external {
        uint256 count = market.dealCount();
        if (count == 0) return;
        uint256 dealId = bound(dealSeed, 1, count);
        vm.prank(owner);
        market.setRepairer(dealId, clear ? address(0) : repairer);
    }

    function togglePause(uint256 nodeSeed) external {
        uint256 i = bound(nodeSeed, 0, 2);
        INodeRegistry.NodeStatus status = registry.statusOf(nodes[i]);
        vm.prank(payees[i]);
        if (status == INodeRegistry.NodeStatus.Active) registry.pause(nodes[i]);
        else registry.resume(nodes[i]);
    }

    /// @dev Moves a replica to the node not in the deal, as the owner or as the repairer.
    function replace(uint256 dealSeed, uint256 replicaSeed, bool byRepairer) external {
        uint256 count = market.dealCount();
        if (count == 0) return;
        uint256 dealId = bound(dealSeed, 1, count);
        IStorageMarket.Deal memory deal = market.getDeal(dealId);
        if (block.number >= market.epochStartBlock(dealId, deal.epochs)) return;
        IStorageMarket.Replica[] memory replicas = market.getReplicas(dealId);
        uint256 replica = bound(replicaSeed, 0, replicas.length - 1);
        bytes32 target;
        for (uint256 n; n < 3 && target == bytes32(0); ++n) {
            bool used;
            for (uint256 j; j < replicas.length; ++j) {
                used = used || replicas[j].nodeId == nodes[n];
            }
            if (!used && registry.statusOf(nodes[n]) == INodeRegistry.NodeStatus.Active) target = nodes[n];
        }
        if (target == bytes32(0)) return;
        uint256 newRoot = uint256(keccak256(abi.encode(dealId, replica, ghostMoves, "moved"))) >> 8;
        address caller = owner;
        if (byRepairer) {
            if (market.repairerOf(dealId) != repairer) return;
            caller = repairer;
            uint32 current = uint32((block.number - deal.startBlock) / market.epochBlocks());
            uint32 since = market.replicaSince(dealId, replica);
            bool missedTwo = current >= uint256(since) + 2 && !market.isProven(dealId, replica, current - 1)
                && !market.isProven(dealId, replica, current - 2);
            bool failing =
                registry.statusOf(replicas[replica].nodeId) != INodeRegistry.NodeStatus.Active || missedTwo;
            if (!failing) {
                vm.expectRevert(
                    abi.encodeWithSelector(IStorageMarket.ReplicaHealthy.selector, dealId, replica)
                );
                vm.prank(repairer);
                market.replaceReplica(dealId, replica, target, newRoot);
                ghostHealthyMovesRefused++;
                return;
            }
        }
        vm.prank(caller);
        market.replaceReplica(dealId, replica, target, newRoot);
        ghostMoves++;
    }

    function endDeal(uint256 dealSeed) external {
        uint256 count = market.dealCount();
        if (count == 0) return;
        uint256 dealId = bound(dealSeed, 1, count);
        IStorageMarket.Deal memory deal = market.getDeal(dealId);
        if (block.number >= market.epochStartBlock(dealId, deal.epochs)) return;
        vm.prank(owner);
        market.endDeal(dealId);
    }

    function advance(uint256 blocks) external {
        vm.roll(block.number + bound(blocks, 1, 120));
    }

    function settle(uint256 dealSeed) external {
        uint256 count = market.dealCount();
        if (count == 0) return;
        uint256 dealId = bound(dealSeed, 1, count);
        IStorageMarket.Deal memory deal = market.getDeal(dealId);
        if (deal.settled || block.number < market.epochStartBlock(dealId, deal.epochs)) return;
        uint256 before = usdc.balanceOf(owner);
        market.settle(dealId);
        ghostRefunded += usdc.balanceOf(owner) - before;
    }

    function claim(uint256 who) external {
        address account = payees[bound(who, 0, 2)];
        uint256 amount = market.earningsOf(account);
        if (amount == 0) return;
        vm.prank(account);
        market.claim();
        ghostClaimed += amount;
    }

    function withdrawFees() external {
        uint256 amount = market.accruedFees();
        if (amount == 0) return;
        market.withdrawFees();
        ghostFeesWithdrawn += amount;
    }
}

/// @notice The market always holds exactly what it owes: unpaid deal funds plus unclaimed node earnings plus
///         unwithdrawn fees, and every unit deposited is accounted for once.
contract StorageMarketInvariantTest is StorageMarketBase {
    StorageMarketHandler internal handler;

    address internal operatorC = makeAddr("operatorC");

    function setUp() public {
        _deploy(new FakeProofVerifier());
        bytes32 nodeC = _registerNode(operatorC, keccak256("machine-c"));
        handler = new StorageMarketHandler(
            market, usdc, registry, [nodeA, nodeB, nodeC], [operatorA, operatorB, operatorC]
        );
        targetContract(address(handler));
    }

    function _earned() internal view returns (uint256) {
        return market.earningsOf(operatorA) + market.earningsOf(operatorB) + market.earningsOf(operatorC)
            + market.accruedFees();
    }

    function _owed() internal view returns (uint256 owed) {
        for (uint256 id = 1; id <= market.dealCount(); ++id) {
            owed += market.getDeal(id).remaining;
        }
        owed += _earned();
    }

    function invariant_balanceEqualsWhatIsOwed() public view {
        assertEq(usdc.balanceOf(address(market)), _owed(), "balance != deal funds + earnings + fees");
    }

    function invariant_everyUnitIsAccountedOnce() public view {
        assertEq(
            handler.ghostDeposited(),
            _owed() + handler.ghostClaimed() + handler.ghostFeesWithdrawn() + handler.ghostRefunded(),
            "deposited != owed + paid out"
        );
    }

    /// @dev No deal has two replicas on one node, or two replicas with one root.
    function invariant_noDealHasTwoReplicasOnOneNode() public view {
        for (uint256 id = 1; id <= market.dealCount(); ++id) {
            IStorageMarket.Replica[] memory replicas = market.getReplicas(id);
            for (uint256 i; i < replicas.length; ++i) {
                for (uint256 j; j < i; ++j) {
                    assertTrue(replicas[i].nodeId != replicas[j].nodeId, "two replicas on one node");
                    assertTrue(replicas[i].root != replicas[j].root, "two replicas with one root");
                }
            }
        }
    }

    /// @dev Operators and the platform received exactly one price per accepted proof, whoever held the replica.
    function invariant_paymentsEqualProvenReplicaEpochs() public view {
        assertEq(
            _earned() + handler.ghostClaimed() + handler.ghostFeesWithdrawn(),
            handler.ghostProvenValue(),
            "payments != proven replica-epochs"
        );
    }

    /// @dev A deal holds its deposit minus one price per proven replica-epoch until it is settled, then nothing;
    ///      it never proves more replica-epochs than it bought, moves and early ends included.
    function invariant_dealFundsFollowProofs() public view {
        for (uint256 id = 1; id <= market.dealCount(); ++id) {
            IStorageMarket.Deal memory deal = market.getDeal(id);
            uint256 proven = uint256(deal.provenEpochs) * deal.pricePerEpoch;
            assertLe(proven, handler.depositOf(id), "proved more than bought");
            assertEq(deal.remaining, deal.settled ? 0 : handler.depositOf(id) - proven, "deal funds drifted");
        }
    }
}
