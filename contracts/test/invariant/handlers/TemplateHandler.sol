// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {TestBase} from "../../utils/Test.sol";
import {MockUSDC} from "../../../src/MockUSDC.sol";
import {TemplateMarket} from "../../../src/TemplateMarket.sol";

/// @notice Drives TemplateMarket with publications, price changes, purchases at any price, share changes and
///         withdrawals, checking each purchase's split on the spot and keeping ghost totals.
contract TemplateHandler is TestBase {
    MockUSDC internal immutable usdc;
    TemplateMarket internal immutable market;
    address internal immutable governance;

    address[] public authors;
    address[] public buyers;
    uint256[] public templateIds;

    uint256 public ghostPaid;
    uint256 public ghostAuthorWithdrawn;
    uint256 public ghostPlatformWithdrawn;
    uint256 public ghostPurchases;

    constructor(MockUSDC usdc_, TemplateMarket market_, address governance_) {
        usdc = usdc_;
        market = market_;
        governance = governance_;
        for (uint256 i; i < 3; ++i) {
            authors.push(vm.addr(uint256(keccak256(abi.encode("author", i)))));
            buyers.push(vm.addr(uint256(keccak256(abi.encode("buyer", i)))));
        }
    }

    function publish(uint256 authorSeed, uint256 price) external {
        vm.prank(authors[authorSeed % authors.length]);
        templateIds.push(market.publish("bafy", _price(price), "meta"));
    }

    function setPrice(uint256 templateSeed, uint256 price) external {
        if (templateIds.length == 0) return;
        uint256 templateId = templateIds[templateSeed % templateIds.length];
        vm.prank(market.getTemplate(templateId).author);
        market.update(templateId, "bafy", _price(price), "meta");
    }

    function purchase(uint256 templateSeed, uint256 buyerSeed) external {
        if (templateIds.length == 0) return;
        uint256 templateId = templateIds[templateSeed % templateIds.length];
        address buyer = buyers[buyerSeed % buyers.length];
        address author = market.getTemplate(templateId).author;
        uint256 price = market.getTemplate(templateId).price;
        usdc.mint(buyer, price);
        vm.prank(buyer);
        usdc.approve(address(market), price);

        uint256 authorBefore = market.earningsOf(author);
        uint256 platformBefore = market.platformEarnings();
        uint256 boughtBefore = market.purchasesOf(templateId, buyer);
        vm.prank(buyer);
        market.purchase(templateId, buyer, price);

        uint256 authorShare = market.earningsOf(author) - authorBefore;
        uint256 platformShare = market.platformEarnings() - platformBefore;
        assertEq(authorShare + platformShare, price, "split drifted");
        assertEq(platformShare, price * market.platformShareBps() / 10_000, "platform share not rounded down");
        assertEq(market.purchasesOf(templateId, buyer), boughtBefore + 1, "purchase not recorded");
        ghostPaid += price;
        ++ghostPurchases;
    }

    function withdrawEarnings(uint256 authorSeed) external {
        address author = authors[authorSeed % authors.length];
        uint256 amount = market.earningsOf(author);
        if (amount == 0) return;
        vm.prank(author);
        market.withdrawEarnings(author);
        ghostAuthorWithdrawn += amount;
    }

    function withdrawPlatformEarnings() external {
        uint256 amount = market.platformEarnings();
        if (amount == 0) return;
        market.withdrawPlatformEarnings();
        ghostPlatformWithdrawn += amount;
    }

    function setPlatformShare(uint16 bps) external {
        vm.prank(governance);
        market.setPlatformShareBps(uint16(bound(bps, 0, 3000)));
    }

    function authorCount() external view returns (uint256) {
        return authors.length;
    }

    /// @dev Prices from 0 to a million USDC, with small odd prices well represented for rounding.
    function _price(uint256 seed) internal pure returns (uint256) {
        return seed % 2 == 0 ? bound(seed, 0, 100) : bound(seed, 0, 1e12);
    }
}
