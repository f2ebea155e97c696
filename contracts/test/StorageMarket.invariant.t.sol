// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {MockUSDC} from "../src/MockUSDC.sol";
import {StorageMarket} from "../src/StorageMarket.sol";
import {IStorageMarket} from "../src/interfaces/IStorageMarket.sol";
import {TestBase} from "./utils/Test.sol";
import {FakeProofVerifier, StorageMarketBase, VmStorage} from "./StorageMarket.t.sol";

/// @notice Drives the market through valid actions only (creates, proofs, block advances, settlements, claims,
///         fee withdrawals) and records what went in and out.
contract StorageMarketHandler is TestBase {
    VmStorage internal constant vmStorage =
        VmStorage(address(uint160(uint256(keccak256("hevm cheat code")))));

    StorageMarket internal market;
    MockUSDC internal usdc;
    bytes32[2] internal nodes;
    address[2] internal payees;
    address internal owner = makeAddr("dealOwner");

    uint256 public ghostDeposited;
    uint256 public ghostClaimed;
    uint256 public ghostFeesWithdrawn;
    uint256 public ghostRefunded;

    constructor(StorageMarket market_, MockUSDC usdc_, bytes32[2] memory nodes_, address[2] memory payees_) {
        market = market_;
        usdc = usdc_;
        nodes = nodes_;
        payees = payees_;
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
        }
        uint256 deposit = price * epochs * replicas;
        usdc.mint(owner, deposit);
        vm.startPrank(owner);
        usdc.approve(address(market), deposit);
        market.createDeal(ids, roots, uint64(segments), uint128(price), uint32(epochs));
        vm.stopPrank();
        ghostDeposited += deposit;
    }

    uint256 public ghostDuplicatesRefused;

    /// @dev Tries to put two replicas on one node, or two replicas with one root: always refused.
    function createDuplicateDeal(uint256 seed) external {
        bytes32[] memory ids = new bytes32[](2);
        uint256[] memory roots = new uint256[](2);
        bool sameNode = seed % 2 == 0;
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
        if (epoch >= deal.epochs || market.isProven(dealId, replica, epoch)) return;
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
        market.submitProof(dealId, replica, epoch, proof);
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
        address account = payees[bound(who, 0, 1)];
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

    function setUp() public {
        _deploy(new FakeProofVerifier());
        handler = new StorageMarketHandler(market, usdc, [nodeA, nodeB], [operatorA, operatorB]);
        targetContract(address(handler));
    }

    function _owed() internal view returns (uint256 owed) {
        for (uint256 id = 1; id <= market.dealCount(); ++id) {
            owed += market.getDeal(id).remaining;
        }
        owed += market.earningsOf(operatorA) + market.earningsOf(operatorB) + market.accruedFees();
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

    function invariant_settledDealsHoldNothing() public view {
        for (uint256 id = 1; id <= market.dealCount(); ++id) {
            IStorageMarket.Deal memory deal = market.getDeal(id);
            if (deal.settled) assertEq(deal.remaining, 0);
            assertLe(
                deal.remaining, uint256(deal.pricePerEpoch) * deal.epochs * market.getReplicas(id).length
            );
        }
    }
}
