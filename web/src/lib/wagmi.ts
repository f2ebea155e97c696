import { defineChain } from 'viem';
import { createConfig, http } from 'wagmi';
import { injected, walletConnect } from 'wagmi/connectors';
import type { AppConfig } from './config';

/** The chain of this network, named the way wallets will show it. */
export function chainOf(config: AppConfig) {
  const names: Record<number, string> = { 137: 'Polygon', 80002: 'Polygon Amoy', 31337: 'DeCloud local (anvil)' };
  return defineChain({
    id: config.chainId,
    name: names[config.chainId] ?? `Chain ${config.chainId}`,
    nativeCurrency: { name: 'POL', symbol: config.chainId === 31337 ? 'ETH' : 'POL', decimals: 18 },
    rpcUrls: { default: { http: [config.rpcUrl] } },
  });
}

/**
 * Wallets: every injected wallet that announces itself through EIP-6963 (wagmi discovers them),
 * the legacy `window.ethereum` as a fallback, and WalletConnect when the network has a project id.
 */
export function wagmiConfig(config: AppConfig) {
  const chain = chainOf(config);
  const connectors = [injected()];
  if (config.walletConnectProjectId) {
    connectors.push(walletConnect({ projectId: config.walletConnectProjectId, showQrModal: true }) as never);
  }
  return createConfig({
    chains: [chain],
    connectors,
    multiInjectedProviderDiscovery: true,
    transports: { [chain.id]: http(config.rpcUrl) },
    // Local chains mine at once; poll often so confirmations show without delay.
    pollingInterval: config.chainId === 31337 ? 500 : 4_000,
  });
}
