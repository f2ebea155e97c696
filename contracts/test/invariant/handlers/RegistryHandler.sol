// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {TestBase} from "../../utils/Test.sol";
import {NodeRegistry} from "../../../src/NodeRegistry.sol";
import {INodeRegistry} from "../../../src/interfaces/INodeRegistry.sol";

/// @notice Drives NodeRegistry with registrations, price changes at any value, and governance moving floors
///         and defaults within their rules. Records the floors in force whenever a node's prices are stored.
contract RegistryHandler is TestBase {
    NodeRegistry internal immutable registry;
    address internal immutable governance;

    bytes32[] public nodes;
    mapping(bytes32 nodeId => INodeRegistry.Prices) internal _floorAtStore;
    uint256 internal _machines;

    constructor(NodeRegistry registry_, address governance_) {
        registry = registry_;
        governance = governance_;
    }

    function register(uint256 operatorSeed, uint64 cpu, uint64 mem, uint64 disk, uint64 gpu) external {
        address operator = vm.addr(1 + operatorSeed % 5);
        vm.prank(operator);
        bytes32 nodeId = registry.register(
            keccak256(abi.encode(_machines++)),
            operator,
            "r",
            INodeRegistry.Capabilities(8, 32, 100, 0, 100, INodeRegistry.Architecture.X86_64, 0),
            "e",
            "m",
            INodeRegistry.Prices(cpu, mem, disk, gpu)
        );
        nodes.push(nodeId);
        _floorAtStore[nodeId] = registry.floorPrices();
    }

    function setPrices(uint256 nodeSeed, uint64 cpu, uint64 mem, uint64 disk, uint64 gpu) external {
        if (nodes.length == 0) return;
        bytes32 nodeId = nodes[nodeSeed % nodes.length];
        if (registry.statusOf(nodeId) == INodeRegistry.NodeStatus.Retired) return;
        vm.prank(registry.operatorOf(nodeId));
        registry.setPrices(nodeId, INodeRegistry.Prices(cpu, mem, disk, gpu));
        _floorAtStore[nodeId] = registry.floorPrices();
    }

    /// @dev Floors within their caps and not above the current defaults (the contract's rule).
    function setFloors(uint64 cpu, uint64 mem, uint64 disk, uint64 gpu) external {
        INodeRegistry.Prices memory d = registry.defaultPrices();
        vm.prank(governance);
        registry.setFloorPrices(
            INodeRegistry.Prices(
                uint64(bound(cpu, 0, _min(100_000, d.cpuPerHour))),
                uint64(bound(mem, 0, _min(50_000, d.memoryGiBPerHour))),
                uint64(bound(disk, 0, _min(1_000, d.storageGiBPerHour))),
                uint64(bound(gpu, 0, _min(1_000_000, d.gpuPerHour)))
            )
        );
    }

    /// @dev Defaults at or above the current floors.
    function setDefaults(uint64 cpu, uint64 mem, uint64 disk, uint64 gpu) external {
        INodeRegistry.Prices memory f = registry.floorPrices();
        vm.prank(governance);
        registry.setDefaultPrices(
            INodeRegistry.Prices(
                uint64(bound(cpu, f.cpuPerHour, 1e7)),
                uint64(bound(mem, f.memoryGiBPerHour, 1e7)),
                uint64(bound(disk, f.storageGiBPerHour, 1e7)),
                uint64(bound(gpu, f.gpuPerHour, 1e8))
            )
        );
    }

    function retire(uint256 nodeSeed) external {
        if (nodes.length == 0) return;
        bytes32 nodeId = nodes[nodeSeed % nodes.length];
        if (registry.statusOf(nodeId) == INodeRegistry.NodeStatus.Retired) return;
        vm.prank(registry.operatorOf(nodeId));
        registry.retire(nodeId);
    }

    function nodeCount() external view returns (uint256) {
        return nodes.length;
    }

    function floorAtStore(bytes32 nodeId) external view returns (INodeRegistry.Prices memory) {
        return _floorAtStore[nodeId];
    }

    function _min(uint256 a, uint256 b) internal pure returns (uint256) {
        return a < b ? a : b;
    }
}
