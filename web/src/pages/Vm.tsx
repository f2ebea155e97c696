import { useQueryClient } from '@tanstack/react-query';
import { lazy, Suspense, useState } from 'react';
import { Link, useParams } from 'react-router-dom';
import type { Abi } from 'viem';
import { useReadContract } from 'wagmi';
import { leaseEscrowAbi } from '../abi/generated';
import { HostingActions } from '../components/HostingActions';
import { ReviewForm } from '../components/Reviews';
import { TableWrap } from '../components/TableWrap';
import { apiFetch, type IngressUrl, type SealedCredentials, type VmAccess, type VmDetail, type VmReadiness } from '../lib/api';
import { useAppConfig } from '../lib/appConfig';
import type { Credentials } from '../lib/credentials';
import { explainError } from '../lib/errors';
import { formatBytes, formatUnixTime, shortHex } from '../lib/format';
import { useApi } from '../lib/queries';
import { useSealingKey } from '../lib/sealing';
import { useSession } from '../lib/session';
import { useToasts } from '../lib/toasts';
import { TxPanel, useTx } from '../lib/tx';

// xterm loads with the VM page's console, not on the app's first visit.
const Console = lazy(() => import('../components/Console').then((m) => ({ default: m.Console })));

/**
 * The VM's HTTPS names: each HTTP port served at `https://<name>.<domain>`, named here or freed,
 * through the orchestrator's checks (one lowercase DNS label, not reserved, not taken). A refused
 * name changes nothing and says why.
 */
function WebNames({ vmId, urls }: { vmId: string; urls: IngressUrl[] }) {
  const config = useAppConfig();
  const { session } = useSession();
  const queries = useQueryClient();
  const toasts = useToasts();
  const [port, setPort] = useState('');
  const [name, setName] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  async function change(guest: number, label: string, init: RequestInit): Promise<boolean> {
    setBusy(true);
    setError(null);
    const toast = toasts.show('pending', `${label}…`);
    try {
      const path = `/vms/${encodeURIComponent(vmId)}`;
      const next = await apiFetch<VmDetail>(config.apiUrl, `${path}/ingress/${guest}`, { ...init, token: session?.token });
      queries.setQueryData(['api', path, session?.token ?? null], next);
      toasts.show('success', `${label}: done.`, toast);
      return true;
    } catch (e) {
      const words = explainError(e);
      setError(words);
      toasts.show('error', `${label} refused: ${words}`, toast);
      return false;
    } finally {
      setBusy(false);
    }
  }

  async function serve(e: React.FormEvent) {
    e.preventDefault();
    const guest = Number(port);
    if (!Number.isInteger(guest) || guest < 1 || guest > 65535) {
      setError('The guest port is a whole number from 1 to 65535.');
      return;
    }
    const chosen = name.trim();
    // Without a name the port keeps its name, or gets one derived from the VM and port.
    const body = JSON.stringify(chosen ? { name: chosen } : {});
    if (await change(guest, `Serving port ${guest} by name`, { method: 'PUT', body })) {
      setPort('');
      setName('');
    }
  }

  return (
    <>
      {urls.length > 0 && (
        <TableWrap label="Web addresses">
          <table data-testid="urls">
            <caption>Web addresses (HTTPS)</caption>
            <thead>
              <tr>
                <th scope="col">Guest port</th>
                <th scope="col">Open it at</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {urls.map((u) => (
                <tr key={u.guest}>
                  <td>{u.guest}</td>
                  <td className="mono">
                    <a href={u.url} target="_blank" rel="noreferrer noopener">
                      {u.url}
                    </a>
                  </td>
                  <td>
                    <button
                      type="button"
                      className="secondary"
                      disabled={busy}
                      onClick={() => void change(u.guest, `Freeing ${u.name}`, { method: 'DELETE' })}
                      aria-label={`Stop serving port ${u.guest} at ${u.name}`}
                    >
                      Stop serving
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableWrap>
      )}
      <form aria-label="Serve a port by name" onSubmit={(e) => void serve(e)}>
        <p className="muted">
          Serve an HTTP port of the VM over HTTPS at a name: yours (lowercase letters, digits and -), or one made from
          the VM and port when you leave it empty.
        </p>
        <div className="row">
          <label>
            Guest port
            <input name="web-port" inputMode="numeric" value={port} onChange={(e) => setPort(e.target.value)} placeholder="8080" />
          </label>
          <label>
            Name (optional)
            <input name="web-name" value={name} onChange={(e) => setName(e.target.value)} placeholder="myapp" autoCapitalize="none" spellCheck={false} />
          </label>
        </div>
        <button type="submit" disabled={busy || !session}>
          Serve by name
        </button>
      </form>
      {error && (
        <p className="error" role="alert" data-testid="web-name-error">
          {error}
        </p>
      )}
    </>
  );
}

/** A VM as the orchestrator knows it: state, how to reach it, its password, console and controls. */
export function VmPage() {
  const { id = '' } = useParams();
  const { session } = useSession();
  const vm = useApi<VmDetail>(`/vms/${encodeURIComponent(id)}`, { auth: true, refetchInterval: 2_000 });
  return (
    <>
      <h1>VM {id}</h1>
      {!session && (
        <p className="muted">
          <Link to="/account">Sign in</Link> to see your VM.
        </p>
      )}
      {vm.error && <p className="error">{vm.error.message}</p>}
      {vm.data && (
        <>
          <section className="card" aria-label="VM details">
            <p>
              State: <strong data-testid="vm-state">{vm.data.state}</strong> ·{' '}
              <Link to={`/leases/${vm.data.lease_id}`}>Lease {String(vm.data.lease_id)}</Link>
            </p>
            <Controls vm={vm.data} />
            <Readiness readiness={vm.data.readiness} />
          </section>
          {vm.data.access && <Access vmId={vm.data.vm_id} access={vm.data.access} />}
          {vm.data.access?.has_credentials && <Password vmId={vm.data.vm_id} />}
          <Suspense fallback={<p className="muted">Loading the console…</p>}>
            <Console vmId={vm.data.vm_id} />
          </Suspense>
          <CloseLease leaseId={String(vm.data.lease_id)} />
          <ReviewForm leaseId={String(vm.data.lease_id)} />
          <HostingActions vmId={vm.data.vm_id} />
          <section className="card" aria-labelledby="fields-heading">
            <h2 id="fields-heading">Everything the orchestrator reports</h2>
            <dl>
              {Object.entries(vm.data)
                .filter(([, v]) => v === null || typeof v !== 'object')
                .map(([k, v]) => (
                  <div className="kv" key={k}>
                    <dt>{k.replace(/_/g, ' ')}</dt>
                    <dd className="mono">{v === null ? '—' : String(v)}</dd>
                  </div>
                ))}
            </dl>
          </section>
        </>
      )}
    </>
  );
}

/** Stop, start and reboot through the orchestrator; each answer is the VM as it is now. */
function Controls({ vm }: { vm: VmDetail }) {
  const config = useAppConfig();
  const { session } = useSession();
  const queries = useQueryClient();
  const toasts = useToasts();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  async function act(action: 'stop' | 'start' | 'reboot', label: string) {
    setBusy(true);
    setError(null);
    const toast = toasts.show('pending', `${label}: asking the node…`);
    try {
      const next = await apiFetch<VmDetail>(config.apiUrl, `/vms/${encodeURIComponent(vm.vm_id)}/${action}`, { method: 'POST', token: session?.token });
      queries.setQueryData(['api', `/vms/${encodeURIComponent(vm.vm_id)}`, session?.token ?? null], next);
      toasts.show('success', `${label}: the VM is ${next.state}.`, toast);
    } catch (e) {
      const words = explainError(e);
      setError(words);
      toasts.show('error', `${label} failed: ${words}`, toast);
    } finally {
      setBusy(false);
    }
  }

  const running = vm.state === 'running';
  const stopped = vm.state === 'stopped';
  return (
    <div>
      <div className="row" role="group" aria-label="VM controls">
        <button type="button" disabled={busy || !running} onClick={() => void act('stop', 'Stop')}>
          Stop
        </button>
        <button type="button" disabled={busy || !stopped} onClick={() => void act('start', 'Start')}>
          Start
        </button>
        <button type="button" className="secondary" disabled={busy || !running} onClick={() => void act('reboot', 'Reboot')}>
          Reboot
        </button>
      </div>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </div>
  );
}

/** Each service check of the VM's template: what is checked, how its last run went, when, and why not. */
function Readiness({ readiness }: { readiness?: VmReadiness }) {
  if (!readiness || readiness.services.length === 0) return null;
  const overall =
    readiness.ready === true ? 'every service is ready' : readiness.ready === false ? 'not every service is ready yet' : 'the node has not reported it yet';
  return (
    <div data-testid="readiness">
      <h2 id="readiness-heading">Services</h2>
      <p>
        Readiness: <strong data-testid="readiness-overall">{overall}</strong>
        {readiness.reported_at ? <span className="muted"> · reported {formatUnixTime(readiness.reported_at)}</span> : null}
      </p>
      <TableWrap label="Service checks">
        <table data-testid="readiness-services" aria-labelledby="readiness-heading">
          <thead>
            <tr>
              <th scope="col">Check</th>
              <th scope="col">State</th>
              <th scope="col">Last checked</th>
              <th scope="col">Why not ready</th>
            </tr>
          </thead>
          <tbody>
            {readiness.services.map((s, i) => (
              <tr key={`${s.check}-${i}`}>
                <td className="mono">{s.check}</td>
                <td className={s.state === 'ready' ? 'ok' : 'error'}>{s.state === 'ready' ? 'ready' : 'not ready'}</td>
                <td>{s.checked_at ? formatUnixTime(s.checked_at) : 'not yet'}</td>
                <td>{s.state === 'ready' ? '—' : (s.detail ?? 'no reason given')}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </TableWrap>
    </div>
  );
}

/** The node's public address, the forwarded ports and the `ssh` line to copy. */
function Access({ vmId, access }: { vmId: string; access: VmAccess }) {
  const [copied, setCopied] = useState(false);
  async function copy(text: string) {
    try {
      await navigator.clipboard.writeText(text);
      setCopied(true);
    } catch {
      setCopied(false);
    }
  }
  return (
    <section className="card" aria-labelledby="access-heading">
      <h2 id="access-heading">Connect</h2>
      {access.ssh_command ? (
        <div className="row">
          <code className="mono" data-testid="ssh-command">
            {access.ssh_command}
          </code>
          <button type="button" className="secondary" onClick={() => void copy(access.ssh_command!)} aria-label={`Copy the ssh command for ${vmId}`}>
            {copied ? 'Copied' : 'Copy'}
          </button>
        </div>
      ) : (
        <p className="muted">No SSH port is forwarded yet: the node forwards it once the VM runs.</p>
      )}
      <dl>
        <div className="kv">
          <dt>{access.relay ? 'Relay address' : 'Node address'}</dt>
          <dd className="mono" data-testid="public-address">
            {access.public_address ?? '—'}
          </dd>
        </div>
        {access.relay && (
          <div className="kv">
            <dt>Reached through</dt>
            <dd data-testid="relay">
              relay <span className="mono">{shortHex(access.relay.relay_node_id)}</span>: the VM&rsquo;s node accepts no
              inbound connections, so its ports and web addresses are published by this relay. If the relay goes away,
              another takes over and the address and ports above change.
            </dd>
          </div>
        )}
        {access.relay_traffic && (
          <div className="kv">
            <dt>Carried by relays</dt>
            <dd data-testid="relay-traffic">
              {formatBytes(access.relay_traffic.bytes_in)} in, {formatBytes(access.relay_traffic.bytes_out)} out
            </dd>
          </div>
        )}
        <div className="kv">
          <dt>Login user</dt>
          <dd className="mono">{access.login_user ?? '—'}</dd>
        </div>
        <div className="kv">
          <dt>Guest addresses</dt>
          <dd className="mono">{access.addresses.length ? access.addresses.join(', ') : '—'}</dd>
        </div>
        <div className="kv">
          <dt>Ports asked for</dt>
          <dd className="mono">{access.ports.length ? access.ports.map((p) => `${p.guest}/${p.protocol}`).join(' ') : '—'}</dd>
        </div>
      </dl>
      {/* A node that runs no ingress forwards HTTP ports directly: there is nothing to name. */}
      {access.node_ingress !== false && <WebNames vmId={vmId} urls={access.urls ?? []} />}
      {access.forwards.length > 0 && (
        <TableWrap label="Forwarded ports">
          <table data-testid="forwards">
            <caption>Forwarded ports</caption>
            <thead>
              <tr>
                <th scope="col">Guest port</th>
                <th scope="col">Reach it at</th>
                <th scope="col">Protocol</th>
              </tr>
            </thead>
            <tbody>
              {access.forwards.map((f) => (
                <tr key={`${f.guest}/${f.protocol}`}>
                  <td>{f.guest}</td>
                  <td className="mono">
                    {access.public_address ?? 'node'}:{f.public}
                  </td>
                  <td>{f.protocol}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableWrap>
      )}
    </section>
  );
}

/** The generated password: fetched sealed, opened here with the key the wallet derives. */
function Password({ vmId }: { vmId: string }) {
  const config = useAppConfig();
  const { session } = useSession();
  const sealing = useSealingKey();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [opened, setOpened] = useState<Credentials | null>(null);

  async function open() {
    setBusy(true);
    setError(null);
    try {
      const sealed = await apiFetch<SealedCredentials>(config.apiUrl, `/vms/${encodeURIComponent(vmId)}/credentials`, { token: session?.token });
      const key = await sealing.derive();
      if (key.publicHex !== sealed.sealing_key.toLowerCase())
        throw new Error(
          `These credentials were sealed to ${sealed.sealing_key}; this wallet on chain ${config.chainId} derives ${key.publicHex}. Open them with the wallet that registered that key.`,
        );
      setOpened(await key.open(sealed.sealed, sealed.vm_id));
    } catch (e) {
      setError(explainError(e));
    } finally {
      setBusy(false);
    }
  }

  return (
    <section className="card" aria-labelledby="password-heading">
      <h2 id="password-heading">Password</h2>
      {opened ? (
        <dl data-testid="credentials">
          <div className="kv">
            <dt>User</dt>
            <dd className="mono" data-testid="credentials-user">
              {opened.user}
            </dd>
          </div>
          <div className="kv">
            <dt>Password</dt>
            <dd className="mono" data-testid="credentials-password">
              {opened.password}
            </dd>
          </div>
          {opened.template_password && (
            <div className="kv">
              <dt>Template password</dt>
              <dd className="mono" data-testid="credentials-template-password">
                {opened.template_password}
              </dd>
            </div>
          )}
        </dl>
      ) : (
        <>
          <p className="muted">Sealed to your wallet’s key: your wallet signs a message (no transaction) and the password is opened in this browser.</p>
          <button type="button" disabled={busy} onClick={() => void open()}>
            {busy ? 'Waiting for your signature…' : 'Show password'}
          </button>
        </>
      )}
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </section>
  );
}

/** Closing the VM's lease on-chain: the unspent funding returns to the escrow balance. */
function CloseLease({ leaseId }: { leaseId: string }) {
  const config = useAppConfig();
  const escrow = { address: config.contracts.leaseEscrow, abi: leaseEscrowAbi } as const;
  const id = /^\d+$/.test(leaseId) ? BigInt(leaseId) : undefined;
  const lease = useReadContract({ ...escrow, functionName: 'getLease', args: id !== undefined ? [id] : undefined, query: { enabled: id !== undefined, refetchInterval: 5_000 } });
  const tx = useTx();
  if (id === undefined || !lease.data || lease.data.status !== 1) return null;
  return (
    <section className="card" aria-labelledby="close-heading">
      <h2 id="close-heading">Close the lease</h2>
      <p className="muted">The VM is deleted and the unspent funding returns to your escrow balance.</p>
      <button
        type="button"
        className="secondary"
        disabled={tx.phase === 'simulating' || tx.phase === 'sending'}
        onClick={() => void tx.prepare({ label: `Close lease ${leaseId}`, ...escrow, abi: leaseEscrowAbi as Abi, functionName: 'closeLease', args: [id] })}
      >
        Close lease {leaseId}
      </button>
      <TxPanel tx={tx} />
    </section>
  );
}
