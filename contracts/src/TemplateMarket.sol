// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {ITemplateMarket} from "./interfaces/ITemplateMarket.sol";

/// @title TemplateMarket
/// @notice VM templates sold per deploy. Every purchase is split exactly between author and platform and
///         credited to them; authors and the treasury withdraw (pull), so no recipient can block a purchase.
/// @dev Solvency: the contract's USDC balance is at least the sum of all author earnings plus the platform's
///      earnings at all times; purchases add exactly `price` to both sides.
contract TemplateMarket is ITemplateMarket, AccessControl, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice Default platform share of each purchase, basis points (15%).
    uint16 public constant DEFAULT_PLATFORM_SHARE_BPS = 1500;
    /// @notice May buy a template for another buyer (the LeaseEscrow, for the tenant opening a lease).
    bytes32 public constant PURCHASER_ROLE = keccak256("PURCHASER_ROLE");
    /// @notice Highest platform share governance may set, basis points (30%).
    uint16 public constant MAX_PLATFORM_SHARE_BPS = 3000;
    uint256 private constant BPS = 10_000;

    /// @notice The payment token (USDC).
    IERC20 public immutable usdc;

    /// @inheritdoc ITemplateMarket
    uint16 public platformShareBps;
    /// @inheritdoc ITemplateMarket
    address public treasury;
    /// @inheritdoc ITemplateMarket
    uint256 public platformEarnings;
    /// @inheritdoc ITemplateMarket
    uint256 public templateCount;
    /// @notice How many purchases were made (the last purchase id).
    uint256 public purchaseCount;

    mapping(uint256 templateId => Template) private _templates;
    mapping(address author => uint256) private _earnings;
    mapping(uint256 templateId => mapping(address buyer => uint256)) private _purchases;

    /// @param usdc_ The payment token.
    /// @param treasury_ Receives the platform's earnings.
    /// @param admin Governance: receives DEFAULT_ADMIN_ROLE.
    constructor(IERC20 usdc_, address treasury_, address admin) {
        if (address(usdc_) == address(0) || treasury_ == address(0) || admin == address(0)) {
            revert ZeroAddress();
        }
        usdc = usdc_;
        treasury = treasury_;
        platformShareBps = DEFAULT_PLATFORM_SHARE_BPS;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        emit TreasurySet(treasury_);
        emit PlatformShareSet(DEFAULT_PLATFORM_SHARE_BPS);
    }

    // ------------------------------------------------------------------ authors

    /// @inheritdoc ITemplateMarket
    function publish(string calldata cid, uint256 price, string calldata metadata)
        external
        returns (uint256 templateId)
    {
        if (bytes(cid).length == 0) revert EmptyCid();
        templateId = ++templateCount;
        Template storage template = _templates[templateId];
        template.author = msg.sender;
        template.price = price;
        template.publishedAt = uint64(block.timestamp);
        template.updatedAt = uint64(block.timestamp);
        template.cid = cid;
        template.metadata = metadata;
        emit TemplatePublished(templateId, msg.sender, cid, price, metadata);
    }

    /// @inheritdoc ITemplateMarket
    function update(uint256 templateId, string calldata cid, uint256 price, string calldata metadata)
        external
    {
        Template storage template = _authoredTemplate(templateId);
        if (bytes(cid).length == 0) revert EmptyCid();
        template.cid = cid;
        template.price = price;
        template.metadata = metadata;
        template.updatedAt = uint64(block.timestamp);
        emit TemplateUpdated(templateId, cid, price, metadata);
    }

    /// @inheritdoc ITemplateMarket
    function deprecate(uint256 templateId) external {
        Template storage template = _authoredTemplate(templateId);
        template.deprecated = true;
        template.updatedAt = uint64(block.timestamp);
        emit TemplateDeprecated(templateId);
    }

    /// @inheritdoc ITemplateMarket
    /// @dev A free template is "purchased" too: the deploy is recorded and nothing is transferred.
    function purchase(uint256 templateId, address buyer, uint256 maxPrice)
        external
        nonReentrant
        returns (uint256 purchaseId)
    {
        if (buyer == address(0)) revert ZeroAddress();
        if (buyer != msg.sender && !hasRole(PURCHASER_ROLE, msg.sender)) {
            revert NotPurchaser(msg.sender, buyer);
        }
        Template storage template = _existingTemplate(templateId);
        if (template.deprecated) revert TemplateIsDeprecated(templateId);
        uint256 price = template.price;
        if (price > maxPrice) revert PriceAboveMax(price, maxPrice);

        (uint256 authorShare, uint256 platformShare) = splitPrice(price);
        purchaseId = ++purchaseCount;
        ++template.purchaseCount;
        ++_purchases[templateId][buyer];
        _earnings[template.author] += authorShare;
        platformEarnings += platformShare;
        emit TemplatePurchased(templateId, buyer, msg.sender, purchaseId, price, authorShare, platformShare);

        if (price != 0) usdc.safeTransferFrom(msg.sender, address(this), price);
    }

    /// @inheritdoc ITemplateMarket
    function withdrawEarnings(address to) external nonReentrant {
        if (to == address(0)) revert ZeroAddress();
        uint256 amount = _earnings[msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        _earnings[msg.sender] = 0;
        emit EarningsWithdrawn(msg.sender, to, amount);
        usdc.safeTransfer(to, amount);
    }

    /// @inheritdoc ITemplateMarket
    function withdrawPlatformEarnings() external nonReentrant {
        uint256 amount = platformEarnings;
        if (amount == 0) revert NothingToWithdraw();
        platformEarnings = 0;
        address to = treasury;
        emit PlatformEarningsWithdrawn(to, amount);
        usdc.safeTransfer(to, amount);
    }

    // ------------------------------------------------------------------ governance

    /// @inheritdoc ITemplateMarket
    /// @dev Applies to purchases from now on; credited earnings never change.
    function setPlatformShareBps(uint16 bps) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (bps > MAX_PLATFORM_SHARE_BPS) revert PlatformShareTooHigh(bps, MAX_PLATFORM_SHARE_BPS);
        platformShareBps = bps;
        emit PlatformShareSet(bps);
    }

    /// @inheritdoc ITemplateMarket
    function setTreasury(address treasury_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (treasury_ == address(0)) revert ZeroAddress();
        treasury = treasury_;
        emit TreasurySet(treasury_);
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc ITemplateMarket
    function getTemplate(uint256 templateId) external view returns (Template memory) {
        return _existingTemplate(templateId);
    }

    /// @inheritdoc ITemplateMarket
    /// @dev The platform's share rounds down (against the platform) and the author receives the exact
    ///      remainder, so the two always add up to `price`. Rounding the platform down is deliberate: the author
    ///      did the work being sold and is the smaller party; at most one micro-USDC per purchase moves their
    ///      way. mulDiv keeps the product exact for any uint256 price.
    function splitPrice(uint256 price) public view returns (uint256 authorShare, uint256 platformShare) {
        platformShare = Math.mulDiv(price, platformShareBps, BPS); // rounds down: against the platform
        authorShare = price - platformShare;
    }

    /// @inheritdoc ITemplateMarket
    function earningsOf(address author) external view returns (uint256) {
        return _earnings[author];
    }

    /// @inheritdoc ITemplateMarket
    function purchasesOf(uint256 templateId, address buyer) external view returns (uint256) {
        return _purchases[templateId][buyer];
    }

    // ------------------------------------------------------------------ internals

    function _existingTemplate(uint256 templateId) private view returns (Template storage template) {
        template = _templates[templateId];
        if (template.author == address(0)) revert TemplateNotFound(templateId);
    }

    /// @dev A known, not deprecated template the caller authored.
    function _authoredTemplate(uint256 templateId) private view returns (Template storage template) {
        template = _existingTemplate(templateId);
        if (template.author != msg.sender) revert NotTemplateAuthor(templateId, msg.sender);
        if (template.deprecated) revert TemplateIsDeprecated(templateId);
    }
}
