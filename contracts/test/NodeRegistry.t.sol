// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {Test} from "./utils/Test.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";
import {INodeRegistry} from "../src/interfaces/INodeRegistry.sol";

contract NodeRegistryTest is Test {
    NodeRegistry internal registry;
    address internal governance = makeAddr("governance");
    address internal operator = makeAddr("operator");
    address internal stranger = makeAddr("stranger");
    address internal nodeKey = makeAddr("nodeKey");
    bytes32 internal constant MACHINE = keccak256("machine-1");

    function setUp() public {
        vm.warp(1_700_000_000);
        registry = new NodeRegistry(governance);
    }

    // ------------------------------------------------------------------ test utilities

    function _caps() internal pure returns (INodeRegistry.Capabilities memory) {
        return INodeRegistry.Capabilities({
            vcpus: 16,
            memoryGiB: 64,
            diskGiB: 1000,
            gpus: 1,
            bandwidthMbps: 1000,
            architecture: INodeRegistry.Architecture.X86_64,
            flags: 1
        });
    }

    function _prices(uint64 cpu, uint64 mem, uint64 disk, uint64 gpu)
        internal
        pure
        returns (INodeRegistry.Prices memory)
    {
        return INodeRegistry.Prices(cpu, mem, disk, gpu);
    }

    function _register() internal returns (bytes32 nodeId) {
        vm.prank(operator);
        nodeId = registry.register(
            MACHINE, nodeKey, "eu-west", _caps(), "https://n1.example", "bafy-meta", _prices(0, 0, 0, 0)
        );
    }

    function _assertPrices(INodeRegistry.Prices memory a, INodeRegistry.Prices memory b) internal pure {
        assertEq(a.cpuPerHour, b.cpuPerHour, "cpu");
        assertEq(a.memoryGiBPerHour, b.memoryGiBPerHour, "memory");
        assertEq(a.storageGiBPerHour, b.storageGiBPerHour, "storage");
        assertEq(a.gpuPerHour, b.gpuPerHour, "gpu");
    }

    // ------------------------------------------------------------------ constructor

    function test_constructor_setsGovernanceFloorsAndDefaults() public view {
        assertTrue(registry.hasRole(registry.DEFAULT_ADMIN_ROLE(), governance));
        _assertPrices(registry.floorPrices(), _prices(5_000, 2_500, 50, 50_000));
        _assertPrices(registry.defaultPrices(), _prices(10_000, 5_000, 100, 100_000));
    }

    function test_constructor_emitsTheInitialFloorsAndDefaults() public {
        vm.expectEmit();
        emit INodeRegistry.FloorPricesSet(_prices(5_000, 2_500, 50, 50_000));
        vm.expectEmit();
        emit INodeRegistry.DefaultPricesSet(_prices(10_000, 5_000, 100, 100_000));
        new NodeRegistry(governance);
    }

    // ------------------------------------------------------------------ register

    function test_register_storesTheNodeAndEmits() public {
        bytes32 expectedId = keccak256(abi.encodePacked(MACHINE, operator));
        INodeRegistry.Prices memory requested = _prices(0, 1_000, 200, 0);
        INodeRegistry.Prices memory stored = _prices(10_000, 2_500, 200, 100_000);

        vm.expectEmit(address(registry));
        emit INodeRegistry.NodeRegistered(
            expectedId, operator, MACHINE, nodeKey, "eu-west", _caps(), "https://n1.example", "bafy-meta"
        );
        vm.expectEmit(address(registry));
        emit INodeRegistry.NodePricesSet(expectedId, requested, stored);
        vm.prank(operator);
        bytes32 nodeId = registry.register(
            MACHINE, nodeKey, "eu-west", _caps(), "https://n1.example", "bafy-meta", requested
        );

        assertEq(nodeId, expectedId);
        INodeRegistry.Node memory node = registry.getNode(nodeId);
        assertEq(node.operator, operator);
        assertEq(node.nodeKey, nodeKey);
        assertTrue(node.status == INodeRegistry.NodeStatus.Active);
        assertEq(node.registeredAt, block.timestamp);
        assertEq(node.updatedAt, block.timestamp);
        assertEq(node.machineId, MACHINE);
        assertEq(node.region, "eu-west");
        assertEq(node.endpoint, "https://n1.example");
        assertEq(node.metadataCid, "bafy-meta");
        assertEq(node.capabilities.vcpus, 16);
        assertEq(node.capabilities.memoryGiB, 64);
        assertEq(node.capabilities.diskGiB, 1000);
        assertEq(node.capabilities.gpus, 1);
        assertEq(node.capabilities.bandwidthMbps, 1000);
        assertEq(node.capabilities.flags, 1);
        _assertPrices(node.prices, stored);
        assertEq(registry.operatorOf(nodeId), operator);
        assertTrue(registry.statusOf(nodeId) == INodeRegistry.NodeStatus.Active);
    }

    function test_register_keepsPricesAboveTheFloor() public {
        vm.prank(operator);
        bytes32 nodeId =
            registry.register(MACHINE, nodeKey, "r", _caps(), "e", "m", _prices(7_000, 3_000, 60, 60_000));
        _assertPrices(registry.getNode(nodeId).prices, _prices(7_000, 3_000, 60, 60_000));
    }

    function test_register_sameMachineDifferentOperatorsGetDifferentIds() public {
        bytes32 first = _register();
        vm.prank(stranger);
        bytes32 second = registry.register(MACHINE, nodeKey, "r", _caps(), "e", "m", _prices(0, 0, 0, 0));
        assertNotEq(first, second);
        assertEq(second, registry.computeNodeId(MACHINE, stranger));
    }

    function test_RevertWhen_registerTwice() public {
        bytes32 nodeId = _register();
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeAlreadyRegistered.selector, nodeId));
        _register();
    }

    function test_RevertWhen_registerRetiredNodeAgain() public {
        bytes32 nodeId = _register();
        vm.prank(operator);
        registry.retire(nodeId);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeAlreadyRegistered.selector, nodeId));
        _register();
    }

    function test_RevertWhen_registerWithZeroNodeKey() public {
        vm.prank(operator);
        vm.expectRevert(INodeRegistry.ZeroNodeKey.selector);
        registry.register(MACHINE, address(0), "r", _caps(), "e", "m", _prices(0, 0, 0, 0));
    }

    function test_RevertWhen_registerWithoutCpu() public {
        INodeRegistry.Capabilities memory caps = _caps();
        caps.vcpus = 0;
        vm.prank(operator);
        vm.expectRevert(INodeRegistry.InvalidCapabilities.selector);
        registry.register(MACHINE, nodeKey, "r", caps, "e", "m", _prices(0, 0, 0, 0));
    }

    function test_RevertWhen_registerWithoutMemory() public {
        INodeRegistry.Capabilities memory caps = _caps();
        caps.memoryGiB = 0;
        vm.prank(operator);
        vm.expectRevert(INodeRegistry.InvalidCapabilities.selector);
        registry.register(MACHINE, nodeKey, "r", caps, "e", "m", _prices(0, 0, 0, 0));
    }

    // ------------------------------------------------------------------ update

    function test_update_changesDetailsAndEmits() public {
        bytes32 nodeId = _register();
        address newKey = makeAddr("newKey");
        INodeRegistry.Capabilities memory caps = _caps();
        caps.vcpus = 32;
        caps.architecture = INodeRegistry.Architecture.Aarch64;
        skip(100);

        vm.expectEmit(address(registry));
        emit INodeRegistry.NodeUpdated(nodeId, newKey, "us-east", caps, "https://n2", "bafy-2");
        vm.prank(operator);
        registry.update(nodeId, newKey, "us-east", caps, "https://n2", "bafy-2");

        INodeRegistry.Node memory node = registry.getNode(nodeId);
        assertEq(node.nodeKey, newKey);
        assertEq(node.region, "us-east");
        assertEq(node.endpoint, "https://n2");
        assertEq(node.metadataCid, "bafy-2");
        assertEq(node.capabilities.vcpus, 32);
        assertTrue(node.capabilities.architecture == INodeRegistry.Architecture.Aarch64);
        assertEq(node.updatedAt, block.timestamp);
        assertEq(node.registeredAt, block.timestamp - 100);
    }

    function test_update_worksWhilePaused() public {
        bytes32 nodeId = _register();
        vm.startPrank(operator);
        registry.pause(nodeId);
        registry.update(nodeId, nodeKey, "paused-region", _caps(), "e", "m");
        vm.stopPrank();
        assertEq(registry.getNode(nodeId).region, "paused-region");
    }

    function test_RevertWhen_updateUnknownNode() public {
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeNotFound.selector, bytes32(uint256(1))));
        registry.update(bytes32(uint256(1)), nodeKey, "r", _caps(), "e", "m");
    }

    function test_RevertWhen_updateByStranger() public {
        bytes32 nodeId = _register();
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NotNodeOperator.selector, nodeId, stranger));
        registry.update(nodeId, nodeKey, "r", _caps(), "e", "m");
    }

    function test_RevertWhen_updateRetiredNode() public {
        bytes32 nodeId = _register();
        vm.startPrank(operator);
        registry.retire(nodeId);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeIsRetired.selector, nodeId));
        registry.update(nodeId, nodeKey, "r", _caps(), "e", "m");
        vm.stopPrank();
    }

    function test_RevertWhen_updateWithZeroNodeKey() public {
        bytes32 nodeId = _register();
        vm.prank(operator);
        vm.expectRevert(INodeRegistry.ZeroNodeKey.selector);
        registry.update(nodeId, address(0), "r", _caps(), "e", "m");
    }

    function test_RevertWhen_updateWithInvalidCapabilities() public {
        bytes32 nodeId = _register();
        INodeRegistry.Capabilities memory caps = _caps();
        caps.memoryGiB = 0;
        vm.prank(operator);
        vm.expectRevert(INodeRegistry.InvalidCapabilities.selector);
        registry.update(nodeId, nodeKey, "r", caps, "e", "m");
    }

    // ------------------------------------------------------------------ setPrices

    function test_setPrices_appliesDefaultsAndFloorsAndEmits() public {
        bytes32 nodeId = _register();
        INodeRegistry.Prices memory requested = _prices(1, 0, 500, 75_000);
        INodeRegistry.Prices memory stored = _prices(5_000, 5_000, 500, 75_000);
        skip(10);
        vm.expectEmit(address(registry));
        emit INodeRegistry.NodePricesSet(nodeId, requested, stored);
        vm.prank(operator);
        registry.setPrices(nodeId, requested);
        _assertPrices(registry.getNode(nodeId).prices, stored);
        assertEq(registry.getNode(nodeId).updatedAt, block.timestamp);
    }

    function test_RevertWhen_setPricesUnknownNode() public {
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeNotFound.selector, bytes32(0)));
        registry.setPrices(bytes32(0), _prices(0, 0, 0, 0));
    }

    function test_RevertWhen_setPricesByStranger() public {
        bytes32 nodeId = _register();
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NotNodeOperator.selector, nodeId, stranger));
        registry.setPrices(nodeId, _prices(0, 0, 0, 0));
    }

    function test_RevertWhen_setPricesRetiredNode() public {
        bytes32 nodeId = _register();
        vm.startPrank(operator);
        registry.retire(nodeId);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeIsRetired.selector, nodeId));
        registry.setPrices(nodeId, _prices(0, 0, 0, 0));
        vm.stopPrank();
    }

    function testFuzz_setPrices_neverBelowFloor(uint64 cpu, uint64 mem, uint64 disk, uint64 gpu) public {
        bytes32 nodeId = _register();
        vm.prank(operator);
        registry.setPrices(nodeId, _prices(cpu, mem, disk, gpu));
        INodeRegistry.Prices memory stored = registry.getNode(nodeId).prices;
        INodeRegistry.Prices memory floors = registry.floorPrices();
        INodeRegistry.Prices memory defaults = registry.defaultPrices();
        assertGe(stored.cpuPerHour, floors.cpuPerHour);
        assertGe(stored.memoryGiBPerHour, floors.memoryGiBPerHour);
        assertGe(stored.storageGiBPerHour, floors.storageGiBPerHour);
        assertGe(stored.gpuPerHour, floors.gpuPerHour);
        // Exactly the documented rule: 0 -> default, else max(price, floor).
        assertEq(stored.cpuPerHour, cpu == 0 ? defaults.cpuPerHour : _max(cpu, floors.cpuPerHour));
        assertEq(
            stored.memoryGiBPerHour, mem == 0 ? defaults.memoryGiBPerHour : _max(mem, floors.memoryGiBPerHour)
        );
        assertEq(
            stored.storageGiBPerHour,
            disk == 0 ? defaults.storageGiBPerHour : _max(disk, floors.storageGiBPerHour)
        );
        assertEq(stored.gpuPerHour, gpu == 0 ? defaults.gpuPerHour : _max(gpu, floors.gpuPerHour));
    }

    function _max(uint64 a, uint64 b) internal pure returns (uint64) {
        return a > b ? a : b;
    }

    // ------------------------------------------------------------------ status

    function test_pause_resume_retire_followTheLifecycle() public {
        bytes32 nodeId = _register();
        vm.startPrank(operator);

        vm.expectEmit(address(registry));
        emit INodeRegistry.NodeStatusChanged(nodeId, INodeRegistry.NodeStatus.Paused);
        registry.pause(nodeId);
        assertTrue(registry.statusOf(nodeId) == INodeRegistry.NodeStatus.Paused);

        vm.expectEmit(address(registry));
        emit INodeRegistry.NodeStatusChanged(nodeId, INodeRegistry.NodeStatus.Active);
        registry.resume(nodeId);
        assertTrue(registry.statusOf(nodeId) == INodeRegistry.NodeStatus.Active);

        vm.expectEmit(address(registry));
        emit INodeRegistry.NodeStatusChanged(nodeId, INodeRegistry.NodeStatus.Retired);
        registry.retire(nodeId);
        assertTrue(registry.statusOf(nodeId) == INodeRegistry.NodeStatus.Retired);
        vm.stopPrank();
    }

    function test_retire_fromPaused() public {
        bytes32 nodeId = _register();
        vm.startPrank(operator);
        registry.pause(nodeId);
        registry.retire(nodeId);
        vm.stopPrank();
        assertTrue(registry.statusOf(nodeId) == INodeRegistry.NodeStatus.Retired);
    }

    function test_RevertWhen_pauseTwice() public {
        bytes32 nodeId = _register();
        vm.startPrank(operator);
        registry.pause(nodeId);
        vm.expectRevert(
            abi.encodeWithSelector(
                INodeRegistry.InvalidStatusTransition.selector,
                nodeId,
                INodeRegistry.NodeStatus.Paused,
                INodeRegistry.NodeStatus.Paused
            )
        );
        registry.pause(nodeId);
        vm.stopPrank();
    }

    function test_RevertWhen_resumeActiveNode() public {
        bytes32 nodeId = _register();
        vm.prank(operator);
        vm.expectRevert(
            abi.encodeWithSelector(
                INodeRegistry.InvalidStatusTransition.selector,
                nodeId,
                INodeRegistry.NodeStatus.Active,
                INodeRegistry.NodeStatus.Active
            )
        );
        registry.resume(nodeId);
    }

    function test_RevertWhen_changingStatusOfRetiredNode() public {
        bytes32 nodeId = _register();
        vm.startPrank(operator);
        registry.retire(nodeId);
        vm.expectRevert(
            abi.encodeWithSelector(
                INodeRegistry.InvalidStatusTransition.selector,
                nodeId,
                INodeRegistry.NodeStatus.Retired,
                INodeRegistry.NodeStatus.Paused
            )
        );
        registry.pause(nodeId);
        vm.expectRevert(
            abi.encodeWithSelector(
                INodeRegistry.InvalidStatusTransition.selector,
                nodeId,
                INodeRegistry.NodeStatus.Retired,
                INodeRegistry.NodeStatus.Active
            )
        );
        registry.resume(nodeId);
        vm.expectRevert(
            abi.encodeWithSelector(
                INodeRegistry.InvalidStatusTransition.selector,
                nodeId,
                INodeRegistry.NodeStatus.Retired,
                INodeRegistry.NodeStatus.Retired
            )
        );
        registry.retire(nodeId);
        vm.stopPrank();
    }

    function test_RevertWhen_statusChangeByStranger() public {
        bytes32 nodeId = _register();
        vm.startPrank(stranger);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NotNodeOperator.selector, nodeId, stranger));
        registry.pause(nodeId);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NotNodeOperator.selector, nodeId, stranger));
        registry.resume(nodeId);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NotNodeOperator.selector, nodeId, stranger));
        registry.retire(nodeId);
        vm.stopPrank();
    }

    function test_RevertWhen_statusChangeOfUnknownNode() public {
        bytes32 unknown = keccak256("unknown");
        vm.startPrank(operator);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeNotFound.selector, unknown));
        registry.pause(unknown);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeNotFound.selector, unknown));
        registry.resume(unknown);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeNotFound.selector, unknown));
        registry.retire(unknown);
        vm.stopPrank();
    }

    // ------------------------------------------------------------------ governance

    function test_setFloorPrices_storesAndEmits() public {
        INodeRegistry.Prices memory floors = _prices(6_000, 3_000, 60, 60_000);
        vm.expectEmit(address(registry));
        emit INodeRegistry.FloorPricesSet(floors);
        vm.prank(governance);
        registry.setFloorPrices(floors);
        _assertPrices(registry.floorPrices(), floors);
    }

    function test_setFloorPrices_acceptsTheCapOnceDefaultsAreRaised() public {
        INodeRegistry.Prices memory caps = _prices(100_000, 50_000, 1_000, 1_000_000);
        vm.startPrank(governance);
        registry.setDefaultPrices(caps);
        registry.setFloorPrices(caps);
        vm.stopPrank();
        _assertPrices(registry.floorPrices(), caps);
    }

    function test_RevertWhen_setFloorPricesAboveCap() public {
        vm.startPrank(governance);
        registry.setDefaultPrices(
            _prices(type(uint64).max, type(uint64).max, type(uint64).max, type(uint64).max)
        );
        vm.expectRevert(INodeRegistry.InvalidPrices.selector);
        registry.setFloorPrices(_prices(100_001, 2_500, 50, 50_000));
        vm.expectRevert(INodeRegistry.InvalidPrices.selector);
        registry.setFloorPrices(_prices(5_000, 50_001, 50, 50_000));
        vm.expectRevert(INodeRegistry.InvalidPrices.selector);
        registry.setFloorPrices(_prices(5_000, 2_500, 1_001, 50_000));
        vm.expectRevert(INodeRegistry.InvalidPrices.selector);
        registry.setFloorPrices(_prices(5_000, 2_500, 50, 1_000_001));
        vm.stopPrank();
    }

    function test_RevertWhen_setFloorPricesAboveDefault() public {
        vm.prank(governance);
        vm.expectRevert(INodeRegistry.InvalidPrices.selector);
        registry.setFloorPrices(_prices(10_001, 2_500, 50, 50_000));
    }

    function test_RevertWhen_setFloorPricesByStranger() public {
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, stranger, bytes32(0)
            )
        );
        registry.setFloorPrices(_prices(5_000, 2_500, 50, 50_000));
    }

    function test_setDefaultPrices_storesAndEmits() public {
        INodeRegistry.Prices memory defaults = _prices(20_000, 5_000, 50, 50_000);
        vm.expectEmit(address(registry));
        emit INodeRegistry.DefaultPricesSet(defaults);
        vm.prank(governance);
        registry.setDefaultPrices(defaults);
        _assertPrices(registry.defaultPrices(), defaults);

        vm.prank(operator);
        bytes32 nodeId = registry.register(MACHINE, nodeKey, "r", _caps(), "e", "m", _prices(0, 0, 0, 0));
        _assertPrices(registry.getNode(nodeId).prices, defaults);
    }

    function test_RevertWhen_setDefaultPricesBelowFloor() public {
        vm.prank(governance);
        vm.expectRevert(INodeRegistry.InvalidPrices.selector);
        registry.setDefaultPrices(_prices(10_000, 5_000, 49, 100_000));
    }

    function test_RevertWhen_setDefaultPricesByStranger() public {
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, stranger, bytes32(0)
            )
        );
        registry.setDefaultPrices(_prices(10_000, 5_000, 100, 100_000));
    }

    // ------------------------------------------------------------------ views

    function test_effectivePrices_clampsStoredPricesToRaisedFloors() public {
        vm.prank(operator);
        bytes32 nodeId =
            registry.register(MACHINE, nodeKey, "r", _caps(), "e", "m", _prices(6_000, 2_500, 500, 60_000));
        vm.prank(governance);
        registry.setFloorPrices(_prices(8_000, 2_000, 100, 90_000));
        _assertPrices(registry.getNode(nodeId).prices, _prices(6_000, 2_500, 500, 60_000));
        _assertPrices(registry.effectivePrices(nodeId), _prices(8_000, 2_500, 500, 90_000));
    }

    function test_RevertWhen_effectivePricesOfUnknownNode() public {
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeNotFound.selector, bytes32(uint256(7))));
        registry.effectivePrices(bytes32(uint256(7)));
    }

    function test_RevertWhen_getNodeUnknown() public {
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeNotFound.selector, bytes32(uint256(7))));
        registry.getNode(bytes32(uint256(7)));
    }

    function test_operatorOfAndStatusOf_unknownNodeIsEmpty() public view {
        assertEq(registry.operatorOf(bytes32(uint256(7))), address(0));
        assertTrue(registry.statusOf(bytes32(uint256(7))) == INodeRegistry.NodeStatus.None);
    }

    function testFuzz_computeNodeId_matchesTheSharedFormula(bytes32 machineId, address who) public view {
        assertEq(registry.computeNodeId(machineId, who), keccak256(abi.encodePacked(machineId, who)));
    }
}
