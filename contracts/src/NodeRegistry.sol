// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {INodeRegistry} from "./interfaces/INodeRegistry.sol";

/// @title NodeRegistry
/// @notice On-chain records of DeCloud nodes. Only a node's operator changes it; governance
///         (DEFAULT_ADMIN_ROLE) only moves the floor and default prices, within caps.
/// @dev Invariants kept by every write: each default is at or above its floor, each floor is at most ten times
///      its initial default, and no stored node price is below the floor in force when it was stored.
///      A later floor rise is applied when prices are read through `effectivePrices`.
contract NodeRegistry is INodeRegistry, AccessControl {
    /// @notice Initial floor for a vCPU, micro-USDC per hour ($0.005/h).
    uint64 public constant INITIAL_CPU_FLOOR = 5_000;
    /// @notice Initial floor for a GiB of memory, micro-USDC per hour.
    uint64 public constant INITIAL_MEMORY_FLOOR = 2_500;
    /// @notice Initial floor for a GiB of storage, micro-USDC per hour.
    uint64 public constant INITIAL_STORAGE_FLOOR = 50;
    /// @notice Initial floor for a GPU, micro-USDC per hour.
    uint64 public constant INITIAL_GPU_FLOOR = 50_000;

    /// @notice Initial platform default for a vCPU, micro-USDC per hour.
    uint64 public constant INITIAL_CPU_DEFAULT = 10_000;
    /// @notice Initial platform default for a GiB of memory, micro-USDC per hour.
    uint64 public constant INITIAL_MEMORY_DEFAULT = 5_000;
    /// @notice Initial platform default for a GiB of storage, micro-USDC per hour.
    uint64 public constant INITIAL_STORAGE_DEFAULT = 100;
    /// @notice Initial platform default for a GPU, micro-USDC per hour.
    uint64 public constant INITIAL_GPU_DEFAULT = 100_000;

    /// @notice How far above its initial default governance may raise a floor: operators keep the right to
    ///         price their hardware, governance cannot price them out of the market.
    uint64 public constant FLOOR_CAP_MULTIPLIER = 10;

    mapping(bytes32 nodeId => Node) private _nodes;
    /// @dev Every time each node left Active, in order: LeaseEscrow ends a lease's accrual at the first one after
    ///      the lease opened.
    mapping(bytes32 nodeId => uint64[]) private _deactivations;
    Prices private _floors;
    Prices private _defaults;

    /// @param admin Governance: receives DEFAULT_ADMIN_ROLE.
    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _floors = Prices(INITIAL_CPU_FLOOR, INITIAL_MEMORY_FLOOR, INITIAL_STORAGE_FLOOR, INITIAL_GPU_FLOOR);
        _defaults =
            Prices(INITIAL_CPU_DEFAULT, INITIAL_MEMORY_DEFAULT, INITIAL_STORAGE_DEFAULT, INITIAL_GPU_DEFAULT);
        emit FloorPricesSet(_floors);
        emit DefaultPricesSet(_defaults);
    }

    // ------------------------------------------------------------------ operator actions

    /// @inheritdoc INodeRegistry
    function register(
        bytes32 machineId,
        address nodeKey,
        string calldata region,
        Capabilities calldata capabilities,
        string calldata endpoint,
        string calldata metadataCid,
        Prices calldata prices
    ) external returns (bytes32 nodeId) {
        nodeId = computeNodeId(machineId, msg.sender);
        Node storage node = _nodes[nodeId];
        if (node.status != NodeStatus.None) revert NodeAlreadyRegistered(nodeId);
        _checkDetails(nodeKey, capabilities);

        uint64 nowTime = uint64(block.timestamp);
        node.operator = msg.sender;
        node.nodeKey = nodeKey;
        node.status = NodeStatus.Active;
        node.registeredAt = nowTime;
        node.updatedAt = nowTime;
        node.machineId = machineId;
        node.region = region;
        node.endpoint = endpoint;
        node.metadataCid = metadataCid;
        node.capabilities = capabilities;
        Prices memory stored = _resolvePrices(prices);
        node.prices = stored;

        _emitRegistered(nodeId, machineId, nodeKey, region, capabilities, endpoint, metadataCid);
        emit NodePricesSet(nodeId, prices, stored);
    }

    /// @dev Emits from its own frame: with `register`'s ten arguments on the stack the event does not fit.
    function _emitRegistered(
        bytes32 nodeId,
        bytes32 machineId,
        address nodeKey,
        string calldata region,
        Capabilities calldata capabilities,
        string calldata endpoint,
        string calldata metadataCid
    ) private {
        emit NodeRegistered(
            nodeId, msg.sender, machineId, nodeKey, region, capabilities, endpoint, metadataCid
        );
    }

    /// @inheritdoc INodeRegistry
    function update(
        bytes32 nodeId,
        address nodeKey,
        string calldata region,
        Capabilities calldata capabilities,
        string calldata endpoint,
        string calldata metadataCid
    ) external {
        Node storage node = _mutableNode(nodeId);
        _checkDetails(nodeKey, capabilities);
        node.nodeKey = nodeKey;
        node.region = region;
        node.capabilities = capabilities;
        node.endpoint = endpoint;
        node.metadataCid = metadataCid;
        node.updatedAt = uint64(block.timestamp);
        emit NodeUpdated(nodeId, nodeKey, region, capabilities, endpoint, metadataCid);
    }

    /// @inheritdoc INodeRegistry
    function setPrices(bytes32 nodeId, Prices calldata prices) external {
        Node storage node = _mutableNode(nodeId);
        Prices memory stored = _resolvePrices(prices);
        node.prices = stored;
        node.updatedAt = uint64(block.timestamp);
        emit NodePricesSet(nodeId, prices, stored);
    }

    /// @inheritdoc INodeRegistry
    /// @dev Reverts with `InvalidStatusTransition` unless the node is Active.
    function pause(bytes32 nodeId) external {
        _transition(nodeId, NodeStatus.Active, NodeStatus.Paused);
        _deactivations[nodeId].push(uint64(block.timestamp));
    }

    /// @inheritdoc INodeRegistry
    /// @dev Reverts with `InvalidStatusTransition` unless the node is Paused.
    function resume(bytes32 nodeId) external {
        _transition(nodeId, NodeStatus.Paused, NodeStatus.Active);
    }

    /// @inheritdoc INodeRegistry
    /// @dev Reverts with `InvalidStatusTransition` when the node is already Retired.
    function retire(bytes32 nodeId) external {
        Node storage node = _operatedNode(nodeId);
        NodeStatus from = node.status;
        if (from == NodeStatus.Retired) revert InvalidStatusTransition(nodeId, from, NodeStatus.Retired);
        // A paused node already left Active when it paused.
        if (from == NodeStatus.Active) _deactivations[nodeId].push(uint64(block.timestamp));
        node.status = NodeStatus.Retired;
        node.updatedAt = uint64(block.timestamp);
        emit NodeStatusChanged(nodeId, NodeStatus.Retired);
    }

    // ------------------------------------------------------------------ governance

    /// @inheritdoc INodeRegistry
    /// @dev Also rejects a floor above its current default, so that a zero ("use the default") price can never
    ///      resolve below the floor: raise the defaults first.
    function setFloorPrices(Prices calldata floors) external onlyRole(DEFAULT_ADMIN_ROLE) {
        Prices memory defaults = _defaults;
        if (
            floors.cpuPerHour > INITIAL_CPU_DEFAULT * FLOOR_CAP_MULTIPLIER
                || floors.memoryGiBPerHour > INITIAL_MEMORY_DEFAULT * FLOOR_CAP_MULTIPLIER
                || floors.storageGiBPerHour > INITIAL_STORAGE_DEFAULT * FLOOR_CAP_MULTIPLIER
                || floors.gpuPerHour > INITIAL_GPU_DEFAULT * FLOOR_CAP_MULTIPLIER
                || !_allAtLeast(defaults, floors)
        ) revert InvalidPrices();
        _floors = floors;
        emit FloorPricesSet(floors);
    }

    /// @inheritdoc INodeRegistry
    function setDefaultPrices(Prices calldata defaults) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (!_allAtLeast(defaults, _floors)) revert InvalidPrices();
        _defaults = defaults;
        emit DefaultPricesSet(defaults);
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc INodeRegistry
    function computeNodeId(bytes32 machineId, address operator) public pure returns (bytes32) {
        return keccak256(abi.encodePacked(machineId, operator));
    }

    /// @inheritdoc INodeRegistry
    function getNode(bytes32 nodeId) external view returns (Node memory) {
        return _existingNode(nodeId);
    }

    /// @inheritdoc INodeRegistry
    function operatorOf(bytes32 nodeId) external view returns (address) {
        return _nodes[nodeId].operator;
    }

    /// @inheritdoc INodeRegistry
    function statusOf(bytes32 nodeId) external view returns (NodeStatus) {
        return _nodes[nodeId].status;
    }

    /// @inheritdoc INodeRegistry
    function capabilitiesOf(bytes32 nodeId) external view returns (Capabilities memory) {
        return _existingNode(nodeId).capabilities;
    }

    /// @inheritdoc INodeRegistry
    function deactivationCount(bytes32 nodeId) external view returns (uint32) {
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint32(_deactivations[nodeId].length); // one entry per pause or retirement: never near 2^32
    }

    /// @inheritdoc INodeRegistry
    function deactivatedAfter(bytes32 nodeId, uint32 count) external view returns (uint64) {
        uint64[] storage times = _deactivations[nodeId];
        return count < times.length ? times[count] : 0;
    }

    /// @inheritdoc INodeRegistry
    /// @dev Reverts with `NodeNotFound` for an unknown id.
    function effectivePrices(bytes32 nodeId) external view returns (Prices memory prices) {
        prices = _existingNode(nodeId).prices;
        Prices memory floors = _floors;
        prices.cpuPerHour = _max(prices.cpuPerHour, floors.cpuPerHour);
        prices.memoryGiBPerHour = _max(prices.memoryGiBPerHour, floors.memoryGiBPerHour);
        prices.storageGiBPerHour = _max(prices.storageGiBPerHour, floors.storageGiBPerHour);
        prices.gpuPerHour = _max(prices.gpuPerHour, floors.gpuPerHour);
    }

    /// @inheritdoc INodeRegistry
    function floorPrices() external view returns (Prices memory) {
        return _floors;
    }

    /// @inheritdoc INodeRegistry
    function defaultPrices() external view returns (Prices memory) {
        return _defaults;
    }

    // ------------------------------------------------------------------ internals

    function _existingNode(bytes32 nodeId) private view returns (Node storage node) {
        node = _nodes[nodeId];
        if (node.status == NodeStatus.None) revert NodeNotFound(nodeId);
    }

    /// @dev A known node the caller operates.
    function _operatedNode(bytes32 nodeId) private view returns (Node storage node) {
        node = _existingNode(nodeId);
        if (node.operator != msg.sender) revert NotNodeOperator(nodeId, msg.sender);
    }

    /// @dev A known, not retired node the caller operates.
    function _mutableNode(bytes32 nodeId) private view returns (Node storage node) {
        node = _operatedNode(nodeId);
        if (node.status == NodeStatus.Retired) revert NodeIsRetired(nodeId);
    }

    function _transition(bytes32 nodeId, NodeStatus from, NodeStatus to) private {
        Node storage node = _operatedNode(nodeId);
        if (node.status != from) revert InvalidStatusTransition(nodeId, node.status, to);
        node.status = to;
        node.updatedAt = uint64(block.timestamp);
        emit NodeStatusChanged(nodeId, to);
    }

    function _checkDetails(address nodeKey, Capabilities calldata capabilities) private pure {
        if (nodeKey == address(0)) revert ZeroNodeKey();
        if (capabilities.vcpus == 0 || capabilities.memoryGiB == 0) revert InvalidCapabilities();
    }

    /// @dev Zero picks the default, anything else is raised to the floor. The default is clamped as well, which
    ///      only matters if an invariant above were ever broken: a stored price is never below the floor.
    function _resolvePrices(Prices calldata requested) private view returns (Prices memory stored) {
        Prices memory floors = _floors;
        Prices memory defaults = _defaults;
        stored.cpuPerHour = _resolve(requested.cpuPerHour, defaults.cpuPerHour, floors.cpuPerHour);
        stored.memoryGiBPerHour =
            _resolve(requested.memoryGiBPerHour, defaults.memoryGiBPerHour, floors.memoryGiBPerHour);
        stored.storageGiBPerHour =
            _resolve(requested.storageGiBPerHour, defaults.storageGiBPerHour, floors.storageGiBPerHour);
        stored.gpuPerHour = _resolve(requested.gpuPerHour, defaults.gpuPerHour, floors.gpuPerHour);
    }

    function _resolve(uint64 requested, uint64 defaultPrice, uint64 floor) private pure returns (uint64) {
        return _max(requested == 0 ? defaultPrice : requested, floor);
    }

    function _allAtLeast(Prices memory a, Prices memory b) private pure returns (bool) {
        return a.cpuPerHour >= b.cpuPerHour && a.memoryGiBPerHour >= b.memoryGiBPerHour
            && a.storageGiBPerHour >= b.storageGiBPerHour && a.gpuPerHour >= b.gpuPerHour;
    }

    function _max(uint64 a, uint64 b) private pure returns (uint64) {
        return a > b ? a : b;
    }
}
