// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {Test} from "./utils/Test.sol";
import {MockUSDC} from "../src/MockUSDC.sol";
import {OperatorStaking} from "../src/OperatorStaking.sol";
import {IOperatorStaking} from "../src/interfaces/IOperatorStaking.sol";

contract OperatorStakingTest is Test {
    MockUSDC internal usdc;
    OperatorStaking internal staking;
    address internal governance = makeAddr("governance");
    address internal operator = makeAddr("operator");
    address internal stranger = makeAddr("stranger");
    uint64 internal constant PERIOD = 7 days;
    uint256 internal constant THRESHOLD = 1_000e6;

    function setUp() public {
        vm.warp(1_700_000_000);
        usdc = new MockUSDC();
        staking = new OperatorStaking(IERC20(address(usdc)), PERIOD, THRESHOLD, governance);
        usdc.mint(operator, 10_000e6);
        vm.prank(operator);
        usdc.approve(address(staking), type(uint256).max);
    }

    function _stake(uint256 amount) internal {
        vm.prank(operator);
        staking.stake(amount);
    }

    function _request(uint256 amount) internal returns (uint256 requestId) {
        vm.prank(operator);
        requestId = staking.requestUnstake(amount);
    }

    // ------------------------------------------------------------------ constructor

    function test_constructor_setsParameters() public {
        assertEq(staking.token(), address(usdc));
        assertEq(staking.unbondingPeriod(), PERIOD);
        assertEq(staking.premiumThreshold(), THRESHOLD);
        assertTrue(staking.hasRole(bytes32(0), governance));
        assertEq(staking.MAX_UNBONDING_PERIOD(), 30 days);
        // The cap itself is allowed.
        new OperatorStaking(IERC20(address(usdc)), 30 days, 0, governance);
    }

    function test_constructor_emitsItsParameters() public {
        vm.expectEmit();
        emit IOperatorStaking.UnbondingPeriodSet(PERIOD);
        vm.expectEmit();
        emit IOperatorStaking.PremiumThresholdSet(THRESHOLD);
        new OperatorStaking(IERC20(address(usdc)), PERIOD, THRESHOLD, governance);
    }

    function test_RevertWhen_constructedWithTooLongUnbonding() public {
        vm.expectRevert(
            abi.encodeWithSelector(
                IOperatorStaking.UnbondingPeriodTooLong.selector, uint64(30 days + 1), 30 days
            )
        );
        new OperatorStaking(IERC20(address(usdc)), 30 days + 1, THRESHOLD, governance);
    }

    // ------------------------------------------------------------------ stake

    function test_stake_addsToActiveStakeAndEmits() public {
        vm.expectEmit(address(staking));
        emit IOperatorStaking.Staked(operator, 600e6, 600e6);
        _stake(600e6);
        vm.expectEmit(address(staking));
        emit IOperatorStaking.Staked(operator, 400e6, 1_000e6);
        _stake(400e6);
        assertEq(staking.activeStakeOf(operator), 1_000e6);
        assertEq(usdc.balanceOf(address(staking)), 1_000e6);
        assertTrue(staking.isPremium(operator));
    }

    function test_RevertWhen_stakeZero() public {
        vm.prank(operator);
        vm.expectRevert(IOperatorStaking.ZeroAmount.selector);
        staking.stake(0);
    }

    function test_RevertWhen_stakeWithoutAllowance() public {
        usdc.mint(stranger, 1e6);
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(staking), 0, 1e6)
        );
        staking.stake(1e6);
    }

    function test_stakeWithPermit_needsNoPriorApproval() public {
        (address signer, uint256 key) = makeAddrAndKey("signer");
        usdc.mint(signer, 5e6);
        uint256 deadline = block.timestamp + 1 hours;
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256(
                    "Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"
                ),
                signer,
                address(staking),
                5e6,
                usdc.nonces(signer),
                deadline
            )
        );
        (uint8 v, bytes32 r, bytes32 s) =
            vm.sign(key, keccak256(abi.encodePacked("\x19\x01", usdc.DOMAIN_SEPARATOR(), structHash)));
        vm.expectEmit(address(staking));
        emit IOperatorStaking.Staked(signer, 5e6, 5e6);
        vm.prank(signer);
        staking.stakeWithPermit(5e6, deadline, v, r, s);
        assertEq(staking.activeStakeOf(signer), 5e6);
    }

    function test_RevertWhen_stakeWithPermitInvalidAndNoAllowance() public {
        usdc.mint(stranger, 5e6);
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(staking), 0, 5e6)
        );
        staking.stakeWithPermit(5e6, block.timestamp, 27, bytes32(uint256(1)), bytes32(uint256(2)));
    }

    function test_RevertWhen_stakeWithPermitZero() public {
        vm.prank(stranger);
        vm.expectRevert(IOperatorStaking.ZeroAmount.selector);
        staking.stakeWithPermit(0, block.timestamp, 27, bytes32(0), bytes32(0));
    }

    // ------------------------------------------------------------------ unstake and withdraw

    function test_requestUnstake_queuesTheAmountAndEmits() public {
        _stake(1_000e6);
        uint64 unlockAt = uint64(block.timestamp) + PERIOD;
        vm.expectEmit(address(staking));
        emit IOperatorStaking.UnstakeRequested(operator, 0, 300e6, unlockAt, 700e6);
        uint256 requestId = _request(300e6);

        assertEq(requestId, 0);
        assertEq(staking.activeStakeOf(operator), 700e6);
        assertEq(staking.unbondingOf(operator), 300e6);
        assertEq(staking.unstakeRequestCount(operator), 1);
        IOperatorStaking.UnstakeRequest memory request = staking.unstakeRequest(operator, 0);
        assertEq(request.amount, 300e6);
        assertEq(request.unlockAt, unlockAt);
        assertFalse(request.withdrawn);
        assertFalse(staking.isPremium(operator));
        assertEq(_request(100e6), 1);
    }

    function test_RevertWhen_requestUnstakeZero() public {
        _stake(1e6);
        vm.prank(operator);
        vm.expectRevert(IOperatorStaking.ZeroAmount.selector);
        staking.requestUnstake(0);
    }

    function test_RevertWhen_requestUnstakeMoreThanActive() public {
        _stake(1e6);
        _request(1);
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(IOperatorStaking.InsufficientStake.selector, 1e6, 1e6 - 1));
        staking.requestUnstake(1e6);
    }

    function test_withdraw_paysAfterTheUnbondingPeriod() public {
        _stake(1_000e6);
        uint256 requestId = _request(400e6);
        skip(PERIOD);
        vm.expectEmit(address(staking));
        emit IOperatorStaking.Withdrawn(operator, requestId, 400e6);
        vm.prank(operator);
        staking.withdraw(requestId);
        assertEq(usdc.balanceOf(operator), 10_000e6 - 600e6);
        assertEq(staking.unbondingOf(operator), 0);
        assertTrue(staking.unstakeRequest(operator, requestId).withdrawn);
    }

    function test_withdraw_keepsTheUnlockTimeOfTheRequest() public {
        _stake(1_000e6);
        uint256 requestId = _request(400e6);
        vm.prank(governance);
        staking.setUnbondingPeriod(30 days);
        skip(PERIOD);
        vm.prank(operator);
        staking.withdraw(requestId);
        assertEq(staking.unbondingOf(operator), 0);
    }

    function test_RevertWhen_withdrawBeforeUnlock() public {
        _stake(1_000e6);
        uint256 requestId = _request(400e6);
        skip(PERIOD - 1);
        vm.prank(operator);
        vm.expectRevert(
            abi.encodeWithSelector(
                IOperatorStaking.StillUnbonding.selector, requestId, uint64(block.timestamp + 1)
            )
        );
        staking.withdraw(requestId);
    }

    function test_RevertWhen_withdrawTwice() public {
        _stake(1_000e6);
        uint256 requestId = _request(400e6);
        skip(PERIOD);
        vm.startPrank(operator);
        staking.withdraw(requestId);
        vm.expectRevert(abi.encodeWithSelector(IOperatorStaking.AlreadyWithdrawn.selector, requestId));
        staking.withdraw(requestId);
        vm.stopPrank();
    }

    function test_RevertWhen_withdrawSomeoneElsesRequest() public {
        _stake(1_000e6);
        uint256 requestId = _request(400e6);
        skip(PERIOD);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IOperatorStaking.UnknownRequest.selector, stranger, requestId));
        staking.withdraw(requestId);
    }

    function test_RevertWhen_readingUnknownRequest() public {
        vm.expectRevert(abi.encodeWithSelector(IOperatorStaking.UnknownRequest.selector, operator, 0));
        staking.unstakeRequest(operator, 0);
    }

    // ------------------------------------------------------------------ governance

    function test_setPremiumThreshold_changesPremiumStatus() public {
        _stake(500e6);
        assertFalse(staking.isPremium(operator));
        vm.expectEmit(address(staking));
        emit IOperatorStaking.PremiumThresholdSet(500e6);
        vm.prank(governance);
        staking.setPremiumThreshold(500e6);
        assertEq(staking.premiumThreshold(), 500e6);
        assertTrue(staking.isPremium(operator));
    }

    function test_isPremium_neverWithoutStake() public {
        vm.prank(governance);
        staking.setPremiumThreshold(0);
        assertFalse(staking.isPremium(stranger));
    }

    function test_RevertWhen_setPremiumThresholdByStranger() public {
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, stranger, bytes32(0)
            )
        );
        staking.setPremiumThreshold(1);
    }

    function test_setUnbondingPeriod_appliesToNewRequests() public {
        _stake(1_000e6);
        vm.expectEmit(address(staking));
        emit IOperatorStaking.UnbondingPeriodSet(1 days);
        vm.prank(governance);
        staking.setUnbondingPeriod(1 days);
        _request(1e6);
        assertEq(staking.unstakeRequest(operator, 0).unlockAt, block.timestamp + 1 days);
    }

    function test_RevertWhen_setUnbondingPeriodAboveCap() public {
        vm.prank(governance);
        vm.expectRevert(
            abi.encodeWithSelector(IOperatorStaking.UnbondingPeriodTooLong.selector, uint64(31 days), 30 days)
        );
        staking.setUnbondingPeriod(31 days);
    }

    function test_RevertWhen_setUnbondingPeriodByStranger() public {
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, stranger, bytes32(0)
            )
        );
        staking.setUnbondingPeriod(1);
    }

    function test_governanceHasNoWayToMoveStake() public {
        _stake(1_000e6);
        // Even the admin can only withdraw requests of its own; it has none.
        vm.prank(governance);
        vm.expectRevert(abi.encodeWithSelector(IOperatorStaking.UnknownRequest.selector, governance, 0));
        staking.withdraw(0);
        assertEq(usdc.balanceOf(address(staking)), 1_000e6);
    }

    // ------------------------------------------------------------------ fuzz

    function testFuzz_stakeAndUnstake_conserveTheBalance(uint96 staked, uint96 unstaked, uint32 wait) public {
        uint256 amount = bound(staked, 1, 10_000e6);
        uint256 out = bound(unstaked, 1, amount);
        _stake(amount);
        uint256 requestId = _request(out);
        assertEq(staking.activeStakeOf(operator) + staking.unbondingOf(operator), amount);
        skip(bound(wait, 0, 2 * PERIOD));
        uint64 unlockAt = staking.unstakeRequest(operator, requestId).unlockAt;
        vm.prank(operator);
        if (block.timestamp < unlockAt) {
            vm.expectRevert(
                abi.encodeWithSelector(IOperatorStaking.StillUnbonding.selector, requestId, unlockAt)
            );
            staking.withdraw(requestId);
            assertEq(usdc.balanceOf(address(staking)), amount);
        } else {
            staking.withdraw(requestId);
            assertEq(usdc.balanceOf(address(staking)), amount - out);
            assertEq(usdc.balanceOf(operator), 10_000e6 - amount + out);
        }
    }
}
