// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "../utils/Test.sol";
import {NodeRegistry} from "../../src/NodeRegistry.sol";
import {INodeRegistry} from "../../src/interfaces/INodeRegistry.sol";
import {RegistryHandler} from "./handlers/RegistryHandler.sol";

/// @notice No price below the floor is ever stored, what a lease pays is never below the current floor, and
///         governance's floors and defaults stay within their rules.
contract NodeRegistryInvariantTest is Test {
    NodeRegistry internal registry;
    RegistryHandler internal handler;
    address internal governance = makeAddr("governance");

    function setUp() public {
        registry = new NodeRegistry(governance);
        handler = new RegistryHandler(registry, governance);
        targetContract(address(handler));
        bytes4[] memory selectors = new bytes4[](7);
        selectors[0] = handler.register.selector;
        selectors[1] = handler.register.selector;
        selectors[2] = handler.setPrices.selector;
        selectors[3] = handler.setPrices.selector;
        selectors[4] = handler.setFloors.selector;
        selectors[5] = handler.setDefaults.selector;
        selectors[6] = handler.retire.selector;
        targetSelector(FuzzSelector(address(handler), selectors));
    }

    function _atLeast(INodeRegistry.Prices memory a, INodeRegistry.Prices memory b, string memory what)
        internal
        pure
    {
        assertGe(a.cpuPerHour, b.cpuPerHour, what);
        assertGe(a.memoryGiBPerHour, b.memoryGiBPerHour, what);
        assertGe(a.storageGiBPerHour, b.storageGiBPerHour, what);
        assertGe(a.gpuPerHour, b.gpuPerHour, what);
    }

    function invariant_noPriceBelowTheFloor() public view {
        INodeRegistry.Prices memory floors = registry.floorPrices();
        for (uint256 i; i < handler.nodeCount(); ++i) {
            bytes32 nodeId = handler.nodes(i);
            _atLeast(registry.getNode(nodeId).prices, handler.floorAtStore(nodeId), "stored below its floor");
            _atLeast(registry.effectivePrices(nodeId), floors, "effective below current floor");
        }
        _atLeast(registry.defaultPrices(), floors, "default below floor");
        _atLeast(INodeRegistry.Prices(100_000, 50_000, 1_000, 1_000_000), floors, "floor above cap");
    }
}
