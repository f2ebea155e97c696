// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title INodeRegistry
/// @notice On-chain records of the nodes that operators rent out: identity, the key the node agent
///         authenticates with, capabilities, endpoint and per-resource hourly prices.
/// @dev Prices are micro-USDC (1e-6 USD) per hour. A stored price is never below the governance floor:
///      a price of zero means "use the platform default", any other price is clamped up to the floor.
interface INodeRegistry {
    /// @notice Lifecycle of a node. Retired is final.
    enum NodeStatus {
        None,
        Active,
        Paused,
        Retired
    }

    /// @notice CPU architecture of a node.
    enum Architecture {
        X86_64,
        Aarch64,
        Riscv64
    }

    /// @notice What a node offers.
    /// @param vcpus Logical CPUs offered to tenants.
    /// @param memoryGiB Memory offered to tenants, GiB.
    /// @param diskGiB Disk offered to tenants, GiB.
    /// @param gpus GPUs offered to tenants.
    /// @param bandwidthMbps Uplink bandwidth, Mbit/s.
    /// @param architecture CPU architecture.
    /// @param flags Bit set: 1 = public IPv4, 2 = behind CGNAT, 4 = IPv6, 8 = offers to relay.
    struct Capabilities {
        uint32 vcpus;
        uint32 memoryGiB;
        uint32 diskGiB;
        uint16 gpus;
        uint32 bandwidthMbps;
        Architecture architecture;
        uint32 flags;
    }

    /// @notice Hourly prices in micro-USDC.
    struct Prices {
        uint64 cpuPerHour;
        uint64 memoryGiBPerHour;
        uint64 storageGiBPerHour;
        uint64 gpuPerHour;
    }

    /// @notice A registered node.
    struct Node {
        address operator;
        address nodeKey;
        NodeStatus status;
        uint64 registeredAt;
        uint64 updatedAt;
        bytes32 machineId;
        string region;
        string endpoint;
        string metadataCid;
        Capabilities capabilities;
        Prices prices;
    }

    /// @notice Emitted when an operator registers a node.
    event NodeRegistered(
        bytes32 indexed nodeId,
        address indexed operator,
        bytes32 machineId,
        address nodeKey,
        string region,
        Capabilities capabilities,
        string endpoint,
        string metadataCid
    );

    /// @notice Emitted when an operator changes a node's key, region, capabilities, endpoint or metadata.
    event NodeUpdated(
        bytes32 indexed nodeId,
        address nodeKey,
        string region,
        Capabilities capabilities,
        string endpoint,
        string metadataCid
    );

    /// @notice Emitted whenever a node's prices are stored, at registration and on every change.
    /// @param requested The prices the operator asked for.
    /// @param stored The prices stored after defaults and floors were applied.
    event NodePricesSet(bytes32 indexed nodeId, Prices requested, Prices stored);

    /// @notice Emitted when a node is paused, resumed or retired.
    event NodeStatusChanged(bytes32 indexed nodeId, NodeStatus status);

    /// @notice Emitted when governance changes the floor prices.
    event FloorPricesSet(Prices floors);

    /// @notice Emitted when governance changes the default prices.
    event DefaultPricesSet(Prices defaults);

    /// @notice Thrown when a node id is already registered.
    error NodeAlreadyRegistered(bytes32 nodeId);
    /// @notice Thrown when a node id is not registered.
    error NodeNotFound(bytes32 nodeId);
    /// @notice Thrown when someone other than the node's operator tries to change it.
    error NotNodeOperator(bytes32 nodeId, address caller);
    /// @notice Thrown when a status change is not allowed from the node's current status.
    error InvalidStatusTransition(bytes32 nodeId, NodeStatus from, NodeStatus to);
    /// @notice Thrown when a retired node is changed.
    error NodeIsRetired(bytes32 nodeId);
    /// @notice Thrown when the node key is the zero address.
    error ZeroNodeKey();
    /// @notice Thrown when capabilities offer no CPU or no memory.
    error InvalidCapabilities();
    /// @notice Thrown when governance sets a floor above its cap or a default below its floor.
    error InvalidPrices();

    /// @notice Registers a node for the caller. The node id is `computeNodeId(machineId, msg.sender)`.
    /// @return nodeId The new node's id.
    function register(
        bytes32 machineId,
        address nodeKey,
        string calldata region,
        Capabilities calldata capabilities,
        string calldata endpoint,
        string calldata metadataCid,
        Prices calldata prices
    ) external returns (bytes32 nodeId);

    /// @notice Changes a node's key, region, capabilities, endpoint and metadata. Operator only.
    function update(
        bytes32 nodeId,
        address nodeKey,
        string calldata region,
        Capabilities calldata capabilities,
        string calldata endpoint,
        string calldata metadataCid
    ) external;

    /// @notice Sets a node's prices; zero means the default, anything else is clamped up to the floor.
    function setPrices(bytes32 nodeId, Prices calldata prices) external;

    /// @notice Pauses an active node: it takes no new leases, and the leases it has stop accruing now, for good
    ///         (see `ILeaseEscrow`). Operator only.
    function pause(bytes32 nodeId) external;

    /// @notice Resumes a paused node. Operator only.
    function resume(bytes32 nodeId) external;

    /// @notice Retires a node for good; its leases stop accruing now, as on a pause. Operator only.
    function retire(bytes32 nodeId) external;

    /// @notice Sets the floor prices (governance). Each floor is capped; stored prices below a new floor
    ///         are clamped when read through `effectivePrices`.
    function setFloorPrices(Prices calldata floors) external;

    /// @notice Sets the platform default prices (governance). Each default must be at or above its floor.
    function setDefaultPrices(Prices calldata defaults) external;

    /// @notice The id a node of `machineId` registered by `operator` gets.
    function computeNodeId(bytes32 machineId, address operator) external pure returns (bytes32);

    /// @notice A node's full record. Reverts with `NodeNotFound` for an unknown id.
    function getNode(bytes32 nodeId) external view returns (Node memory);

    /// @notice A node's operator, or the zero address when unknown.
    function operatorOf(bytes32 nodeId) external view returns (address);

    /// @notice A node's current status.
    function statusOf(bytes32 nodeId) external view returns (NodeStatus);
    /// @notice What a node offers. Reverts with `NodeNotFound` for an unknown id.
    function capabilitiesOf(bytes32 nodeId) external view returns (Capabilities memory);
    /// @notice How many times a node has left Active (by a pause, or a retirement while active).
    function deactivationCount(bytes32 nodeId) external view returns (uint32);
    /// @notice When a node left Active for the first time after it had left Active `count` times before; 0 if it
    ///         has not (yet) left Active that often. A lease opened at deactivation count `count` stops accruing
    ///         at this time.
    function deactivatedAfter(bytes32 nodeId, uint32 count) external view returns (uint64);

    /// @notice A node's prices clamped up to the current floors: what a lease opened now pays.
    function effectivePrices(bytes32 nodeId) external view returns (Prices memory);

    /// @notice The current floor prices.
    function floorPrices() external view returns (Prices memory);

    /// @notice The current default prices.
    function defaultPrices() external view returns (Prices memory);
}
