import { useState } from 'react';
import { Link, useParams } from 'react-router-dom';
import type { Abi } from 'viem';
import { useReadContract } from 'wagmi';
import { leaseEscrowAbi } from '../abi/generated';
import { ReviewForm } from '../components/Reviews';
import type { LeaseRecord, VmRecord } from '../lib/api';
import { useAppConfig } from '../lib/appConfig';
import { formatDuration, formatUsdc, parseUsdc, shortHex } from '../lib/format';
import { useApi } from '../lib/queries';
import { useSession } from '../lib/session';
import { BANDWIDTH_TIERS, LEASE_STATUS, QUALITY_TIERS } from '../lib/tiers';
import { TxPanel, useTx } from '../lib/tx';

const DAY = 86_400;

export function LeasesPage() {
  const { session } = useSession();
  const leases = useApi<LeaseRecord[]>('/leases', { auth: true, refetchInterval: 5_000 });
  if (!session)
    return (
      <>
        <h1>Leases</h1>
        <p className="muted">
          <Link to="/account">Sign in</Link> to see your leases.
        </p>
      </>
    );
  return (
    <>
      <h1>Leases</h1>
      <p>
        <Link to="/deploy">Deploy a VM</Link>
      </p>
      {leases.error && <p className="error">{leases.error.message}</p>}
      {leases.data?.length === 0 && <p className="muted">No leases yet.</p>}
      {leases.data?.map((l) => <LeaseCard key={l.lease_id} id={l.lease_id} />)}
    </>
  );
}

export function LeasePage() {
  const { id = '' } = useParams();
  const vms = useApi<VmRecord[]>('/vms', { auth: true, refetchInterval: 2_000 });
  const vm = vms.data?.find((v) => String(v.lease_id) === id);
  return (
    <>
      <h1>Lease {id}</h1>
      <LeaseCard id={id} />
      <section className="card" aria-labelledby="vm-heading">
        <h2 id="vm-heading">VM</h2>
        {vm ? (
          <p>
            <Link to={`/vms/${vm.vm_id}`}>{vm.vm_id}</Link>: <span data-testid="vm-state">{vm.state}</span>
          </p>
        ) : (
          <p className="muted">The orchestrator has not placed a VM for this lease yet.</p>
        )}
      </section>
      <ReviewForm leaseId={id} />
    </>
  );
}

/** One lease, read from the contract: funds and time left, a warning under a day, top-up and close. */
function LeaseCard({ id }: { id: string }) {
  const config = useAppConfig();
  const escrow = { address: config.contracts.leaseEscrow, abi: leaseEscrowAbi } as const;
  const leaseId = /^\d+$/.test(id) ? BigInt(id) : undefined;
  const query = { enabled: leaseId !== undefined, refetchInterval: 5_000 };
  const lease = useReadContract({ ...escrow, functionName: 'getLease', args: leaseId !== undefined ? [leaseId] : undefined, query });
  const accrued = useReadContract({ ...escrow, functionName: 'accruedOf', args: leaseId !== undefined ? [leaseId] : undefined, query });
  const depletion = useReadContract({ ...escrow, functionName: 'depletionTime', args: leaseId !== undefined ? [leaseId] : undefined, query });
  const [topUp, setTopUp] = useState('');
  const [message, setMessage] = useState<string | null>(null);
  const tx = useTx(() => setTopUp(''));

  if (leaseId === undefined) return <p className="error">“{id}” is not a lease id.</p>;
  if (lease.error) return <p className="error">{lease.error.message}</p>;
  if (!lease.data || accrued.data === undefined || depletion.data === undefined) return <p className="muted">Loading lease {id}…</p>;
  const l = lease.data;
  const active = l.status === 1;
  const fundsLeft = l.funded > accrued.data ? l.funded - accrued.data : 0n;
  const secondsLeft = active ? Math.max(0, Number(depletion.data) - Math.floor(Date.now() / 1000)) : 0;

  async function submitTopUp(e: React.FormEvent) {
    e.preventDefault();
    setMessage(null);
    const parsed = parseUsdc(topUp);
    if ('error' in parsed) return setMessage(parsed.error);
    await tx.prepare({
      label: `Top up lease ${id} with ${formatUsdc(parsed.micro)}`,
      ...escrow,
      abi: leaseEscrowAbi as Abi,
      functionName: 'topUp',
      args: [leaseId, parsed.micro],
    });
  }

  return (
    <section className="card" aria-label={`Lease ${id}`} data-testid={`lease-${id}`}>
      <h2>
        <Link to={`/leases/${id}`}>Lease {id}</Link> · <span data-testid="lease-status">{LEASE_STATUS[l.status]}</span>
      </h2>
      <dl className="figures">
        <div>
          <dt>Rate</dt>
          <dd>{formatUsdc(l.ratePerHour)}/h</dd>
        </div>
        <div>
          <dt>Funds left</dt>
          <dd data-testid="funds-left">{formatUsdc(fundsLeft)}</dd>
        </div>
        <div>
          <dt>Time left</dt>
          <dd data-testid="time-left">{active ? formatDuration(secondsLeft) : 'ended'}</dd>
        </div>
      </dl>
      <p className="muted">
        Node {shortHex(l.nodeId)} · {l.resources.vcpus} vCPU · {l.resources.memoryGiB} GiB memory · {l.resources.storageGiB} GiB storage ·{' '}
        {QUALITY_TIERS[l.quality]?.name} · {BANDWIDTH_TIERS[l.bandwidth]?.name} bandwidth · funded {formatUsdc(l.funded)} in total
      </p>
      {active && secondsLeft < DAY && (
        <p className="banner warning" role="alert" data-testid="low-funds">
          Less than a day of funds left: top up, or the VM is paused when they run out.
        </p>
      )}
      {active && (
        <div className="grid2">
          <form onSubmit={(e) => void submitTopUp(e)}>
            <label>
              Top up (USDC)
              <input name={`topup-${id}`} inputMode="decimal" value={topUp} onChange={(e) => setTopUp(e.target.value)} />
            </label>
            <div className="row">
              <button type="submit">Review top-up</button>
              <button
                type="button"
                className="secondary"
                onClick={() =>
                  void tx.prepare({
                    label: `Close lease ${id}`,
                    ...escrow,
                    abi: leaseEscrowAbi as Abi,
                    functionName: 'closeLease',
                    args: [leaseId],
                  })
                }
              >
                Close lease
              </button>
            </div>
            {message && (
              <p className="error" role="alert">
                {message}
              </p>
            )}
          </form>
          <div>
            <TxPanel tx={tx} />
          </div>
        </div>
      )}
    </section>
  );
}
