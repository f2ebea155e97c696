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
    /// @notice The current `block.number`, not folded by the optimizer.
    function getBlockNumber() external view returns (uint256);
    /// @notice Sets `block.basefee`.
    function fee(uint256 newBasefee) external;
    /// @notice Sets `block.coinbase`.
    function coinbase(address newCoinbase) external;
    /// @notice Sets `block.prevrandao` (the chain randomness contracts read).
    function prevrandao(bytes32 newPrevrandao) external;
    /// @notice Sets `block.prevrandao`.
    function prevrandao(uint256 newPrevrandao) external;
    /// @notice Replaces the runtime code at `target`.
    function etch(address target, bytes calldata newRuntimeBytecode) external;
    /// @notice Writes a storage slot of `target`.
    function store(address target, bytes32 slot, bytes32 value) external;
    /// @notice Reads a storage slot of `target`.
    function load(address target, bytes32 slot) external view returns (bytes32 data);
    /// @notice Makes calls to `callee` with calldata starting with `data` return `returnData`.
    function mockCall(address callee, bytes calldata data, bytes calldata returnData) external;
    /// @notice Removes every `mockCall`.
    function clearMockedCalls() external;
    /// @notice Snapshots the whole EVM state.
    function snapshotState() external returns (uint256 snapshotId);
    /// @notice Restores a state snapshot.
    function revertToState(uint256 snapshotId) external returns (bool success);

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
    /// @notice Expects the next call to revert with this selector, whatever the arguments.
    function expectPartialRevert(bytes4 revertData) external;
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

    // ---------------------------------------------------------------- environment and strings

    /// @notice The environment variable `name` as a uint, or `defaultValue` when unset.
    function envOr(string calldata name, uint256 defaultValue) external view returns (uint256 value);
    /// @notice The environment variable `name`, or `defaultValue` when unset.
    function envOr(string calldata name, string calldata defaultValue)
        external
        view
        returns (string memory value);
    /// @notice The Foundry project's root directory.
    function projectRoot() external view returns (string memory path);
    /// @notice Decimal text of `value`.
    function toString(uint256 value) external pure returns (string memory stringifiedValue);
    /// @notice Checksummed hex text of `value`.
    function toString(address value) external pure returns (string memory stringifiedValue);

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
    /// @notice Fails unless `left` and `right` differ by at most `maxDelta`.
    function assertApproxEqAbs(uint256 left, uint256 right, uint256 maxDelta, string calldata error)
        external
        pure;
    /// @notice Fails unless the arrays are equal.
    function assertEq(uint256[] calldata left, uint256[] calldata right, string calldata error) external pure;
    /// @notice Fails unless the arrays are equal.
    function assertEq(bytes32[] calldata left, bytes32[] calldata right, string calldata error) external pure;
}
