import { useQueryClient } from '@tanstack/react-query';
import { useEffect, useState } from 'react';
import { apiFetch, type Profile } from '../lib/api';
import { useAppConfig } from '../lib/appConfig';
import { explainError } from '../lib/errors';
import { formatPorts, parsePorts } from '../lib/ports';
import { useApi } from '../lib/queries';
import { useSealingKey } from '../lib/sealing';
import { useSession } from '../lib/session';

/**
 * The tenant's profile (`GET/PUT /profile`): the SSH keys, extra ports and sealing key every VM
 * opened from now on is created with. VMs already created keep what they had. Everything is
 * checked by the orchestrator before it stores anything: a bad key or port is refused in words
 * and the profile stays as it was.
 */
export function ProfilePanel({ headingLevel = 2 }: { headingLevel?: 2 | 3 }) {
  const config = useAppConfig();
  const { session } = useSession();
  const queries = useQueryClient();
  const profile = useApi<Profile>('/profile', { auth: true });
  const sealing = useSealingKey();
  const [keys, setKeys] = useState('');
  const [ports, setPorts] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [saved, setSaved] = useState<string | null>(null);

  // The form starts from the stored profile (its fields stay disabled until it has loaded, so
  // nothing typed is overwritten), and again whenever a save changes it.
  useEffect(() => {
    if (!profile.data) return;
    setKeys(profile.data.ssh_keys.join('\n'));
    setPorts(formatPorts(profile.data.ports));
  }, [profile.data]);

  if (!session) return <p className="muted">Sign in to set the SSH keys and password of your VMs.</p>;

  async function put(update: Partial<Profile>, what: string) {
    setBusy(true);
    setError(null);
    setSaved(null);
    try {
      const next = await apiFetch<Profile>(config.apiUrl, '/profile', { method: 'PUT', token: session!.token, body: JSON.stringify(update) });
      queries.setQueryData(['api', '/profile', session!.token], next);
      setSaved(`${what} saved: your next VMs get ${next.ssh_keys.length} SSH key(s)${next.sealing_key ? ' and a sealed password' : ''}.`);
    } catch (e) {
      setError(explainError(e));
    } finally {
      setBusy(false);
    }
  }

  function save(e: React.FormEvent) {
    e.preventDefault();
    const parsed = parsePorts(ports);
    if ('error' in parsed) return setError(parsed.error);
    const lines = keys
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
    void put({ ssh_keys: lines, ports: parsed.ports }, 'Profile');
  }

  async function registerSealingKey() {
    setError(null);
    try {
      const key = await sealing.derive();
      await put({ sealing_key: key.publicHex }, 'Sealing key');
    } catch (e) {
      setError(explainError(e));
    }
  }

  const H = `h${headingLevel}` as const;
  const stored = profile.data?.sealing_key ?? null;
  const mine = sealing.key?.publicHex ?? null;
  return (
    <form onSubmit={save} aria-label="VM access profile" data-testid="profile">
      <H>SSH keys and password for new VMs</H>
      {profile.error && <p className="error">{profile.error.message}</p>}
      <label>
        SSH public keys (one per line, as in ~/.ssh/id_ed25519.pub)
        <textarea name="ssh-keys" className="mono" rows={3} value={keys} disabled={!profile.data} onChange={(e) => setKeys(e.target.value)} />
      </label>
      <label>
        Extra ports to forward (e.g. 8080/tcp 53/udp; port 22 always is)
        <input name="ports" className="mono" value={ports} disabled={!profile.data} onChange={(e) => setPorts(e.target.value)} />
      </label>
      <div className="row">
        <button type="submit" disabled={busy || !profile.data}>
          Save keys and ports
        </button>
      </div>
      <p>
        Password sealing key:{' '}
        <span className="mono" data-testid="sealing-key">
          {stored ?? 'none (no password is generated for new VMs)'}
        </span>
        {stored && mine && (stored === mine ? <span className="ok"> · derived by this wallet</span> : <span className="error"> · not this wallet’s key</span>)}
      </p>
      <button type="button" className="secondary" disabled={busy || !profile.data} onClick={() => void registerSealingKey()}>
        {stored ? 'Derive the sealing key again and register it' : 'Derive a sealing key from this wallet'}
      </button>
      <p className="muted">
        Your wallet signs a message (no transaction); the key it derives never leaves this browser, only its public half is registered.
        Passwords of new VMs are sealed to it and opened here.
      </p>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      {saved && (
        <p className="ok" role="status">
          {saved}
        </p>
      )}
    </form>
  );
}
