// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {MarketplaceFixture} from "./utils/Fixtures.sol";
import {LeaseEscrow} from "../src/LeaseEscrow.sol";
import {ILeaseEscrow} from "../src/interfaces/ILeaseEscrow.sol";
import {INodeRegistry} from "../src/interfaces/INodeRegistry.sol";
import {ITemplateMarket} from "../src/interfaces/ITemplateMarket.sol";

contract LeaseEscrowTest is MarketplaceFixture {
    /// @dev The fixture lease: 2 vCPU x 10_000 + 4 GiB x 5_000 + 50 GiB x 100, Dedicated, + 5_000 Basic.
    uint64 internal constant RATE = 50_000;

    function setUp() public {
        _deployMarketplace();
        _fund(tenant, 1_000e6);
    }

    // ------------------------------------------------------------------ test utilities

    function _permit(uint256 key, address owner, uint256 amount, uint256 deadline)
        internal
        view
        returns (uint8 v, bytes32 r, bytes32 s)
    {
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256(
                    "Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"
                ),
                owner,
                address(escrow),
                amount,
                usdc.nonces(owner),
                deadline
            )
        );
        (v, r, s) = vm.sign(key, keccak256(abi.encodePacked("\x19\x01", usdc.DOMAIN_SEPARATOR(), structHash)));
    }

    function _claim(uint256 leaseId) internal returns (uint256 paid) {
        uint256[] memory ids = new uint256[](1);
        ids[0] = leaseId;
        vm.prank(operator);
        paid = escrow.claim(ids);
    }

    function _publishTemplate(uint256 price) internal returns (uint256 templateId) {
        vm.prank(author);
        templateId = market.publish("bafy-template", price, "meta");
    }

    function _openWithTemplate(uint256 templateId, uint256 maxPrice, uint256 funding)
        internal
        returns (uint256)
    {
        vm.prank(tenant);
        return escrow.openLease(
            nodeId,
            _resources(2, 4, 50, 0),
            ILeaseEscrow.QualityTier.Dedicated,
            ILeaseEscrow.BandwidthTier.Basic,
            templateId,
            maxPrice,
            type(uint64).max,
            funding
        );
    }

    function _operatorShare(uint256 settled, uint256 feeBps) internal pure returns (uint256) {
        return settled * (10_000 - feeBps) / 10_000;
    }

    /// @dev Independent reference of the rate formula: one division over ocTenths * 10000.
    function _referenceRate(
        INodeRegistry.Prices memory p,
        ILeaseEscrow.Resources memory r,
        uint256 quality,
        uint256 bandwidth
    ) internal pure returns (uint256) {
        uint256[4] memory oc = [uint256(10), 15, 20, 40];
        uint256[4] memory mult = [uint256(10_000), 10_000, 12_000, 15_000];
        uint256[4] memory bw = [uint256(5_000), 15_000, 40_000, 40_000];
        uint256 num = uint256(p.cpuPerHour) * r.vcpus * 10 * mult[bandwidth]
            + (uint256(p.memoryGiBPerHour)
                * r.memoryGiB
                + uint256(p.storageGiBPerHour)
                * r.storageGiB
                + uint256(p.gpuPerHour)
                * r.gpus) * oc[quality] * mult[bandwidth];
        return num / (oc[quality] * 10_000) + bw[bandwidth];
    }

    // ------------------------------------------------------------------ constructor and roles

    function test_constructor_setsDefaultsAndRoles() public view {
        assertEq(address(escrow.usdc()), address(usdc));
        assertEq(address(escrow.registry()), address(registry));
        assertEq(address(escrow.templates()), address(market));
        assertEq(escrow.treasury(), treasury);
        assertEq(escrow.platformFeeBps(), 500);
        assertEq(escrow.ARBITER_ROLE(), keccak256("ARBITER_ROLE"));
        assertEq(escrow.PAUSER_ROLE(), keccak256("PAUSER_ROLE"));
        assertTrue(escrow.hasRole(bytes32(0), governance));
        assertFalse(escrow.paused());
        assertEq(escrow.leaseCount(), 0);
    }

    function test_constructor_emitsTreasuryAndFee() public {
        vm.expectEmit();
        emit ILeaseEscrow.TreasurySet(treasury);
        vm.expectEmit();
        emit ILeaseEscrow.PlatformFeeSet(500);
        new LeaseEscrow(IERC20(address(usdc)), registry, market, treasury, governance);
    }

    function test_RevertWhen_constructedWithZeroAddress() public {
        IERC20 token = IERC20(address(usdc));
        vm.expectRevert(ILeaseEscrow.ZeroAddress.selector);
        new LeaseEscrow(IERC20(address(0)), registry, market, treasury, governance);
        vm.expectRevert(ILeaseEscrow.ZeroAddress.selector);
        new LeaseEscrow(token, INodeRegistry(address(0)), market, treasury, governance);
        vm.expectRevert(ILeaseEscrow.ZeroAddress.selector);
        new LeaseEscrow(token, registry, ITemplateMarket(address(0)), treasury, governance);
        vm.expectRevert(ILeaseEscrow.ZeroAddress.selector);
        new LeaseEscrow(token, registry, market, address(0), governance);
        vm.expectRevert(ILeaseEscrow.ZeroAddress.selector);
        new LeaseEscrow(token, registry, market, treasury, address(0));
    }

    // ------------------------------------------------------------------ deposit / withdraw

    function test_deposit_creditsTheFreeBalanceAndEmits() public {
        usdc.mint(stranger, 5e6);
        vm.startPrank(stranger);
        usdc.approve(address(escrow), 5e6);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.Deposited(stranger, 5e6, 5e6);
        escrow.deposit(5e6);
        vm.stopPrank();
        assertEq(escrow.balanceOf(stranger), 5e6);
        assertEq(usdc.balanceOf(address(escrow)), 1_000e6 + 5e6);
    }

    function test_RevertWhen_depositZero() public {
        vm.prank(tenant);
        vm.expectRevert(ILeaseEscrow.ZeroAmount.selector);
        escrow.deposit(0);
    }

    function test_RevertWhen_depositWithoutAllowance() public {
        usdc.mint(stranger, 5e6);
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(escrow), 0, 5e6)
        );
        escrow.deposit(5e6);
    }

    function test_RevertWhen_depositWhilePaused() public {
        vm.prank(pauser);
        escrow.pause();
        vm.prank(tenant);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        escrow.deposit(1);
    }

    function test_depositWithPermit_needsNoPriorApproval() public {
        (address signer, uint256 key) = makeAddrAndKey("signer");
        usdc.mint(signer, 7e6);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(key, signer, 7e6, deadline);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.Deposited(signer, 7e6, 7e6);
        vm.prank(signer);
        escrow.depositWithPermit(7e6, deadline, v, r, s);
        assertEq(escrow.balanceOf(signer), 7e6);
        assertEq(usdc.balanceOf(signer), 0);
    }

    function test_depositWithPermit_survivesAFrontRunPermit() public {
        (address signer, uint256 key) = makeAddrAndKey("signer");
        usdc.mint(signer, 7e6);
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = _permit(key, signer, 7e6, deadline);
        // Someone submits the signature first: the nonce is used, the allowance is in place.
        usdc.permit(signer, address(escrow), 7e6, deadline, v, r, s);
        vm.prank(signer);
        escrow.depositWithPermit(7e6, deadline, v, r, s);
        assertEq(escrow.balanceOf(signer), 7e6);
    }

    function test_RevertWhen_depositWithPermitBadSignatureAndNoAllowance() public {
        (address signer,) = makeAddrAndKey("signer");
        usdc.mint(signer, 7e6);
        vm.prank(signer);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(escrow), 0, 7e6)
        );
        escrow.depositWithPermit(7e6, block.timestamp, 27, bytes32(uint256(1)), bytes32(uint256(2)));
    }

    function test_RevertWhen_depositWithPermitWhilePaused() public {
        vm.prank(pauser);
        escrow.pause();
        vm.prank(tenant);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        escrow.depositWithPermit(1, block.timestamp, 27, bytes32(0), bytes32(0));
    }

    function test_RevertWhen_depositWithPermitZero() public {
        vm.prank(tenant);
        vm.expectRevert(ILeaseEscrow.ZeroAmount.selector);
        escrow.depositWithPermit(0, block.timestamp, 27, bytes32(0), bytes32(0));
    }

    function test_withdraw_paysOutAndEmits() public {
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.Withdrawn(tenant, 400e6, 600e6);
        vm.prank(tenant);
        escrow.withdraw(400e6);
        assertEq(escrow.balanceOf(tenant), 600e6);
        assertEq(usdc.balanceOf(tenant), 400e6);
    }

    function test_withdraw_worksWhilePaused() public {
        vm.prank(pauser);
        escrow.pause();
        vm.prank(tenant);
        escrow.withdraw(1_000e6);
        assertEq(usdc.balanceOf(tenant), 1_000e6);
    }

    function test_RevertWhen_withdrawZero() public {
        vm.prank(tenant);
        vm.expectRevert(ILeaseEscrow.ZeroAmount.selector);
        escrow.withdraw(0);
    }

    function test_RevertWhen_withdrawMoreThanFree() public {
        _openLease(100e6);
        vm.prank(tenant);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.InsufficientBalance.selector, 900e6 + 1, 900e6));
        escrow.withdraw(900e6 + 1);
    }

    // ------------------------------------------------------------------ openLease

    function test_openLease_fundsTheLeaseAndEmits() public {
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseOpened(
            1,
            tenant,
            nodeId,
            operator,
            _resources(2, 4, 50, 0),
            ILeaseEscrow.QualityTier.Dedicated,
            ILeaseEscrow.BandwidthTier.Basic,
            0,
            RATE,
            500,
            100e6,
            uint64(block.timestamp)
        );
        uint256 leaseId = _openLease(100e6);

        assertEq(leaseId, 1);
        assertEq(escrow.leaseCount(), 1);
        assertEq(escrow.balanceOf(tenant), 900e6);
        ILeaseEscrow.Lease memory lease = escrow.getLease(leaseId);
        assertEq(lease.tenant, tenant);
        assertEq(lease.operator, operator);
        assertEq(lease.nodeId, nodeId);
        assertTrue(lease.status == ILeaseEscrow.LeaseStatus.Active);
        assertTrue(lease.quality == ILeaseEscrow.QualityTier.Dedicated);
        assertTrue(lease.bandwidth == ILeaseEscrow.BandwidthTier.Basic);
        assertEq(lease.feeBps, 500);
        assertEq(lease.ratePerHour, RATE);
        assertEq(lease.openedAt, block.timestamp);
        assertEq(lease.accrualStart, block.timestamp);
        assertEq(lease.lastSettledAt, block.timestamp);
        assertEq(lease.endedAt, 0);
        assertEq(lease.templateId, 0);
        assertEq(lease.funded, 100e6);
        assertEq(lease.accruedBefore, 0);
        assertEq(lease.settled, 0);
        assertEq(lease.operatorPaid, 0);
        assertEq(lease.resources.vcpus, 2);
        assertEq(lease.resources.memoryGiB, 4);
        assertEq(lease.resources.storageGiB, 50);
        assertEq(lease.resources.gpus, 0);
    }

    function test_openLease_paysThePaidTemplateFromTheFreeBalance() public {
        uint256 templateId = _publishTemplate(10e6);
        vm.expectEmit(address(market));
        emit ITemplateMarket.TemplatePurchased(templateId, tenant, address(escrow), 1, 10e6, 8.5e6, 1.5e6);
        uint256 leaseId = _openWithTemplate(templateId, 10e6, 100e6);

        assertEq(escrow.balanceOf(tenant), 1_000e6 - 100e6 - 10e6);
        assertEq(escrow.getLease(leaseId).templateId, templateId);
        assertEq(escrow.getLease(leaseId).funded, 100e6);
        assertEq(market.purchasesOf(templateId, tenant), 1);
        assertEq(market.earningsOf(author), 8.5e6);
        assertEq(usdc.balanceOf(address(market)), 10e6);
        assertEq(usdc.balanceOf(address(escrow)), 1_000e6 - 10e6);
        assertEq(usdc.allowance(address(escrow), address(market)), 0);
    }

    function test_openLease_recordsAFreeTemplate() public {
        uint256 templateId = _publishTemplate(0);
        _openWithTemplate(templateId, 0, 100e6);
        assertEq(market.purchasesOf(templateId, tenant), 1);
        assertEq(escrow.balanceOf(tenant), 900e6);
    }

    function test_openLease_appliesTierOvercommitAndBandwidth() public {
        // Standard quality (1.5:1) + Performance bandwidth (x1.2, +40_000):
        // floor((3 * 10_000 / 1.5 + 8 * 5_000 + 100 * 100 + 1 * 100_000) * 1.2) + 40_000
        // = floor((20_000 + 40_000 + 10_000 + 100_000) * 1.2) + 40_000 = 244_000.
        vm.prank(tenant);
        uint256 leaseId = escrow.openLease(
            nodeId,
            _resources(3, 8, 100, 1),
            ILeaseEscrow.QualityTier.Standard,
            ILeaseEscrow.BandwidthTier.Performance,
            0,
            0,
            type(uint64).max,
            10e6
        );
        assertEq(escrow.getLease(leaseId).ratePerHour, 244_000);
    }

    function test_openLease_roundsTheRateDownOnce() public {
        // 1 vCPU at 10_001 on Standard: 10_001 / 1.5 = 6667.33; memory 1 x 5_000; storage 0.
        // One division: floor((10_001*10 + 5_000*15) * 10_000 / (15 * 10_000)) = floor(175_010 / 15) = 11_667.
        vm.prank(operator);
        registry.setPrices(nodeId, _prices(10_001, 0, 0, 0));
        uint64 rate = escrow.quoteRate(
            nodeId,
            _resources(1, 1, 0, 0),
            ILeaseEscrow.QualityTier.Standard,
            ILeaseEscrow.BandwidthTier.Basic
        );
        assertEq(rate, 11_667 + 5_000);
    }

    function test_RevertWhen_quoteRateUnknownNode() public {
        bytes32 unknown = keccak256("nowhere");
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeNotFound.selector, unknown));
        escrow.quoteRate(
            unknown,
            _resources(1, 1, 0, 0),
            ILeaseEscrow.QualityTier.Dedicated,
            ILeaseEscrow.BandwidthTier.Basic
        );
    }

    function test_quoteRate_everyTierCombination() public view {
        // 4 vCPU x 10_000 + 8 GiB x 5_000 + 100 GiB x 100 = 40_000 (CPU) + 50_000 (rest).
        uint64[4][4] memory expected = [
            // Basic (x1, +5_000), Standard (x1, +15_000), Performance (x1.2, +40_000), Unmetered (x1.5, +40_000)
            [uint64(95_000), 105_000, 148_000, 175_000], // Dedicated: 40_000 + 50_000
            [uint64(81_666), 91_666, 132_000, 155_000], // Standard: 26_666.67 + 50_000
            [uint64(75_000), 85_000, 124_000, 145_000], // Balanced: 20_000 + 50_000
            [uint64(65_000), 75_000, 112_000, 130_000] // Burstable: 10_000 + 50_000
        ];
        for (uint256 q; q < 4; ++q) {
            for (uint256 b; b < 4; ++b) {
                uint64 rate = escrow.quoteRate(
                    nodeId,
                    _resources(4, 8, 100, 0),
                    ILeaseEscrow.QualityTier(q),
                    ILeaseEscrow.BandwidthTier(b)
                );
                assertEq(rate, expected[q][b]);
            }
        }
    }

    function test_openLease_usesFloorsRaisedAfterThePriceWasSet() public {
        vm.startPrank(governance);
        registry.setDefaultPrices(_prices(20_000, 5_000, 100, 100_000));
        registry.setFloorPrices(_prices(20_000, 2_500, 50, 50_000));
        vm.stopPrank();
        // The node stored cpu 10_000 before the floor rose to 20_000.
        uint256 leaseId = _openLease(10e6);
        assertEq(escrow.getLease(leaseId).ratePerHour, RATE + 20_000);
    }

    function test_RevertWhen_openLeaseWithZeroFunding() public {
        vm.expectRevert(ILeaseEscrow.ZeroAmount.selector);
        _openLease(0);
    }

    function test_RevertWhen_openLeaseOnPausedNode() public {
        vm.prank(operator);
        registry.pause(nodeId);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.NodeNotActive.selector, nodeId));
        _openLease(1e6);
    }

    function test_RevertWhen_openLeaseOnRetiredNode() public {
        vm.prank(operator);
        registry.retire(nodeId);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.NodeNotActive.selector, nodeId));
        _openLease(1e6);
    }

    function test_RevertWhen_openLeaseOnUnknownNode() public {
        nodeId = keccak256("nowhere");
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.NodeNotActive.selector, nodeId));
        _openLease(1e6);
    }

    function test_RevertWhen_openLeaseWithInvalidResources() public {
        ILeaseEscrow.Resources[2] memory bad = [_resources(0, 4, 10, 0), _resources(2, 0, 10, 0)];
        for (uint256 i; i < bad.length; ++i) {
            vm.prank(tenant);
            vm.expectRevert(ILeaseEscrow.InvalidResources.selector);
            escrow.openLease(
                nodeId,
                bad[i],
                ILeaseEscrow.QualityTier.Dedicated,
                ILeaseEscrow.BandwidthTier.Basic,
                0,
                0,
                type(uint64).max,
                1e6
            );
        }
    }

    function test_openLease_acceptsAllTheNodesGpus() public {
        vm.prank(tenant);
        uint256 leaseId = escrow.openLease(
            nodeId,
            _resources(2, 4, 10, 2),
            ILeaseEscrow.QualityTier.Dedicated,
            ILeaseEscrow.BandwidthTier.Basic,
            0,
            0,
            type(uint64).max,
            1e6
        );
        assertEq(escrow.getLease(leaseId).resources.gpus, 2);
    }

    function test_RevertWhen_openLeaseBeyondFreeBalance() public {
        vm.expectRevert(
            abi.encodeWithSelector(ILeaseEscrow.InsufficientBalance.selector, 1_000e6 + 1, 1_000e6)
        );
        _openLease(1_000e6 + 1);
    }

    function test_RevertWhen_openLeaseCannotAlsoPayTheTemplate() public {
        uint256 templateId = _publishTemplate(10e6);
        vm.expectRevert(
            abi.encodeWithSelector(ILeaseEscrow.InsufficientBalance.selector, 1_000e6 + 1, 1_000e6)
        );
        _openWithTemplate(templateId, 10e6, 990e6 + 1);
    }

    function test_RevertWhen_openLeaseWithAnAbsurdTemplatePrice() public {
        uint256 templateId = _publishTemplate(type(uint256).max);
        vm.expectRevert(
            abi.encodeWithSelector(ILeaseEscrow.InsufficientBalance.selector, type(uint256).max, 1_000e6)
        );
        _openWithTemplate(templateId, type(uint256).max, 1);
    }

    function test_RevertWhen_openLeaseTemplateAboveMaxPrice() public {
        uint256 templateId = _publishTemplate(10e6);
        vm.expectRevert(abi.encodeWithSelector(ITemplateMarket.PriceAboveMax.selector, 10e6, 9e6));
        _openWithTemplate(templateId, 9e6, 100e6);
    }

    function test_RevertWhen_openLeaseWithUnknownTemplate() public {
        vm.expectRevert(abi.encodeWithSelector(ITemplateMarket.TemplateNotFound.selector, 42));
        _openWithTemplate(42, 10e6, 100e6);
    }

    function test_RevertWhen_openLeaseWithDeprecatedTemplate() public {
        uint256 templateId = _publishTemplate(1e6);
        vm.prank(author);
        market.deprecate(templateId);
        vm.expectRevert(abi.encodeWithSelector(ITemplateMarket.TemplateIsDeprecated.selector, templateId));
        _openWithTemplate(templateId, 1e6, 100e6);
    }

    function test_RevertWhen_openLeaseWhilePaused() public {
        vm.prank(pauser);
        escrow.pause();
        vm.expectRevert(Pausable.EnforcedPause.selector);
        _openLease(1e6);
    }

    // ------------------------------------------------------------------ accrual and claims

    function test_claim_paysTheOperatorItsShareAndCreditsTheFee() public {
        uint256 leaseId = _openLease(100e6);
        skip(2 hours);
        // 2 h x 50_000 = 100_000; operator 95% = 95_000, fee 5_000.
        assertEq(escrow.accruedOf(leaseId), 100_000);
        assertEq(escrow.claimableOf(leaseId), 95_000);

        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseSettled(leaseId, 100_000, uint64(block.timestamp));
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseClaimed(leaseId, operator, 95_000, 5_000);
        uint256 paid = _claim(leaseId);

        assertEq(paid, 95_000);
        assertEq(usdc.balanceOf(operator), 95_000);
        assertEq(escrow.platformFees(), 5_000);
        assertEq(escrow.claimableOf(leaseId), 0);
        ILeaseEscrow.Lease memory lease = escrow.getLease(leaseId);
        assertEq(lease.settled, 100_000);
        assertEq(lease.operatorPaid, 95_000);
        assertEq(lease.lastSettledAt, block.timestamp);
    }

    function test_claim_paysManyLeasesInOneTransfer() public {
        uint256 first = _openLease(100e6);
        skip(1 hours);
        uint256 second = _openLease(100e6);
        skip(1 hours);
        uint256[] memory ids = new uint256[](3);
        ids[0] = first;
        ids[1] = second;
        ids[2] = first; // listed twice, paid once
        vm.prank(operator);
        uint256 paid = escrow.claim(ids);
        assertEq(paid, _operatorShare(100_000, 500) + _operatorShare(50_000, 500));
        assertEq(usdc.balanceOf(operator), paid);
    }

    function test_claim_withNothingDuePaysNothing() public {
        uint256 leaseId = _openLease(100e6);
        vm.recordLogs();
        assertEq(_claim(leaseId), 0);
        assertEq(vm.getRecordedLogs().length, 0);
        assertEq(usdc.balanceOf(operator), 0);
    }

    function test_claim_worksWhilePausedAndAfterClose() public {
        uint256 leaseId = _openLease(100e6);
        skip(1 hours);
        vm.prank(tenant);
        escrow.closeLease(leaseId);
        vm.prank(pauser);
        escrow.pause();
        skip(5 hours);
        // The settlement happened at close; the claim pays it without further accrual.
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseClaimed(leaseId, operator, 47_500, 0);
        assertEq(_claim(leaseId), 47_500);
        assertEq(escrow.platformFees(), 2_500);
    }

    function test_RevertWhen_claimByStranger() public {
        uint256 leaseId = _openLease(100e6);
        uint256[] memory ids = new uint256[](1);
        ids[0] = leaseId;
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.NotLeaseOperator.selector, leaseId, stranger));
        escrow.claim(ids);
    }

    function test_RevertWhen_claimUnknownLease() public {
        uint256[] memory ids = new uint256[](1);
        ids[0] = 5;
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseNotFound.selector, 5));
        escrow.claim(ids);
    }

    function test_claim_feeIsFixedAtOpen() public {
        uint256 leaseId = _openLease(100e6);
        vm.prank(governance);
        escrow.setPlatformFeeBps(2000);
        skip(1 hours);
        assertEq(_claim(leaseId), 47_500);
        uint256 second = _openLease(100e6);
        assertEq(escrow.getLease(second).feeBps, 2000);
    }

    function test_accrual_stopsAtDepletion() public {
        uint256 leaseId = _openLease(100_000); // two hours at 50_000/h
        assertEq(escrow.depletionTime(leaseId), block.timestamp + 2 hours);
        skip(2 hours - 1);
        assertLt(escrow.accruedOf(leaseId), 100_000);
        skip(1);
        assertEq(escrow.accruedOf(leaseId), 100_000);
        skip(30 days);
        assertEq(escrow.accruedOf(leaseId), 100_000);
        assertEq(_claim(leaseId), 95_000);
    }

    function test_depletionTime_roundsUpToTheFirstFullySpentSecond() public {
        uint256 leaseId = _openLease(1); // 1 micro-USDC at 50_000/h lasts ceil(3600/50_000) = 1 s
        assertEq(escrow.depletionTime(leaseId), block.timestamp + 1);
        leaseId = _openLease(7); // ceil(7 * 3600 / 50_000) = ceil(0.504) = 1 s
        assertEq(escrow.depletionTime(leaseId), block.timestamp + 1);
        leaseId = _openLease(15); // ceil(1.08) = 2 s
        assertEq(escrow.depletionTime(leaseId), block.timestamp + 2);
        skip(1);
        assertEq(escrow.accruedOf(leaseId), 13);
        skip(1);
        assertEq(escrow.accruedOf(leaseId), 15);
    }

    function test_RevertWhen_viewsOfUnknownLease() public {
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseNotFound.selector, 1));
        escrow.getLease(1);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseNotFound.selector, 1));
        escrow.accruedOf(1);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseNotFound.selector, 1));
        escrow.claimableOf(1);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseNotFound.selector, 1));
        escrow.depletionTime(1);
    }

    // ------------------------------------------------------------------ topUp

    function test_topUp_extendsARunningLeaseWithoutANewSegment() public {
        uint256 leaseId = _openLease(100_000);
        skip(1 hours);
        uint64 start = uint64(block.timestamp - 1 hours);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseToppedUp(leaseId, tenant, 100_000, 200_000, start, 0);
        vm.prank(tenant);
        escrow.topUp(leaseId, 100_000);
        assertEq(escrow.depletionTime(leaseId), start + 4 hours);
        assertEq(escrow.balanceOf(tenant), 1_000e6 - 200_000);
    }

    function test_topUp_afterDepletionStartsANewSegmentAndSkipsTheGap() public {
        uint256 leaseId = _openLease(100_000);
        skip(5 hours); // ran out after 2 h
        uint64 nowTime = uint64(block.timestamp);
        _fund(stranger, 50_000);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseSettled(leaseId, 100_000, nowTime);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseToppedUp(leaseId, stranger, 50_000, 150_000, nowTime, 100_000);
        vm.prank(stranger);
        escrow.topUp(leaseId, 50_000);

        assertEq(escrow.accruedOf(leaseId), 100_000);
        skip(30 minutes);
        assertEq(escrow.accruedOf(leaseId), 125_000);
        assertEq(escrow.depletionTime(leaseId), nowTime + 1 hours);
        skip(10 hours);
        assertEq(escrow.accruedOf(leaseId), 150_000);
        assertEq(escrow.platformFees(), 5_000); // settled at top-up
        assertEq(_claim(leaseId), _operatorShare(150_000, 500));
        assertEq(escrow.platformFees(), 150_000 - _operatorShare(150_000, 500));
    }

    function test_RevertWhen_topUpZero() public {
        uint256 leaseId = _openLease(1e6);
        vm.prank(tenant);
        vm.expectRevert(ILeaseEscrow.ZeroAmount.selector);
        escrow.topUp(leaseId, 0);
    }

    function test_RevertWhen_topUpUnknownLease() public {
        vm.prank(tenant);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseNotFound.selector, 3));
        escrow.topUp(3, 1);
    }

    function test_RevertWhen_topUpClosedLease() public {
        uint256 leaseId = _openLease(1e6);
        vm.startPrank(tenant);
        escrow.closeLease(leaseId);
        vm.expectRevert(
            abi.encodeWithSelector(
                ILeaseEscrow.LeaseNotActive.selector, leaseId, ILeaseEscrow.LeaseStatus.Closed
            )
        );
        escrow.topUp(leaseId, 1);
        vm.stopPrank();
    }

    function test_RevertWhen_topUpBeyondFreeBalance() public {
        uint256 leaseId = _openLease(1e6);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.InsufficientBalance.selector, 1, 0));
        escrow.topUp(leaseId, 1);
    }

    function test_RevertWhen_topUpWhilePaused() public {
        uint256 leaseId = _openLease(1e6);
        vm.prank(pauser);
        escrow.pause();
        vm.prank(tenant);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        escrow.topUp(leaseId, 1);
    }

    // ------------------------------------------------------------------ close

    function test_closeLease_refundsTheRemainderToTheFreeBalance() public {
        uint256 leaseId = _openLease(100e6);
        skip(3 hours);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseSettled(leaseId, 150_000, uint64(block.timestamp));
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseClosed(leaseId, uint64(block.timestamp), 150_000, 100e6 - 150_000);
        vm.prank(tenant);
        escrow.closeLease(leaseId);

        ILeaseEscrow.Lease memory lease = escrow.getLease(leaseId);
        assertTrue(lease.status == ILeaseEscrow.LeaseStatus.Closed);
        assertEq(lease.endedAt, block.timestamp);
        assertEq(escrow.balanceOf(tenant), 900e6 + 100e6 - 150_000);
        assertEq(escrow.depletionTime(leaseId), 0);
        skip(1 hours);
        assertEq(escrow.accruedOf(leaseId), 150_000);
        // The tenant takes the refund out; the operator's earnings stay for its claim.
        uint256 refunded = escrow.balanceOf(tenant);
        vm.prank(tenant);
        escrow.withdraw(refunded);
        assertEq(_claim(leaseId), _operatorShare(150_000, 500));
        assertEq(usdc.balanceOf(address(escrow)), escrow.platformFees());
    }

    function test_closeLease_worksWhilePaused() public {
        uint256 leaseId = _openLease(100e6);
        vm.prank(pauser);
        escrow.pause();
        vm.prank(tenant);
        escrow.closeLease(leaseId);
        assertEq(escrow.balanceOf(tenant), 1_000e6);
    }

    function test_RevertWhen_closeLeaseByStranger() public {
        uint256 leaseId = _openLease(100e6);
        vm.prank(operator);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.NotLeaseTenant.selector, leaseId, operator));
        escrow.closeLease(leaseId);
    }

    function test_RevertWhen_closeLeaseTwice() public {
        uint256 leaseId = _openLease(100e6);
        vm.startPrank(tenant);
        escrow.closeLease(leaseId);
        vm.expectRevert(
            abi.encodeWithSelector(
                ILeaseEscrow.LeaseNotActive.selector, leaseId, ILeaseEscrow.LeaseStatus.Closed
            )
        );
        escrow.closeLease(leaseId);
        vm.stopPrank();
    }

    function test_RevertWhen_closeUnknownLease() public {
        vm.prank(tenant);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseNotFound.selector, 9));
        escrow.closeLease(9);
    }

    // ------------------------------------------------------------------ terminate

    function test_terminateLease_stopsAccrualAtTheFailure() public {
        uint256 leaseId = _openLease(100e6);
        skip(4 hours);
        uint64 failedAt = uint64(block.timestamp - 90 minutes);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseTerminated(leaseId, failedAt, failedAt, 125_000, 100e6 - 125_000);
        vm.prank(arbiter);
        escrow.terminateLease(leaseId, failedAt);
        ILeaseEscrow.Lease memory lease = escrow.getLease(leaseId);
        assertTrue(lease.status == ILeaseEscrow.LeaseStatus.Terminated);
        assertEq(lease.endedAt, failedAt);
        assertEq(lease.settled, 125_000);
        assertEq(escrow.balanceOf(tenant), 1_000e6 - 125_000);
    }

    function test_terminateLease_neverUndoesASettlement() public {
        uint256 leaseId = _openLease(100e6);
        skip(2 hours);
        _claim(leaseId);
        skip(1 hours);
        uint64 settledAt = uint64(block.timestamp - 1 hours);
        // Within the window, but before the claim: the claimed hours stand.
        uint64 failedAt = uint64(block.timestamp - 90 minutes);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.LeaseTerminated(leaseId, failedAt, settledAt, 100_000, 100e6 - 100_000);
        vm.prank(arbiter);
        escrow.terminateLease(leaseId, failedAt);
        assertEq(escrow.getLease(leaseId).endedAt, settledAt);
    }

    function test_RevertWhen_terminateWithFailureInTheFuture() public {
        uint256 leaseId = _openLease(100e6);
        vm.prank(arbiter);
        vm.expectRevert(
            abi.encodeWithSelector(
                ILeaseEscrow.FailureTimeInFuture.selector,
                uint64(block.timestamp + 1),
                uint64(block.timestamp)
            )
        );
        escrow.terminateLease(leaseId, uint64(block.timestamp + 1));
    }

    function test_RevertWhen_terminateByNonArbiter() public {
        uint256 leaseId = _openLease(100e6);
        vm.prank(governance);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector,
                governance,
                keccak256("ARBITER_ROLE")
            )
        );
        escrow.terminateLease(leaseId, uint64(block.timestamp));
    }

    function test_RevertWhen_terminateEndedLease() public {
        uint256 leaseId = _openLease(100e6);
        vm.prank(tenant);
        escrow.closeLease(leaseId);
        vm.prank(arbiter);
        vm.expectRevert(
            abi.encodeWithSelector(
                ILeaseEscrow.LeaseNotActive.selector, leaseId, ILeaseEscrow.LeaseStatus.Closed
            )
        );
        escrow.terminateLease(leaseId, uint64(block.timestamp));
    }

    function test_RevertWhen_terminateUnknownLease() public {
        vm.prank(arbiter);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseNotFound.selector, 4));
        escrow.terminateLease(4, uint64(block.timestamp));
    }

    // ------------------------------------------------------------------ platform fees and governance

    function test_withdrawPlatformFees_sendsToTheTreasuryEvenWhilePaused() public {
        uint256 leaseId = _openLease(100e6);
        skip(10 hours);
        _claim(leaseId);
        vm.prank(pauser);
        escrow.pause();
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.PlatformFeesWithdrawn(treasury, 25_000);
        vm.prank(stranger);
        escrow.withdrawPlatformFees();
        assertEq(usdc.balanceOf(treasury), 25_000);
        assertEq(escrow.platformFees(), 0);
    }

    function test_RevertWhen_withdrawPlatformFeesWithNone() public {
        vm.expectRevert(ILeaseEscrow.ZeroAmount.selector);
        escrow.withdrawPlatformFees();
    }

    function test_setPlatformFeeBps_storesAndEmits() public {
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.PlatformFeeSet(2000);
        vm.prank(governance);
        escrow.setPlatformFeeBps(2000);
        assertEq(escrow.platformFeeBps(), 2000);
    }

    function test_RevertWhen_setPlatformFeeAboveCap() public {
        vm.prank(governance);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.FeeTooHigh.selector, 2001, 2000));
        escrow.setPlatformFeeBps(2001);
    }

    function test_RevertWhen_setPlatformFeeByStranger() public {
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, stranger, bytes32(0)
            )
        );
        escrow.setPlatformFeeBps(100);
    }

    function test_setTreasury_storesAndEmits() public {
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.TreasurySet(stranger);
        vm.prank(governance);
        escrow.setTreasury(stranger);
        assertEq(escrow.treasury(), stranger);
    }

    function test_RevertWhen_setTreasuryToZero() public {
        vm.prank(governance);
        vm.expectRevert(ILeaseEscrow.ZeroAddress.selector);
        escrow.setTreasury(address(0));
    }

    function test_RevertWhen_setTreasuryByStranger() public {
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, stranger, bytes32(0)
            )
        );
        escrow.setTreasury(stranger);
    }

    function test_pause_unpause_byThePauser() public {
        vm.expectEmit(address(escrow));
        emit Pausable.Paused(pauser);
        vm.prank(pauser);
        escrow.pause();
        assertTrue(escrow.paused());
        vm.expectEmit(address(escrow));
        emit Pausable.Unpaused(pauser);
        vm.prank(pauser);
        escrow.unpause();
        assertFalse(escrow.paused());
        _openLease(1e6);
    }

    function test_RevertWhen_pauseTwiceOrUnpauseWhenRunning() public {
        vm.startPrank(pauser);
        vm.expectRevert(Pausable.ExpectedPause.selector);
        escrow.unpause();
        escrow.pause();
        vm.expectRevert(Pausable.EnforcedPause.selector);
        escrow.pause();
        vm.stopPrank();
    }

    function test_RevertWhen_pauseByNonPauser() public {
        bytes32 role = keccak256("PAUSER_ROLE");
        vm.prank(governance);
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, governance, role)
        );
        escrow.pause();
        vm.prank(pauser);
        escrow.pause();
        vm.prank(arbiter);
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, arbiter, role)
        );
        escrow.unpause();
    }

    // ------------------------------------------------------------------ fuzz

    function testFuzz_quoteRate_matchesTheReferenceFormula(
        uint64 cpu,
        uint64 mem,
        uint64 disk,
        uint64 gpu,
        uint32 vcpus,
        uint32 memoryGiB,
        uint32 storageGiB,
        uint16 gpus,
        uint8 quality,
        uint8 bandwidth
    ) public {
        // Prices up to $1000/h per unit and realistic sizes keep the rate inside uint64.
        INodeRegistry.Prices memory p = _prices(
            uint64(bound(cpu, 0, 1e9)),
            uint64(bound(mem, 0, 1e9)),
            uint64(bound(disk, 0, 1e9)),
            uint64(bound(gpu, 0, 1e9))
        );
        ILeaseEscrow.Resources memory r = _resources(
            uint32(bound(vcpus, 1, 1024)),
            uint32(bound(memoryGiB, 1, 4096)),
            uint32(bound(storageGiB, 0, 100_000)),
            uint16(bound(gpus, 0, 16))
        );
        quality = uint8(bound(quality, 0, 3));
        bandwidth = uint8(bound(bandwidth, 0, 3));
        vm.prank(operator);
        registry.setPrices(nodeId, p);
        INodeRegistry.Prices memory effective = registry.effectivePrices(nodeId);
        uint64 rate = escrow.quoteRate(
            nodeId, r, ILeaseEscrow.QualityTier(quality), ILeaseEscrow.BandwidthTier(bandwidth)
        );
        assertEq(rate, _referenceRate(effective, r, quality, bandwidth));
    }

    function testFuzz_claim_totalPaidIsExactRegardlessOfClaimCount(
        uint256 seed,
        uint32 duration,
        uint8 claims
    ) public {
        uint256 seconds_ = bound(duration, 1, 90 days);
        uint256 count = bound(claims, 1, 12);
        uint256 leaseId = _openLease(1_000e6);
        uint256 elapsed;
        uint256 paid;
        for (uint256 i; i < count; ++i) {
            uint256 step = uint256(keccak256(abi.encode(seed, i))) % (seconds_ - elapsed + 1);
            if (i == count - 1) step = seconds_ - elapsed;
            skip(step);
            elapsed += step;
            paid += _claim(leaseId);
        }
        uint256 total = uint256(RATE) * seconds_ / 3600;
        assertEq(escrow.getLease(leaseId).settled, total);
        assertEq(paid, _operatorShare(total, 500));
        assertEq(paid + escrow.platformFees(), total);
    }

    function testFuzz_close_refundsExactRemainder(uint96 funding, uint32 duration, bool claimFirst) public {
        uint256 amount = bound(funding, 1, 1_000e6);
        uint256 seconds_ = bound(duration, 0, 400 days);
        uint256 leaseId = _openLease(amount);
        skip(seconds_ / 2);
        if (claimFirst) _claim(leaseId);
        skip(seconds_ - seconds_ / 2);
        vm.prank(tenant);
        escrow.closeLease(leaseId);
        uint256 spent = uint256(RATE) * seconds_ / 3600;
        if (spent > amount) spent = amount;
        assertEq(escrow.getLease(leaseId).settled, spent);
        assertEq(escrow.balanceOf(tenant), 1_000e6 - spent);
        _claim(leaseId);
        assertEq(usdc.balanceOf(operator), _operatorShare(spent, 500));
        assertEq(usdc.balanceOf(operator) + escrow.platformFees(), spent);
        assertEq(usdc.balanceOf(address(escrow)), escrow.balanceOf(tenant) + escrow.platformFees());
    }

    function testFuzz_depletion_neverPaysMoreThanFunded(uint96 funding, uint32 duration) public {
        uint256 amount = bound(funding, 1, 100e6);
        uint256 leaseId = _openLease(amount);
        skip(bound(duration, 0, 3650 days));
        uint256 paid = _claim(leaseId);
        assertLe(escrow.accruedOf(leaseId), amount);
        assertLe(paid + escrow.platformFees(), amount);
        uint64 depletesAt = escrow.depletionTime(leaseId);
        if (block.timestamp >= depletesAt) assertEq(escrow.accruedOf(leaseId), amount);
        else assertLt(escrow.accruedOf(leaseId), amount);
    }

    function testFuzz_topUp_afterDepletionChargesOnlyFundedTime(
        uint96 funding,
        uint96 extra,
        uint32 gap,
        uint32 after_
    ) public {
        uint256 first = bound(funding, 1, 10e6);
        uint256 second = bound(extra, 1, 10e6);
        uint256 leaseId = _openLease(first);
        uint64 depletesAt = escrow.depletionTime(leaseId);
        vm.warp(uint256(depletesAt) + bound(gap, 0, 30 days));
        vm.prank(tenant);
        escrow.topUp(leaseId, second);
        uint256 segmentStart = block.timestamp;
        assertEq(escrow.getLease(leaseId).accrualStart, segmentStart);
        assertEq(escrow.getLease(leaseId).accruedBefore, first);
        skip(bound(after_, 0, 30 days));
        uint256 expected = first + uint256(RATE) * (block.timestamp - segmentStart) / 3600;
        if (expected > first + second) expected = first + second;
        assertEq(escrow.accruedOf(leaseId), expected);
        vm.prank(tenant);
        escrow.closeLease(leaseId);
        assertEq(escrow.balanceOf(tenant), 1_000e6 - expected);
    }

    function testFuzz_terminate_endsAtMaxOfFailureAndLastSettlement(
        uint32 claimAt,
        uint32 failAt,
        uint32 nowAt
    ) public {
        uint256 leaseId = _openLease(1_000e6);
        uint256 claimOffset = bound(claimAt, 0, 30 days);
        uint256 nowOffset = bound(nowAt, claimOffset, 60 days);
        uint256 window = escrow.terminationWindow();
        uint256 failOffset = bound(failAt, nowOffset > window ? nowOffset - window : 0, nowOffset);
        skip(claimOffset);
        _claim(leaseId);
        vm.warp(START + nowOffset);
        vm.prank(arbiter);
        escrow.terminateLease(leaseId, uint64(START + failOffset));
        uint256 endOffset = failOffset > claimOffset ? failOffset : claimOffset;
        ILeaseEscrow.Lease memory lease = escrow.getLease(leaseId);
        assertEq(lease.endedAt, START + endOffset);
        assertEq(lease.settled, uint256(RATE) * endOffset / 3600);
        assertEq(escrow.balanceOf(tenant), 1_000e6 - lease.settled);
    }

    /// @dev The fixture node's Dedicated + Basic quote for `resources`.
    function _quote(ILeaseEscrow.Resources memory resources) internal view returns (uint64) {
        return escrow.quoteRate(
            nodeId, resources, ILeaseEscrow.QualityTier.Dedicated, ILeaseEscrow.BandwidthTier.Basic
        );
    }

    /// @dev Opens a Basic-bandwidth lease without template on the fixture's node, as the tenant.
    function _openAs(
        ILeaseEscrow.Resources memory resources,
        ILeaseEscrow.QualityTier tier,
        uint64 maxRate,
        uint256 funding
    ) internal returns (uint256 leaseId) {
        vm.prank(tenant);
        leaseId = escrow.openLease(
            nodeId, resources, tier, ILeaseEscrow.BandwidthTier.Basic, 0, 0, maxRate, funding
        );
    }

    // ------------------------------------------------------------------ the tenant's maximum rate

    /// @dev The measured front-run: the tenant was quoted a rate; the operator raised the CPU price to 1e11 in a
    ///      transaction mined before the tenant's open. Before the maximum rate, the lease opened at the new rate,
    ///      ran dry in seconds and the operator claimed the funding. Now the open reverts and nothing moves.
    function test_RevertWhen_openLeaseAfterAFrontRunPriceRaise() public {
        ILeaseEscrow.Resources memory resources = _resources(2, 4, 50, 0);
        uint64 quoted = _quote(resources);
        vm.prank(operator);
        registry.setPrices(nodeId, _prices(1e11, 0, 0, 0));
        uint64 raised = _quote(resources);
        assertGt(raised, quoted);

        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.RateAboveMax.selector, raised, quoted));
        _openAs(resources, ILeaseEscrow.QualityTier.Dedicated, quoted, 100e6);
        assertEq(escrow.leaseCount(), 0);
        assertEq(escrow.balanceOf(tenant), 1_000e6);
    }

    /// @dev A governance floor raise between quote and open is refused the same way.
    function test_RevertWhen_openLeaseAfterAFloorRaise() public {
        ILeaseEscrow.Resources memory resources = _resources(2, 4, 50, 0);
        uint64 quoted = _quote(resources);
        vm.startPrank(governance);
        registry.setDefaultPrices(_prices(50_000, 25_000, 500, 500_000));
        registry.setFloorPrices(_prices(50_000, 25_000, 500, 500_000));
        vm.stopPrank();
        uint64 raised = _quote(resources);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.RateAboveMax.selector, raised, quoted));
        _openAs(resources, ILeaseEscrow.QualityTier.Dedicated, quoted, 100e6);
    }

    function test_openLease_atExactlyTheMaximumRate() public {
        ILeaseEscrow.Resources memory resources = _resources(2, 4, 50, 0);
        uint64 quoted = _quote(resources);
        uint256 leaseId = _openAs(resources, ILeaseEscrow.QualityTier.Dedicated, quoted, 100e6);
        assertEq(escrow.getLease(leaseId).ratePerHour, quoted);
    }

    function testFuzz_openLease_neverAboveTheMaximumRate(uint64 cpuPrice, uint64 maxRate) public {
        cpuPrice = uint64(bound(cpuPrice, 0, 1e12));
        vm.prank(operator);
        registry.setPrices(nodeId, _prices(cpuPrice, 0, 0, 0));
        ILeaseEscrow.Resources memory resources = _resources(2, 4, 50, 0);
        uint64 rate = _quote(resources);
        if (rate > maxRate) {
            vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.RateAboveMax.selector, rate, maxRate));
        }
        _openAs(resources, ILeaseEscrow.QualityTier.Dedicated, maxRate, 1e6);
        if (rate <= maxRate) assertLe(escrow.getLease(1).ratePerHour, maxRate);
    }

    // ------------------------------------------------------------------ the arbiter's bound

    /// @dev The measured defect: two identical 10-hour leases; the operator claimed one at 5 h and never the
    ///      other. Backdating the failure to the opening paid the first lease's operator for 5 h and the second's
    ///      for nothing. Now that reach is refused, and at the earliest allowed failure time both pay the same.
    function test_terminateLease_cannotEraseUnclaimedPay() public {
        uint256 claimed = _openLease(100e6);
        uint256 unclaimed = _openLease(100e6);
        skip(5 hours);
        _claim(claimed);
        skip(5 hours);

        vm.startPrank(arbiter);
        uint64 earliest = uint64(block.timestamp - escrow.terminationWindow());
        vm.expectRevert(
            abi.encodeWithSelector(ILeaseEscrow.FailureTimeTooEarly.selector, uint64(START), earliest)
        );
        escrow.terminateLease(unclaimed, uint64(START));
        escrow.terminateLease(claimed, earliest);
        escrow.terminateLease(unclaimed, earliest);
        vm.stopPrank();

        uint256 earned = uint256(RATE) * (10 hours - escrow.terminationWindow()) / 1 hours;
        assertEq(escrow.getLease(claimed).settled, earned);
        assertEq(escrow.getLease(unclaimed).settled, earned);
        assertEq(_claim(claimed) + _operatorShare(uint256(RATE) * 5, 500), _operatorShare(earned, 500));
        assertEq(_claim(unclaimed), _operatorShare(earned, 500));
    }

    function test_setTerminationWindow_boundsHowFarBackTheArbiterReaches() public {
        uint256 leaseId = _openLease(100e6);
        skip(10 hours);
        vm.expectEmit(address(escrow));
        emit ILeaseEscrow.TerminationWindowSet(30 minutes);
        vm.prank(governance);
        escrow.setTerminationWindow(30 minutes);
        vm.prank(arbiter);
        vm.expectRevert(
            abi.encodeWithSelector(
                ILeaseEscrow.FailureTimeTooEarly.selector,
                uint64(block.timestamp - 31 minutes),
                uint64(block.timestamp - 30 minutes)
            )
        );
        escrow.terminateLease(leaseId, uint64(block.timestamp - 31 minutes));
    }

    function test_RevertWhen_terminationWindowAboveTheCap() public {
        uint64 cap = escrow.MAX_TERMINATION_WINDOW();
        vm.prank(governance);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.TerminationWindowTooLong.selector, cap + 1, cap));
        escrow.setTerminationWindow(cap + 1);
    }

    function test_RevertWhen_terminationWindowSetByStranger() public {
        vm.prank(stranger);
        vm.expectRevert();
        escrow.setTerminationWindow(1 hours);
        assertEq(escrow.terminationWindow(), escrow.DEFAULT_TERMINATION_WINDOW());
    }

    // ------------------------------------------------------------------ paused and retired nodes

    /// @dev The measured defect: a lease on a retired node went on charging. Now accrual stops when the node
    ///      leaves Active, for good: a later resume does not restart it, the tenant's close refunds the rest.
    function test_pausedNode_stopsItsLeasesAccrualForGood() public {
        uint256 leaseId = _openLease(100e6);
        skip(1 hours);
        vm.prank(operator);
        registry.pause(nodeId);
        uint64 pausedAt = uint64(block.timestamp);
        skip(1 hours);
        assertEq(escrow.accruedOf(leaseId), RATE);
        assertEq(escrow.depletionTime(leaseId), pausedAt);
        vm.prank(operator);
        registry.resume(nodeId);
        skip(1 hours);
        assertEq(escrow.accruedOf(leaseId), RATE, "a resume restarted an old lease");
        assertEq(_claim(leaseId), _operatorShare(RATE, 500));

        vm.prank(tenant);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.LeaseAccrualEnded.selector, leaseId, pausedAt));
        escrow.topUp(leaseId, 1e6);

        vm.prank(tenant);
        escrow.closeLease(leaseId);
        ILeaseEscrow.Lease memory lease = escrow.getLease(leaseId);
        assertEq(lease.endedAt, pausedAt);
        assertEq(lease.settled, RATE);
        assertEq(escrow.balanceOf(tenant), 1_000e6 - RATE);
    }

    function test_retiredNode_stopsItsLeasesAccrual() public {
        uint256 leaseId = _openLease(100e6);
        skip(1 hours);
        vm.prank(operator);
        registry.retire(nodeId);
        skip(1 hours);
        assertEq(escrow.accruedOf(leaseId), RATE, "a retired node's lease kept charging");
        vm.prank(tenant);
        escrow.closeLease(leaseId);
        assertEq(escrow.balanceOf(tenant), 1_000e6 - RATE);
    }

    /// @dev A lease opened after a pause and resume ends at the next pause, not the earlier one.
    function test_leaseOpenedAfterAResume_endsAtTheNextPause() public {
        vm.startPrank(operator);
        registry.pause(nodeId);
        skip(1 hours);
        registry.resume(nodeId);
        vm.stopPrank();
        uint256 leaseId = _openLease(100e6);
        skip(2 hours);
        vm.prank(operator);
        registry.pause(nodeId);
        skip(2 hours);
        assertEq(escrow.accruedOf(leaseId), 2 * uint256(RATE));
    }

    /// @dev The arbiter cannot stretch a lease past the moment its node left Active.
    function test_terminateLease_afterThePause_endsAtThePause() public {
        uint256 leaseId = _openLease(100e6);
        skip(1 hours);
        vm.prank(operator);
        registry.pause(nodeId);
        uint64 pausedAt = uint64(block.timestamp);
        skip(30 minutes);
        vm.prank(arbiter);
        escrow.terminateLease(leaseId, uint64(block.timestamp));
        ILeaseEscrow.Lease memory lease = escrow.getLease(leaseId);
        assertEq(lease.endedAt, pausedAt);
        assertEq(lease.settled, RATE);
    }

    // ------------------------------------------------------------------ capacity

    /// @dev The measured defect: a 1,000-vCPU lease opened on a 16-vCPU node. Capacity is now held per lease.
    function test_RevertWhen_openLeaseAboveTheNodesCapacity() public {
        ILeaseEscrow.Resources[4] memory tooBig = [
            _resources(1_000, 4, 10, 0),
            _resources(2, 257, 10, 0),
            _resources(2, 4, 4_001, 0),
            _resources(2, 4, 10, 3)
        ];
        for (uint256 i; i < tooBig.length; ++i) {
            vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.InsufficientCapacity.selector, nodeId));
            _openAs(tooBig[i], ILeaseEscrow.QualityTier.Dedicated, type(uint64).max, 1e6);
        }
    }

    /// @dev Active leases add up against the capacity; an ended lease gives its share back.
    function test_capacity_isHeldByActiveLeasesAndReleasedAtTheEnd() public {
        // The fixture's node has 64 vCPUs: 32 dedicated 2-vCPU leases fill it.
        uint256[] memory ids = new uint256[](32);
        for (uint256 i; i < 32; ++i) {
            ids[i] = _openLease(1e6);
        }
        (uint256 cpu, uint256 mem, uint256 disk,) = escrow.freeCapacity(nodeId);
        assertEq(cpu, 0);
        assertEq(mem, 256 - 32 * 4);
        assertEq(disk, 4000 - 32 * 50);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.InsufficientCapacity.selector, nodeId));
        _openAs(_resources(2, 4, 50, 0), ILeaseEscrow.QualityTier.Dedicated, type(uint64).max, 1e6);
        vm.prank(tenant);
        escrow.closeLease(ids[0]);
        vm.prank(arbiter);
        escrow.terminateLease(ids[1], uint64(block.timestamp));
        (cpu,,,) = escrow.freeCapacity(nodeId);
        assertEq(cpu, 2 * 2 * 60);
        _openLease(1e6);
    }

    /// @dev A vCPU holds 60 / overcommit shares: a Burstable (4:1) vCPU a quarter of a Dedicated one.
    function test_capacity_weighsVcpusByTheQualityTier() public {
        _openAs(_resources(256, 4, 10, 0), ILeaseEscrow.QualityTier.Burstable, type(uint64).max, 1e6);
        (uint256 cpu,,,) = escrow.freeCapacity(nodeId);
        assertEq(cpu, 0, "256 burstable vCPUs fill 64 cores");
    }

    /// @dev GPUs add up across leases, not only per lease.
    function test_RevertWhen_gpusOfActiveLeasesExceedTheNodes() public {
        _openAs(_resources(2, 4, 10, 2), ILeaseEscrow.QualityTier.Dedicated, type(uint64).max, 1e6);
        vm.expectRevert(abi.encodeWithSelector(ILeaseEscrow.InsufficientCapacity.selector, nodeId));
        _openAs(_resources(2, 4, 10, 1), ILeaseEscrow.QualityTier.Dedicated, type(uint64).max, 1e6);
    }
}
