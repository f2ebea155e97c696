// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title IOperatorStaking
/// @notice Optional operator stake with an unbonding queue. There is no slashing: a stake leaves the
///         contract only through its owner's withdrawal after the unbonding period.
interface IOperatorStaking {
    /// @notice A request to unstake, withdrawable from `unlockAt`.
    struct UnstakeRequest {
        uint128 amount;
        uint64 unlockAt;
        bool withdrawn;
    }

    /// @notice Emitted when an operator adds stake.
    event Staked(address indexed operator, uint256 amount, uint256 activeStake);
    /// @notice Emitted when an operator moves stake into the unbonding queue.
    event UnstakeRequested(
        address indexed operator,
        uint256 indexed requestId,
        uint256 amount,
        uint64 unlockAt,
        uint256 activeStake
    );
    /// @notice Emitted when an operator withdraws an unbonded request.
    event Withdrawn(address indexed operator, uint256 indexed requestId, uint256 amount);
    /// @notice Emitted when governance changes the premium threshold.
    event PremiumThresholdSet(uint256 threshold);
    /// @notice Emitted when governance changes the unbonding period (applies to new requests only).
    event UnbondingPeriodSet(uint64 period);

    /// @notice Thrown when an amount is zero.
    error ZeroAmount();
    /// @notice Thrown when an operator unstakes more than its active stake.
    error InsufficientStake(uint256 requested, uint256 active);
    /// @notice Thrown when a request id does not belong to the caller.
    error UnknownRequest(address operator, uint256 requestId);
    /// @notice Thrown when a request is withdrawn before it unlocks.
    error StillUnbonding(uint256 requestId, uint64 unlockAt);
    /// @notice Thrown when a request was already withdrawn.
    error AlreadyWithdrawn(uint256 requestId);
    /// @notice Thrown when governance sets an unbonding period above the cap.
    error UnbondingPeriodTooLong(uint64 period, uint64 max);

    /// @notice Adds `amount` of the staking token to the caller's active stake.
    function stake(uint256 amount) external;

    /// @notice Adds stake using an EIP-2612 permit instead of a prior approval.
    function stakeWithPermit(uint256 amount, uint256 deadline, uint8 v, bytes32 r, bytes32 s) external;

    /// @notice Moves `amount` of active stake into the unbonding queue.
    /// @return requestId The caller's request id (per operator, starting at 0).
    function requestUnstake(uint256 amount) external returns (uint256 requestId);

    /// @notice Withdraws an unbonded request to the caller.
    function withdraw(uint256 requestId) external;

    /// @notice Sets the active stake at which an operator counts as premium (governance).
    function setPremiumThreshold(uint256 threshold) external;

    /// @notice Sets the unbonding period for future requests (governance, capped).
    function setUnbondingPeriod(uint64 period) external;

    /// @notice The staking token.
    function token() external view returns (address);

    /// @notice An operator's active (not unbonding) stake.
    function activeStakeOf(address operator) external view returns (uint256);

    /// @notice An operator's stake waiting in the unbonding queue, not yet withdrawn.
    function unbondingOf(address operator) external view returns (uint256);

    /// @notice An operator's unstake request.
    function unstakeRequest(address operator, uint256 requestId) external view returns (UnstakeRequest memory);

    /// @notice How many unstake requests an operator has made.
    function unstakeRequestCount(address operator) external view returns (uint256);

    /// @notice Whether an operator's active stake reaches the premium threshold.
    function isPremium(address operator) external view returns (bool);

    /// @notice The active stake at which an operator counts as premium.
    function premiumThreshold() external view returns (uint256);

    /// @notice The unbonding period applied to new requests, seconds.
    function unbondingPeriod() external view returns (uint64);
}
