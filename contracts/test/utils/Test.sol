// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Vm} from "./Vm.sol";

/// @title TestBase
/// @notice What tests and invariant handlers share: the cheatcode handle, assertions that report through forge,
///         and fuzz utilities. Handlers extend this, not `Test`, so forge does not mistake them for test suites.
abstract contract TestBase {
    /// @notice Forge's cheatcodes.
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    // ------------------------------------------------------------------ assertions

    function assertTrue(bool condition) internal pure {
        vm.assertTrue(condition, "assertion failed");
    }

    function assertTrue(bool condition, string memory err) internal pure {
        vm.assertTrue(condition, err);
    }

    function assertFalse(bool condition) internal pure {
        vm.assertFalse(condition, "assertion failed");
    }

    function assertFalse(bool condition, string memory err) internal pure {
        vm.assertFalse(condition, err);
    }

    function assertEq(bool left, bool right) internal pure {
        vm.assertEq(left, right, "bool mismatch");
    }

    function assertEq(uint256 left, uint256 right) internal pure {
        vm.assertEq(left, right, "uint mismatch");
    }

    function assertEq(uint256 left, uint256 right, string memory err) internal pure {
        vm.assertEq(left, right, err);
    }

    function assertEq(address left, address right) internal pure {
        vm.assertEq(left, right, "address mismatch");
    }

    function assertEq(address left, address right, string memory err) internal pure {
        vm.assertEq(left, right, err);
    }

    function assertEq(bytes32 left, bytes32 right) internal pure {
        vm.assertEq(left, right, "bytes32 mismatch");
    }

    function assertEq(bytes32 left, bytes32 right, string memory err) internal pure {
        vm.assertEq(left, right, err);
    }

    function assertEq(string memory left, string memory right) internal pure {
        vm.assertEq(left, right, "string mismatch");
    }

    function assertEq(bytes memory left, bytes memory right) internal pure {
        vm.assertEq(left, right, "bytes mismatch");
    }

    function assertEq(uint256[] memory left, uint256[] memory right) internal pure {
        vm.assertEq(left, right, "uint[] mismatch");
    }

    function assertEq(bytes32[] memory left, bytes32[] memory right) internal pure {
        vm.assertEq(left, right, "bytes32[] mismatch");
    }

    function assertApproxEqAbs(uint256 left, uint256 right, uint256 maxDelta) internal pure {
        vm.assertApproxEqAbs(left, right, maxDelta, "values differ by more than maxDelta");
    }

    function assertNotEq(uint256 left, uint256 right) internal pure {
        vm.assertNotEq(left, right, "values are equal");
    }

    function assertNotEq(bytes32 left, bytes32 right) internal pure {
        vm.assertNotEq(left, right, "values are equal");
    }

    function assertLt(uint256 left, uint256 right) internal pure {
        vm.assertLt(left, right, "not less than");
    }

    function assertLe(uint256 left, uint256 right) internal pure {
        vm.assertLe(left, right, "not at most");
    }

    function assertLe(uint256 left, uint256 right, string memory err) internal pure {
        vm.assertLe(left, right, err);
    }

    function assertGt(uint256 left, uint256 right) internal pure {
        vm.assertGt(left, right, "not greater than");
    }

    function assertGe(uint256 left, uint256 right) internal pure {
        vm.assertGe(left, right, "not at least");
    }

    function assertGe(uint256 left, uint256 right, string memory err) internal pure {
        vm.assertGe(left, right, err);
    }

    // ------------------------------------------------------------------ fuzz and scenario utilities

    /// @notice Maps `x` into `[min, max]`, leaving values already inside unchanged so that forge's shrinking and
    ///         edge-value dictionary keep working.
    function bound(uint256 x, uint256 min, uint256 max) internal pure returns (uint256) {
        require(min <= max, "bound: min > max");
        if (x >= min && x <= max) return x;
        uint256 size = max - min;
        // A full range contains every x, so size + 1 cannot overflow below.
        return min + (x % (size + 1));
    }

    /// @notice A deterministic address for `name`, labelled in traces.
    function makeAddr(string memory name) internal returns (address account) {
        account = vm.addr(uint256(keccak256(bytes(name))));
        vm.label(account, name);
    }

    /// @notice A deterministic key pair for `name`, labelled in traces.
    function makeAddrAndKey(string memory name) internal returns (address account, uint256 privateKey) {
        privateKey = uint256(keccak256(bytes(name)));
        account = vm.addr(privateKey);
        vm.label(account, name);
    }

    /// @notice Moves time forward by `secondsForward`.
    function skip(uint256 secondsForward) internal {
        vm.warp(vm.getBlockTimestamp() + secondsForward);
    }
}

/// @title Test
/// @notice Base contract for DeCloud's forge test suites: `TestBase` plus the target lists forge reads for
///         invariant tests.
/// @dev Forge runs every contract with `IS_TEST` set; it calls `setUp()` first, then each `test*` function, and
///      for `invariant*` functions it asks the views at the bottom which contracts, selectors and senders to
///      fuzz, checking the invariants after every call.
abstract contract Test is TestBase {
    /// @notice Marks the contract as a test suite for forge.
    bool public IS_TEST = true;

    /// @notice A contract and the selectors of it that invariant runs may call (forge's layout).
    struct FuzzSelector {
        address addr;
        bytes4[] selectors;
    }

    address[] private _targetedContracts;
    address[] private _excludedContracts;
    address[] private _targetedSenders;
    address[] private _excludedSenders;
    FuzzSelector[] private _targetedSelectors;

    // ------------------------------------------------------------------ invariant targets

    /// @notice Adds a contract whose functions invariant runs call.
    function targetContract(address target) internal {
        _targetedContracts.push(target);
    }

    /// @notice Restricts invariant calls on `selector.addr` to `selector.selectors`.
    function targetSelector(FuzzSelector memory selector) internal {
        _targetedSelectors.push(selector);
    }

    /// @notice Adds an address invariant calls are sent from.
    function targetSender(address sender) internal {
        _targetedSenders.push(sender);
    }

    /// @notice Keeps invariant runs from calling `target`.
    function excludeContract(address target) internal {
        _excludedContracts.push(target);
    }

    /// @notice Keeps invariant runs from sending from `sender`.
    function excludeSender(address sender) internal {
        _excludedSenders.push(sender);
    }

    /// @notice Read by forge: the contracts invariant runs call.
    function targetContracts() public view returns (address[] memory) {
        return _targetedContracts;
    }

    /// @notice Read by forge: the selectors invariant runs call.
    function targetSelectors() public view returns (FuzzSelector[] memory) {
        return _targetedSelectors;
    }

    /// @notice Read by forge: the senders invariant calls come from.
    function targetSenders() public view returns (address[] memory) {
        return _targetedSenders;
    }

    /// @notice Read by forge: the contracts invariant runs never call.
    function excludeContracts() public view returns (address[] memory) {
        return _excludedContracts;
    }

    /// @notice Read by forge: the senders invariant calls never come from.
    function excludeSenders() public view returns (address[] memory) {
        return _excludedSenders;
    }
}
