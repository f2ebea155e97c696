// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "./Test.sol";

/// @dev A contract whose call a test can mock.
contract Oracle {
    function answer() external pure returns (uint256) {
        return 1;
    }
}

/// @notice Proves the shared test base works: every cheatcode declared in Vm.sol reaches forge (a wrong
///         signature would revert), and the utilities behave as documented.
contract TestUtilsTest is Test {
    error Custom(uint256 a, uint256 b);

    uint256 internal slot0 = 5;

    function alwaysReverts(uint256 a) external pure {
        revert Custom(a, a + 1);
    }

    function testFuzz_bound_staysInRangeAndKeepsInRangeValues(uint256 x, uint256 min, uint256 span)
        public
        pure
    {
        min = min % 1e30;
        uint256 max = min + span % 1e30;
        uint256 y = bound(x, min, max);
        assertGe(y, min);
        assertLe(y, max);
        if (x >= min && x <= max) assertEq(y, x);
    }

    function test_bound_fullRange() public pure {
        assertEq(bound(123, 0, type(uint256).max), 123);
        assertEq(bound(type(uint256).max, 0, type(uint256).max), type(uint256).max);
    }

    function test_blockCheatcodes() public {
        vm.warp(1_000);
        vm.roll(77);
        vm.fee(9);
        vm.coinbase(address(0xC0));
        vm.prevrandao(bytes32(uint256(42)));
        vm.chainId(137);
        assertEq(vm.getBlockTimestamp(), 1_000);
        assertEq(vm.getBlockNumber(), 77);
        assertEq(block.basefee, 9);
        assertEq(block.coinbase, address(0xC0));
        assertEq(block.prevrandao, 42);
        vm.prevrandao(uint256(43));
        assertEq(block.prevrandao, 43);
        assertEq(block.chainid, 137);
        skip(5);
        assertEq(vm.getBlockTimestamp(), 1_005);
    }

    function test_stateCheatcodes() public {
        vm.deal(address(0xBEEF), 3 ether);
        assertEq(address(0xBEEF).balance, 3 ether);
        vm.etch(address(0xC0DE), hex"00");
        assertEq(address(0xC0DE).code.length, 1);
        vm.store(address(0xC0DE), bytes32(uint256(7)), bytes32(uint256(9)));
        assertEq(vm.load(address(0xC0DE), bytes32(uint256(7))), bytes32(uint256(9)));
        uint256 snapshot = vm.snapshotState();
        slot0 = 9;
        assertTrue(vm.revertToState(snapshot));
        assertEq(slot0, 5);
    }

    function test_mockCall() public {
        Oracle oracle = new Oracle();
        vm.mockCall(address(oracle), abi.encodeCall(Oracle.answer, ()), abi.encode(uint256(99)));
        assertEq(oracle.answer(), 99);
        vm.clearMockedCalls();
        assertEq(oracle.answer(), 1);
    }

    function test_revertExpectations() public {
        vm.expectRevert(abi.encodeWithSelector(Custom.selector, 1, 2));
        this.alwaysReverts(1);
        vm.expectPartialRevert(Custom.selector);
        this.alwaysReverts(7);
        vm.expectRevert();
        this.alwaysReverts(0);
    }

    event Ping(uint256 indexed id, uint256 value);

    function test_eventExpectationsAndRecording() public {
        vm.expectEmit(address(this));
        emit Ping(1, 2);
        emit Ping(1, 2);
        vm.recordLogs();
        emit Ping(3, 4);
        assertEq(vm.getRecordedLogs().length, 1);
    }

    function test_keysStringsAndEnvironment() public {
        (address account, uint256 key) = makeAddrAndKey("alice");
        assertEq(vm.addr(key), account);
        assertEq(makeAddr("alice"), account);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, keccak256("msg"));
        assertEq(ecrecover(keccak256("msg"), v, r, s), account);
        assertEq(vm.toString(uint256(1234)), "1234");
        assertEq(vm.envOr("DECLOUD_SURELY_UNSET_VARIABLE", uint256(8)), 8);
        assertEq(vm.envOr("DECLOUD_SURELY_UNSET_VARIABLE", string("x")), "x");
        assertTrue(bytes(vm.projectRoot()).length > 0);
        assertTrue(bytes(vm.toString(account)).length == 42);
    }

    function test_arrayAndApproxAssertions() public pure {
        uint256[] memory a = new uint256[](2);
        a[0] = 1;
        a[1] = 2;
        assertEq(a, a);
        bytes32[] memory b = new bytes32[](1);
        assertEq(b, b);
        assertApproxEqAbs(100, 103, 3);
    }

    function test_targetsAreExposedForInvariantRuns() public {
        targetContract(address(0x1));
        targetSender(address(0x2));
        excludeContract(address(0x3));
        excludeSender(address(0x4));
        bytes4[] memory selectors = new bytes4[](1);
        selectors[0] = this.alwaysReverts.selector;
        targetSelector(FuzzSelector(address(this), selectors));
        assertEq(targetContracts()[0], address(0x1));
        assertEq(targetSenders()[0], address(0x2));
        assertEq(excludeContracts()[0], address(0x3));
        assertEq(excludeSenders()[0], address(0x4));
        assertEq(targetSelectors()[0].selectors[0], this.alwaysReverts.selector);
    }
}
