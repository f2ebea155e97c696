// Reads the chain and the orchestrator directly, to check what the app did.
import { createPublicClient, createWalletClient, http } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { abiOf } from './network.mjs';

export function chainReader(network) {
  const client = createPublicClient({ transport: http(network.rpcUrl) });
  const c = network.deployment.contracts;
  const usdc = { address: network.deployment.usdc, abi: abiOf('MockUSDC') };
  const escrow = { address: c.leaseEscrow.address, abi: abiOf('LeaseEscrow') };
  const registry = { address: c.nodeRegistry.address, abi: abiOf('NodeRegistry') };
  const staking = { address: c.operatorStaking.address, abi: abiOf('OperatorStaking') };
  async function send(privateKey, contract, functionName, args) {
    const wallet = createWalletClient({ account: privateKeyToAccount(privateKey), transport: http(network.rpcUrl) });
    const hash = await wallet.writeContract({ ...contract, functionName, args, chain: null });
    const receipt = await client.waitForTransactionReceipt({ hash });
    if (receipt.status !== 'success') throw new Error(`${functionName} reverted`);
  }
  return {
    client,
    usdcBalance: (owner) => client.readContract({ ...usdc, functionName: 'balanceOf', args: [owner] }),
    escrowBalance: (owner) => client.readContract({ ...escrow, functionName: 'balanceOf', args: [owner] }),
    allowance: (owner) => client.readContract({ ...usdc, functionName: 'allowance', args: [owner, c.leaseEscrow.address] }),
    lease: (id) => client.readContract({ ...escrow, functionName: 'getLease', args: [BigInt(id)] }),
    leaseCount: () => client.readContract({ ...escrow, functionName: 'leaseCount' }),
    nonce: (address) => client.getTransactionCount({ address }),
    quoteRate: (nodeId, resources, quality, bandwidth) =>
      client.readContract({ ...escrow, functionName: 'quoteRate', args: [nodeId, resources, quality, bandwidth] }),
    accrued: (id) => client.readContract({ ...escrow, functionName: 'accruedOf', args: [BigInt(id)] }),
    claimable: (id) => client.readContract({ ...escrow, functionName: 'claimableOf', args: [BigInt(id)] }),
    /** Sends a NodeRegistry transaction from `privateKey` (as the node's operator would from elsewhere). */
    registryAs: (privateKey, functionName, args) => send(privateKey, registry, functionName, args),
    /** Sends a transaction from `privateKey` to the USDC token or the escrow, to set a journey up. */
    usdcAs: (privateKey, functionName, args) => send(privateKey, usdc, functionName, args),
    escrowAs: (privateKey, functionName, args) => send(privateKey, escrow, functionName, args),
    node: (id) => client.readContract({ ...registry, functionName: 'getNode', args: [id] }),
    nodeStatus: (id) => client.readContract({ ...registry, functionName: 'statusOf', args: [id] }),
    activeStake: (owner) => client.readContract({ ...staking, functionName: 'activeStakeOf', args: [owner] }),
    unbonding: (owner) => client.readContract({ ...staking, functionName: 'unbondingOf', args: [owner] }),
    unbondingPeriod: () => client.readContract({ ...staking, functionName: 'unbondingPeriod' }),
    stakingBalance: () => client.readContract({ address: network.deployment.usdc, abi: abiOf('MockUSDC'), functionName: 'balanceOf', args: [c.operatorStaking.address] }),
    /** Moves the chain's clock forward and mines a block (the test controls anvil's time). */
    async advance(seconds) {
      await client.request({ method: 'evm_increaseTime', params: [Number(seconds)] });
      await client.request({ method: 'evm_mine', params: [] });
    },
  };
}

/** A GET on the orchestrator's API; returns `{ status, body }`. */
export async function api(network, path, token) {
  const response = await fetch(`${network.apiUrl}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

/** Polls `check` until it returns a truthy value; fails with `what` after `timeoutMs`. */
export async function eventually(what, check, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`${what} did not happen${last ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * Signs in to the orchestrator as `privateKey` (SIWE, as the app does, for the app's origin) from
 * the test process: for a party of a journey who does not use the browser. Returns the token.
 */
export async function sessionOf(network, privateKey) {
  const { privateKeyToAccount } = await import('viem/accounts');
  const { createSiweMessage } = await import('viem/siwe');
  const account = privateKeyToAccount(privateKey);
  const post = async (path, body) => {
    const response = await fetch(`${network.apiUrl}${path}`, {
      method: 'POST',
      headers: body ? { 'content-type': 'application/json' } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    if (!response.ok) throw new Error(`${path} answered ${response.status}: ${await response.text()}`);
    return response.json();
  };
  const nonce = await post('/auth/nonce');
  const app = new URL(network.appUrl);
  const message = createSiweMessage({
    domain: app.host,
    address: account.address,
    uri: app.origin,
    version: '1',
    chainId: 31337,
    nonce: nonce.nonce,
    issuedAt: new Date(nonce.issued_at * 1000),
    expirationTime: new Date(nonce.expires_at * 1000),
  });
  const signature = await account.signMessage({ message });
  return (await post('/auth/verify', { message, signature })).token;
}
