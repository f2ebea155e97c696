import { createContext, type ReactNode, useCallback, useContext, useEffect, useMemo, useState } from 'react';
import { getAddress } from 'viem';
import { createSiweMessage } from 'viem/siwe';
import { useAccount, useSignMessage } from 'wagmi';
import { apiFetch, type NonceResponse, type SessionInfo, type SessionResponse } from './api';
import { useAppConfig } from './appConfig';

const STORAGE_KEY = 'decloud.session';

interface StoredSession {
  token: string;
  address: string;
  chainId: number;
  expiresAt: number;
}

interface SessionState {
  /** The orchestrator session of the connected address, if signed in. */
  session: StoredSession | null;
  signIn: () => Promise<void>;
  signOut: () => Promise<void>;
  busy: boolean;
  error: string | null;
}

const SessionContext = createContext<SessionState | null>(null);

function readStored(): StoredSession | null {
  try {
    const raw = localStorage.getItem(STORAGE_KEY);
    return raw ? (JSON.parse(raw) as StoredSession) : null;
  } catch {
    return null;
  }
}

/**
 * Sign-In with Ethereum (EIP-4361) against the orchestrator: a nonce from `/auth/nonce`, a message
 * naming this origin signed by the wallet, a bearer session from `/auth/verify`. The session is kept
 * in localStorage (a bearer token, never a cookie) and is dropped when the wallet's address changes.
 */
export function SessionProvider({ children }: { children: ReactNode }) {
  const config = useAppConfig();
  const { address } = useAccount();
  const { signMessageAsync } = useSignMessage();
  const [session, setSession] = useState<StoredSession | null>(readStored);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  const store = useCallback((next: StoredSession | null) => {
    if (next) localStorage.setItem(STORAGE_KEY, JSON.stringify(next));
    else localStorage.removeItem(STORAGE_KEY);
    setSession(next);
  }, []);

  // A session belongs to one address: another account in the wallet means signing in again.
  const current =
    session && address && getAddress(session.address) === address && session.expiresAt * 1000 > Date.now() ? session : null;

  // Check a remembered session once per address: the server may have revoked or expired it.
  useEffect(() => {
    if (!current) return;
    let cancelled = false;
    apiFetch<SessionInfo>(config.apiUrl, '/auth/session', { token: current.token }).catch((e: { status?: number }) => {
      if (!cancelled && e.status === 401) store(null);
    });
    return () => {
      cancelled = true;
    };
  }, [current?.token, config.apiUrl, store]); // eslint-disable-line react-hooks/exhaustive-deps

  const signIn = useCallback(async () => {
    if (!address) return;
    setBusy(true);
    setError(null);
    try {
      const nonce = await apiFetch<NonceResponse>(config.apiUrl, '/auth/nonce', { method: 'POST' });
      const message = createSiweMessage({
        domain: window.location.host,
        address,
        statement: 'Sign in to DeCloud. This signature costs nothing and sends no transaction.',
        uri: window.location.origin,
        version: '1',
        chainId: config.chainId,
        nonce: nonce.nonce,
        issuedAt: new Date(nonce.issued_at * 1000),
        expirationTime: new Date(nonce.expires_at * 1000),
      });
      const signature = await signMessageAsync({ message });
      const response = await apiFetch<SessionResponse>(config.apiUrl, '/auth/verify', {
        method: 'POST',
        body: JSON.stringify({ message, signature }),
      });
      store({ token: response.token, address: response.address, chainId: response.chain_id, expiresAt: response.expires_at });
    } catch (e) {
      setError(plainSignInError(e));
    } finally {
      setBusy(false);
    }
  }, [address, config, signMessageAsync, store]);

  const signOut = useCallback(async () => {
    if (!session) return;
    setBusy(true);
    try {
      await apiFetch<void>(config.apiUrl, '/auth/logout', { method: 'POST', token: session.token });
    } catch {
      // A session the server no longer knows is signed out already.
    } finally {
      store(null);
      setBusy(false);
    }
  }, [config.apiUrl, session, store]);

  const value = useMemo(() => ({ session: current, signIn, signOut, busy, error }), [current, signIn, signOut, busy, error]);
  return <SessionContext.Provider value={value}>{children}</SessionContext.Provider>;
}

function plainSignInError(e: unknown): string {
  const err = e as { name?: string; shortMessage?: string; message?: string; code?: number };
  if (err.name === 'UserRejectedRequestError' || err.code === 4001) return 'You declined the sign-in request in your wallet.';
  return `Sign-in failed: ${err.shortMessage ?? err.message ?? String(e)}`;
}

export function useSession(): SessionState {
  const value = useContext(SessionContext);
  if (!value) throw new Error('useSession outside SessionProvider');
  return value;
}
