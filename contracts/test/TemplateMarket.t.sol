// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {Test} from "./utils/Test.sol";
import {MockUSDC} from "../src/MockUSDC.sol";
import {TemplateMarket} from "../src/TemplateMarket.sol";
import {ITemplateMarket} from "../src/interfaces/ITemplateMarket.sol";

contract TemplateMarketTest is Test {
    MockUSDC internal usdc;
    TemplateMarket internal market;
    address internal governance = makeAddr("governance");
    address internal treasury = makeAddr("treasury");
    address internal author = makeAddr("author");
    address internal buyer = makeAddr("buyer");
    address internal payer = makeAddr("payer");
    address internal stranger = makeAddr("stranger");

    function setUp() public {
        vm.warp(1_700_000_000);
        usdc = new MockUSDC();
        market = new TemplateMarket(IERC20(address(usdc)), treasury, governance);
        // `payer` buys for `buyer` the way LeaseEscrow buys for a tenant: trusted by governance to do so.
        bytes32 purchaserRole = market.PURCHASER_ROLE();
        vm.prank(governance);
        market.grantRole(purchaserRole, payer);
        usdc.mint(payer, 1_000_000e6);
        vm.prank(payer);
        usdc.approve(address(market), type(uint256).max);
    }

    function _publish(uint256 price) internal returns (uint256 templateId) {
        vm.prank(author);
        templateId = market.publish("bafy-template", price, "{\"name\":\"ubuntu\"}");
    }

    function _buy(uint256 templateId) internal returns (uint256 purchaseId) {
        vm.prank(payer);
        purchaseId = market.purchase(templateId, buyer, type(uint256).max);
    }

    // ------------------------------------------------------------------ constructor

    function test_constructor_setsDefaults() public view {
        assertEq(address(market.usdc()), address(usdc));
        assertEq(market.treasury(), treasury);
        assertEq(market.platformShareBps(), 1500);
        assertTrue(market.hasRole(bytes32(0), governance));
        assertEq(market.templateCount(), 0);
    }

    function test_constructor_emitsTreasuryAndShare() public {
        vm.expectEmit();
        emit ITemplateMarket.TreasurySet(treasury);
        vm.expectEmit();
        emit ITemplateMarket.PlatformShareSet(1500);
        new TemplateMarket(IERC20(address(usdc)), treasury, governance);
    }

    function test_RevertWhen_constructedWithZeroAddress() public {
        vm.expectRevert(ITemplateMarket.ZeroAddress.selector);
        new TemplateMarket(IERC20(address(0)), treasury, governance);
        vm.expectRevert(ITemplateMarket.ZeroAddress.selector);
        new TemplateMarket(IERC20(address(usdc)), address(0), governance);
        vm.expectRevert(ITemplateMarket.ZeroAddress.selector);
        new TemplateMarket(IERC20(address(usdc)), treasury, address(0));
    }

    // ------------------------------------------------------------------ publish / update / deprecate

    function test_publish_storesTheTemplateAndEmits() public {
        vm.expectEmit(address(market));
        emit ITemplateMarket.TemplatePublished(1, author, "bafy-template", 5e6, "meta");
        vm.prank(author);
        uint256 templateId = market.publish("bafy-template", 5e6, "meta");

        assertEq(templateId, 1);
        assertEq(market.templateCount(), 1);
        ITemplateMarket.Template memory t = market.getTemplate(1);
        assertEq(t.author, author);
        assertEq(t.price, 5e6);
        assertFalse(t.deprecated);
        assertEq(t.publishedAt, block.timestamp);
        assertEq(t.updatedAt, block.timestamp);
        assertEq(t.purchaseCount, 0);
        assertEq(t.cid, "bafy-template");
        assertEq(t.metadata, "meta");
        assertEq(_publish(0), 2);
    }

    function test_RevertWhen_publishWithEmptyCid() public {
        vm.prank(author);
        vm.expectRevert(ITemplateMarket.EmptyCid.selector);
        market.publish("", 1, "meta");
    }

    function test_update_changesTheTemplateAndEmits() public {
        uint256 templateId = _publish(5e6);
        skip(60);
        vm.expectEmit(address(market));
        emit ITemplateMarket.TemplateUpdated(templateId, "bafy-v2", 7e6, "meta-v2");
        vm.prank(author);
        market.update(templateId, "bafy-v2", 7e6, "meta-v2");
        ITemplateMarket.Template memory t = market.getTemplate(templateId);
        assertEq(t.cid, "bafy-v2");
        assertEq(t.price, 7e6);
        assertEq(t.metadata, "meta-v2");
        assertEq(t.updatedAt, block.timestamp);
        assertEq(t.publishedAt, block.timestamp - 60);
    }

    function test_RevertWhen_updateUnknownTemplate() public {
        vm.prank(author);
        vm.expectRevert(abi.encodeWithSelector(ITemplateMarket.TemplateNotFound.selector, 9));
        market.update(9, "c", 1, "m");
    }

    function test_RevertWhen_updateByStranger() public {
        uint256 templateId = _publish(5e6);
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(ITemplateMarket.NotTemplateAuthor.selector, templateId, stranger)
        );
        market.update(templateId, "c", 1, "m");
    }

    function test_RevertWhen_updateDeprecated() public {
        uint256 templateId = _publish(5e6);
        vm.startPrank(author);
        market.deprecate(templateId);
        vm.expectRevert(abi.encodeWithSelector(ITemplateMarket.TemplateIsDeprecated.selector, templateId));
        market.update(templateId, "c", 1, "m");
        vm.stopPrank();
    }

    function test_RevertWhen_updateWithEmptyCid() public {
        uint256 templateId = _publish(5e6);
        vm.prank(author);
        vm.expectRevert(ITemplateMarket.EmptyCid.selector);
        market.update(templateId, "", 1, "m");
    }

    function test_deprecate_marksTheTemplateAndEmits() public {
        uint256 templateId = _publish(5e6);
        vm.expectEmit(address(market));
        emit ITemplateMarket.TemplateDeprecated(templateId);
        vm.prank(author);
        market.deprecate(templateId);
        assertTrue(market.getTemplate(templateId).deprecated);
    }

    function test_RevertWhen_deprecateTwice() public {
        uint256 templateId = _publish(5e6);
        vm.startPrank(author);
        market.deprecate(templateId);
        vm.expectRevert(abi.encodeWithSelector(ITemplateMarket.TemplateIsDeprecated.selector, templateId));
        market.deprecate(templateId);
        vm.stopPrank();
    }

    function test_RevertWhen_deprecateByStranger() public {
        uint256 templateId = _publish(5e6);
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(ITemplateMarket.NotTemplateAuthor.selector, templateId, stranger)
        );
        market.deprecate(templateId);
    }

    function test_RevertWhen_deprecateUnknownTemplate() public {
        vm.prank(author);
        vm.expectRevert(abi.encodeWithSelector(ITemplateMarket.TemplateNotFound.selector, 0));
        market.deprecate(0);
    }

    // ------------------------------------------------------------------ purchase

    function test_purchase_splitsThePriceAndRecordsTheBuyer() public {
        uint256 templateId = _publish(10e6);
        vm.expectEmit(address(market));
        emit ITemplateMarket.TemplatePurchased(templateId, buyer, payer, 1, 10e6, 8.5e6, 1.5e6);
        uint256 purchaseId = _buy(templateId);

        assertEq(purchaseId, 1);
        assertEq(market.purchaseCount(), 1);
        assertEq(market.earningsOf(author), 8.5e6);
        assertEq(market.platformEarnings(), 1.5e6);
        assertEq(market.purchasesOf(templateId, buyer), 1);
        assertEq(market.purchasesOf(templateId, payer), 0);
        assertEq(market.getTemplate(templateId).purchaseCount, 1);
        assertEq(usdc.balanceOf(address(market)), 10e6);
        assertEq(usdc.balanceOf(payer), 1_000_000e6 - 10e6);

        assertEq(_buy(templateId), 2);
        assertEq(market.purchasesOf(templateId, buyer), 2);
    }

    function test_purchase_freeTemplateIsRecordedWithoutPayment() public {
        uint256 templateId = _publish(0);
        vm.expectEmit(address(market));
        emit ITemplateMarket.TemplatePurchased(templateId, stranger, stranger, 1, 0, 0, 0);
        // The stranger holds no USDC and approved nothing: a free deploy needs neither.
        vm.prank(stranger);
        market.purchase(templateId, stranger, 0);
        assertEq(market.purchasesOf(templateId, stranger), 1);
        assertEq(usdc.balanceOf(address(market)), 0);
    }

    function test_purchase_roundsThePlatformShareDown() public {
        uint256 templateId = _publish(7);
        _buy(templateId);
        // 7 * 1500 / 10000 = 1.05 -> the platform gets 1, the author 6.
        assertEq(market.platformEarnings(), 1);
        assertEq(market.earningsOf(author), 6);
    }

    function test_RevertWhen_purchaseUnknownTemplate() public {
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(ITemplateMarket.TemplateNotFound.selector, 3));
        market.purchase(3, buyer, 1e6);
    }

    function test_RevertWhen_purchaseDeprecated() public {
        uint256 templateId = _publish(1e6);
        vm.prank(author);
        market.deprecate(templateId);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(ITemplateMarket.TemplateIsDeprecated.selector, templateId));
        market.purchase(templateId, buyer, 1e6);
    }

    function test_RevertWhen_purchasePriceAboveMax() public {
        uint256 templateId = _publish(2e6);
        vm.prank(payer);
        vm.expectRevert(abi.encodeWithSelector(ITemplateMarket.PriceAboveMax.selector, 2e6, 2e6 - 1));
        market.purchase(templateId, buyer, 2e6 - 1);
    }

    function test_RevertWhen_purchaseForZeroBuyer() public {
        uint256 templateId = _publish(2e6);
        vm.prank(payer);
        vm.expectRevert(ITemplateMarket.ZeroAddress.selector);
        market.purchase(templateId, address(0), 2e6);
    }

    function test_RevertWhen_purchaseWithoutAllowance() public {
        uint256 templateId = _publish(2e6);
        usdc.mint(stranger, 2e6);
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(market), 0, 2e6)
        );
        market.purchase(templateId, stranger, 2e6);
    }

    /// @dev Anyone could inflate `purchasesOf` for any address (which reviews take as proof of use) by buying a
    ///      free template in its name; now only the buyer itself, or a purchaser governance trusts, can.
    function test_RevertWhen_purchaseForSomeoneElseWithoutPurchaserRole() public {
        uint256 templateId = _publish(0);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(ITemplateMarket.NotPurchaser.selector, stranger, buyer));
        market.purchase(templateId, buyer, 0);
        assertEq(market.purchasesOf(templateId, buyer), 0);
        assertEq(market.purchaseCount(), 0);
    }

    function test_purchase_forItselfNeedsNoRole() public {
        uint256 templateId = _publish(0);
        vm.prank(stranger);
        market.purchase(templateId, stranger, 0);
        assertEq(market.purchasesOf(templateId, stranger), 1);
    }

    // ------------------------------------------------------------------ withdrawals

    function test_withdrawEarnings_paysTheAuthorAnywhere() public {
        uint256 templateId = _publish(10e6);
        _buy(templateId);
        address wallet = makeAddr("wallet");
        vm.expectEmit(address(market));
        emit ITemplateMarket.EarningsWithdrawn(author, wallet, 8.5e6);
        vm.prank(author);
        market.withdrawEarnings(wallet);
        assertEq(usdc.balanceOf(wallet), 8.5e6);
        assertEq(market.earningsOf(author), 0);
    }

    function test_RevertWhen_withdrawEarningsWithNothing() public {
        vm.prank(author);
        vm.expectRevert(ITemplateMarket.NothingToWithdraw.selector);
        market.withdrawEarnings(author);
    }

    function test_RevertWhen_withdrawEarningsToZero() public {
        uint256 templateId = _publish(10e6);
        _buy(templateId);
        vm.prank(author);
        vm.expectRevert(ITemplateMarket.ZeroAddress.selector);
        market.withdrawEarnings(address(0));
    }

    function test_withdrawPlatformEarnings_paysTheTreasuryForAnyCaller() public {
        uint256 templateId = _publish(10e6);
        _buy(templateId);
        vm.expectEmit(address(market));
        emit ITemplateMarket.PlatformEarningsWithdrawn(treasury, 1.5e6);
        vm.prank(stranger);
        market.withdrawPlatformEarnings();
        assertEq(usdc.balanceOf(treasury), 1.5e6);
        assertEq(market.platformEarnings(), 0);
    }

    function test_RevertWhen_withdrawPlatformEarningsWithNothing() public {
        vm.expectRevert(ITemplateMarket.NothingToWithdraw.selector);
        market.withdrawPlatformEarnings();
    }

    // ------------------------------------------------------------------ governance

    function test_setPlatformShareBps_appliesToLaterPurchases() public {
        uint256 templateId = _publish(10e6);
        _buy(templateId);
        vm.expectEmit(address(market));
        emit ITemplateMarket.PlatformShareSet(3000);
        vm.prank(governance);
        market.setPlatformShareBps(3000);
        _buy(templateId);
        assertEq(market.platformEarnings(), 1.5e6 + 3e6);
        assertEq(market.earningsOf(author), 8.5e6 + 7e6);
    }

    function test_RevertWhen_setPlatformShareAboveCap() public {
        vm.prank(governance);
        vm.expectRevert(abi.encodeWithSelector(ITemplateMarket.PlatformShareTooHigh.selector, 3001, 3000));
        market.setPlatformShareBps(3001);
    }

    function test_RevertWhen_setPlatformShareByStranger() public {
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, stranger, bytes32(0)
            )
        );
        market.setPlatformShareBps(1000);
    }

    function test_setTreasury_redirectsPlatformEarnings() public {
        address newTreasury = makeAddr("newTreasury");
        vm.expectEmit(address(market));
        emit ITemplateMarket.TreasurySet(newTreasury);
        vm.prank(governance);
        market.setTreasury(newTreasury);
        assertEq(market.treasury(), newTreasury);
        _buy(_publish(10e6));
        market.withdrawPlatformEarnings();
        assertEq(usdc.balanceOf(newTreasury), 1.5e6);
    }

    function test_RevertWhen_setTreasuryToZero() public {
        vm.prank(governance);
        vm.expectRevert(ITemplateMarket.ZeroAddress.selector);
        market.setTreasury(address(0));
    }

    function test_RevertWhen_setTreasuryByStranger() public {
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, stranger, bytes32(0)
            )
        );
        market.setTreasury(stranger);
    }

    function test_RevertWhen_getTemplateUnknown() public {
        vm.expectRevert(abi.encodeWithSelector(ITemplateMarket.TemplateNotFound.selector, 1));
        market.getTemplate(1);
    }

    // ------------------------------------------------------------------ fuzz

    function testFuzz_split_isExact(uint256 price, uint16 bps) public {
        bps = uint16(bound(bps, 0, 3000));
        vm.prank(governance);
        market.setPlatformShareBps(bps);
        (uint256 authorShare, uint256 platformShare) = market.splitPrice(price);
        assertEq(authorShare + platformShare, price);
        // Rounding goes against the platform: its share is the exact fraction rounded down.
        assertEq(platformShare, mulDivDown(price, bps));
    }

    function testFuzz_purchase_creditsExactlyWhatWasPaid(uint128 price, uint16 bps, uint8 count) public {
        bps = uint16(bound(bps, 0, 3000));
        count = uint8(bound(count, 1, 8));
        vm.prank(governance);
        market.setPlatformShareBps(bps);
        uint256 templateId = _publish(price);
        usdc.mint(payer, uint256(price) * count);
        for (uint256 i; i < count; ++i) {
            _buy(templateId);
        }
        uint256 paid = uint256(price) * count;
        assertEq(market.earningsOf(author) + market.platformEarnings(), paid);
        assertEq(usdc.balanceOf(address(market)), paid);
        assertEq(market.purchasesOf(templateId, buyer), count);
    }

    /// @dev floor(price * bps / 10000) without overflow, computed independently of the contract's mulDiv.
    function mulDivDown(uint256 price, uint256 bps) internal pure returns (uint256) {
        // forge-lint: disable-next-line(divide-before-multiply)
        return (price / 10_000) * bps + ((price % 10_000) * bps) / 10_000;
    }
}
