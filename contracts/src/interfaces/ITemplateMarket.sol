// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title ITemplateMarket
/// @notice VM templates published by authors, sold per deploy. Each purchase splits the price exactly
///         between the author and the platform; both sides withdraw their earnings (pull).
interface ITemplateMarket {
    /// @notice A published template.
    /// @param author Who publishes and earns from it.
    /// @param price Price per deploy in micro-USDC; zero for a free template.
    /// @param deprecated A deprecated template can no longer be purchased.
    /// @param cid IPFS CID (CIDv1) of the template bundle.
    /// @param metadata Free-form metadata (e.g. a JSON document or its CID).
    struct Template {
        address author;
        uint256 price;
        bool deprecated;
        uint64 publishedAt;
        uint64 updatedAt;
        uint64 purchaseCount;
        string cid;
        string metadata;
    }

    /// @notice Emitted when an author publishes a template.
    event TemplatePublished(
        uint256 indexed templateId, address indexed author, string cid, uint256 price, string metadata
    );
    /// @notice Emitted when an author changes a template's bundle, price or metadata.
    event TemplateUpdated(uint256 indexed templateId, string cid, uint256 price, string metadata);
    /// @notice Emitted when an author deprecates a template.
    event TemplateDeprecated(uint256 indexed templateId);
    /// @notice Emitted on every purchase; `buyer` is the tenant who deploys, `payer` who paid.
    event TemplatePurchased(
        uint256 indexed templateId,
        address indexed buyer,
        address indexed payer,
        uint256 purchaseId,
        uint256 price,
        uint256 authorShare,
        uint256 platformShare
    );
    /// @notice Emitted when an author withdraws earnings.
    event EarningsWithdrawn(address indexed author, address indexed to, uint256 amount);
    /// @notice Emitted when the platform's earnings are sent to the treasury.
    event PlatformEarningsWithdrawn(address indexed treasury, uint256 amount);
    /// @notice Emitted when governance changes the platform share.
    event PlatformShareSet(uint16 platformShareBps);
    /// @notice Emitted when governance changes the treasury.
    event TreasurySet(address treasury);

    /// @notice Thrown when a template id is unknown.
    error TemplateNotFound(uint256 templateId);
    /// @notice Thrown when someone other than the author changes a template.
    error NotTemplateAuthor(uint256 templateId, address caller);
    /// @notice Thrown when the caller buys for someone else without PURCHASER_ROLE.
    error NotPurchaser(address caller, address buyer);
    /// @notice Thrown when a deprecated template is purchased or changed.
    error TemplateIsDeprecated(uint256 templateId);
    /// @notice Thrown when the CID is empty.
    error EmptyCid();
    /// @notice Thrown when the template's price is above what the buyer accepted.
    error PriceAboveMax(uint256 price, uint256 maxPrice);
    /// @notice Thrown when governance sets a platform share above the cap.
    error PlatformShareTooHigh(uint16 bps, uint16 max);
    /// @notice Thrown when there is nothing to withdraw.
    error NothingToWithdraw();
    /// @notice Thrown when an address argument is zero.
    error ZeroAddress();

    /// @notice Publishes a template for the caller.
    /// @return templateId The new template's id (starting at 1; 0 means "no template" elsewhere).
    function publish(string calldata cid, uint256 price, string calldata metadata)
        external
        returns (uint256 templateId);

    /// @notice Changes a template's bundle, price and metadata. Author only.
    function update(uint256 templateId, string calldata cid, uint256 price, string calldata metadata) external;

    /// @notice Deprecates a template for good. Author only.
    function deprecate(uint256 templateId) external;

    /// @notice Buys one deploy of a template for `buyer`, paid by the caller (who must have approved the
    ///         price). Reverts with `PriceAboveMax` when the price rose above `maxPrice`. The caller buys for
    ///         itself (`buyer == msg.sender`); only a purchaser that governance trusted with PURCHASER_ROLE (the
    ///         LeaseEscrow, which passes the tenant who opened the lease) buys for someone else, so
    ///         `purchasesOf` counts deploys the buyer really made.
    /// @return purchaseId The purchase's id (starting at 1).
    function purchase(uint256 templateId, address buyer, uint256 maxPrice)
        external
        returns (uint256 purchaseId);

    /// @notice Sends the caller's earnings to `to`.
    function withdrawEarnings(address to) external;

    /// @notice Sends the platform's earnings to the treasury. Anyone may call.
    function withdrawPlatformEarnings() external;

    /// @notice Sets the platform's share of each purchase in basis points (governance, capped at 3000).
    function setPlatformShareBps(uint16 bps) external;

    /// @notice Sets the treasury (governance).
    function setTreasury(address treasury) external;

    /// @notice A template. Reverts with `TemplateNotFound` for an unknown id.
    function getTemplate(uint256 templateId) external view returns (Template memory);

    /// @notice How many templates were published.
    function templateCount() external view returns (uint256);

    /// @notice How a price splits: `authorShare + platformShare == price` for every price.
    function splitPrice(uint256 price) external view returns (uint256 authorShare, uint256 platformShare);

    /// @notice An author's withdrawable earnings.
    function earningsOf(address author) external view returns (uint256);

    /// @notice The platform's earnings not yet sent to the treasury.
    function platformEarnings() external view returns (uint256);

    /// @notice How many times `buyer` deployed `templateId` (a review can prove its author deployed it).
    function purchasesOf(uint256 templateId, address buyer) external view returns (uint256);

    /// @notice The platform's share in basis points.
    function platformShareBps() external view returns (uint16);

    /// @notice Where platform earnings go.
    function treasury() external view returns (address);
}
