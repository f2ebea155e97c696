// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {ILeaseEscrow} from "./interfaces/ILeaseEscrow.sol";
import {INodeRegistry} from "./interfaces/INodeRegistry.sol";
import {ITemplateMarket} from "./interfaces/ITemplateMarket.sol";

/// @title LeaseEscrow
/// @notice Tenants deposit USDC, fund leases on registered nodes, and get back whatever a lease did not spend;
///         operators claim what their leases earned by the second; the platform fee accumulates for the
///         treasury. Governance sets the fee within a cap and the treasury, never a balance.
/// @dev Solvency: the USDC balance always equals exactly what the contract owes, namely
///        Σ free balances
///      + Σ over active leases of (funded − settled)             (unspent funding, the tenant's)
///      + Σ over all leases of (operatorShare(settled) − operatorPaid)  (earned, not yet claimed)
///      + platformFees                                              (settled fees, not yet sent).
///      The platform fee of a settled amount is credited at settlement, so `platformFees` always holds
///      Σ (settled − operatorShare(settled)) minus what was sent to the treasury.
///      Refunds go to the tenant's free balance, never pushed: no third party (operator, token hook, treasury)
///      can make a close, a termination or a withdrawal revert.
contract LeaseEscrow is ILeaseEscrow, AccessControl, Pausable, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice May terminate leases of failed nodes (the orchestrator).
    bytes32 public constant ARBITER_ROLE = keccak256("ARBITER_ROLE");
    /// @notice May pause and unpause deposits, new leases and top-ups.
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");
    /// @notice Platform fee of new leases at deployment, basis points (5%).
    uint16 public constant DEFAULT_PLATFORM_FEE_BPS = 500;
    /// @notice Highest platform fee governance may set, basis points (20%).
    uint16 public constant MAX_PLATFORM_FEE_BPS = 2000;

    /// @notice How far back the arbiter may date a node's failure at deployment: 2 hours, room for the
    ///         orchestrator's offline window (30 minutes by default) and its confirmations.
    uint64 public constant DEFAULT_TERMINATION_WINDOW = 2 hours;
    /// @notice The longest termination window governance may set: 1 day.
    uint64 public constant MAX_TERMINATION_WINDOW = 1 days;
    /// @notice CPU shares of one dedicated vCPU: 60 divides evenly by every overcommit ratio (1, 1.5, 2, 4), so a
    ///         vCPU of each tier holds a whole number of shares (60, 40, 30, 15).
    uint256 public constant CPU_SHARES_PER_VCPU = 60;

    uint256 private constant BPS = 10_000;
    uint256 private constant SECONDS_PER_HOUR = 3600;

    /// @notice The payment token (USDC).
    IERC20 public immutable usdc;
    /// @notice Where nodes, their operators and prices come from.
    INodeRegistry public immutable registry;
    /// @notice Where template purchases are made.
    ITemplateMarket public immutable templates;

    /// @inheritdoc ILeaseEscrow
    uint16 public platformFeeBps;
    /// @inheritdoc ILeaseEscrow
    address public treasury;
    /// @inheritdoc ILeaseEscrow
    uint256 public platformFees;
    /// @inheritdoc ILeaseEscrow
    uint256 public leaseCount;
    /// @inheritdoc ILeaseEscrow
    uint64 public terminationWindow;

    /// @dev What a node's active leases hold of its capacity; released when a lease is closed or terminated.
    struct Held {
        uint64 cpuShares;
        uint64 memoryGiB;
        uint64 storageGiB;
        uint64 gpus;
    }

    mapping(address account => uint256) private _balances;
    mapping(uint256 leaseId => Lease) private _leases;
    mapping(bytes32 nodeId => Held) private _held;

    /// @param usdc_ The payment token.
    /// @param registry_ The node registry leases are opened against.
    /// @param templates_ The template market paid at open for a template.
    /// @param treasury_ Receives platform fees.
    /// @param admin Governance: receives DEFAULT_ADMIN_ROLE and grants ARBITER_ROLE and PAUSER_ROLE.
    constructor(
        IERC20 usdc_,
        INodeRegistry registry_,
        ITemplateMarket templates_,
        address treasury_,
        address admin
    ) {
        if (
            address(usdc_) == address(0) || address(registry_) == address(0)
                || address(templates_) == address(0) || treasury_ == address(0) || admin == address(0)
        ) revert ZeroAddress();
        usdc = usdc_;
        registry = registry_;
        templates = templates_;
        treasury = treasury_;
        platformFeeBps = DEFAULT_PLATFORM_FEE_BPS;
        terminationWindow = DEFAULT_TERMINATION_WINDOW;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        emit TreasurySet(treasury_);
        emit PlatformFeeSet(DEFAULT_PLATFORM_FEE_BPS);
        emit TerminationWindowSet(DEFAULT_TERMINATION_WINDOW);
    }

    // ------------------------------------------------------------------ balances

    /// @inheritdoc ILeaseEscrow
    function deposit(uint256 amount) external whenNotPaused nonReentrant {
        _deposit(amount);
    }

    /// @inheritdoc ILeaseEscrow
    /// @dev The permit is tried, not required: if someone front-ran it with the same signature, the allowance
    ///      is already in place and the deposit still goes through.
    function depositWithPermit(uint256 amount, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external
        whenNotPaused
        nonReentrant
    {
        try IERC20Permit(address(usdc)).permit(msg.sender, address(this), amount, deadline, v, r, s) {}
            catch {}
        _deposit(amount);
    }

    /// @inheritdoc ILeaseEscrow
    function withdraw(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        uint256 balance = _debit(msg.sender, amount);
        emit Withdrawn(msg.sender, amount, balance);
        usdc.safeTransfer(msg.sender, amount);
    }

    // ------------------------------------------------------------------ leases

    /// @inheritdoc ILeaseEscrow
    function openLease(
        bytes32 nodeId,
        Resources calldata resources,
        QualityTier quality,
        BandwidthTier bandwidth,
        uint256 templateId,
        uint256 maxTemplatePrice,
        uint64 maxRatePerHour,
        uint256 funding
    ) external whenNotPaused nonReentrant returns (uint256 leaseId) {
        if (funding == 0) revert ZeroAmount();
        leaseId = _createLease(nodeId, resources, quality, bandwidth, templateId, maxRatePerHour, funding);
        if (templateId == 0) {
            _debit(msg.sender, funding);
        } else {
            // The price is read and paid in the same transaction, so the market pulls exactly this amount;
            // it reverts with PriceAboveMax if the author raised the price above what the tenant accepted.
            uint256 templatePrice = templates.getTemplate(templateId).price;
            // Saturates instead of overflowing, so an absurd price fails as InsufficientBalance.
            uint256 total =
                templatePrice > type(uint256).max - funding ? type(uint256).max : funding + templatePrice;
            _debit(msg.sender, total);
            if (templatePrice != 0) usdc.forceApprove(address(templates), templatePrice);
            templates.purchase(templateId, msg.sender, maxTemplatePrice);
        }
    }

    /// @inheritdoc ILeaseEscrow
    function topUp(uint256 leaseId, uint256 amount) external whenNotPaused nonReentrant {
        if (amount == 0) revert ZeroAmount();
        Lease storage lease = _activeLease(leaseId);
        // Funds added after the node stopped serving could never accrue: refuse them rather than park them.
        uint64 accrualEnd = _accrualEnd(lease);
        if (accrualEnd != type(uint64).max) revert LeaseAccrualEnded(leaseId, accrualEnd);
        _debit(msg.sender, amount);
        uint64 nowTime = uint64(block.timestamp);
        uint256 funded = lease.funded;
        if (_accruedAt(lease, nowTime) >= funded) {
            // The funds ran out and accrual stopped at the depletion time: settle it, then start a new segment
            // now, so the time the lease spent unfunded is never charged.
            _settle(leaseId, lease, nowTime);
            lease.accrualStart = nowTime;
            lease.accruedBefore = funded;
        }
        funded += amount;
        lease.funded = funded;
        emit LeaseToppedUp(leaseId, msg.sender, amount, funded, lease.accrualStart, lease.accruedBefore);
    }

    /// @inheritdoc ILeaseEscrow
    /// @dev Works while paused and for closed or terminated leases: an operator can always collect what was
    ///      earned. Listing a lease twice pays it once.
    function claim(uint256[] calldata leaseIds) external nonReentrant returns (uint256 paid) {
        for (uint256 i; i < leaseIds.length; ++i) {
            uint256 leaseId = leaseIds[i];
            Lease storage lease = _existingLease(leaseId);
            if (lease.operator != msg.sender) revert NotLeaseOperator(leaseId, msg.sender);
            uint256 fee;
            if (lease.status == LeaseStatus.Active) fee = _settle(leaseId, lease, _accrualNow(lease));
            uint256 earned = _operatorShare(lease.settled, lease.feeBps);
            uint256 due = earned - lease.operatorPaid;
            if (due != 0 || fee != 0) {
                lease.operatorPaid = earned;
                paid += due;
                emit LeaseClaimed(leaseId, msg.sender, due, fee);
            }
        }
        if (paid != 0) usdc.safeTransfer(msg.sender, paid);
    }

    /// @inheritdoc ILeaseEscrow
    function closeLease(uint256 leaseId) external nonReentrant {
        Lease storage lease = _existingLease(leaseId);
        if (lease.tenant != msg.sender) revert NotLeaseTenant(leaseId, msg.sender);
        if (lease.status != LeaseStatus.Active) revert LeaseNotActive(leaseId, lease.status);
        uint64 endedAt = _accrualNow(lease);
        uint256 refund = _end(leaseId, lease, endedAt, LeaseStatus.Closed);
        emit LeaseClosed(leaseId, endedAt, lease.settled, refund);
    }

    /// @inheritdoc ILeaseEscrow
    function terminateLease(uint256 leaseId, uint64 failedAt) external onlyRole(ARBITER_ROLE) nonReentrant {
        Lease storage lease = _activeLease(leaseId);
        uint64 nowTime = uint64(block.timestamp);
        if (failedAt > nowTime) revert FailureTimeInFuture(failedAt, nowTime);
        // The arbiter's word on when a node failed reaches back a bounded time only, so what an operator earned
        // while the node was up is never erased, claimed or not. Reverts rather than clamps: an arbiter asking
        // for more than it may is a bug to see.
        uint64 window = terminationWindow;
        if (nowTime - failedAt > window) revert FailureTimeTooEarly(failedAt, nowTime - window);
        // A lease whose node left Active already stopped accruing then.
        uint64 accrualEnd = _accrualEnd(lease);
        uint64 stopAt = failedAt < accrualEnd ? failedAt : accrualEnd;
        // What was already settled stays settled: accrual can only stop after the last settlement (a claim
        // mined just before the termination settles up to its own time, and that pay stands).
        uint64 lastSettledAt = lease.lastSettledAt;
        uint64 endedAt = stopAt > lastSettledAt ? stopAt : lastSettledAt;
        uint256 refund = _end(leaseId, lease, endedAt, LeaseStatus.Terminated);
        emit LeaseTerminated(leaseId, failedAt, endedAt, lease.settled, refund);
    }

    // ------------------------------------------------------------------ platform

    /// @inheritdoc ILeaseEscrow
    /// @dev Reverts with `ZeroAmount` when there are no fees to send.
    function withdrawPlatformFees() external nonReentrant {
        uint256 amount = platformFees;
        if (amount == 0) revert ZeroAmount();
        platformFees = 0;
        address to = treasury;
        emit PlatformFeesWithdrawn(to, amount);
        usdc.safeTransfer(to, amount);
    }

    /// @inheritdoc ILeaseEscrow
    function setPlatformFeeBps(uint16 bps) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (bps > MAX_PLATFORM_FEE_BPS) revert FeeTooHigh(bps, MAX_PLATFORM_FEE_BPS);
        platformFeeBps = bps;
        emit PlatformFeeSet(bps);
    }

    /// @inheritdoc ILeaseEscrow
    function setTreasury(address treasury_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (treasury_ == address(0)) revert ZeroAddress();
        treasury = treasury_;
        emit TreasurySet(treasury_);
    }

    /// @inheritdoc ILeaseEscrow
    function setTerminationWindow(uint64 window) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (window > MAX_TERMINATION_WINDOW) revert TerminationWindowTooLong(window, MAX_TERMINATION_WINDOW);
        terminationWindow = window;
        emit TerminationWindowSet(window);
    }

    /// @inheritdoc ILeaseEscrow
    function pause() external onlyRole(PAUSER_ROLE) {
        _pause();
    }

    /// @inheritdoc ILeaseEscrow
    function unpause() external onlyRole(PAUSER_ROLE) {
        _unpause();
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc ILeaseEscrow
    /// @dev Does not check the node's status or capacity; `openLease` does. Pass the result to `openLease` as
    ///      `maxRatePerHour`.
    function quoteRate(
        bytes32 nodeId,
        Resources calldata resources,
        QualityTier quality,
        BandwidthTier bandwidth
    ) external view returns (uint64 ratePerHour) {
        return _rate(registry.effectivePrices(nodeId), resources, quality, bandwidth);
    }

    /// @inheritdoc ILeaseEscrow
    function balanceOf(address account) external view returns (uint256) {
        return _balances[account];
    }

    /// @inheritdoc ILeaseEscrow
    function getLease(uint256 leaseId) external view returns (Lease memory) {
        return _existingLease(leaseId);
    }

    /// @inheritdoc ILeaseEscrow
    function accruedOf(uint256 leaseId) public view returns (uint256) {
        Lease storage lease = _existingLease(leaseId);
        if (lease.status != LeaseStatus.Active) return lease.settled;
        return _accruedAt(lease, _accrualNow(lease));
    }

    /// @inheritdoc ILeaseEscrow
    function claimableOf(uint256 leaseId) external view returns (uint256) {
        Lease storage lease = _leases[leaseId];
        return _operatorShare(accruedOf(leaseId), lease.feeBps) - lease.operatorPaid;
    }

    /// @inheritdoc ILeaseEscrow
    /// @dev The first second at which the lease has accrued all its funding, or the time its node left Active if
    ///      that came first; in the past for a lease that ran out. Saturates at the largest uint64.
    function depletionTime(uint256 leaseId) external view returns (uint64) {
        Lease storage lease = _existingLease(leaseId);
        if (lease.status != LeaseStatus.Active) return 0;
        // Rounds up: the earliest whole second t with floor(rate * (t - start) / 3600) >= remaining.
        uint256 remaining = lease.funded - lease.accruedBefore;
        uint256 rate = lease.ratePerHour;
        uint256 depletesAt = lease.accrualStart + (remaining * SECONDS_PER_HOUR + rate - 1) / rate;
        uint64 accrualEnd = _accrualEnd(lease);
        if (depletesAt > accrualEnd) return accrualEnd;
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint64(depletesAt); // below accrualEnd, a uint64
    }

    /// @inheritdoc ILeaseEscrow
    function freeCapacity(bytes32 nodeId)
        external
        view
        returns (uint256 cpuShares, uint256 memoryGiB, uint256 storageGiB, uint256 gpus)
    {
        INodeRegistry.Capabilities memory capabilities = registry.capabilitiesOf(nodeId);
        Held memory held = _held[nodeId];
        // Saturating: an operator may lower the capabilities below what active leases already hold.
        cpuShares = _sub0(uint256(capabilities.vcpus) * CPU_SHARES_PER_VCPU, held.cpuShares);
        memoryGiB = _sub0(capabilities.memoryGiB, held.memoryGiB);
        storageGiB = _sub0(capabilities.diskGiB, held.storageGiB);
        gpus = _sub0(capabilities.gpus, held.gpus);
    }

    // ------------------------------------------------------------------ internals

    function _deposit(uint256 amount) private {
        if (amount == 0) revert ZeroAmount();
        usdc.safeTransferFrom(msg.sender, address(this), amount);
        uint256 balance = _balances[msg.sender] + amount;
        _balances[msg.sender] = balance;
        emit Deposited(msg.sender, amount, balance);
    }

    /// @dev Takes `amount` from `account`'s free balance; returns what is left.
    function _debit(address account, uint256 amount) private returns (uint256 balance) {
        balance = _balances[account];
        if (amount > balance) revert InsufficientBalance(amount, balance);
        unchecked {
            balance -= amount;
        }
        _balances[account] = balance;
    }

    function _createLease(
        bytes32 nodeId,
        Resources calldata resources,
        QualityTier quality,
        BandwidthTier bandwidth,
        uint256 templateId,
        uint64 maxRatePerHour,
        uint256 funding
    ) private returns (uint256 leaseId) {
        if (registry.statusOf(nodeId) != INodeRegistry.NodeStatus.Active) {
            revert NodeNotActive(nodeId);
        }
        if (resources.vcpus == 0 || resources.memoryGiB == 0) revert InvalidResources();
        uint64 rate = _rate(registry.effectivePrices(nodeId), resources, quality, bandwidth);
        if (rate > maxRatePerHour) revert RateAboveMax(rate, maxRatePerHour);
        _hold(nodeId, resources, quality);
        uint64 nowTime = uint64(block.timestamp);

        leaseId = ++leaseCount;
        Lease storage lease = _leases[leaseId];
        lease.tenant = msg.sender;
        lease.operator = registry.operatorOf(nodeId);
        lease.nodeId = nodeId;
        lease.status = LeaseStatus.Active;
        lease.quality = quality;
        lease.bandwidth = bandwidth;
        lease.feeBps = platformFeeBps;
        lease.ratePerHour = rate;
        lease.openedAt = nowTime;
        lease.accrualStart = nowTime;
        lease.lastSettledAt = nowTime;
        lease.nodeDeactivations = registry.deactivationCount(nodeId);
        lease.templateId = templateId;
        lease.funded = funding;
        lease.resources = resources;
        _emitOpened(leaseId, lease);
    }

    /// @dev Emits from storage in its own frame: the event has more fields than `openLease` has stack.
    function _emitOpened(uint256 leaseId, Lease storage lease) private {
        emit LeaseOpened(
            leaseId,
            lease.tenant,
            lease.nodeId,
            lease.operator,
            lease.resources,
            lease.quality,
            lease.bandwidth,
            lease.templateId,
            lease.ratePerHour,
            lease.feeBps,
            lease.funded,
            lease.openedAt
        );
    }

    /// @dev Takes a new lease's resources from its node's free capacity, or reverts with `InsufficientCapacity`.
    function _hold(bytes32 nodeId, Resources calldata resources, QualityTier quality) private {
        INodeRegistry.Capabilities memory capabilities = registry.capabilitiesOf(nodeId);
        Held memory held = _held[nodeId];
        // Rounds nothing: CPU_SHARES_PER_VCPU * 10 divides by every overcommit in tenths.
        uint256 cpuShares =
            held.cpuShares + uint256(resources.vcpus) * CPU_SHARES_PER_VCPU * 10 / _overcommitTenths(quality);
        uint256 memoryGiB = held.memoryGiB + uint256(resources.memoryGiB);
        uint256 storageGiB = held.storageGiB + uint256(resources.storageGiB);
        uint256 gpus = held.gpus + uint256(resources.gpus);
        if (
            cpuShares > uint256(capabilities.vcpus) * CPU_SHARES_PER_VCPU
                || memoryGiB > capabilities.memoryGiB || storageGiB > capabilities.diskGiB
                || gpus > capabilities.gpus
        ) revert InsufficientCapacity(nodeId);
        // forge-lint: disable-start(unsafe-typecast)
        // Each total is at most the node's uint32 capability (times 60 for CPU), checked just above.
        _held[nodeId] = Held(uint64(cpuShares), uint64(memoryGiB), uint64(storageGiB), uint64(gpus));
        // forge-lint: disable-end(unsafe-typecast)
    }

    /// @dev Gives an ending lease's resources back to its node's free capacity.
    function _release(Lease storage lease) private {
        Held storage held = _held[lease.nodeId];
        Resources memory resources = lease.resources;
        // forge-lint: disable-start(unsafe-typecast)
        // Exactly what `_hold` added for this lease, so no underflow and every value fits.
        held.cpuShares -= uint64(
            uint256(resources.vcpus) * CPU_SHARES_PER_VCPU * 10 / _overcommitTenths(lease.quality)
        );
        // forge-lint: disable-end(unsafe-typecast)
        held.memoryGiB -= resources.memoryGiB;
        held.storageGiB -= resources.storageGiB;
        held.gpus -= resources.gpus;
    }

    /// @dev Stops accrual at `endedAt`, gives the lease's capacity back to the node and refunds the unspent
    ///      funding to the tenant's free balance.
    function _end(uint256 leaseId, Lease storage lease, uint64 endedAt, LeaseStatus status)
        private
        returns (uint256 refund)
    {
        _settle(leaseId, lease, endedAt);
        lease.status = status;
        lease.endedAt = endedAt;
        _release(lease);
        refund = lease.funded - lease.settled;
        _balances[lease.tenant] += refund;
    }

    /// @dev The time the lease's node first left Active after the lease opened (accrual ends there for good), or
    ///      the largest uint64 while it has not.
    function _accrualEnd(Lease storage lease) private view returns (uint64) {
        uint64 at = registry.deactivatedAfter(lease.nodeId, lease.nodeDeactivations);
        return at == 0 ? type(uint64).max : at;
    }

    /// @dev Now, or the end of the lease's accrual if that came first: the time to settle an active lease to.
    function _accrualNow(Lease storage lease) private view returns (uint64) {
        uint64 accrualEnd = _accrualEnd(lease);
        uint64 nowTime = uint64(block.timestamp);
        return nowTime < accrualEnd ? nowTime : accrualEnd;
    }

    /// @dev Settles accrual up to `time` (never before `lastSettledAt`) and credits the platform fee of the
    ///      newly settled amount. Returns that fee.
    function _settle(uint256 leaseId, Lease storage lease, uint64 time) private returns (uint256 fee) {
        uint256 settled = lease.settled;
        uint256 nowSettled = _accruedAt(lease, time);
        if (nowSettled == settled && time == lease.lastSettledAt) return 0;
        if (nowSettled != settled) {
            uint16 feeBps = lease.feeBps;
            fee = (nowSettled - _operatorShare(nowSettled, feeBps))
                - (settled - _operatorShare(settled, feeBps));
            platformFees += fee;
            lease.settled = nowSettled;
        }
        lease.lastSettledAt = time;
        emit LeaseSettled(leaseId, nowSettled, time);
    }

    /// @dev Accrual of the current segment at `time` (>= accrualStart), capped at the funding.
    function _accruedAt(Lease storage lease, uint256 time) private view returns (uint256) {
        // Rounds down: against the operator, who is the one asking to be paid. Accrual is computed from the
        // segment start, never summed per claim, so the number of claims cannot change the total.
        uint256 accrued = lease.accruedBefore + (uint256(lease.ratePerHour) * (time - lease.accrualStart))
            / SECONDS_PER_HOUR;
        uint256 funded = lease.funded;
        return accrued < funded ? accrued : funded;
    }

    /// @dev The operator's cumulative share of a settled amount.
    function _operatorShare(uint256 settled, uint16 feeBps) private pure returns (uint256) {
        // Rounds down: against the operator who claims; the platform's fee is the exact remainder.
        return (settled * (BPS - feeBps)) / BPS;
    }

    /// @dev rate = floor(Σ resource prices · multiplier) + bandwidth rate, with the CPU price divided by the
    ///      overcommit ratio. All terms share the denominator overcommitTenths · 10000 and are divided once.
    ///      A rate that does not fit in uint64 (absurd prices) reverts with SafeCast's overflow error.
    function _rate(
        INodeRegistry.Prices memory prices,
        Resources calldata resources,
        QualityTier quality,
        BandwidthTier bandwidth
    ) private pure returns (uint64) {
        uint256 overcommitTenths = _overcommitTenths(quality);
        (uint256 multiplierBps, uint256 bandwidthRate) = _bandwidthTerms(bandwidth);
        uint256 cpuTenths = uint256(prices.cpuPerHour) * resources.vcpus * 10;
        uint256 rest = uint256(prices.memoryGiBPerHour) * resources.memoryGiB
            + uint256(prices.storageGiBPerHour) * resources.storageGiB + uint256(prices.gpuPerHour)
            * resources.gpus;
        uint256 numerator = (cpuTenths + rest * overcommitTenths) * multiplierBps;
        // Rounds down: against the operator, who is paid at this rate.
        return SafeCast.toUint64(numerator / (overcommitTenths * BPS) + bandwidthRate);
    }

    /// @dev CPU overcommit ratio in tenths: 1:1, 1.5:1, 2:1, 4:1.
    function _overcommitTenths(QualityTier quality) private pure returns (uint256) {
        if (quality == QualityTier.Dedicated) return 10;
        if (quality == QualityTier.Standard) return 15;
        if (quality == QualityTier.Balanced) return 20;
        return 40;
    }

    /// @dev Price multiplier (basis points) and flat hourly rate (micro-USDC) of a bandwidth tier.
    function _bandwidthTerms(BandwidthTier bandwidth)
        private
        pure
        returns (uint256 multiplierBps, uint256 bandwidthRate)
    {
        if (bandwidth == BandwidthTier.Basic) return (10_000, 5_000);
        if (bandwidth == BandwidthTier.Standard) return (10_000, 15_000);
        if (bandwidth == BandwidthTier.Performance) return (12_000, 40_000);
        return (15_000, 40_000);
    }

    function _sub0(uint256 a, uint256 b) private pure returns (uint256) {
        return a > b ? a - b : 0;
    }

    function _existingLease(uint256 leaseId) private view returns (Lease storage lease) {
        lease = _leases[leaseId];
        if (lease.status == LeaseStatus.None) revert LeaseNotFound(leaseId);
    }

    function _activeLease(uint256 leaseId) private view returns (Lease storage lease) {
        lease = _existingLease(leaseId);
        if (lease.status != LeaseStatus.Active) revert LeaseNotActive(leaseId, lease.status);
    }
}
