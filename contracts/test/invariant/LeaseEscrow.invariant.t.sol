// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {MarketplaceFixture} from "../utils/Fixtures.sol";
import {ILeaseEscrow} from "../../src/interfaces/ILeaseEscrow.sol";
import {EscrowHandler} from "./handlers/EscrowHandler.sol";

/// @notice The escrow always holds exactly what it owes, and no lease pays out more than it was funded,
///         whatever sequence of deposits, leases, top-ups, claims, closes, terminations, fee and price changes
///         and pauses happens.
contract LeaseEscrowInvariantTest is MarketplaceFixture {
    EscrowHandler internal handler;

    function setUp() public {
        _deployMarketplace();
        handler = new EscrowHandler(usdc, registry, market, escrow, governance, arbiter, pauser, author);
        targetContract(address(handler));
        bytes4[] memory selectors = new bytes4[](15);
        selectors[0] = handler.deposit.selector;
        selectors[1] = handler.withdraw.selector;
        selectors[2] = handler.openLease.selector;
        selectors[3] = handler.openLease.selector; // leases are the point: weight them up
        selectors[4] = handler.topUp.selector;
        selectors[5] = handler.claim.selector;
        selectors[6] = handler.closeLease.selector;
        selectors[7] = handler.terminateLease.selector;
        selectors[8] = handler.withdrawPlatformFees.selector;
        selectors[9] = handler.setPlatformFee.selector;
        selectors[10] = handler.setNodePrices.selector;
        selectors[11] = handler.toggleNode.selector;
        selectors[12] = handler.togglePause.selector;
        selectors[13] = handler.warp.selector;
        selectors[14] = handler.setTemplatePrice.selector;
        targetSelector(FuzzSelector(address(handler), selectors));
    }

    function _operatorShare(uint256 settled, uint256 feeBps) internal pure returns (uint256) {
        return settled * (10_000 - feeBps) / 10_000;
    }

    /// @dev usdc balance == Σ free + Σ active (funded − settled) + Σ (operator share − paid) + platform fees.
    function invariant_escrowHoldsExactlyWhatItOwes() public view {
        uint256 owed = escrow.platformFees();
        for (uint256 i; i < handler.tenantCount(); ++i) {
            owed += escrow.balanceOf(handler.tenants(i));
        }
        uint256 fees;
        for (uint256 leaseId = 1; leaseId <= escrow.leaseCount(); ++leaseId) {
            ILeaseEscrow.Lease memory lease = escrow.getLease(leaseId);
            if (lease.status == ILeaseEscrow.LeaseStatus.Active) owed += lease.funded - lease.settled;
            uint256 share = _operatorShare(lease.settled, lease.feeBps);
            owed += share - lease.operatorPaid;
            fees += lease.settled - share;
        }
        assertEq(usdc.balanceOf(address(escrow)), owed, "escrow balance != what it owes");
        assertEq(usdc.balanceOf(address(escrow)), handler.ghostBalance(), "escrow balance != ghost flows");
        assertEq(
            escrow.platformFees() + handler.ghostFeesWithdrawn(), fees, "fees != fee share of settlements"
        );
        assertEq(usdc.balanceOf(treasury), handler.ghostFeesWithdrawn(), "treasury != fees withdrawn");
    }

    function invariant_noLeasePaysMoreThanFunded() public view {
        for (uint256 leaseId = 1; leaseId <= escrow.leaseCount(); ++leaseId) {
            ILeaseEscrow.Lease memory lease = escrow.getLease(leaseId);
            assertLe(lease.settled, lease.funded, "settled > funded");
            assertLe(escrow.accruedOf(leaseId), lease.funded, "accrued > funded");
            assertEq(lease.operatorPaid, handler.ghostPaidForLease(leaseId), "operatorPaid != ghost");
            assertLe(lease.operatorPaid, _operatorShare(lease.settled, lease.feeBps), "operator overpaid");
            assertGe(lease.lastSettledAt, lease.accrualStart, "settled before segment start");
            if (lease.status != ILeaseEscrow.LeaseStatus.Active) {
                assertEq(lease.endedAt, lease.lastSettledAt, "ended lease not settled to its end");
            }
        }
    }

    /// @dev No lease pays a rate above the maximum its tenant signed, so it never accrues faster than that.
    function invariant_noLeaseAccruesAboveItsMaxRate() public view {
        for (uint256 leaseId = 1; leaseId <= escrow.leaseCount(); ++leaseId) {
            ILeaseEscrow.Lease memory lease = escrow.getLease(leaseId);
            assertLe(lease.ratePerHour, handler.ghostMaxRate(leaseId), "rate above the tenant's maximum");
            uint256 elapsed =
                (lease.status == ILeaseEscrow.LeaseStatus.Active ? block.timestamp : lease.endedAt)
                    - lease.openedAt;
            assertLe(
                escrow.accruedOf(leaseId),
                lease.funded < lease.ratePerHour * elapsed / 3600
                    ? lease.funded
                    : lease.ratePerHour * elapsed / 3600,
                "accrued more than the rate allows"
            );
        }
    }

    /// @dev Operator pay never decreases through an arbiter's termination: what was earned before the window
    ///      stays earned.
    function invariant_arbiterNeverErasesEarnedPay() public view {
        for (uint256 leaseId = 1; leaseId <= escrow.leaseCount(); ++leaseId) {
            ILeaseEscrow.Lease memory lease = escrow.getLease(leaseId);
            if (lease.status != ILeaseEscrow.LeaseStatus.Terminated) continue;
            assertGe(lease.settled, handler.ghostEarnedFloor(leaseId), "terminated below the earned floor");
        }
    }

    /// @dev Each node's free capacity is its capabilities minus exactly what its active leases hold.
    function invariant_capacityHeldIsWhatActiveLeasesHold() public view {
        uint256[4] memory sharesPerVcpu = [uint256(60), 40, 30, 15];
        for (uint256 n; n < handler.nodeCount(); ++n) {
            bytes32 node = handler.nodes(n);
            uint256[4] memory held;
            for (uint256 leaseId = 1; leaseId <= escrow.leaseCount(); ++leaseId) {
                ILeaseEscrow.Lease memory lease = escrow.getLease(leaseId);
                if (lease.nodeId != node || lease.status != ILeaseEscrow.LeaseStatus.Active) continue;
                held[0] += lease.resources.vcpus * sharesPerVcpu[uint8(lease.quality)];
                held[1] += lease.resources.memoryGiB;
                held[2] += lease.resources.storageGiB;
                held[3] += lease.resources.gpus;
            }
            (uint256 cpu, uint256 mem, uint256 disk, uint256 gpus) = escrow.freeCapacity(node);
            assertEq(cpu + held[0], 64 * 60, "cpu shares");
            assertEq(mem + held[1], 256, "memory");
            assertEq(disk + held[2], 4000, "disk");
            assertEq(gpus + held[3], 2, "gpus");
        }
    }

    /// @dev The handler is not vacuous: a fixed scenario reaches every action's effect.
    function test_handler_reachesEveryAction() public {
        handler.deposit(0, 5e6);
        handler.openLease(0, 0, 0x0002_0004_0001, 0, 0, 1, 1e6);
        handler.openLease(1, 1, 0x0064_0010_0005, 3, 2, 2, 2e6);
        // A stale quote (size seed divisible by 4) and a node too full: both refused, nothing moves.
        handler.openLease(2, 0, 0x0001_0001_0004, 0, 0, 0, 1e6);
        handler.openLease(2, 0, 0x0001_0001_003d, 0, 0, 0, 1e6);
        handler.openLease(2, 0, 0x0001_0001_003d, 0, 0, 0, 1e6);
        assertEq(handler.ghostRefusedAboveMax(), 1);
        assertEq(handler.ghostRefusedFull(), 1);
        handler.warp(1 hours);
        handler.topUp(1, 0, 1e6);
        handler.claim(0);
        handler.claim(1);
        handler.closeLease(0);
        handler.terminateLease(1, block.timestamp - 10 minutes);
        handler.withdrawPlatformFees();
        handler.withdraw(0, 1e6);
        handler.setPlatformFee(1000);
        handler.setNodePrices(0, 20_000, 0, 0, 0);
        handler.setTemplatePrice(0, 5e6);
        handler.toggleNode(0);
        handler.togglePause();
        bytes4[12] memory effective = [
            handler.deposit.selector,
            handler.openLease.selector,
            handler.warp.selector,
            handler.topUp.selector,
            handler.claim.selector,
            handler.closeLease.selector,
            handler.terminateLease.selector,
            handler.withdrawPlatformFees.selector,
            handler.withdraw.selector,
            handler.setNodePrices.selector,
            handler.toggleNode.selector,
            handler.togglePause.selector
        ];
        for (uint256 i; i < effective.length; ++i) {
            assertGe(handler.calls(effective[i]), 1);
        }
        assertGt(handler.ghostOperatorPaid(), 0);
        assertGt(handler.ghostFeesWithdrawn(), 0);
        assertGt(handler.ghostTemplatePaid(), 0);
        invariant_escrowHoldsExactlyWhatItOwes();
        invariant_noLeasePaysMoreThanFunded();
    }
}
