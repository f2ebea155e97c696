// SPDX-License-Identifier: MIT
// Compiled by solc 0.8.29 with EAS (profile `eas`), so it cannot import test/utils/Vm.sol, which pins 0.8.30.
pragma solidity 0.8.29;

/// @title Vm
/// @notice The forge cheatcodes the EAS gas comparison uses, at forge's cheatcode address
///         `address(uint160(uint256(keccak256("hevm cheat code"))))`. Signatures copied from forge's.
interface Vm {
    /// @notice Gas of the last call made by the test contract.
    struct Gas {
        uint64 gasLimit;
        uint64 gasTotalUsed;
        uint64 gasMemoryUsed;
        int64 gasRefunded;
        uint64 gasRemaining;
    }

    /// @notice Sets `block.timestamp`.
    function warp(uint256 newTimestamp) external;
    /// @notice Sets `block.number`.
    function roll(uint256 newHeight) external;
    /// @notice Makes `msgSender` the caller of the next call.
    function prank(address msgSender) external;
    /// @notice Deploys the creation code of a compiled artifact (a path relative to the project root) with ABI-encoded
    ///         constructor arguments.
    function deployCode(string calldata artifactPath, bytes calldata constructorArgs)
        external
        returns (address deployedAddress);
    /// @notice Gas of the last call made by the test contract.
    function lastCallGas() external view returns (Gas memory gas);
    /// @notice Decimal text of `value`.
    function toString(uint256 value) external pure returns (string memory);
    /// @notice Fails the test with `error` unless `condition` holds.
    function assertTrue(bool condition, string calldata error) external pure;
    /// @notice Fails the test with `error` unless `left == right`.
    function assertEq(uint256 left, uint256 right, string calldata error) external pure;
}
