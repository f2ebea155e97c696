// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Test} from "../utils/Test.sol";
import {MockUSDC} from "../../src/MockUSDC.sol";
import {OperatorStaking} from "../../src/OperatorStaking.sol";
import {StakingHandler} from "./handlers/StakingHandler.sol";

/// @notice Stake is only ever reduced by its owner's withdrawal, and the contract holds every staked unit.
contract OperatorStakingInvariantTest is Test {
    MockUSDC internal usdc;
    OperatorStaking internal staking;
    StakingHandler internal handler;
    address internal governance = makeAddr("governance");

    function setUp() public {
        usdc = new MockUSDC();
        staking = new OperatorStaking(IERC20(address(usdc)), 7 days, 1_000e6, governance);
        handler = new StakingHandler(usdc, staking, governance);
        targetContract(address(handler));
        bytes4[] memory selectors = new bytes4[](6);
        selectors[0] = handler.stake.selector;
        selectors[1] = handler.requestUnstake.selector;
        selectors[2] = handler.withdraw.selector;
        selectors[3] = handler.setUnbondingPeriod.selector;
        selectors[4] = handler.setPremiumThreshold.selector;
        selectors[5] = handler.warp.selector;
        targetSelector(FuzzSelector(address(handler), selectors));
    }

    function invariant_stakeOnlyLeavesThroughItsOwner() public view {
        uint256 sum;
        for (uint256 i; i < handler.operatorCount(); ++i) {
            address operator = handler.operators(i);
            uint256 total = staking.activeStakeOf(operator) + staking.unbondingOf(operator);
            assertEq(
                total, handler.ghostStaked(operator) - handler.ghostWithdrawn(operator), "stake != in - out"
            );
            assertEq(usdc.balanceOf(operator), handler.ghostWithdrawn(operator), "operator got other funds");
            sum += total;
        }
        assertEq(usdc.balanceOf(address(staking)), sum, "token balance != sum of stakes");
        assertFalse(handler.ghostStakeLeaked(), "a stake dropped without its owner's withdrawal");
        assertLe(staking.unbondingPeriod(), 30 days, "unbonding above cap");
    }
}
