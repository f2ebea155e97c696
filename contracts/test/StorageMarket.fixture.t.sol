// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Groth16Verifier} from "../src/Groth16Verifier.sol";
import {IStorageMarket} from "../src/interfaces/IStorageMarket.sol";
import {StorageMarketBase} from "./StorageMarket.t.sol";

/// @notice The generated Groth16 verifier and the market against real proofs made by the Rust prover.
/// @dev The fixture is written by the prover; regenerate it (after a circuit or key change) from the repository
///      root with `cargo run --release -p decloud-prover -- fixture`. It holds a valid proof for deal 1, replica 0,
///      epoch 0 and the negative cases: a tampered proof, a wrong root, a wrong seed, the next epoch's seed and a
///      proof by a prover missing one challenged segment.
contract StorageMarketFixtureTest is StorageMarketBase {
    Groth16Verifier internal groth;
    string internal json;
    uint256 internal root;
    uint256 internal segments;
    uint256 internal seed;

    function setUp() public {
        groth = new Groth16Verifier();
        _deploy(groth);
        json = vmStorage.readFile("test/fixtures/storage_proof.json");
        root = vmStorage.parseJsonUint(json, ".root");
        segments = vmStorage.parseJsonUint(json, ".segmentCount");
        seed = vmStorage.parseJsonUint(json, ".seed");
    }

    function _proof(string memory key) internal view returns (uint256[8] memory p) {
        uint256[] memory words = vmStorage.parseJsonUintArray(json, key);
        assertEq(words.length, 8);
        for (uint256 i; i < 8; ++i) {
            p[i] = words[i];
        }
    }

    function _verify(uint256[8] memory p, uint256 root_, uint256 segments_, uint256 seed_)
        internal
        view
        returns (bool)
    {
        return groth.verifyProof(p, [root_, segments_, seed_]);
    }

    /// @dev Creates deal 1 on the fixture's root and makes epoch `epoch`'s start block hash the fixture's
    ///      randomness, so the market derives the fixture's seed for epoch 0.
    function _fixtureDeal(uint256 dealRoot, uint32 epoch) internal returns (uint256 dealId) {
        bytes32[] memory nodes = new bytes32[](1);
        nodes[0] = nodeA;
        uint256[] memory roots = new uint256[](1);
        roots[0] = dealRoot;
        usdc.mint(owner, 4e6);
        vm.startPrank(owner);
        usdc.approve(address(market), 4e6);
        dealId = market.createDeal(nodes, roots, uint64(segments), 1e6, 4);
        vm.stopPrank();
        assertEq(dealId, vmStorage.parseJsonUint(json, ".dealId"));
        uint256 start = market.epochStartBlock(dealId, epoch);
        vm.roll(start + 1);
        vmStorage.setBlockhash(start, vmStorage.parseJsonBytes32(json, ".randomness"));
    }

    function test_verifyProof_acceptsRustProof() public view {
        assertTrue(_verify(_proof(".proof"), root, segments, seed));
    }

    function test_verifyProof_costsUnder250kGas() public view {
        uint256[8] memory p = _proof(".proof");
        uint256 before = gasleft();
        bool ok = _verify(p, root, segments, seed);
        uint256 used = before - gasleft();
        assertTrue(ok);
        assertLt(used, 250_000);
    }

    /// @dev Gas a rejected proof costs when the caller offers 10M gas.
    function _gasOfRejection(uint256[8] memory p) internal view returns (uint256 used) {
        uint256 before = gasleft();
        bool ok = groth.verifyProof{gas: 10_000_000}(p, [root, segments, seed]);
        used = before - gasleft();
        assertFalse(ok);
    }

    /// @dev The measured defect: a point off the curve made a precompile burn ~97% of the gas limit. Now an
    ///      off-curve A or C is rejected before any precompile, and a precompile's refusal (B off the twist)
    ///      costs at most the gas it is given.
    function test_verifyProof_rejectsOffCurvePointsCheaply() public view {
        uint256[8] memory p = _proof(".proof");
        p[1] ^= 1; // A off the curve
        assertLt(_gasOfRejection(p), 50_000); // rejected before any precompile
        p = _proof(".proof");
        p[7] ^= 1; // C off the curve
        assertLt(_gasOfRejection(p), 50_000);
        p = _proof(".proof");
        p[2] ^= 1; // B off the twist: only the pairing precompile can tell
        assertLt(_gasOfRejection(p), 250_000); // the pairing burns its price at most
    }

    function test_verifyProof_rejectsTamperedProof() public view {
        assertFalse(_verify(_proof(".tamperedProof"), root, segments, seed));
        uint256[8] memory p = _proof(".proof");
        p[0] ^= 1; // A moved off the curve: the precompile refuses it.
        assertFalse(_verify(p, root, segments, seed));
        p = _proof(".proof");
        p[3] = p[3] + 1; // B changed.
        assertFalse(_verify(p, root, segments, seed));
    }

    function test_verifyProof_rejectsWrongRootSeedOrCount() public view {
        uint256[8] memory p = _proof(".proof");
        assertFalse(_verify(p, vmStorage.parseJsonUint(json, ".wrongRoot"), segments, seed));
        assertFalse(_verify(p, root, segments, vmStorage.parseJsonUint(json, ".wrongSeed")));
        assertFalse(_verify(p, root, segments, vmStorage.parseJsonUint(json, ".nextEpochSeed")));
        assertFalse(_verify(p, root, segments + 1, seed));
    }

    function test_verifyProof_rejectsProverMissingASegment() public view {
        assertFalse(_verify(_proof(".missingSegmentProof"), root, segments, seed));
    }

    function test_verifyProof_rejectsNonCanonicalValues() public view {
        uint256[8] memory p = _proof(".proof");
        assertFalse(_verify(p, root + R, segments, seed));
        assertFalse(_verify(p, root, segments, seed + R));
        uint256 q = 0x30644e72e131a029b85045b68181585d97816a916871ca8d3c208c16d87cfd47;
        p[6] = q;
        assertFalse(_verify(p, root, segments, seed));
    }

    function test_submitProof_paysForRustProof() public {
        uint256 dealId = _fixtureDeal(root, 0);
        assertEq(market.epochSeed(dealId, 0, 0), seed);
        market.submitProof(dealId, 0, 0, _proof(".proof"));
        assertTrue(market.isProven(dealId, 0, 0));
        assertEq(market.earningsOf(operatorA), 1e6 - 1e6 * uint256(FEE_BPS) / 10_000);
    }

    function test_RevertWhen_rustProofIsReplayedForNextEpoch() public {
        uint256 dealId = _fixtureDeal(root, 1);
        assertEq(market.epochSeed(dealId, 0, 1), vmStorage.parseJsonUint(json, ".nextEpochSeed"));
        uint256[8] memory p = _proof(".proof");
        vm.expectRevert(IStorageMarket.InvalidProof.selector);
        market.submitProof(dealId, 0, 1, p);
    }

    function test_RevertWhen_rustProofIsForAnotherRoot() public {
        uint256 dealId = _fixtureDeal(vmStorage.parseJsonUint(json, ".wrongRoot"), 0);
        uint256[8] memory p = _proof(".proof");
        vm.expectRevert(IStorageMarket.InvalidProof.selector);
        market.submitProof(dealId, 0, 0, p);
    }

    function test_RevertWhen_proofIsTamperedOrMissesASegment() public {
        uint256 dealId = _fixtureDeal(root, 0);
        uint256[8] memory tampered = _proof(".tamperedProof");
        vm.expectRevert(IStorageMarket.InvalidProof.selector);
        market.submitProof(dealId, 0, 0, tampered);
        uint256[8] memory missing = _proof(".missingSegmentProof");
        vm.expectRevert(IStorageMarket.InvalidProof.selector);
        market.submitProof(dealId, 0, 0, missing);
        assertEq(market.earningsOf(operatorA), 0);
    }

    function test_RevertWhen_randomnessDiffers() public {
        uint256 dealId = _fixtureDeal(root, 0);
        vmStorage.setBlockhash(START_BLOCK, keccak256("another block"));
        uint256[8] memory p = _proof(".proof");
        vm.expectRevert(IStorageMarket.InvalidProof.selector);
        market.submitProof(dealId, 0, 0, p);
    }
}
