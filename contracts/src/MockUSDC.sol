// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @title MockUSDC
/// @notice Stand-in for USDC on local chains only (anvil, tests): same name, symbol, 6 decimals and EIP-2612
///         permit as Circle's token, but anyone can mint. Never deploy it to a public network; on Polygon and
///         Amoy the contracts use the real USDC.
contract MockUSDC is ERC20, ERC20Permit {
    constructor() ERC20("USD Coin", "USDC") ERC20Permit("USD Coin") {}

    /// @notice Mints `amount` (6 decimals) to `to`. Open to everyone: local chains need a faucet, not a supply.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @inheritdoc ERC20
    function decimals() public pure override returns (uint8) {
        return 6;
    }
}
