// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title ILeaseEscrow
/// @notice Holds tenants' USDC and pays node operators for leases by the second.
/// @dev Accrual is lazy. A lease's accrual is split into segments: a new segment starts only when a lease
///      whose funds ran out is topped up. Within a segment the amount accrued at time t is
///      `accruedBefore + floor(ratePerHour * (t - accrualStart) / 3600)`, capped at `funded`, so the total
///      paid for a lease never depends on how many claims were made. Of every settled amount the operator's
///      share is `floor(settled * (10000 - feeBps) / 10000)` (cumulative, rounded against the operator who
///      claims) and the rest is the platform fee.
///      Accrual also stops for good when the lease's node first leaves Active (paused or retired) after the lease
///      opened: the operator stopped serving, so the tenant stops paying at that moment; resuming the node does not
///      restart the lease. Such a lease stays Active until its tenant closes it (or the arbiter terminates it) and
///      keeps its capacity on the node until then; it cannot be topped up.
interface ILeaseEscrow {
    /// @notice CPU overcommit class: Dedicated 1:1, Standard 1.5:1, Balanced 2:1, Burstable 4:1.
    enum QualityTier {
        Dedicated,
        Standard,
        Balanced,
        Burstable
    }

    /// @notice Bandwidth class: Basic 10 Mbps (+$0.005/h, x1), Standard 50 Mbps (+$0.015/h, x1),
    ///         Performance 200 Mbps (+$0.040/h, x1.2), Unmetered (+$0.040/h, x1.5).
    enum BandwidthTier {
        Basic,
        Standard,
        Performance,
        Unmetered
    }

    /// @notice Lifecycle of a lease.
    enum LeaseStatus {
        None,
        Active,
        Closed,
        Terminated
    }

    /// @notice What a lease rents.
    struct Resources {
        uint32 vcpus;
        uint32 memoryGiB;
        uint32 storageGiB;
        uint16 gpus;
    }

    /// @notice A lease.
    /// @param operator The node's operator at open; claims pay this address.
    /// @param feeBps The platform fee at open, fixed for the lease's life.
    /// @param ratePerHour Micro-USDC per hour, computed on-chain at open.
    /// @param accrualStart Start of the current accrual segment.
    /// @param lastSettledAt Time up to which accrual has been settled.
    /// @param endedAt Time accrual stopped for good (close or termination); 0 while active.
    /// @param nodeDeactivations How many times the node had left Active when the lease opened; the next time it
    ///        does ends the lease's accrual.
    /// @param funded Total funding put into the lease.
    /// @param accruedBefore Amount accrued before `accrualStart`.
    /// @param settled Amount accrued and settled so far (operator share + platform fee).
    /// @param operatorPaid Amount paid to the operator so far.
    struct Lease {
        address tenant;
        address operator;
        bytes32 nodeId;
        LeaseStatus status;
        QualityTier quality;
        BandwidthTier bandwidth;
        uint16 feeBps;
        uint64 ratePerHour;
        uint64 openedAt;
        uint64 accrualStart;
        uint64 lastSettledAt;
        uint64 endedAt;
        uint32 nodeDeactivations;
        uint256 templateId;
        uint256 funded;
        uint256 accruedBefore;
        uint256 settled;
        uint256 operatorPaid;
        Resources resources;
    }

    /// @notice Emitted when USDC is deposited to an account's free balance.
    event Deposited(address indexed account, uint256 amount, uint256 balance);
    /// @notice Emitted when an account withdraws from its free balance.
    event Withdrawn(address indexed account, uint256 amount, uint256 balance);
    /// @notice Emitted when a tenant opens a lease. The funding comes from the tenant's free balance.
    event LeaseOpened(
        uint256 indexed leaseId,
        address indexed tenant,
        bytes32 indexed nodeId,
        address operator,
        Resources resources,
        QualityTier quality,
        BandwidthTier bandwidth,
        uint256 templateId,
        uint64 ratePerHour,
        uint16 feeBps,
        uint256 funding,
        uint64 openedAt
    );
    /// @notice Emitted when anyone adds funds to a lease from their free balance. A top-up of a lease whose
    ///         funds had run out starts a new accrual segment at `accrualStart` with `accruedBefore`.
    event LeaseToppedUp(
        uint256 indexed leaseId,
        address indexed from,
        uint256 amount,
        uint256 funded,
        uint64 accrualStart,
        uint256 accruedBefore
    );
    /// @notice Emitted when a lease's accrual is settled up to `settledAt`; `settled` is the new total.
    event LeaseSettled(uint256 indexed leaseId, uint256 settled, uint64 settledAt);
    /// @notice Emitted when a lease's operator is paid; `platformFee` is the fee settled with it.
    event LeaseClaimed(
        uint256 indexed leaseId, address indexed operator, uint256 operatorAmount, uint256 platformFee
    );
    /// @notice Emitted when a tenant closes a lease; `refund` goes back to the tenant's free balance.
    event LeaseClosed(uint256 indexed leaseId, uint64 endedAt, uint256 settled, uint256 refund);
    /// @notice Emitted when the arbiter terminates a lease for a failed node.
    event LeaseTerminated(
        uint256 indexed leaseId, uint64 failedAt, uint64 endedAt, uint256 settled, uint256 refund
    );
    /// @notice Emitted when platform fees are sent to the treasury.
    event PlatformFeesWithdrawn(address indexed treasury, uint256 amount);
    /// @notice Emitted when governance changes the platform fee for new leases.
    event PlatformFeeSet(uint16 feeBps);
    /// @notice Emitted when governance changes the treasury.
    event TreasurySet(address treasury);
    /// @notice Emitted when governance changes how far back the arbiter may date a node's failure.
    event TerminationWindowSet(uint64 window);

    /// @notice Thrown when an amount is zero.
    error ZeroAmount();
    /// @notice Thrown when an address argument is zero.
    error ZeroAddress();
    /// @notice Thrown when an account's free balance cannot cover an amount.
    error InsufficientBalance(uint256 requested, uint256 available);
    /// @notice Thrown when a lease is opened on a node that is not active.
    error NodeNotActive(bytes32 nodeId);
    /// @notice Thrown when resources ask for no CPU or no memory.
    error InvalidResources();
    /// @notice Thrown when the node's registered capacity, minus what its active leases hold, cannot take the
    ///         resources asked for (vCPUs weighed by the quality tier's overcommit, memory, disk or GPUs).
    error InsufficientCapacity(bytes32 nodeId);
    /// @notice Thrown when the rate a lease would pay now is above the maximum the tenant accepted: the node's
    ///         prices (or the floors) rose after the tenant's quote.
    error RateAboveMax(uint64 ratePerHour, uint64 maxRatePerHour);
    /// @notice Thrown when a lease whose node left Active (accrual ended at `at`) is topped up.
    error LeaseAccrualEnded(uint256 leaseId, uint64 at);
    /// @notice Thrown when a lease id is unknown.
    error LeaseNotFound(uint256 leaseId);
    /// @notice Thrown when someone other than the tenant closes a lease.
    error NotLeaseTenant(uint256 leaseId, address caller);
    /// @notice Thrown when someone other than the operator claims a lease.
    error NotLeaseOperator(uint256 leaseId, address caller);
    /// @notice Thrown when a lease that is no longer active is closed, terminated or topped up.
    error LeaseNotActive(uint256 leaseId, LeaseStatus status);
    /// @notice Thrown when a failure time lies in the future.
    error FailureTimeInFuture(uint64 failedAt, uint64 nowTime);
    /// @notice Thrown when the arbiter dates a failure further back than the termination window allows.
    error FailureTimeTooEarly(uint64 failedAt, uint64 earliest);
    /// @notice Thrown when governance sets a termination window above the cap.
    error TerminationWindowTooLong(uint64 window, uint64 max);
    /// @notice Thrown when governance sets a fee above the cap.
    error FeeTooHigh(uint16 bps, uint16 max);

    /// @notice Deposits `amount` USDC from the caller to the caller's free balance.
    function deposit(uint256 amount) external;

    /// @notice Deposits with an EIP-2612 permit instead of a prior approval.
    function depositWithPermit(uint256 amount, uint256 deadline, uint8 v, bytes32 r, bytes32 s) external;

    /// @notice Withdraws `amount` from the caller's free balance. Works even while the contract is paused.
    function withdraw(uint256 amount) external;

    /// @notice Opens a lease on an active node, paid from the caller's free balance: `funding` goes into the
    ///         lease and, for a paid template, its price goes to the TemplateMarket. The node must have the
    ///         capacity free: its registered capabilities minus what its active leases hold.
    /// @param templateId 0 for no template.
    /// @param maxTemplatePrice The highest template price the tenant accepts.
    /// @param maxRatePerHour The highest hourly rate the tenant accepts (what `quoteRate` told them): a price
    ///        raise mined before the lease (a front-run, or a floor raise) makes it revert with `RateAboveMax`.
    /// @return leaseId The new lease's id (starting at 1).
    function openLease(
        bytes32 nodeId,
        Resources calldata resources,
        QualityTier quality,
        BandwidthTier bandwidth,
        uint256 templateId,
        uint256 maxTemplatePrice,
        uint64 maxRatePerHour,
        uint256 funding
    ) external returns (uint256 leaseId);

    /// @notice Adds `amount` from the caller's free balance to an active lease whose node has not left Active
    ///         since it opened. Anyone may top up. The rate never changes.
    function topUp(uint256 leaseId, uint256 amount) external;

    /// @notice Pays the caller, as operator, everything its leases have earned so far.
    /// @return paid The total paid to the caller.
    function claim(uint256[] calldata leaseIds) external returns (uint256 paid);

    /// @notice Closes a lease (tenant only): accrual stops now and the unspent funding returns to the
    ///         tenant's free balance.
    function closeLease(uint256 leaseId) external;

    /// @notice Terminates a lease for a failed node (arbiter only): accrual stops at `failedAt`, but never
    ///         before the last settlement (so never before the operator's last claim); the unspent funding
    ///         returns to the tenant's free balance. `failedAt` may lie at most `terminationWindow` seconds in the
    ///         past: what the operator earned before that can never be taken back by the arbiter.
    function terminateLease(uint256 leaseId, uint64 failedAt) external;

    /// @notice Sends the accumulated platform fees to the treasury. Anyone may call.
    function withdrawPlatformFees() external;

    /// @notice Sets the platform fee for leases opened from now on (governance, capped).
    function setPlatformFeeBps(uint16 bps) external;

    /// @notice Sets the treasury (governance).
    function setTreasury(address treasury) external;
    /// @notice Sets how far back (seconds) the arbiter may date a failure (governance, capped).
    function setTerminationWindow(uint64 window) external;

    /// @notice Stops deposits, new leases and top-ups (pauser role). Withdrawals, closes and claims go on.
    function pause() external;

    /// @notice Lifts a pause (pauser role).
    function unpause() external;

    /// @notice The hourly rate a lease with these parameters would pay on `nodeId` now, in micro-USDC.
    function quoteRate(
        bytes32 nodeId,
        Resources calldata resources,
        QualityTier quality,
        BandwidthTier bandwidth
    ) external view returns (uint64 ratePerHour);

    /// @notice An account's free (not leased) balance.
    function balanceOf(address account) external view returns (uint256);

    /// @notice A lease. Reverts with `LeaseNotFound` for an unknown id.
    function getLease(uint256 leaseId) external view returns (Lease memory);

    /// @notice How many leases were opened.
    function leaseCount() external view returns (uint256);

    /// @notice Everything a lease has accrued up to now, settled or not.
    function accruedOf(uint256 leaseId) external view returns (uint256);

    /// @notice What the operator would receive by claiming the lease now.
    function claimableOf(uint256 leaseId) external view returns (uint256);

    /// @notice The time an active lease stops accruing: when its funding runs out at its rate, or earlier when
    ///         its node left Active (0 when the lease has ended).
    function depletionTime(uint256 leaseId) external view returns (uint64);
    /// @notice What a node can still take, after its active leases: CPU in shares (60 a dedicated vCPU; a
    ///         vCPU of a tier with overcommit r:1 holds 60 / r), memory and disk in GiB, GPUs.
    function freeCapacity(bytes32 nodeId)
        external
        view
        returns (uint256 cpuShares, uint256 memoryGiB, uint256 storageGiB, uint256 gpus);
    /// @notice How far back (seconds) the arbiter may date a node's failure.
    function terminationWindow() external view returns (uint64);

    /// @notice Platform fees not yet sent to the treasury.
    function platformFees() external view returns (uint256);

    /// @notice The platform fee for new leases, basis points.
    function platformFeeBps() external view returns (uint16);

    /// @notice Where platform fees go.
    function treasury() external view returns (address);
}
