// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Test} from "./Test.sol";
import {MockUSDC} from "../../src/MockUSDC.sol";
import {NodeRegistry} from "../../src/NodeRegistry.sol";
import {TemplateMarket} from "../../src/TemplateMarket.sol";
import {LeaseEscrow} from "../../src/LeaseEscrow.sol";
import {INodeRegistry} from "../../src/interfaces/INodeRegistry.sol";
import {ILeaseEscrow} from "../../src/interfaces/ILeaseEscrow.sol";

/// @title MarketplaceFixture
/// @notice Deploys the whole paid path (MockUSDC, NodeRegistry, TemplateMarket, LeaseEscrow) the way the SDK
///         does, with one registered node, and offers functions to fund tenants and open leases.
abstract contract MarketplaceFixture is Test {
    MockUSDC internal usdc;
    NodeRegistry internal registry;
    TemplateMarket internal market;
    LeaseEscrow internal escrow;

    address internal governance = makeAddr("governance");
    address internal treasury = makeAddr("treasury");
    address internal arbiter = makeAddr("arbiter");
    address internal pauser = makeAddr("pauser");
    address internal operator = makeAddr("operator");
    address internal tenant = makeAddr("tenant");
    address internal author = makeAddr("author");
    address internal stranger = makeAddr("stranger");

    bytes32 internal nodeId;

    uint256 internal constant START = 1_700_000_000;

    function _deployMarketplace() internal {
        vm.warp(START);
        usdc = new MockUSDC();
        registry = new NodeRegistry(governance);
        market = new TemplateMarket(IERC20(address(usdc)), treasury, governance);
        escrow = new LeaseEscrow(IERC20(address(usdc)), registry, market, treasury, governance);
        vm.startPrank(governance);
        escrow.grantRole(escrow.ARBITER_ROLE(), arbiter);
        escrow.grantRole(escrow.PAUSER_ROLE(), pauser);
        market.grantRole(market.PURCHASER_ROLE(), address(escrow));
        vm.stopPrank();
        nodeId = _registerNode(operator, keccak256("machine-1"), _prices(0, 0, 0, 0));
    }

    function _prices(uint64 cpu, uint64 mem, uint64 disk, uint64 gpu)
        internal
        pure
        returns (INodeRegistry.Prices memory)
    {
        return INodeRegistry.Prices(cpu, mem, disk, gpu);
    }

    function _capabilities() internal pure returns (INodeRegistry.Capabilities memory) {
        return INodeRegistry.Capabilities({
            vcpus: 64,
            memoryGiB: 256,
            diskGiB: 4000,
            gpus: 2,
            bandwidthMbps: 1000,
            architecture: INodeRegistry.Architecture.X86_64,
            flags: 1
        });
    }

    function _registerNode(address nodeOperator, bytes32 machineId, INodeRegistry.Prices memory prices)
        internal
        returns (bytes32 id)
    {
        vm.prank(nodeOperator);
        id = registry.register(
            machineId, nodeOperator, "eu-west", _capabilities(), "wss://node", "bafy-meta", prices
        );
    }

    function _resources(uint32 vcpus, uint32 memoryGiB, uint32 storageGiB, uint16 gpus)
        internal
        pure
        returns (ILeaseEscrow.Resources memory)
    {
        return ILeaseEscrow.Resources(vcpus, memoryGiB, storageGiB, gpus);
    }

    /// @dev Mints `amount` to `account` and deposits it into the escrow.
    function _fund(address account, uint256 amount) internal {
        usdc.mint(account, amount);
        vm.startPrank(account);
        usdc.approve(address(escrow), amount);
        escrow.deposit(amount);
        vm.stopPrank();
    }

    /// @dev Opens a 2 vCPU / 4 GiB / 50 GiB lease, Dedicated + Basic, no template, funded from `tenant`.
    function _openLease(uint256 funding) internal returns (uint256 leaseId) {
        vm.prank(tenant);
        leaseId = escrow.openLease(
            nodeId,
            _resources(2, 4, 50, 0),
            ILeaseEscrow.QualityTier.Dedicated,
            ILeaseEscrow.BandwidthTier.Basic,
            0,
            0,
            type(uint64).max,
            funding
        );
    }
}
