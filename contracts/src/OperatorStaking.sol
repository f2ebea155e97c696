// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {IOperatorStaking} from "./interfaces/IOperatorStaking.sol";

/// @title OperatorStaking
/// @notice Optional operator stake that signals commitment (premium status). Stake leaves only through its
///         owner's withdrawal once its unbonding period has passed.
/// @dev There is deliberately no slashing and no admin transfer path: governance sets the premium threshold
///      and the unbonding period (capped at 30 days, applied to new requests only), nothing else. The token
///      balance of this contract always equals Σ active + Σ unbonding.
contract OperatorStaking is IOperatorStaking, AccessControl, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice Longest unbonding period governance may set: stake can never be locked for longer.
    uint64 public constant MAX_UNBONDING_PERIOD = 30 days;

    IERC20 private immutable _token;

    /// @inheritdoc IOperatorStaking
    uint256 public premiumThreshold;
    /// @inheritdoc IOperatorStaking
    uint64 public unbondingPeriod;

    mapping(address operator => uint256) private _active;
    mapping(address operator => uint256) private _unbonding;
    mapping(address operator => UnstakeRequest[]) private _requests;

    /// @param token_ The staking token (USDC).
    /// @param unbondingPeriod_ Seconds between an unstake request and its withdrawal (at most 30 days).
    /// @param premiumThreshold_ Active stake at which an operator counts as premium.
    /// @param admin Governance: receives DEFAULT_ADMIN_ROLE.
    constructor(IERC20 token_, uint64 unbondingPeriod_, uint256 premiumThreshold_, address admin) {
        _token = token_;
        _setUnbondingPeriod(unbondingPeriod_);
        premiumThreshold = premiumThreshold_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        emit PremiumThresholdSet(premiumThreshold_);
    }

    /// @inheritdoc IOperatorStaking
    function stake(uint256 amount) external nonReentrant {
        _stake(amount);
    }

    /// @inheritdoc IOperatorStaking
    /// @dev The permit is tried, not required: a front-run permit leaves the allowance in place.
    function stakeWithPermit(uint256 amount, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external
        nonReentrant
    {
        try IERC20Permit(address(_token)).permit(msg.sender, address(this), amount, deadline, v, r, s) {}
            catch {}
        _stake(amount);
    }

    /// @inheritdoc IOperatorStaking
    function requestUnstake(uint256 amount) external returns (uint256 requestId) {
        if (amount == 0) revert ZeroAmount();
        uint256 active = _active[msg.sender];
        if (amount > active) revert InsufficientStake(amount, active);
        unchecked {
            active -= amount;
        }
        _active[msg.sender] = active;
        _unbonding[msg.sender] += amount;
        uint64 unlockAt = uint64(block.timestamp) + unbondingPeriod;
        UnstakeRequest[] storage requests = _requests[msg.sender];
        requestId = requests.length;
        requests.push(
            UnstakeRequest({amount: SafeCast.toUint128(amount), unlockAt: unlockAt, withdrawn: false})
        );
        emit UnstakeRequested(msg.sender, requestId, amount, unlockAt, active);
    }

    /// @inheritdoc IOperatorStaking
    function withdraw(uint256 requestId) external nonReentrant {
        UnstakeRequest[] storage requests = _requests[msg.sender];
        if (requestId >= requests.length) revert UnknownRequest(msg.sender, requestId);
        UnstakeRequest storage request = requests[requestId];
        if (request.withdrawn) revert AlreadyWithdrawn(requestId);
        // A validator can skew the timestamp by seconds; the unbonding period is days.
        // forge-lint: disable-next-line(block-timestamp)
        if (block.timestamp < request.unlockAt) revert StillUnbonding(requestId, request.unlockAt);
        request.withdrawn = true;
        uint256 amount = request.amount;
        _unbonding[msg.sender] -= amount;
        emit Withdrawn(msg.sender, requestId, amount);
        _token.safeTransfer(msg.sender, amount);
    }

    /// @inheritdoc IOperatorStaking
    function setPremiumThreshold(uint256 threshold) external onlyRole(DEFAULT_ADMIN_ROLE) {
        premiumThreshold = threshold;
        emit PremiumThresholdSet(threshold);
    }

    /// @inheritdoc IOperatorStaking
    function setUnbondingPeriod(uint64 period) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setUnbondingPeriod(period);
    }

    /// @inheritdoc IOperatorStaking
    function token() external view returns (address) {
        return address(_token);
    }

    /// @inheritdoc IOperatorStaking
    function activeStakeOf(address operator) external view returns (uint256) {
        return _active[operator];
    }

    /// @inheritdoc IOperatorStaking
    function unbondingOf(address operator) external view returns (uint256) {
        return _unbonding[operator];
    }

    /// @inheritdoc IOperatorStaking
    /// @dev Reverts with `UnknownRequest` for an id the operator never made.
    function unstakeRequest(address operator, uint256 requestId)
        external
        view
        returns (UnstakeRequest memory)
    {
        UnstakeRequest[] storage requests = _requests[operator];
        if (requestId >= requests.length) revert UnknownRequest(operator, requestId);
        return requests[requestId];
    }

    /// @inheritdoc IOperatorStaking
    function unstakeRequestCount(address operator) external view returns (uint256) {
        return _requests[operator].length;
    }

    /// @inheritdoc IOperatorStaking
    /// @dev An operator without active stake is never premium, even with a zero threshold.
    function isPremium(address operator) external view returns (bool) {
        uint256 active = _active[operator];
        return active != 0 && active >= premiumThreshold;
    }

    function _stake(uint256 amount) private {
        if (amount == 0) revert ZeroAmount();
        _token.safeTransferFrom(msg.sender, address(this), amount);
        uint256 active = _active[msg.sender] + amount;
        _active[msg.sender] = active;
        emit Staked(msg.sender, amount, active);
    }

    function _setUnbondingPeriod(uint64 period) private {
        if (period > MAX_UNBONDING_PERIOD) revert UnbondingPeriodTooLong(period, MAX_UNBONDING_PERIOD);
        unbondingPeriod = period;
        emit UnbondingPeriodSet(period);
    }
}
