// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {INodeRegistry} from "./interfaces/INodeRegistry.sol";
import {IStorageMarket, IStorageProofVerifier} from "./interfaces/IStorageMarket.sol";

/// @title StorageMarket
/// @notice Storage deals paid per proven epoch: a node is paid only for epochs in which it proved, with a
///         Groth16 proof checked here, that it holds the segments chain randomness selected.
/// @dev Randomness trust assumption: an epoch's seed derives from the hash of the epoch's first block. On
///      Polygon PoS that block's producer (a validator) knows the hash first and could withhold the block to
///      try another, at the cost of its block reward and with at most a few tries per epoch; it cannot pick
///      the seed freely. A node colluding with that producer gains a few draws at the 99.99% detection rate
///      per proof. The node itself cannot grind: the block whose hash counts is fixed by the epoch schedule,
///      not by when someone records it.
contract StorageMarket is IStorageMarket, AccessControl {
    using SafeERC20 for IERC20;

    /// @notice Order of the BN254 scalar field; roots and seeds are below it.
    uint256 public constant SNARK_SCALAR_FIELD =
        21888242871839275222246405745257275088548364400416034343698204186575808495617;
    /// @notice Upper bound of the platform fee.
    uint16 public constant MAX_FEE_BPS = 2000;
    /// @notice Replicas per deal, bounding loops and event size.
    uint256 public constant MAX_REPLICAS = 16;
    /// @notice Blocks back that `blockhash` can see.
    uint256 internal constant BLOCKHASH_WINDOW = 256;

    /// @notice The payment token.
    IERC20 public immutable usdc;
    /// @notice Where nodes and their operators are registered.
    INodeRegistry public immutable registry;
    /// @notice The Groth16 verifier of the storage circuit.
    IStorageProofVerifier public immutable verifier;
    /// @notice Largest segment count the circuit supports (2^depth).
    uint64 public immutable maxSegmentCount;
    /// @notice Length of an epoch in blocks.
    uint64 public immutable epochBlocks;

    /// @notice Receiver of platform fees.
    address public treasury;
    /// @notice Fee in basis points for new deals.
    uint16 public platformFeeBps;
    /// @notice Number of deals created; the last deal's id.
    uint256 public dealCount;

    /// @inheritdoc IStorageMarket
    uint256 public accruedFees;

    mapping(uint256 dealId => Deal) internal _deals;
    mapping(uint256 dealId => Replica[]) internal _replicas;
    mapping(uint256 dealId => mapping(uint32 epoch => bytes32)) internal _randomness;
    mapping(uint256 dealId => mapping(uint256 replica => mapping(uint32 epoch => bool))) internal _proven;
    mapping(address payee => uint256) internal _earnings;
    mapping(uint256 dealId => address) internal _repairers;
    mapping(uint256 dealId => mapping(uint256 replica => uint32 epoch)) internal _replicaSince;

    /// @param usdc_ The payment token.
    /// @param registry_ The node registry.
    /// @param verifier_ The storage-proof verifier.
    /// @param maxSegmentCount_ 2^depth of the verifier's circuit.
    /// @param epochBlocks_ Epoch length in blocks.
    /// @param admin Governance.
    /// @param treasury_ Receiver of platform fees.
    /// @param feeBps Initial platform fee.
    constructor(
        IERC20 usdc_,
        INodeRegistry registry_,
        IStorageProofVerifier verifier_,
        uint64 maxSegmentCount_,
        uint64 epochBlocks_,
        address admin,
        address treasury_,
        uint16 feeBps
    ) {
        if (
            address(usdc_) == address(0) || address(registry_) == address(0)
                || address(verifier_) == address(0) || admin == address(0) || treasury_ == address(0)
        ) revert ZeroAddress();
        if (epochBlocks_ == 0) revert ZeroEpochBlocks();
        if (maxSegmentCount_ == 0) revert InvalidSegmentCount(0, 0);
        if (feeBps > MAX_FEE_BPS) revert FeeTooHigh(feeBps, MAX_FEE_BPS);
        usdc = usdc_;
        registry = registry_;
        verifier = verifier_;
        maxSegmentCount = maxSegmentCount_;
        epochBlocks = epochBlocks_;
        treasury = treasury_;
        platformFeeBps = feeBps;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        emit TreasuryUpdated(treasury_);
        emit PlatformFeeUpdated(feeBps);
    }

    /// @inheritdoc IStorageMarket
    function createDeal(
        bytes32[] calldata nodeIds,
        uint256[] calldata roots,
        uint64 segmentCount,
        uint128 pricePerEpoch,
        uint32 epochs
    ) external returns (uint256 dealId) {
        uint256 count = nodeIds.length;
        if (count == 0 || count > MAX_REPLICAS || roots.length != count) {
            revert InvalidReplicaCount(count == roots.length ? count : roots.length, MAX_REPLICAS);
        }
        if (segmentCount == 0 || segmentCount > maxSegmentCount) {
            revert InvalidSegmentCount(segmentCount, maxSegmentCount);
        }
        if (pricePerEpoch == 0) revert ZeroPrice();
        if (epochs == 0) revert ZeroEpochs();

        dealId = ++dealCount;
        Replica[] storage replicas = _replicas[dealId];
        for (uint256 i; i < count; ++i) {
            if (roots[i] >= SNARK_SCALAR_FIELD) revert InvalidRoot(roots[i]);
            // Each replica is a separate copy on a separate node: one stored copy must never answer (and be
            // paid) for two replicas. At most MAX_REPLICAS entries, so the pairwise check stays cheap.
            for (uint256 j; j < i; ++j) {
                if (nodeIds[j] == nodeIds[i]) revert DuplicateReplicaNode(nodeIds[i]);
                if (roots[j] == roots[i]) revert DuplicateReplicaRoot(roots[i]);
            }
            address payee = registry.operatorOf(nodeIds[i]);
            if (payee == address(0)) revert UnknownNode(nodeIds[i]);
            if (registry.statusOf(nodeIds[i]) != INodeRegistry.NodeStatus.Active) {
                revert NodeNotActive(nodeIds[i]);
            }
            replicas.push(Replica({nodeId: nodeIds[i], payee: payee, root: roots[i]}));
        }
        uint256 deposit = uint256(pricePerEpoch) * epochs * count;
        _deals[dealId] = Deal({
            owner: msg.sender,
            segmentCount: segmentCount,
            epochs: epochs,
            feeBps: platformFeeBps,
            startBlock: uint64(block.number),
            pricePerEpoch: pricePerEpoch,
            remaining: deposit,
            provenEpochs: 0,
            settled: false
        });
        emit DealCreated(
            dealId,
            msg.sender,
            segmentCount,
            pricePerEpoch,
            epochs,
            uint64(block.number),
            platformFeeBps,
            replicas,
            deposit
        );
        usdc.safeTransferFrom(msg.sender, address(this), deposit);
    }

    /// @inheritdoc IStorageMarket
    function recordEpochRandomness(uint256 dealId, uint32 epoch) public returns (bytes32 randomness) {
        randomness = _randomness[dealId][epoch];
        if (randomness != bytes32(0)) return randomness;
        randomness = _availableRandomness(_existingDeal(dealId), dealId, epoch);
        _randomness[dealId][epoch] = randomness;
        emit EpochRandomnessRecorded(dealId, epoch, randomness);
    }

    /// @inheritdoc IStorageMarket
    function submitProof(uint256 dealId, uint256 replica, uint32 epoch, uint256[8] calldata proof) external {
        Deal storage deal = _existingDeal(dealId);
        Replica[] storage replicas = _replicas[dealId];
        if (replica >= replicas.length) revert ReplicaNotFound(dealId, replica);
        if (epoch >= deal.epochs) revert EpochOutOfRange(dealId, epoch);
        if (block.number >= _epochStart(deal, epoch + 1)) revert EpochClosed(dealId, epoch);
        if (_proven[dealId][replica][epoch]) revert AlreadyProven(dealId, replica, epoch);

        bytes32 randomness = recordEpochRandomness(dealId, epoch);
        uint256[3] memory input =
            [replicas[replica].root, uint256(deal.segmentCount), _seed(randomness, dealId, replica, epoch)];
        if (!verifier.verifyProof(proof, input)) revert InvalidProof();

        _proven[dealId][replica][epoch] = true;
        uint256 amount = deal.pricePerEpoch;
        // Rounds down: the platform asks for a share of the node's payment, so the node keeps the dust.
        uint256 fee = amount * deal.feeBps / 10_000;
        uint256 nodeAmount = amount - fee;
        deal.remaining -= amount;
        deal.provenEpochs += 1;
        address payee = replicas[replica].payee;
        _earnings[payee] += nodeAmount;
        accruedFees += fee;
        emit EpochProven(dealId, replica, epoch, payee, nodeAmount, fee);
    }

    /// @inheritdoc IStorageMarket
    function settle(uint256 dealId) external {
        Deal storage deal = _existingDeal(dealId);
        if (deal.settled) revert AlreadySettled(dealId);
        uint256 endBlock = _epochStart(deal, deal.epochs);
        if (block.number < endBlock) revert DealNotEnded(dealId, endBlock);
        uint256 refund = deal.remaining;
        deal.remaining = 0;
        deal.settled = true;
        emit DealSettled(dealId, deal.owner, refund);
        if (refund > 0) usdc.safeTransfer(deal.owner, refund);
    }

    /// @inheritdoc IStorageMarket
    function setRepairer(uint256 dealId, address repairer) external {
        Deal storage deal = _existingDeal(dealId);
        if (msg.sender != deal.owner) revert NotDealOwner(dealId, msg.sender);
        _repairers[dealId] = repairer;
        emit RepairerSet(dealId, repairer);
    }

    /// @inheritdoc IStorageMarket
    function replaceReplica(uint256 dealId, uint256 replica, bytes32 newNodeId, uint256 newRoot) external {
        Deal storage deal = _existingDeal(dealId);
        Replica[] storage replicas = _replicas[dealId];
        uint256 count = replicas.length;
        if (replica >= count) revert ReplicaNotFound(dealId, replica);
        uint256 endBlock = _epochStart(deal, deal.epochs);
        if (block.number >= endBlock) revert DealHasEnded(dealId, endBlock);
        uint32 current = _currentEpoch(deal);
        bytes32 oldNode = replicas[replica].nodeId;
        if (msg.sender != deal.owner) {
            // msg.sender is never zero, so an unset repairer matches nobody.
            if (msg.sender != _repairers[dealId]) revert NotOwnerOrRepairer(dealId, msg.sender);
            if (
                registry.statusOf(oldNode) == INodeRegistry.NodeStatus.Active
                    && !_missedLastTwoEpochs(dealId, replica, current)
            ) revert ReplicaHealthy(dealId, replica);
        }
        if (newRoot >= SNARK_SCALAR_FIELD) revert InvalidRoot(newRoot);
        for (uint256 j; j < count; ++j) {
            // The replaced node too: a replica moves to a node that holds nothing of the deal.
            if (replicas[j].nodeId == newNodeId) revert DuplicateReplicaNode(newNodeId);
            // The replica keeps its index and so its mask: its old root is allowed, another replica's is not.
            if (j != replica && replicas[j].root == newRoot) revert DuplicateReplicaRoot(newRoot);
        }
        address payee = registry.operatorOf(newNodeId);
        if (payee == address(0)) revert UnknownNode(newNodeId);
        if (registry.statusOf(newNodeId) != INodeRegistry.NodeStatus.Active) revert NodeNotActive(newNodeId);
        // Proven epochs stay proven (and paid) under the replica's index, so no epoch is paid twice; an
        // unproven one pays whoever proves it from now on.
        replicas[replica] = Replica({nodeId: newNodeId, payee: payee, root: newRoot});
        _replicaSince[dealId][replica] = current;
        emit ReplicaReplaced(dealId, replica, oldNode, newNodeId, newRoot, payee);
    }

    /// @inheritdoc IStorageMarket
    function endDeal(uint256 dealId) external {
        Deal storage deal = _existingDeal(dealId);
        if (msg.sender != deal.owner) revert NotDealOwner(dealId, msg.sender);
        uint256 endBlock = _epochStart(deal, deal.epochs);
        if (block.number >= endBlock) revert DealHasEnded(dealId, endBlock);
        // Below deal.epochs (a uint32), since the deal has not ended.
        uint32 last = _currentEpoch(deal);
        if (last + 1 < deal.epochs) {
            deal.epochs = last + 1;
            endBlock = _epochStart(deal, deal.epochs);
        }
        emit DealEnded(dealId, deal.epochs, endBlock);
    }

    /// @inheritdoc IStorageMarket
    function claim() external {
        uint256 amount = _earnings[msg.sender];
        if (amount == 0) revert NothingToClaim();
        _earnings[msg.sender] = 0;
        emit EarningsClaimed(msg.sender, amount);
        usdc.safeTransfer(msg.sender, amount);
    }

    /// @inheritdoc IStorageMarket
    function withdrawFees() external {
        uint256 amount = accruedFees;
        if (amount == 0) revert NothingToClaim();
        accruedFees = 0;
        address to = treasury;
        emit FeesWithdrawn(to, amount);
        usdc.safeTransfer(to, amount);
    }

    /// @inheritdoc IStorageMarket
    function setPlatformFee(uint16 feeBps) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (feeBps > MAX_FEE_BPS) revert FeeTooHigh(feeBps, MAX_FEE_BPS);
        platformFeeBps = feeBps;
        emit PlatformFeeUpdated(feeBps);
    }

    /// @inheritdoc IStorageMarket
    function setTreasury(address treasury_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (treasury_ == address(0)) revert ZeroAddress();
        treasury = treasury_;
        emit TreasuryUpdated(treasury_);
    }

    /// @inheritdoc IStorageMarket
    function getDeal(uint256 dealId) external view returns (Deal memory) {
        return _existingDeal(dealId);
    }

    /// @inheritdoc IStorageMarket
    function getReplicas(uint256 dealId) external view returns (Replica[] memory) {
        _existingDeal(dealId);
        return _replicas[dealId];
    }

    /// @inheritdoc IStorageMarket
    function epochSeed(uint256 dealId, uint256 replica, uint32 epoch) external view returns (uint256) {
        Deal storage deal = _existingDeal(dealId);
        if (replica >= _replicas[dealId].length) revert ReplicaNotFound(dealId, replica);
        bytes32 randomness = _randomness[dealId][epoch];
        if (randomness == bytes32(0)) randomness = _availableRandomness(deal, dealId, epoch);
        return _seed(randomness, dealId, replica, epoch);
    }

    /// @inheritdoc IStorageMarket
    function epochStartBlock(uint256 dealId, uint32 epoch) external view returns (uint256) {
        return _epochStart(_existingDeal(dealId), epoch);
    }

    /// @inheritdoc IStorageMarket
    function isProven(uint256 dealId, uint256 replica, uint32 epoch) external view returns (bool) {
        return _proven[dealId][replica][epoch];
    }

    /// @inheritdoc IStorageMarket
    function epochRandomness(uint256 dealId, uint32 epoch) external view returns (bytes32) {
        return _randomness[dealId][epoch];
    }

    /// @inheritdoc IStorageMarket
    function repairerOf(uint256 dealId) external view returns (address) {
        _existingDeal(dealId);
        return _repairers[dealId];
    }

    /// @inheritdoc IStorageMarket
    function replicaSince(uint256 dealId, uint256 replica) external view returns (uint32) {
        _existingDeal(dealId);
        if (replica >= _replicas[dealId].length) revert ReplicaNotFound(dealId, replica);
        return _replicaSince[dealId][replica];
    }

    /// @inheritdoc IStorageMarket
    function earningsOf(address payee) external view returns (uint256) {
        return _earnings[payee];
    }

    function _existingDeal(uint256 dealId) internal view returns (Deal storage deal) {
        deal = _deals[dealId];
        if (deal.owner == address(0)) revert DealNotFound(dealId);
    }

    function _epochStart(Deal storage deal, uint256 epoch) internal view returns (uint256) {
        return uint256(deal.startBlock) + epoch * epochBlocks;
    }

    /// @dev The epoch the current block is in (rounded down); callers check the deal has not ended, which
    ///      keeps it below `deal.epochs` and so within uint32.
    function _currentEpoch(Deal storage deal) internal view returns (uint32) {
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint32((block.number - deal.startBlock) / epochBlocks);
    }

    /// @dev Whether the replica's node proved neither of the last two closed epochs, both of which it was
    ///      responsible for (placed in or before the earlier one).
    function _missedLastTwoEpochs(uint256 dealId, uint256 replica, uint32 current)
        internal
        view
        returns (bool)
    {
        if (current < uint256(_replicaSince[dealId][replica]) + 2) return false;
        return !_proven[dealId][replica][current - 1] && !_proven[dealId][replica][current - 2];
    }

    /// @dev The hash of the epoch's first block, while `blockhash` can still see it.
    function _availableRandomness(Deal storage deal, uint256 dealId, uint32 epoch)
        internal
        view
        returns (bytes32 randomness)
    {
        if (epoch >= deal.epochs) revert EpochOutOfRange(dealId, epoch);
        uint256 start = _epochStart(deal, epoch);
        if (block.number <= start) revert EpochNotStarted(dealId, epoch);
        if (block.number - start > BLOCKHASH_WINDOW) revert RandomnessUnavailable(dealId, epoch);
        randomness = blockhash(start);
        // blockhash is never zero inside the window on a real chain; a zero would mean "unrecorded".
        if (randomness == bytes32(0)) revert RandomnessUnavailable(dealId, epoch);
    }

    function _seed(bytes32 randomness, uint256 dealId, uint256 replica, uint32 epoch)
        internal
        pure
        returns (uint256)
    {
        return
            uint256(keccak256(abi.encode(randomness, dealId, replica, uint256(epoch)))) % SNARK_SCALAR_FIELD;
    }
}
