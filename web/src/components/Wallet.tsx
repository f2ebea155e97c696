import { useState } from 'react';
import { useAccount, useConnect, useDisconnect, useSwitchChain } from 'wagmi';
import { useAppConfig } from '../lib/appConfig';
import { explainError } from '../lib/errors';
import { shortHex } from '../lib/format';
import { useSession } from '../lib/session';

/** Connect a wallet (each EIP-6963 wallet by name), then sign in; or show who is connected. */
export function WalletButton() {
  const { address, isConnected } = useAccount();
  const { connectors, connect, error, isPending } = useConnect();
  const { disconnect } = useDisconnect();
  const { session, signOut } = useSession();
  const [open, setOpen] = useState(false);

  if (isConnected && address) {
    return (
      <div className="wallet">
        <span className="address" title={address} data-testid="connected-address">
          {shortHex(address, 4)}
        </span>
        {session && <span className="badge">signed in</span>}
        <button
          type="button"
          className="secondary"
          onClick={() => {
            void (session ? signOut() : Promise.resolve()).then(() => disconnect());
          }}
        >
          Disconnect
        </button>
      </div>
    );
  }
  // The generic "Injected" entry duplicates a wallet that announced itself through EIP-6963.
  const announced = connectors.filter((c) => c.type !== 'injected' || c.id !== 'injected');
  const shown = announced.length > 0 ? announced : connectors;
  return (
    <div className="wallet">
      <button type="button" onClick={() => setOpen(!open)} aria-expanded={open}>
        Connect wallet
      </button>
      {open && (
        <div className="menu" role="menu" aria-label="Wallets">
          {shown.map((c) => (
            <button
              type="button"
              role="menuitem"
              key={c.uid}
              disabled={isPending}
              onClick={() => {
                connect({ connector: c });
                setOpen(false);
              }}
            >
              {c.icon && <img src={c.icon} alt="" width={20} height={20} />} {c.name}
            </button>
          ))}
          {shown.length === 0 && <p className="muted">No wallet found in this browser. Install one, or use WalletConnect.</p>}
        </div>
      )}
      {error && (
        <p className="error" role="alert">
          {explainError(error)}
        </p>
      )}
    </div>
  );
}

/** A wallet on another chain than the network's gets a prompt to switch before anything else. */
export function NetworkPrompt() {
  const config = useAppConfig();
  const { isConnected, chainId: walletChain } = useAccount();
  const { switchChain, isPending, error } = useSwitchChain();
  if (!isConnected || walletChain === undefined || walletChain === config.chainId) return null;
  return (
    <div className="banner warning" role="alert">
      <p>
        Your wallet is on chain {walletChain}; DeCloud runs on chain {config.chainId} here.
      </p>
      <button type="button" disabled={isPending} onClick={() => switchChain({ chainId: config.chainId })}>
        Switch network
      </button>
      {error && <p className="error">{explainError(error)}</p>}
    </div>
  );
}

/** Sign in with Ethereum, or what the current session is, with a way to revoke it. */
export function SessionPanel() {
  const { isConnected } = useAccount();
  const { session, signIn, signOut, busy, error } = useSession();
  if (!isConnected) return <p className="muted">Connect a wallet to sign in.</p>;
  if (!session) {
    return (
      <div>
        <p>Sign in to see your leases and VMs. Signing a message costs nothing and sends no transaction.</p>
        <button type="button" onClick={() => void signIn()} disabled={busy}>
          {busy ? 'Waiting for your signature…' : 'Sign in with Ethereum'}
        </button>
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
      </div>
    );
  }
  return (
    <div data-testid="session">
      <dl>
        <dt>Signed in as</dt>
        <dd className="mono">{session.address}</dd>
        <dt>Chain</dt>
        <dd>{session.chainId}</dd>
        <dt>Session expires</dt>
        <dd>{new Date(session.expiresAt * 1000).toLocaleString()}</dd>
      </dl>
      <button type="button" className="secondary" onClick={() => void signOut()} disabled={busy}>
        Sign out (revoke this session)
      </button>
    </div>
  );
}
