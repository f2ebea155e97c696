// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Test} from "./utils/Test.sol";
import {MockUSDC} from "../src/MockUSDC.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";
import {StorageMarket} from "../src/StorageMarket.sol";
import {INodeRegistry} from "../src/interfaces/INodeRegistry.sol";
import {IStorageMarket, IStorageProofVerifier} from "../src/interfaces/IStorageMarket.sol";

/// @notice Cheatcodes the storage tests need beyond the shared `Vm` (same cheatcode address).
interface VmStorage {
    function setBlockhash(uint256 blockNumber, bytes32 blockHash) external;
    function readFile(string calldata path) external view returns (string memory data);
    function parseJsonUint(string calldata json, string calldata key) external pure returns (uint256);
    function parseJsonUintArray(string calldata json, string calldata key)
        external
        pure
        returns (uint256[] memory);
    function parseJsonBytes32(string calldata json, string calldata key) external pure returns (bytes32);
}

/// @title FakeProofVerifier
/// @notice TEST FAKE of the Groth16 verifier, for market logic that needs a fresh proof per seed (fuzzing,
///         invariants), which forge cannot generate. It accepts a "proof" whose first word is the keccak hash
///         of the public inputs, so a test still fails if the market passes a wrong root, count or seed. The
///         real verifier is exercised with real proofs in StorageMarket.fixture.t.sol and on anvil.
contract FakeProofVerifier is IStorageProofVerifier {
    function verifyProof(uint256[8] calldata proof, uint256[3] calldata input) external pure returns (bool) {
        return proof[0] == uint256(keccak256(abi.encode(input)));
    }
}

/// @notice Deployment and helpers shared by the StorageMarket suites.
abstract contract StorageMarketBase is Test {
    VmStorage internal constant vmStorage =
        VmStorage(address(uint160(uint256(keccak256("hevm cheat code")))));

    uint64 internal constant EPOCH_BLOCKS = 50;
    uint64 internal constant MAX_SEGMENTS = 1 << 20;
    uint16 internal constant FEE_BPS = 500;
    uint256 internal constant START_BLOCK = 1000;
    uint256 internal constant R =
        21888242871839275222246405745257275088548364400416034343698204186575808495617;

    MockUSDC internal usdc;
    NodeRegistry internal registry;
    StorageMarket internal market;
    IStorageProofVerifier internal verifier;

    address internal governance = makeAddr("governance");
    address internal treasury = makeAddr("treasury");
    address internal owner = makeAddr("owner");
    address internal operatorA = makeAddr("operatorA");
    address internal operatorB = makeAddr("operatorB");
    address internal stranger = makeAddr("stranger");
    bytes32 internal nodeA;
    bytes32 internal nodeB;

    function _deploy(IStorageProofVerifier verifier_) internal {
        vm.roll(START_BLOCK);
        usdc = new MockUSDC();
        registry = new NodeRegistry(governance);
        verifier = verifier_;
        market = new StorageMarket(
            IERC20(address(usdc)),
            registry,
            verifier,
            MAX_SEGMENTS,
            EPOCH_BLOCKS,
            governance,
            treasury,
            FEE_BPS
        );
        nodeA = _registerNode(operatorA, keccak256("machine-a"));
        nodeB = _registerNode(operatorB, keccak256("machine-b"));
    }

    function _registerNode(address nodeOperator, bytes32 machineId) internal returns (bytes32 id) {
        INodeRegistry.Capabilities memory caps = INodeRegistry.Capabilities({
            vcpus: 8,
            memoryGiB: 32,
            diskGiB: 4000,
            gpus: 0,
            bandwidthMbps: 1000,
            architecture: INodeRegistry.Architecture.X86_64,
            flags: 0
        });
        vm.prank(nodeOperator);
        id = registry.register(
            machineId,
            nodeOperator,
            "eu-west",
            caps,
            "wss://node",
            "bafy-meta",
            INodeRegistry.Prices(0, 0, 0, 0)
        );
    }

    function _createDeal(uint256 replicas, uint64 segments, uint128 price, uint32 epochs)
        internal
        returns (uint256 dealId)
    {
        bytes32[] memory nodes = new bytes32[](replicas);
        uint256[] memory roots = new uint256[](replicas);
        for (uint256 i; i < replicas; ++i) {
            nodes[i] = i % 2 == 0 ? nodeA : nodeB;
            roots[i] = uint256(keccak256(abi.encode("root", i))) % R;
        }
        uint256 deposit = uint256(price) * epochs * replicas;
        usdc.mint(owner, deposit);
        vm.startPrank(owner);
        usdc.approve(address(market), deposit);
        dealId = market.createDeal(nodes, roots, segments, price, epochs);
        vm.stopPrank();
    }

    /// @dev Moves to the first block after the epoch's start and gives that start block a known hash.
    function _enterEpoch(uint256 dealId, uint32 epoch) internal returns (bytes32 randomness) {
        uint256 start = market.epochStartBlock(dealId, epoch);
        randomness = keccak256(abi.encode("block", start));
        vm.roll(start + 1);
        vmStorage.setBlockhash(start, randomness);
    }

    function _seed(bytes32 randomness, uint256 dealId, uint256 replica, uint32 epoch)
        internal
        pure
        returns (uint256)
    {
        return uint256(keccak256(abi.encode(randomness, dealId, replica, uint256(epoch)))) % R;
    }

    /// @dev A proof the fake verifier accepts for exactly these inputs.
    function _fakeProof(uint256 root, uint256 segments, uint256 seed)
        internal
        pure
        returns (uint256[8] memory p)
    {
        p[0] = uint256(keccak256(abi.encode([root, segments, seed])));
    }

    function _proofFor(uint256 dealId, uint256 replica, uint32 epoch, bytes32 randomness)
        internal
        view
        returns (uint256[8] memory)
    {
        IStorageMarket.Deal memory deal = market.getDeal(dealId);
        uint256 root = market.getReplicas(dealId)[replica].root;
        return _fakeProof(root, deal.segmentCount, _seed(randomness, dealId, replica, epoch));
    }

    function _prove(uint256 dealId, uint256 replica, uint32 epoch) internal {
        bytes32 randomness = _enterEpoch(dealId, epoch);
        market.submitProof(dealId, replica, epoch, _proofFor(dealId, replica, epoch, randomness));
    }
}

contract StorageMarketTest is StorageMarketBase {
    uint128 internal constant PRICE = 1_000_000;

    function setUp() public {
        _deploy(new FakeProofVerifier());
    }

    // ---------------------------------------------------------------- constructor

    function test_constructor_setsConfig() public view {
        assertEq(address(market.usdc()), address(usdc));
        assertEq(address(market.registry()), address(registry));
        assertEq(address(market.verifier()), address(verifier));
        assertEq(market.maxSegmentCount(), MAX_SEGMENTS);
        assertEq(market.epochBlocks(), EPOCH_BLOCKS);
        assertEq(market.treasury(), treasury);
        assertEq(market.platformFeeBps(), FEE_BPS);
        assertTrue(market.hasRole(market.DEFAULT_ADMIN_ROLE(), governance));
    }

    function test_RevertWhen_constructorGetsZeroAddress() public {
        IERC20 token = IERC20(address(usdc));
        vm.expectRevert(IStorageMarket.ZeroAddress.selector);
        new StorageMarket(IERC20(address(0)), registry, verifier, 1, 1, governance, treasury, 0);
        vm.expectRevert(IStorageMarket.ZeroAddress.selector);
        new StorageMarket(token, NodeRegistry(address(0)), verifier, 1, 1, governance, treasury, 0);
        vm.expectRevert(IStorageMarket.ZeroAddress.selector);
        new StorageMarket(token, registry, IStorageProofVerifier(address(0)), 1, 1, governance, treasury, 0);
        vm.expectRevert(IStorageMarket.ZeroAddress.selector);
        new StorageMarket(token, registry, verifier, 1, 1, address(0), treasury, 0);
        vm.expectRevert(IStorageMarket.ZeroAddress.selector);
        new StorageMarket(token, registry, verifier, 1, 1, governance, address(0), 0);
    }

    function test_RevertWhen_constructorGetsBadParameters() public {
        IERC20 token = IERC20(address(usdc));
        vm.expectRevert(IStorageMarket.ZeroEpochBlocks.selector);
        new StorageMarket(token, registry, verifier, 1, 0, governance, treasury, 0);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.InvalidSegmentCount.selector, 0, 0));
        new StorageMarket(token, registry, verifier, 0, 1, governance, treasury, 0);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.FeeTooHigh.selector, 2001, 2000));
        new StorageMarket(token, registry, verifier, 1, 1, governance, treasury, 2001);
    }

    // ---------------------------------------------------------------- createDeal

    function test_createDeal_takesDepositAndStoresDeal() public {
        uint256 dealId = _createDeal(2, 300, PRICE, 4);
        assertEq(dealId, 1);
        assertEq(market.dealCount(), 1);
        assertEq(usdc.balanceOf(address(market)), 8 * uint256(PRICE));
        IStorageMarket.Deal memory deal = market.getDeal(dealId);
        assertEq(deal.owner, owner);
        assertEq(deal.segmentCount, 300);
        assertEq(deal.epochs, 4);
        assertEq(deal.feeBps, FEE_BPS);
        assertEq(deal.startBlock, START_BLOCK);
        assertEq(deal.pricePerEpoch, PRICE);
        assertEq(deal.remaining, 8 * uint256(PRICE));
        IStorageMarket.Replica[] memory replicas = market.getReplicas(dealId);
        assertEq(replicas.length, 2);
        assertEq(replicas[0].payee, operatorA);
        assertEq(replicas[1].payee, operatorB);
        assertEq(replicas[1].nodeId, nodeB);
        assertEq(market.epochStartBlock(dealId, 3), START_BLOCK + 3 * EPOCH_BLOCKS);
    }

    function test_createDeal_emitsDealCreated() public {
        bytes32[] memory nodes = new bytes32[](1);
        nodes[0] = nodeA;
        uint256[] memory roots = new uint256[](1);
        roots[0] = 42;
        IStorageMarket.Replica[] memory replicas = new IStorageMarket.Replica[](1);
        replicas[0] = IStorageMarket.Replica(nodeA, operatorA, 42);
        usdc.mint(owner, 3 * uint256(PRICE));
        vm.startPrank(owner);
        usdc.approve(address(market), 3 * uint256(PRICE));
        vm.expectEmit(address(market));
        emit IStorageMarket.DealCreated(
            1, owner, 10, PRICE, 3, uint64(START_BLOCK), FEE_BPS, replicas, 3 * uint256(PRICE)
        );
        market.createDeal(nodes, roots, 10, PRICE, 3);
        vm.stopPrank();
    }

    function test_RevertWhen_createDealHasBadReplicas() public {
        bytes32[] memory none = new bytes32[](0);
        uint256[] memory noRoots = new uint256[](0);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.InvalidReplicaCount.selector, 0, 16));
        market.createDeal(none, noRoots, 1, PRICE, 1);

        bytes32[] memory many = new bytes32[](17);
        uint256[] memory manyRoots = new uint256[](17);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.InvalidReplicaCount.selector, 17, 16));
        market.createDeal(many, manyRoots, 1, PRICE, 1);

        bytes32[] memory one = new bytes32[](1);
        one[0] = nodeA;
        uint256[] memory twoRoots = new uint256[](2);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.InvalidReplicaCount.selector, 2, 16));
        market.createDeal(one, twoRoots, 1, PRICE, 1);
    }

    function test_RevertWhen_createDealHasBadTerms() public {
        bytes32[] memory nodes = new bytes32[](1);
        nodes[0] = nodeA;
        uint256[] memory roots = new uint256[](1);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.InvalidSegmentCount.selector, 0, MAX_SEGMENTS));
        market.createDeal(nodes, roots, 0, PRICE, 1);
        vm.expectRevert(
            abi.encodeWithSelector(
                IStorageMarket.InvalidSegmentCount.selector, MAX_SEGMENTS + 1, MAX_SEGMENTS
            )
        );
        market.createDeal(nodes, roots, MAX_SEGMENTS + 1, PRICE, 1);
        vm.expectRevert(IStorageMarket.ZeroPrice.selector);
        market.createDeal(nodes, roots, 1, 0, 1);
        vm.expectRevert(IStorageMarket.ZeroEpochs.selector);
        market.createDeal(nodes, roots, 1, PRICE, 0);
        roots[0] = R;
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.InvalidRoot.selector, R));
        market.createDeal(nodes, roots, 1, PRICE, 1);
        roots[0] = 1;
        nodes[0] = keccak256("unregistered");
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.UnknownNode.selector, nodes[0]));
        market.createDeal(nodes, roots, 1, PRICE, 1);
    }

    /// @dev The measured defect: one node named for two replicas, so one stored copy answered (and was paid) for
    ///      both. Each replica needs its own node.
    function test_RevertWhen_createDealNamesANodeTwice() public {
        bytes32[] memory nodes = new bytes32[](2);
        uint256[] memory roots = new uint256[](2);
        (nodes[0], nodes[1]) = (nodeA, nodeA);
        (roots[0], roots[1]) = (1, 2);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.DuplicateReplicaNode.selector, nodeA));
        market.createDeal(nodes, roots, 1, PRICE, 1);
        assertEq(market.dealCount(), 0);
    }

    /// @dev The measured defect: identical roots for different replicas, so one copy's proofs fit every replica.
    function test_RevertWhen_createDealRepeatsARoot() public {
        bytes32[] memory nodes = new bytes32[](2);
        uint256[] memory roots = new uint256[](2);
        (nodes[0], nodes[1]) = (nodeA, nodeB);
        (roots[0], roots[1]) = (7, 7);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.DuplicateReplicaRoot.selector, 7));
        market.createDeal(nodes, roots, 1, PRICE, 1);
        assertEq(market.dealCount(), 0);
    }

    /// @dev The measured defect: a deal accepted a retired node. Paused and retired nodes take no new replicas.
    function test_RevertWhen_createDealNamesAnInactiveNode() public {
        bytes32[] memory nodes = new bytes32[](1);
        uint256[] memory roots = new uint256[](1);
        (nodes[0], roots[0]) = (nodeA, 1);
        vm.prank(operatorA);
        registry.pause(nodeA);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.NodeNotActive.selector, nodeA));
        market.createDeal(nodes, roots, 1, PRICE, 1);
        vm.prank(operatorA);
        registry.retire(nodeA);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.NodeNotActive.selector, nodeA));
        market.createDeal(nodes, roots, 1, PRICE, 1);
    }

    function test_RevertWhen_createDealIsNotFunded() public {
        bytes32[] memory nodes = new bytes32[](1);
        nodes[0] = nodeA;
        uint256[] memory roots = new uint256[](1);
        vm.prank(owner);
        vm.expectRevert();
        market.createDeal(nodes, roots, 1, PRICE, 1);
        assertEq(market.dealCount(), 0);
    }

    // ---------------------------------------------------------------- randomness

    function test_recordEpochRandomness_recordsStartBlockHashOnce() public {
        uint256 dealId = _createDeal(1, 10, PRICE, 4);
        bytes32 randomness = _enterEpoch(dealId, 2);
        vm.expectEmit(address(market));
        emit IStorageMarket.EpochRandomnessRecorded(dealId, 2, randomness);
        assertEq(market.recordEpochRandomness(dealId, 2), randomness);
        assertEq(market.epochRandomness(dealId, 2), randomness);
        // Later calls return the recorded value even once blockhash can no longer see the block.
        vm.roll(block.number + 1000);
        assertEq(market.recordEpochRandomness(dealId, 2), randomness);
        assertEq(market.epochSeed(dealId, 0, 2), _seed(randomness, dealId, 0, 2));
    }

    function test_RevertWhen_randomnessIsNotAvailable() public {
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.DealNotFound.selector, 7));
        market.recordEpochRandomness(7, 0);
        uint256 dealId = _createDeal(1, 10, PRICE, 4);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.EpochOutOfRange.selector, dealId, 4));
        market.recordEpochRandomness(dealId, 4);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.EpochNotStarted.selector, dealId, 0));
        market.recordEpochRandomness(dealId, 0);
        vm.roll(START_BLOCK + EPOCH_BLOCKS);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.EpochNotStarted.selector, dealId, 1));
        market.recordEpochRandomness(dealId, 1);
        vm.roll(START_BLOCK + 257);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.RandomnessUnavailable.selector, dealId, 0));
        market.recordEpochRandomness(dealId, 0);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.RandomnessUnavailable.selector, dealId, 0));
        market.epochSeed(dealId, 0, 0);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.ReplicaNotFound.selector, dealId, 1));
        market.epochSeed(dealId, 1, 0);
    }

    function test_RevertWhen_blockhashIsZero() public {
        uint256 dealId = _createDeal(1, 10, PRICE, 4);
        vm.roll(START_BLOCK + 1);
        vmStorage.setBlockhash(START_BLOCK, bytes32(0));
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.RandomnessUnavailable.selector, dealId, 0));
        market.recordEpochRandomness(dealId, 0);
    }

    // ---------------------------------------------------------------- submitProof

    function test_submitProof_creditsOperatorMinusFee() public {
        uint256 dealId = _createDeal(2, 10, PRICE, 4);
        bytes32 randomness = _enterEpoch(dealId, 0);
        uint256 fee = uint256(PRICE) * FEE_BPS / 10_000;
        vm.expectEmit(address(market));
        emit IStorageMarket.EpochProven(dealId, 1, 0, operatorB, PRICE - fee, fee);
        vm.prank(stranger);
        market.submitProof(dealId, 1, 0, _proofFor(dealId, 1, 0, randomness));
        assertEq(market.earningsOf(operatorB), PRICE - fee);
        assertEq(market.earningsOf(operatorA), 0);
        assertEq(market.accruedFees(), fee);
        assertTrue(market.isProven(dealId, 1, 0));
        assertFalse(market.isProven(dealId, 0, 0));
        assertEq(market.getDeal(dealId).remaining, 7 * uint256(PRICE));
        assertEq(market.getDeal(dealId).provenEpochs, 1);
        assertEq(market.epochRandomness(dealId, 0), randomness);
    }

    function test_submitProof_acceptsUntilEpochEnds() public {
        uint256 dealId = _createDeal(1, 10, PRICE, 2);
        bytes32 randomness = _enterEpoch(dealId, 0);
        market.recordEpochRandomness(dealId, 0);
        vm.roll(START_BLOCK + EPOCH_BLOCKS - 1);
        market.submitProof(dealId, 0, 0, _proofFor(dealId, 0, 0, randomness));
        assertTrue(market.isProven(dealId, 0, 0));
    }

    function test_RevertWhen_submitProofTargetsMissingDealOrReplica() public {
        uint256[8] memory proof;
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.DealNotFound.selector, 1));
        market.submitProof(1, 0, 0, proof);
        uint256 dealId = _createDeal(1, 10, PRICE, 2);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.ReplicaNotFound.selector, dealId, 1));
        market.submitProof(dealId, 1, 0, proof);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.EpochOutOfRange.selector, dealId, 2));
        market.submitProof(dealId, 0, 2, proof);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.EpochNotStarted.selector, dealId, 0));
        market.submitProof(dealId, 0, 0, proof);
    }

    function test_RevertWhen_submitProofAfterEpochEnd() public {
        uint256 dealId = _createDeal(1, 10, PRICE, 2);
        bytes32 randomness = _enterEpoch(dealId, 0);
        uint256[8] memory proof = _proofFor(dealId, 0, 0, randomness);
        vm.roll(START_BLOCK + EPOCH_BLOCKS);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.EpochClosed.selector, dealId, 0));
        market.submitProof(dealId, 0, 0, proof);
    }

    function test_RevertWhen_submitProofTwice() public {
        uint256 dealId = _createDeal(1, 10, PRICE, 2);
        bytes32 randomness = _enterEpoch(dealId, 0);
        uint256[8] memory proof = _proofFor(dealId, 0, 0, randomness);
        market.submitProof(dealId, 0, 0, proof);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.AlreadyProven.selector, dealId, 0, 0));
        market.submitProof(dealId, 0, 0, proof);
    }

    function test_RevertWhen_submitProofTooLateForRandomness() public {
        StorageMarket longEpochs = new StorageMarket(
            IERC20(address(usdc)), registry, verifier, MAX_SEGMENTS, 1000, governance, treasury, FEE_BPS
        );
        market = longEpochs;
        uint256 dealId = _createDeal(1, 10, PRICE, 2);
        uint256[8] memory proof;
        vm.roll(START_BLOCK + 300);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.RandomnessUnavailable.selector, dealId, 0));
        market.submitProof(dealId, 0, 0, proof);
    }

    function test_RevertWhen_proofIsForAnotherEpochReplicaOrRoot() public {
        uint256 dealId = _createDeal(2, 10, PRICE, 3);
        bytes32 randomness0 = _enterEpoch(dealId, 0);
        uint256[8] memory epoch0 = _proofFor(dealId, 0, 0, randomness0);
        bytes32 randomness1 = _enterEpoch(dealId, 1);
        // The epoch-0 proof replayed for epoch 1.
        vm.expectRevert(IStorageMarket.InvalidProof.selector);
        market.submitProof(dealId, 0, 1, epoch0);
        // Replica 0's proof submitted for replica 1.
        uint256[8] memory replica0 = _proofFor(dealId, 0, 1, randomness1);
        vm.expectRevert(IStorageMarket.InvalidProof.selector);
        market.submitProof(dealId, 1, 1, replica0);
        // A proof against another root.
        vm.expectRevert(IStorageMarket.InvalidProof.selector);
        market.submitProof(dealId, 0, 1, _fakeProof(1, 10, _seed(randomness1, dealId, 0, 1)));
        // A proof against another segment count.
        uint256 root = market.getReplicas(dealId)[0].root;
        vm.expectRevert(IStorageMarket.InvalidProof.selector);
        market.submitProof(dealId, 0, 1, _fakeProof(root, 11, _seed(randomness1, dealId, 0, 1)));
        assertEq(market.earningsOf(operatorA), 0);
    }

    // ---------------------------------------------------------------- settle, claim, fees

    function test_settle_refundsUnprovenEpochsAfterEnd() public {
        uint256 dealId = _createDeal(1, 10, PRICE, 4);
        _prove(dealId, 0, 0);
        _prove(dealId, 0, 1);
        _prove(dealId, 0, 3);
        vm.roll(START_BLOCK + 4 * EPOCH_BLOCKS);
        vm.expectEmit(address(market));
        emit IStorageMarket.DealSettled(dealId, owner, PRICE);
        vm.prank(stranger);
        market.settle(dealId);
        assertEq(usdc.balanceOf(owner), PRICE);
        uint256 fee = uint256(PRICE) * FEE_BPS / 10_000;
        assertEq(market.earningsOf(operatorA), 3 * (PRICE - fee));
        assertTrue(market.getDeal(dealId).settled);
        assertEq(market.getDeal(dealId).remaining, 0);
    }

    function test_settle_withEverythingProvenRefundsNothing() public {
        uint256 dealId = _createDeal(1, 10, PRICE, 1);
        _prove(dealId, 0, 0);
        vm.roll(START_BLOCK + EPOCH_BLOCKS);
        market.settle(dealId);
        assertEq(usdc.balanceOf(owner), 0);
    }

    function test_RevertWhen_settleTooEarlyTwiceOrUnknown() public {
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.DealNotFound.selector, 1));
        market.settle(1);
        uint256 dealId = _createDeal(1, 10, PRICE, 2);
        uint256 end = START_BLOCK + 2 * EPOCH_BLOCKS;
        vm.roll(end - 1);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.DealNotEnded.selector, dealId, end));
        market.settle(dealId);
        vm.roll(end);
        market.settle(dealId);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.AlreadySettled.selector, dealId));
        market.settle(dealId);
    }

    function test_claim_paysOperatorOnce() public {
        uint256 dealId = _createDeal(1, 10, PRICE, 2);
        _prove(dealId, 0, 0);
        uint256 earned = market.earningsOf(operatorA);
        vm.expectEmit(address(market));
        emit IStorageMarket.EarningsClaimed(operatorA, earned);
        vm.prank(operatorA);
        market.claim();
        assertEq(usdc.balanceOf(operatorA), earned);
        assertEq(market.earningsOf(operatorA), 0);
        vm.prank(operatorA);
        vm.expectRevert(IStorageMarket.NothingToClaim.selector);
        market.claim();
    }

    function test_withdrawFees_sendsToTreasury() public {
        vm.expectRevert(IStorageMarket.NothingToClaim.selector);
        market.withdrawFees();
        uint256 dealId = _createDeal(1, 10, PRICE, 2);
        _prove(dealId, 0, 0);
        uint256 fee = market.accruedFees();
        vm.expectEmit(address(market));
        emit IStorageMarket.FeesWithdrawn(treasury, fee);
        vm.prank(stranger);
        market.withdrawFees();
        assertEq(usdc.balanceOf(treasury), fee);
        assertEq(market.accruedFees(), 0);
    }

    // ---------------------------------------------------------------- governance

    function test_setPlatformFee_appliesToNewDealsOnly() public {
        uint256 before = _createDeal(1, 10, PRICE, 2);
        vm.expectEmit(address(market));
        emit IStorageMarket.PlatformFeeUpdated(0);
        vm.prank(governance);
        market.setPlatformFee(0);
        uint256 afterwards = _createDeal(1, 10, PRICE, 2);
        assertEq(market.getDeal(before).feeBps, FEE_BPS);
        assertEq(market.getDeal(afterwards).feeBps, 0);
        _prove(before, 0, 0);
        assertEq(market.accruedFees(), uint256(PRICE) * FEE_BPS / 10_000);
    }

    function test_setTreasury_changesReceiver() public {
        vm.expectEmit(address(market));
        emit IStorageMarket.TreasuryUpdated(stranger);
        vm.prank(governance);
        market.setTreasury(stranger);
        assertEq(market.treasury(), stranger);
    }

    function test_RevertWhen_governanceCallsAreInvalid() public {
        bytes32 role = market.DEFAULT_ADMIN_ROLE();
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, stranger, role)
        );
        vm.prank(stranger);
        market.setPlatformFee(1);
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, stranger, role)
        );
        vm.prank(stranger);
        market.setTreasury(stranger);
        vm.startPrank(governance);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.FeeTooHigh.selector, 2001, 2000));
        market.setPlatformFee(2001);
        vm.expectRevert(IStorageMarket.ZeroAddress.selector);
        market.setTreasury(address(0));
        vm.stopPrank();
    }

    function test_RevertWhen_viewsGetUnknownDeal() public {
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.DealNotFound.selector, 3));
        market.getDeal(3);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.DealNotFound.selector, 3));
        market.getReplicas(3);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.DealNotFound.selector, 3));
        market.epochStartBlock(3, 0);
        vm.expectRevert(abi.encodeWithSelector(IStorageMarket.DealNotFound.selector, 3));
        market.epochSeed(3, 0, 0);
    }

    // ---------------------------------------------------------------- fuzz

    function testFuzz_submitProof_splitIsExact(uint128 price, uint16 feeBps) public {
        price = uint128(bound(price, 1, 1e15));
        feeBps = uint16(bound(feeBps, 0, 2000));
        vm.prank(governance);
        market.setPlatformFee(feeBps);
        uint256 dealId = _createDeal(1, 10, price, 1);
        _prove(dealId, 0, 0);
        uint256 fee = market.accruedFees();
        assertEq(market.earningsOf(operatorA) + fee, price);
        // The fee is rounded down, never above the exact share.
        assertLe(fee * 10_000, uint256(price) * feeBps);
    }

    function testFuzz_settle_paysProvenAndRefundsTheRest(uint32 epochs, uint256 provenMask, uint128 price)
        public
    {
        epochs = uint32(bound(epochs, 1, 12));
        price = uint128(bound(price, 1, 1e12));
        uint256 dealId = _createDeal(1, 50, price, epochs);
        uint256 proven;
        for (uint32 e; e < epochs; ++e) {
            if ((provenMask >> e) & 1 == 1) {
                _prove(dealId, 0, e);
                ++proven;
            }
        }
        vm.roll(START_BLOCK + uint256(epochs) * EPOCH_BLOCKS);
        market.settle(dealId);
        assertEq(usdc.balanceOf(owner), uint256(price) * (epochs - proven));
        assertEq(market.earningsOf(operatorA) + market.accruedFees(), uint256(price) * proven);
        assertEq(usdc.balanceOf(address(market)), uint256(price) * proven);
    }
}
