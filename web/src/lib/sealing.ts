import { useCallback, useState } from 'react';
import { useAccount, useSignMessage } from 'wagmi';
import { useAppConfig } from './appConfig';
import type { SealingKey } from './credentials';

// One signature per wallet, chain and page load: the key is kept in memory only (never stored),
// so opening a second VM's credentials does not ask the wallet again.
const derived = new Map<string, SealingKey>();

/** The wallet's sealing key: `derive` asks the wallet to sign the key message (once). */
export function useSealingKey() {
  const config = useAppConfig();
  const { address } = useAccount();
  const { signMessageAsync } = useSignMessage();
  const cacheKey = address ? `${address}:${config.chainId}` : null;
  const [key, setKey] = useState<SealingKey | null>(cacheKey ? (derived.get(cacheKey) ?? null) : null);

  const derive = useCallback(async () => {
    if (!cacheKey) throw new Error('Connect a wallet first.');
    const known = derived.get(cacheKey);
    if (known) {
      setKey(known);
      return known;
    }
    // The HPKE code loads only when a key is needed, not on the app's first visit.
    const { keyMessage, sealingKeyFromSignature } = await import('./credentials');
    const signature = await signMessageAsync({ message: keyMessage(config.chainId) });
    const next = await sealingKeyFromSignature(signature);
    derived.set(cacheKey, next);
    setKey(next);
    return next;
  }, [cacheKey, config.chainId, signMessageAsync]);

  return { key: cacheKey ? (derived.get(cacheKey) ?? key) : null, derive };
}
