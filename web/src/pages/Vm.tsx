import { Link, useParams } from 'react-router-dom';
import { HostingActions } from '../components/HostingActions';
import type { VmRecord } from '../lib/api';
import { useApi } from '../lib/queries';

/** A VM as the orchestrator knows it: its state and every field it reports. */
export function VmPage() {
  const { id = '' } = useParams();
  const vm = useApi<VmRecord>(`/vms/${encodeURIComponent(id)}`, { auth: true, refetchInterval: 2_000 });
  return (
    <>
      <h1>VM {id}</h1>
      {vm.error && <p className="error">{vm.error.message}</p>}
      {vm.data && (
        <section className="card" aria-label="VM details">
          <p>
            State: <strong data-testid="vm-state">{vm.data.state}</strong>
          </p>
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
          <p>
            <Link to={`/leases/${vm.data.lease_id}`}>Lease {String(vm.data.lease_id)}</Link>
          </p>
        </section>
      )}
      {vm.data && <HostingActions vmId={vm.data.vm_id} />}
    </>
  );
}
