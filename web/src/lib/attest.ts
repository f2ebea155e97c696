import {
  type Address,
  concat,
  encodeAbiParameters,
  getAddress,
  type Hex,
  hashTypedData,
  keccak256,
  type PublicClient,
  recoverAddress,
  stringToBytes,
} from 'viem';
import { attestationAnchorAbi } from '../abi/generated';

export interface AttestationView {
  sequence: number;
  subject: string;
  kind: string;
  payload: string;
  payload_hash: Hex;
  previous: Hex;
  time: number;
  hash: Hex;
  signature: Hex;
}

export interface InclusionView {
  batch: number;
  first_sequence: number;
  count: number;
  root: Hex;
  proof: Hex[];
  tx_hash: Hex | null;
  block_number: number | null;
}

export interface EvidenceView {
  attestation: AttestationView;
  inclusion: InclusionView | null;
}

export interface SignerView {
  signer: Address;
  name: string;
  version: string;
  chain_id: number;
  verifying_contract: Address;
}

/** One check of an attestation and its outcome, in words. */
export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

const ZERO = `0x${'0'.repeat(64)}` as Hex;

/** The Merkle leaf of an attestation hash, as OpenZeppelin's StandardMerkleTree builds a bytes32 leaf. */
export function leafOf(hash: Hex): Hex {
  return keccak256(keccak256(encodeAbiParameters([{ type: 'bytes32' }], [hash])));
}

/** Folds a proof up to its root with sorted pairs (OpenZeppelin's MerkleProof.processProof). */
export function processProof(leaf: Hex, proof: Hex[]): Hex {
  return proof.reduce((node, sibling) => keccak256(BigInt(node) <= BigInt(sibling) ? concat([node, sibling]) : concat([sibling, node])), leaf);
}

/**
 * Every check a verifier makes, done here in the browser: the payload against its hash, the
 * EIP-712 hash and the signature against the orchestrator's published signer (and that signer's
 * domain against this network's anchor), the link to the attestation before it, the Merkle proof
 * to the batch root, and the root on AttestationAnchor read from the chain through this app's RPC.
 */
export async function verifyAttestation(
  client: PublicClient,
  anchor: Address,
  chainId: number,
  signer: SignerView,
  evidence: EvidenceView,
  previous: AttestationView | null,
): Promise<Check[]> {
  const a = evidence.attestation;
  const checks: Check[] = [];
  const domainOk = getAddress(signer.verifying_contract) === anchor && signer.chain_id === chainId;
  checks.push({
    name: 'Signer domain',
    ok: domainOk,
    detail: domainOk
      ? `The orchestrator signs for AttestationAnchor ${anchor} on chain ${chainId}.`
      : `The orchestrator signs for ${signer.verifying_contract} on chain ${signer.chain_id}, not this network's anchor ${anchor} on chain ${chainId}.`,
  });
  const payloadHash = keccak256(stringToBytes(a.payload));
  checks.push({
    name: 'Payload',
    ok: payloadHash === a.payload_hash,
    detail: payloadHash === a.payload_hash ? 'The payload hashes to the attested payload hash.' : `The payload hashes to ${payloadHash}, not ${a.payload_hash}.`,
  });
  const hash = hashTypedData({
    domain: { name: signer.name, version: signer.version, chainId: signer.chain_id, verifyingContract: signer.verifying_contract },
    types: {
      Attestation: [
        { name: 'subject', type: 'string' },
        { name: 'kind', type: 'string' },
        { name: 'payloadHash', type: 'bytes32' },
        { name: 'sequence', type: 'uint64' },
        { name: 'previous', type: 'bytes32' },
        { name: 'time', type: 'uint64' },
      ],
    },
    primaryType: 'Attestation',
    message: { subject: a.subject, kind: a.kind, payloadHash: a.payload_hash, sequence: BigInt(a.sequence), previous: a.previous, time: BigInt(a.time) },
  });
  let signatureOk = false;
  let signatureDetail = '';
  if (hash !== a.hash) {
    signatureDetail = `The signed fields hash to ${hash}, not the stored ${a.hash}.`;
  } else {
    try {
      const recovered = await recoverAddress({ hash, signature: a.signature });
      signatureOk = recovered === getAddress(signer.signer);
      signatureDetail = signatureOk ? `Signed by the orchestrator's key ${signer.signer}.` : `Signed by ${recovered}, not the orchestrator's ${signer.signer}.`;
    } catch (e) {
      signatureDetail = `The signature is malformed: ${(e as Error).message}`;
    }
  }
  checks.push({ name: 'Signature', ok: signatureOk, detail: signatureDetail });
  const expectedPrevious = a.sequence === 0 ? ZERO : previous?.hash;
  const linkOk = expectedPrevious !== undefined && a.previous === expectedPrevious && (a.sequence === 0 || previous?.sequence === a.sequence - 1);
  checks.push({
    name: 'Chain link',
    ok: linkOk,
    detail: linkOk
      ? a.sequence === 0
        ? 'The first attestation of the log.'
        : `Follows attestation ${a.sequence - 1}, whose hash it names.`
      : `It names ${a.previous} as the previous hash, but attestation ${a.sequence - 1} has ${previous?.hash ?? 'no record'}.`,
  });
  const inc = evidence.inclusion;
  if (!inc) {
    checks.push({ name: 'Merkle proof', ok: false, detail: 'Not batched yet: the orchestrator anchors batches every few minutes. Try again later.' });
    return checks;
  }
  const inside = a.sequence >= inc.first_sequence && a.sequence < inc.first_sequence + inc.count;
  const root = processProof(leafOf(a.hash), inc.proof);
  const proofOk = inside && root === inc.root;
  checks.push({
    name: 'Merkle proof',
    ok: proofOk,
    detail: proofOk
      ? `Included in batch ${inc.batch} (attestations ${inc.first_sequence} to ${inc.first_sequence + inc.count - 1}).`
      : inside
        ? `The proof leads to ${root}, not the batch root ${inc.root}.`
        : `Attestation ${a.sequence} is outside batch ${inc.batch}.`,
  });
  try {
    const batch = await client.readContract({ address: anchor, abi: attestationAnchorAbi, functionName: 'getBatch', args: [BigInt(inc.batch)] });
    const onChain = batch.root === inc.root && Number(batch.firstSequence) === inc.first_sequence && Number(batch.count) === inc.count;
    checks.push({
      name: 'Anchored on-chain',
      ok: onChain,
      detail: onChain ? `AttestationAnchor holds batch ${inc.batch} with this root.` : `Batch ${inc.batch} on-chain has root ${batch.root}, not ${inc.root}.`,
    });
  } catch {
    checks.push({ name: 'Anchored on-chain', ok: false, detail: `AttestationAnchor has no batch ${inc.batch} yet: its anchoring transaction is not confirmed.` });
  }
  return checks;
}
