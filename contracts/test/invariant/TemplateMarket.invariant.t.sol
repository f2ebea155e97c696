// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Test} from "../utils/Test.sol";
import {MockUSDC} from "../../src/MockUSDC.sol";
import {TemplateMarket} from "../../src/TemplateMarket.sol";
import {TemplateHandler} from "./handlers/TemplateHandler.sol";

/// @notice Every unit paid for a template is credited to its author or the platform, exactly once.
contract TemplateMarketInvariantTest is Test {
    MockUSDC internal usdc;
    TemplateMarket internal market;
    TemplateHandler internal handler;
    address internal treasury = makeAddr("treasury");
    address internal governance = makeAddr("governance");

    function setUp() public {
        usdc = new MockUSDC();
        market = new TemplateMarket(IERC20(address(usdc)), treasury, governance);
        handler = new TemplateHandler(usdc, market, governance);
        targetContract(address(handler));
        bytes4[] memory selectors = new bytes4[](8);
        selectors[0] = handler.publish.selector;
        selectors[1] = handler.setPrice.selector;
        selectors[2] = handler.purchase.selector;
        selectors[3] = handler.purchase.selector;
        selectors[4] = handler.purchase.selector;
        selectors[5] = handler.withdrawEarnings.selector;
        selectors[6] = handler.withdrawPlatformEarnings.selector;
        selectors[7] = handler.setPlatformShare.selector;
        targetSelector(FuzzSelector(address(handler), selectors));
    }

    function invariant_splitIsExact() public view {
        uint256 earnings = market.platformEarnings();
        for (uint256 i; i < handler.authorCount(); ++i) {
            earnings += market.earningsOf(handler.authors(i));
        }
        assertEq(
            earnings + handler.ghostAuthorWithdrawn() + handler.ghostPlatformWithdrawn(),
            handler.ghostPaid(),
            "author + platform + withdrawn != paid"
        );
        assertEq(usdc.balanceOf(address(market)), earnings, "market balance != earnings owed");
        assertEq(
            usdc.balanceOf(treasury), handler.ghostPlatformWithdrawn(), "treasury != platform withdrawals"
        );
        assertEq(market.purchaseCount(), handler.ghostPurchases(), "purchase ids skipped");
    }
}
