import { type Address, type Hex, parseSignature, type PublicClient } from 'viem';
import { usdcAbi } from '../abi/generated';

/** An EIP-2612 permit, split the way `depositWithPermit` and `stakeWithPermit` take it. */
export interface Permit {
  deadline: bigint;
  v: number;
  r: Hex;
  s: Hex;
}

type SignTypedData = (args: {
  domain: { name: string; version: string; chainId: number; verifyingContract: Address };
  types: { Permit: { name: string; type: string }[] };
  primaryType: 'Permit';
  message: { owner: Address; spender: Address; value: bigint; nonce: bigint; deadline: bigint };
}) => Promise<Hex>;

/**
 * Asks the wallet to sign a permit letting `spender` take `value` of the owner's USDC: no
 * transaction, no gas. The token's EIP-712 domain is read from the token itself (ERC-5267).
 */
export async function signPermit(
  client: PublicClient,
  signTypedData: SignTypedData,
  { token, owner, spender, value, chainId }: { token: Address; owner: Address; spender: Address; value: bigint; chainId: number },
): Promise<Permit> {
  const [nonce, domain] = await Promise.all([
    client.readContract({ address: token, abi: usdcAbi, functionName: 'nonces', args: [owner] }),
    client.readContract({ address: token, abi: usdcAbi, functionName: 'eip712Domain' }),
  ]);
  // An hour is long enough to review and send, short enough that a leaked permit soon expires.
  const deadline = BigInt(Math.floor(Date.now() / 1000) + 3600);
  const signature = await signTypedData({
    domain: { name: domain[1], version: domain[2], chainId, verifyingContract: domain[4] },
    types: {
      Permit: [
        { name: 'owner', type: 'address' },
        { name: 'spender', type: 'address' },
        { name: 'value', type: 'uint256' },
        { name: 'nonce', type: 'uint256' },
        { name: 'deadline', type: 'uint256' },
      ],
    },
    primaryType: 'Permit',
    message: { owner, spender, value, nonce, deadline },
  });
  const { r, s, v, yParity } = parseSignature(signature);
  return { deadline, v: Number(v ?? BigInt(yParity + 27)), r, s };
}

/** Whether the wallet refused a permit because it cannot sign typed data at all. */
export function cannotSignPermits(e: unknown): boolean {
  const err = e as { code?: number; cause?: { code?: number } };
  const code = err.code ?? err.cause?.code;
  return code === 4200 || code === -32601;
}
