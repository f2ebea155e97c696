// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title Vm
/// @notice The subset of forge's cheatcodes that DeCloud's tests use. Forge answers these calls at the cheatcode
///         address `address(uint160(uint256(keccak256("hevm cheat code"))))`; the signatures must match forge's
///         exactly, so add a declaration here (copying forge's signature) before using a new cheatcode.
interface Vm {
    /// @notice One log recorded after `recordLogs`.
    struct Log {
        bytes32[] topics;
        bytes data;
        address emitter;
    }

    // ---------------------------------------------------------------- environment

    /// @notice Sets `block.timestamp`.
    function warp(uint256 newTimestamp) external;
    /// @notice Sets `block.number`.
    function roll(uint256 newHeight) external;
    /// @notice Sets `account`'s ether balance.
    function deal(address account, uint256 newBalance) external;
    /// @notice Sets `block.chainid`.
    function chainId(uint256 newChainId) external;
    /// @notice The current `block.timestamp`, not folded by the optimizer.
    function getBlockTimestamp() external view returns (uint256);

    // ---------------------------------------------------------------- callers

    /// @notice Makes the next call come from `msgSender`.
    function prank(address msgSender) external;
    /// @notice Makes the next call come from `msgSender` with `tx.origin` set to `txOrigin`.
    function prank(address msgSender, address txOrigin) external;
    /// @notice Makes every following call come from `msgSender` until `stopPrank`.
    function startPrank(address msgSender) external;
    /// @notice Ends a `startPrank`.
    function stopPrank() external;

    // ---------------------------------------------------------------- expectations

    /// @notice Expects the next call to revert, with any data.
    function expectRevert() external;
    /// @notice Expects the next call to revert with this selector (an error without arguments).
    function expectRevert(bytes4 revertData) external;
    /// @notice Expects the next call to revert with exactly this data (selector and arguments).
    function expectRevert(bytes calldata revertData) external;
    /// @notice Expects the next emitted event to match the next one emitted by the test, checking all topics
    ///         and data.
    function expectEmit() external;
    /// @notice Like `expectEmit()`, and the event must come from `emitter`.
    function expectEmit(address emitter) external;
    /// @notice Expects an event, checking the chosen topics and the data.
    function expectEmit(bool checkTopic1, bool checkTopic2, bool checkTopic3, bool checkData) external;
    /// @notice Like the four-flag `expectEmit`, and the event must come from `emitter`.
    function expectEmit(bool checkTopic1, bool checkTopic2, bool checkTopic3, bool checkData, address emitter)
        external;
    /// @notice Expects a call to `callee` with calldata starting with `data`.
    function expectCall(address callee, bytes calldata data) external;
    /// @notice Starts recording every emitted log.
    function recordLogs() external;
    /// @notice The logs recorded since `recordLogs`, consuming them.
    function getRecordedLogs() external returns (Log[] memory logs);

    // ---------------------------------------------------------------- fuzzing

    /// @notice Discards the current fuzz input when `condition` is false.
    function assume(bool condition) external pure;

    // ---------------------------------------------------------------- keys and labels

    /// @notice The address of private key `privateKey`.
    function addr(uint256 privateKey) external pure returns (address keyAddr);
    /// @notice Signs `digest` with `privateKey`.
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    /// @notice Names an address in traces.
    function label(address account, string calldata newLabel) external;

    // ---------------------------------------------------------------- assertions (forge formats failures)

    /// @notice Fails unless `condition`.
    function assertTrue(bool condition, string calldata error) external pure;
    /// @notice Fails if `condition`.
    function assertFalse(bool condition, string calldata error) external pure;
    /// @notice Fails unless `left == right`.
    function assertEq(bool left, bool right, string calldata error) external pure;
    /// @notice Fails unless `left == right`.
    function assertEq(uint256 left, uint256 right, string calldata error) external pure;
    /// @notice Fails unless `left == right`.
    function assertEq(int256 left, int256 right, string calldata error) external pure;
    /// @notice Fails unless `left == right`.
    function assertEq(address left, address right, string calldata error) external pure;
    /// @notice Fails unless `left == right`.
    function assertEq(bytes32 left, bytes32 right, string calldata error) external pure;
    /// @notice Fails unless `left == right`.
    function assertEq(string calldata left, string calldata right, string calldata error) external pure;
    /// @notice Fails unless `left == right`.
    function assertEq(bytes calldata left, bytes calldata right, string calldata error) external pure;
    /// @notice Fails unless `left != right`.
    function assertNotEq(uint256 left, uint256 right, string calldata error) external pure;
    /// @notice Fails unless `left != right`.
    function assertNotEq(bytes32 left, bytes32 right, string calldata error) external pure;
    /// @notice Fails unless `left != right`.
    function assertNotEq(address left, address right, string calldata error) external pure;
    /// @notice Fails unless `left < right`.
    function assertLt(uint256 left, uint256 right, string calldata error) external pure;
    /// @notice Fails unless `left <= right`.
    function assertLe(uint256 left, uint256 right, string calldata error) external pure;
    /// @notice Fails unless `left > right`.
    function assertGt(uint256 left, uint256 right, string calldata error) external pure;
    /// @notice Fails unless `left >= right`.
    function assertGe(uint256 left, uint256 right, string calldata error) external pure;
}
