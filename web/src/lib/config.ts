import { type Address, getAddress } from 'viem';

/** One deployed contract, as `deployments/<chainId>.json` records it. */
interface ContractRecord {
  address: string;
}

/** What `/config.json` holds: the network this copy of the app talks to. */
export interface AppConfig {
  chainId: number;
  rpcUrl: string;
  indexerUrl: string | null;
  walletConnectProjectId: string | null;
  /** Base URL of the orchestrator's API; the app's own origin when the orchestrator serves it. */
  apiUrl: string;
  contracts: {
    usdc: Address;
    nodeRegistry: Address;
    operatorStaking: Address;
    templateMarket: Address;
    leaseEscrow: Address;
    attestationAnchor: Address;
  };
}

interface RawConfig {
  chainId?: unknown;
  rpcUrl?: unknown;
  indexerUrl?: unknown;
  walletConnectProjectId?: unknown;
  apiUrl?: unknown;
  deployment?: {
    chainId?: unknown;
    usdc?: string;
    contracts?: Record<string, ContractRecord | undefined>;
  };
}

/** Reads `/config.json` and checks that it describes one network completely. */
export async function loadConfig(): Promise<AppConfig> {
  const response = await fetch('/config.json', { cache: 'no-store' });
  if (!response.ok) {
    throw new Error(`/config.json answered ${response.status}: the server does not serve a DeCloud network`);
  }
  return parseConfig((await response.json()) as RawConfig, window.location.origin);
}

export function parseConfig(raw: RawConfig, origin: string): AppConfig {
  const chainId = Number(raw.chainId);
  if (!Number.isSafeInteger(chainId) || chainId <= 0) throw new Error('config.json: chainId is missing');
  if (typeof raw.rpcUrl !== 'string') throw new Error('config.json: rpcUrl is missing');
  const deployment = raw.deployment;
  if (!deployment?.contracts || !deployment.usdc) throw new Error('config.json: the deployment record is missing');
  if (Number(deployment.chainId) !== chainId) {
    throw new Error(`config.json: the deployment is for chain ${deployment.chainId}, not ${chainId}`);
  }
  const contract = (name: string): Address => {
    const record = deployment.contracts?.[name];
    if (!record) throw new Error(`config.json: the deployment has no ${name}`);
    return getAddress(record.address);
  };
  return {
    chainId,
    rpcUrl: raw.rpcUrl,
    indexerUrl: typeof raw.indexerUrl === 'string' ? raw.indexerUrl : null,
    walletConnectProjectId:
      typeof raw.walletConnectProjectId === 'string' && raw.walletConnectProjectId ? raw.walletConnectProjectId : null,
    apiUrl: `${typeof raw.apiUrl === 'string' ? raw.apiUrl : origin}/api/v1`,
    contracts: {
      usdc: getAddress(deployment.usdc),
      nodeRegistry: contract('nodeRegistry'),
      operatorStaking: contract('operatorStaking'),
      templateMarket: contract('templateMarket'),
      leaseEscrow: contract('leaseEscrow'),
      attestationAnchor: contract('attestationAnchor'),
    },
  };
}
