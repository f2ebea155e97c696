// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {TestBase} from "../../utils/Test.sol";
import {MockUSDC} from "../../../src/MockUSDC.sol";
import {NodeRegistry} from "../../../src/NodeRegistry.sol";
import {TemplateMarket} from "../../../src/TemplateMarket.sol";
import {LeaseEscrow} from "../../../src/LeaseEscrow.sol";
import {INodeRegistry} from "../../../src/interfaces/INodeRegistry.sol";
import {ILeaseEscrow} from "../../../src/interfaces/ILeaseEscrow.sol";

/// @notice Drives LeaseEscrow through every user-facing action with bounded inputs, so that a revert during an
///         invariant run always means a bug, and keeps ghost totals of every token movement.
contract EscrowHandler is TestBase {
    MockUSDC internal immutable usdc;
    NodeRegistry internal immutable registry;
    TemplateMarket internal immutable market;
    LeaseEscrow internal immutable escrow;
    address internal immutable governance;
    address internal immutable arbiter;
    address internal immutable pauser;
    address internal immutable author;

    address[] public tenants;
    address[] public operators;
    bytes32[] public nodes;
    uint256[] public templateIds;
    mapping(address operator => uint256[]) internal leasesOf;

    // Ghost totals of everything that entered or left the escrow.
    uint256 public ghostDeposited;
    uint256 public ghostWithdrawn;
    uint256 public ghostOperatorPaid;
    uint256 public ghostFeesWithdrawn;
    uint256 public ghostTemplatePaid;
    mapping(uint256 leaseId => uint256) public ghostPaidForLease;
    /// @dev The highest hourly rate each lease's tenant accepted.
    mapping(uint256 leaseId => uint64) public ghostMaxRate;
    /// @dev What each terminated lease had earned by the earliest failure time the arbiter could name.
    mapping(uint256 leaseId => uint256) public ghostEarnedFloor;
    /// @dev Opens refused because the rate rose above the tenant's maximum, or the node was full.
    uint256 public ghostRefusedAboveMax;
    uint256 public ghostRefusedFull;
    mapping(bytes4 selector => uint256) public calls;

    constructor(
        MockUSDC usdc_,
        NodeRegistry registry_,
        TemplateMarket market_,
        LeaseEscrow escrow_,
        address governance_,
        address arbiter_,
        address pauser_,
        address author_
    ) {
        usdc = usdc_;
        registry = registry_;
        market = market_;
        escrow = escrow_;
        governance = governance_;
        arbiter = arbiter_;
        pauser = pauser_;
        author = author_;

        for (uint256 i; i < 3; ++i) {
            tenants.push(vm.addr(uint256(keccak256(abi.encode("tenant", i)))));
        }
        for (uint256 i; i < 2; ++i) {
            address operator = vm.addr(uint256(keccak256(abi.encode("operator", i))));
            operators.push(operator);
            vm.prank(operator);
            nodes.push(
                registry.register(
                    keccak256(abi.encode("machine", i)),
                    operator,
                    "region",
                    INodeRegistry.Capabilities(64, 256, 4000, 2, 1000, INodeRegistry.Architecture.X86_64, 0),
                    "wss://node",
                    "meta",
                    INodeRegistry.Prices(0, 0, 0, 0)
                )
            );
        }
        // A paid template, a free one, and one priced so the split rounds.
        uint256[3] memory prices = [uint256(3e6), 0, 7];
        for (uint256 i; i < prices.length; ++i) {
            vm.prank(author);
            templateIds.push(market.publish("bafy", prices[i], ""));
        }
    }

    // ------------------------------------------------------------------ actions

    function deposit(uint256 actorSeed, uint256 amount) external {
        if (escrow.paused()) return;
        address tenant = _tenant(actorSeed);
        amount = bound(amount, 1, 1e12);
        _deposit(tenant, amount);
        calls[this.deposit.selector]++;
    }

    function withdraw(uint256 actorSeed, uint256 amount) external {
        address tenant = _tenant(actorSeed);
        uint256 balance = escrow.balanceOf(tenant);
        if (balance == 0) return;
        amount = bound(amount, 1, balance);
        vm.prank(tenant);
        escrow.withdraw(amount);
        ghostWithdrawn += amount;
        calls[this.withdraw.selector]++;
    }

    /// @dev One lease request, kept in memory: the handler's arguments do not fit on the stack together.
    struct OpenRequest {
        bytes32 nodeId;
        address tenant;
        ILeaseEscrow.Resources resources;
        ILeaseEscrow.QualityTier tier;
        ILeaseEscrow.BandwidthTier band;
        uint256 templateId;
        uint256 templatePrice;
        uint64 maxRate;
        uint256 funding;
    }

    function openLease(
        uint256 actorSeed,
        uint256 nodeSeed,
        uint256 sizeSeed,
        uint8 quality,
        uint8 bandwidth,
        uint256 templateSeed,
        uint256 funding
    ) external {
        if (escrow.paused()) return;
        uint256 nodeIndex = nodeSeed % nodes.length;
        OpenRequest memory request;
        request.nodeId = nodes[nodeIndex];
        if (registry.statusOf(request.nodeId) != INodeRegistry.NodeStatus.Active) return;
        request.tenant = _tenant(actorSeed);
        (request.templateId, request.templatePrice) = _template(templateSeed);
        request.funding = bound(funding, 1, 1e10);
        uint256 total = request.funding + request.templatePrice;
        uint256 balance = escrow.balanceOf(request.tenant);
        if (balance < total) _deposit(request.tenant, total - balance);
        request.resources = _resources(sizeSeed);
        request.tier = ILeaseEscrow.QualityTier(quality % 4);
        request.band = ILeaseEscrow.BandwidthTier(bandwidth % 4);
        // The tenant's maximum: the quote, or (one time in four) a stale quote from before a price raise.
        uint64 quote = escrow.quoteRate(request.nodeId, request.resources, request.tier, request.band);
        request.maxRate = sizeSeed % 4 == 0 ? quote - 1 : quote;

        if (request.maxRate < quote) {
            vm.expectRevert(
                abi.encodeWithSelector(ILeaseEscrow.RateAboveMax.selector, quote, request.maxRate)
            );
            _open(request);
            ghostRefusedAboveMax++;
            return;
        }
        if (!_fits(request.nodeId, request.resources, request.tier)) {
            vm.expectRevert(
                abi.encodeWithSelector(ILeaseEscrow.InsufficientCapacity.selector, request.nodeId)
            );
            _open(request);
            ghostRefusedFull++;
            return;
        }
        uint256 leaseId = _open(request);
        ghostMaxRate[leaseId] = request.maxRate;
        ghostTemplatePaid += request.templatePrice;
        leasesOf[operators[nodeIndex]].push(leaseId);
        calls[this.openLease.selector]++;
    }

    function _open(OpenRequest memory request) internal returns (uint256 leaseId) {
        vm.prank(request.tenant);
        leaseId = escrow.openLease(
            request.nodeId,
            request.resources,
            request.tier,
            request.band,
            request.templateId,
            request.templatePrice,
            request.maxRate,
            request.funding
        );
    }

    function topUp(uint256 actorSeed, uint256 leaseSeed, uint256 amount) external {
        if (escrow.paused()) return;
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        ILeaseEscrow.Lease memory lease = escrow.getLease(leaseId);
        if (lease.status != ILeaseEscrow.LeaseStatus.Active) return;
        address from = _tenant(actorSeed);
        amount = bound(amount, 1, 1e10);
        uint256 balance = escrow.balanceOf(from);
        if (balance < amount) _deposit(from, amount - balance);
        uint64 accrualEnd = registry.deactivatedAfter(lease.nodeId, lease.nodeDeactivations);
        vm.prank(from);
        if (accrualEnd != 0) {
            vm.expectRevert(
                abi.encodeWithSelector(ILeaseEscrow.LeaseAccrualEnded.selector, leaseId, accrualEnd)
            );
        }
        escrow.topUp(leaseId, amount);
        if (accrualEnd != 0) return;
        calls[this.topUp.selector]++;
    }

    function claim(uint256 operatorSeed) external {
        address operator = operators[operatorSeed % operators.length];
        uint256[] memory ids = leasesOf[operator];
        uint256[] memory before = new uint256[](ids.length);
        for (uint256 i; i < ids.length; ++i) {
            before[i] = escrow.getLease(ids[i]).operatorPaid;
        }
        uint256 balanceBefore = usdc.balanceOf(operator);
        vm.prank(operator);
        uint256 paid = escrow.claim(ids);
        assertEq(usdc.balanceOf(operator) - balanceBefore, paid, "claim return != transfer");
        for (uint256 i; i < ids.length; ++i) {
            ghostPaidForLease[ids[i]] += escrow.getLease(ids[i]).operatorPaid - before[i];
        }
        ghostOperatorPaid += paid;
        calls[this.claim.selector]++;
    }

    function closeLease(uint256 leaseSeed) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        ILeaseEscrow.Lease memory lease = escrow.getLease(leaseId);
        if (lease.status != ILeaseEscrow.LeaseStatus.Active) return;
        vm.prank(lease.tenant);
        escrow.closeLease(leaseId);
        calls[this.closeLease.selector]++;
    }

    function terminateLease(uint256 leaseSeed, uint256 failedAt) external {
        uint256 leaseId = _lease(leaseSeed);
        if (leaseId == 0) return;
        ILeaseEscrow.Lease memory lease = escrow.getLease(leaseId);
        if (lease.status != ILeaseEscrow.LeaseStatus.Active) return;
        uint256 nowTime = block.timestamp;
        uint256 window = escrow.terminationWindow();
        uint256 earliest = nowTime > window ? nowTime - window : 0;
        // Now and then the arbiter asks to reach further back than the window: refused.
        failedAt = bound(failedAt, earliest > 1 hours ? earliest - 1 hours : 0, nowTime);
        if (failedAt < earliest) {
            vm.prank(arbiter);
            vm.expectRevert(
                abi.encodeWithSelector(ILeaseEscrow.FailureTimeTooEarly.selector, failedAt, uint64(earliest))
            );
            escrow.terminateLease(leaseId, uint64(failedAt));
            return;
        }
        // What the operator had earned by the earliest failure time the arbiter may name (or by the last
        // settlement, if later): read at that time, then back to now.
        uint256 floorTime = earliest > lease.lastSettledAt ? earliest : lease.lastSettledAt;
        vm.warp(floorTime);
        uint256 earnedFloor = escrow.accruedOf(leaseId);
        vm.warp(nowTime);
        vm.prank(arbiter);
        escrow.terminateLease(leaseId, uint64(failedAt));
        uint256 settled = escrow.getLease(leaseId).settled;
        assertGe(settled, lease.settled, "termination took back settled pay");
        assertGe(settled, earnedFloor, "termination erased pay earned before the window");
        ghostEarnedFloor[leaseId] = earnedFloor;
        calls[this.terminateLease.selector]++;
    }

    function withdrawPlatformFees() external {
        uint256 fees = escrow.platformFees();
        if (fees == 0) return;
        escrow.withdrawPlatformFees();
        ghostFeesWithdrawn += fees;
        calls[this.withdrawPlatformFees.selector]++;
    }

    function setPlatformFee(uint16 bps) external {
        vm.prank(governance);
        escrow.setPlatformFeeBps(uint16(bound(bps, 0, 2000)));
        calls[this.setPlatformFee.selector]++;
    }

    function setNodePrices(uint256 nodeSeed, uint64 cpu, uint64 mem, uint64 disk, uint64 gpu) external {
        uint256 nodeIndex = nodeSeed % nodes.length;
        if (registry.statusOf(nodes[nodeIndex]) == INodeRegistry.NodeStatus.Retired) return;
        vm.prank(operators[nodeIndex]);
        registry.setPrices(
            nodes[nodeIndex],
            INodeRegistry.Prices(
                uint64(bound(cpu, 0, 1e8)),
                uint64(bound(mem, 0, 1e8)),
                uint64(bound(disk, 0, 1e7)),
                uint64(bound(gpu, 0, 1e9))
            )
        );
        calls[this.setNodePrices.selector]++;
    }

    function toggleNode(uint256 nodeSeed) external {
        uint256 nodeIndex = nodeSeed % nodes.length;
        INodeRegistry.NodeStatus status = registry.statusOf(nodes[nodeIndex]);
        vm.prank(operators[nodeIndex]);
        if (status == INodeRegistry.NodeStatus.Active) registry.pause(nodes[nodeIndex]);
        else registry.resume(nodes[nodeIndex]);
        calls[this.toggleNode.selector]++;
    }

    function togglePause() external {
        bool paused = escrow.paused();
        vm.prank(pauser);
        if (paused) escrow.unpause();
        else escrow.pause();
        calls[this.togglePause.selector]++;
    }

    function setTemplatePrice(uint256 templateSeed, uint256 price) external {
        uint256 templateId = templateIds[templateSeed % templateIds.length];
        vm.prank(author);
        market.update(templateId, "bafy", bound(price, 0, 1e8), "");
        calls[this.setTemplatePrice.selector]++;
    }

    function warp(uint256 secondsForward) external {
        vm.warp(block.timestamp + bound(secondsForward, 1, 3 days));
        calls[this.warp.selector]++;
    }

    // ------------------------------------------------------------------ views for the invariants

    /// @notice Tokens the ghosts say the escrow must hold.
    function ghostBalance() external view returns (uint256) {
        return ghostDeposited - ghostWithdrawn - ghostOperatorPaid - ghostFeesWithdrawn - ghostTemplatePaid;
    }

    function tenantCount() external view returns (uint256) {
        return tenants.length;
    }

    function nodeCount() external view returns (uint256) {
        return nodes.length;
    }

    function operatorCount() external view returns (uint256) {
        return operators.length;
    }

    // ------------------------------------------------------------------ internals

    /// @dev No template (0) or one of the published ones with its current price.
    function _template(uint256 seed) internal view returns (uint256 templateId, uint256 price) {
        uint256 pick = seed % (templateIds.length + 1);
        if (pick == 0) return (0, 0);
        templateId = templateIds[pick - 1];
        price = market.getTemplate(templateId).price;
    }

    /// @dev Sizes within the registered node's capabilities.
    function _resources(uint256 seed) internal pure returns (ILeaseEscrow.Resources memory) {
        return ILeaseEscrow.Resources(
            uint32(bound(seed & 0xffff, 1, 64)),
            uint32(bound((seed >> 16) & 0xffff, 1, 256)),
            uint32(bound((seed >> 32) & 0xffff, 0, 4000)),
            uint16(bound((seed >> 48) & 0xffff, 0, 2))
        );
    }

    /// @dev Whether the node's free capacity takes the resources at this tier.
    function _fits(bytes32 nodeId, ILeaseEscrow.Resources memory resources, ILeaseEscrow.QualityTier tier)
        internal
        view
        returns (bool)
    {
        (uint256 cpuShares, uint256 memoryGiB, uint256 storageGiB, uint256 gpus) = escrow.freeCapacity(nodeId);
        uint256[4] memory sharesPerVcpu = [uint256(60), 40, 30, 15];
        return uint256(resources.vcpus) * sharesPerVcpu[uint8(tier)] <= cpuShares
            && resources.memoryGiB <= memoryGiB && resources.storageGiB <= storageGiB
            && resources.gpus <= gpus;
    }

    function _tenant(uint256 seed) internal view returns (address) {
        return tenants[seed % tenants.length];
    }

    /// @dev A lease id from 1 to leaseCount, or 0 when none was opened.
    function _lease(uint256 seed) internal view returns (uint256) {
        uint256 count = escrow.leaseCount();
        return count == 0 ? 0 : 1 + seed % count;
    }

    function _deposit(address account, uint256 amount) internal {
        usdc.mint(account, amount);
        vm.startPrank(account);
        usdc.approve(address(escrow), amount);
        escrow.deposit(amount);
        vm.stopPrank();
        ghostDeposited += amount;
    }
}
