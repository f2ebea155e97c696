// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {TestBase} from "../../utils/Test.sol";
import {MockUSDC} from "../../../src/MockUSDC.sol";
import {OperatorStaking} from "../../../src/OperatorStaking.sol";
import {IOperatorStaking} from "../../../src/interfaces/IOperatorStaking.sol";

/// @notice Drives OperatorStaking with stakes, unstake requests, withdrawals, time and governance changes.
///         The ghosts record, per operator, what it put in and what its own withdrawals took out: the only ways
///         a stake may change.
contract StakingHandler is TestBase {
    MockUSDC internal immutable usdc;
    OperatorStaking internal immutable staking;
    address internal immutable governance;

    address[] public operators;
    mapping(address operator => uint256) public ghostStaked;
    mapping(address operator => uint256) public ghostWithdrawn;
    /// @notice Set if any operator's stake ever decreased other than through its own withdrawal.
    bool public ghostStakeLeaked;

    constructor(MockUSDC usdc_, OperatorStaking staking_, address governance_) {
        usdc = usdc_;
        staking = staking_;
        governance = governance_;
        for (uint256 i; i < 3; ++i) {
            operators.push(vm.addr(uint256(keccak256(abi.encode("staker", i)))));
        }
    }

    function stake(uint256 operatorSeed, uint256 amount) external {
        address operator = _operator(operatorSeed);
        amount = bound(amount, 1, 1e13);
        usdc.mint(operator, amount);
        vm.startPrank(operator);
        usdc.approve(address(staking), amount);
        _watch();
        staking.stake(amount);
        vm.stopPrank();
        ghostStaked[operator] += amount;
        _check(address(0), 0);
    }

    function requestUnstake(uint256 operatorSeed, uint256 amount) external {
        address operator = _operator(operatorSeed);
        uint256 active = staking.activeStakeOf(operator);
        if (active == 0) return;
        amount = bound(amount, 1, active);
        _watch();
        vm.prank(operator);
        staking.requestUnstake(amount);
        _check(address(0), 0);
    }

    function withdraw(uint256 operatorSeed, uint256 requestSeed) external {
        address operator = _operator(operatorSeed);
        uint256 count = staking.unstakeRequestCount(operator);
        if (count == 0) return;
        uint256 requestId = requestSeed % count;
        IOperatorStaking.UnstakeRequest memory request = staking.unstakeRequest(operator, requestId);
        if (request.withdrawn || block.timestamp < request.unlockAt) return;
        _watch();
        vm.prank(operator);
        staking.withdraw(requestId);
        ghostWithdrawn[operator] += request.amount;
        _check(operator, request.amount);
    }

    function setUnbondingPeriod(uint64 period) external {
        _watch();
        vm.prank(governance);
        staking.setUnbondingPeriod(uint64(bound(period, 0, 30 days)));
        _check(address(0), 0);
    }

    function setPremiumThreshold(uint256 threshold) external {
        _watch();
        vm.prank(governance);
        staking.setPremiumThreshold(bound(threshold, 0, 1e13));
        _check(address(0), 0);
    }

    function warp(uint256 secondsForward) external {
        vm.warp(block.timestamp + bound(secondsForward, 1, 10 days));
    }

    function operatorCount() external view returns (uint256) {
        return operators.length;
    }

    // ------------------------------------------------------------------ stake watch

    uint256[] internal _before;

    /// @dev Records every operator's active + unbonding stake before an action.
    function _watch() internal {
        delete _before;
        for (uint256 i; i < operators.length; ++i) {
            _before.push(_total(operators[i]));
        }
    }

    /// @dev After an action: no stake went down, except `withdrawer`'s by exactly `amount`.
    function _check(address withdrawer, uint256 amount) internal {
        for (uint256 i; i < operators.length; ++i) {
            uint256 allowedDrop = operators[i] == withdrawer ? amount : 0;
            if (_total(operators[i]) + allowedDrop < _before[i]) ghostStakeLeaked = true;
        }
    }

    function _total(address operator) internal view returns (uint256) {
        return staking.activeStakeOf(operator) + staking.unbondingOf(operator);
    }

    function _operator(uint256 seed) internal view returns (address) {
        return operators[seed % operators.length];
    }
}
