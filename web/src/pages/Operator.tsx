import { useQuery } from '@tanstack/react-query';
import { useState } from 'react';
import { Link } from 'react-router-dom';
import { type Abi, type Address, encodePacked, type Hex, isAddress, isHex, keccak256 } from 'viem';
import { useAccount, usePublicClient, useReadContract, useSignTypedData } from 'wagmi';
import { leaseEscrowAbi, nodeRegistryAbi, operatorStakingAbi, usdcAbi } from '../abi/generated';
import type { NodeListing } from '../lib/api';
import { useAppConfig } from '../lib/appConfig';
import { explainError } from '../lib/errors';
import { formatUsdc, parseUsdc, shortHex } from '../lib/format';
import { cannotSignPermits, signPermit } from '../lib/permit';
import { INDEXER_PAGE, useIndexer } from '../lib/indexer';
import { useApi } from '../lib/queries';
import { TableWrap } from '../components/TableWrap';
import { useSession } from '../lib/session';
import { TxPanel, useTx } from '../lib/tx';

const NODE_STATUS = ['None', 'Active', 'Paused', 'Retired'] as const;

export function OperatorPage() {
  const { isConnected } = useAccount();
  if (!isConnected)
    return (
      <>
        <h1>Operate nodes</h1>
        <p className="muted">Connect a wallet to register and run nodes.</p>
      </>
    );
  return (
    <>
      <h1>Operate nodes</h1>
      <MyNodes />
      <Earnings />
      <div className="grid2">
        <RegisterNode />
        <Staking />
      </div>
    </>
  );
}

const PRICE_FIELDS = [
  ['cpuPerHour', 'CPU (USDC per vCPU-hour)'],
  ['memoryGiBPerHour', 'Memory (USDC per GiB-hour)'],
  ['storageGiBPerHour', 'Storage (USDC per GiB-hour)'],
  ['gpuPerHour', 'GPU (USDC per GPU-hour)'],
] as const;
type PriceKey = (typeof PRICE_FIELDS)[number][0];

/** Registers the node whose machine id and key its agent printed (`decloud-node-agent init`). */
function RegisterNode() {
  const config = useAppConfig();
  const { address } = useAccount();
  const registry = { address: config.contracts.nodeRegistry, abi: nodeRegistryAbi } as const;
  const floors = useReadContract({ ...registry, functionName: 'floorPrices' });
  const [form, setForm] = useState({
    machineId: '',
    nodeKey: '',
    nodeId: '',
    region: '',
    endpoint: '',
    vcpus: '',
    memory: '',
    disk: '',
    gpus: '0',
    bandwidth: '1000',
    publicIpv4: true,
  });
  const [prices, setPrices] = useState<Record<PriceKey, string>>({ cpuPerHour: '', memoryGiBPerHour: '', storageGiBPerHour: '', gpuPerHour: '' });
  const [message, setMessage] = useState<string | null>(null);
  const tx = useTx();
  const set = (key: keyof typeof form) => (e: React.ChangeEvent<HTMLInputElement>) =>
    setForm({ ...form, [key]: e.target.type === 'checkbox' ? e.target.checked : e.target.value });

  async function submit(e: React.FormEvent) {
    e.preventDefault();
    setMessage(null);
    if (!address) return;
    const machineId = form.machineId.trim();
    const nodeKey = form.nodeKey.trim();
    if (!isHex(machineId) || machineId.length !== 66) return setMessage('The machine id is the 0x… value of 64 hex digits the agent printed.');
    if (!isAddress(nodeKey)) return setMessage('The node key is the 0x… address the agent printed.');
    // The id is keccak256(machineId, operator): a mismatch means another wallet or another machine.
    const expected = keccak256(encodePacked(['bytes32', 'address'], [machineId as Hex, address]));
    if (form.nodeId.trim() && form.nodeId.trim().toLowerCase() !== expected) {
      return setMessage(`This node id is not the one of this machine id for your address (${shortHex(expected)}): was the agent initialised with --operator ${address}?`);
    }
    const whole = (text: string, name: string, min: number) => {
      const n = Number(text);
      if (!Number.isInteger(n) || n < min) throw new Error(`${name} must be a whole number of at least ${min}.`);
      return n;
    };
    let capabilities;
    const chosen: Record<PriceKey, bigint> = { cpuPerHour: 0n, memoryGiBPerHour: 0n, storageGiBPerHour: 0n, gpuPerHour: 0n };
    try {
      capabilities = {
        vcpus: whole(form.vcpus, 'vCPUs', 1),
        memoryGiB: whole(form.memory, 'Memory', 1),
        diskGiB: whole(form.disk, 'Disk', 1),
        gpus: whole(form.gpus, 'GPUs', 0),
        bandwidthMbps: whole(form.bandwidth, 'Bandwidth', 1),
        architecture: 0,
        flags: form.publicIpv4 ? 1 : 0,
      };
      for (const [key, label] of PRICE_FIELDS) {
        if (!prices[key].trim()) continue;
        const parsed = parseUsdc(prices[key]);
        if ('error' in parsed) throw new Error(`${label}: ${parsed.error}`);
        const floor = floors.data?.[key];
        if (floor !== undefined && parsed.micro < floor) {
          throw new Error(`${label}: ${formatUsdc(parsed.micro)} is below the network's floor of ${formatUsdc(floor)}.`);
        }
        chosen[key] = parsed.micro;
      }
    } catch (err) {
      return setMessage((err as Error).message);
    }
    await tx.prepare({
      label: `Register node ${shortHex(expected)}`,
      ...registry,
      abi: nodeRegistryAbi as Abi,
      functionName: 'register',
      args: [machineId, nodeKey, form.region.trim(), capabilities, form.endpoint.trim(), '', chosen],
    });
  }

  return (
    <form className="card" onSubmit={(e) => void submit(e)} aria-labelledby="register-heading">
      <h2 id="register-heading">Register a node</h2>
      <p className="muted">
        Paste what <code>decloud-node-agent --operator {address ? shortHex(address, 4) : '0x…'} init</code> printed.
      </p>
      <label>
        Machine id
        <input name="machine-id" value={form.machineId} onChange={set('machineId')} className="mono" />
      </label>
      <label>
        Node key
        <input name="node-key" value={form.nodeKey} onChange={set('nodeKey')} className="mono" />
      </label>
      <label>
        Node id (to check)
        <input name="node-id" value={form.nodeId} onChange={set('nodeId')} className="mono" />
      </label>
      <div className="grid2">
        <label>
          Region
          <input name="region" value={form.region} onChange={set('region')} placeholder="eu-west" />
        </label>
        <label>
          Endpoint
          <input name="endpoint" value={form.endpoint} onChange={set('endpoint')} placeholder="https://node.example:8443" />
        </label>
        <label>
          vCPUs
          <input name="vcpus" inputMode="numeric" value={form.vcpus} onChange={set('vcpus')} />
        </label>
        <label>
          Memory (GiB)
          <input name="memory" inputMode="numeric" value={form.memory} onChange={set('memory')} />
        </label>
        <label>
          Disk (GiB)
          <input name="disk" inputMode="numeric" value={form.disk} onChange={set('disk')} />
        </label>
        <label>
          GPUs
          <input name="gpus" inputMode="numeric" value={form.gpus} onChange={set('gpus')} />
        </label>
        <label>
          Bandwidth (Mbps)
          <input name="bandwidth" inputMode="numeric" value={form.bandwidth} onChange={set('bandwidth')} />
        </label>
      </div>
      <label className="check">
        <input type="checkbox" checked={form.publicIpv4} onChange={set('publicIpv4')} />
        Public IPv4 address
      </label>
      <fieldset>
        <legend>Prices (empty: the network's default)</legend>
        {PRICE_FIELDS.map(([key, label]) => (
          <label key={key}>
            {label}
            <input
              name={key}
              inputMode="decimal"
              value={prices[key]}
              onChange={(e) => setPrices({ ...prices, [key]: e.target.value })}
              aria-describedby={`${key}-floor`}
            />
            <span id={`${key}-floor`} className="muted">
              Floor: {floors.data ? formatUsdc(floors.data[key]) : '…'}
            </span>
          </label>
        ))}
      </fieldset>
      <button type="submit">Review registration</button>
      {message && (
        <p className="error" role="alert">
          {message}
        </p>
      )}
      <TxPanel tx={tx} />
    </form>
  );
}

/** The operator's nodes: state on-chain, reputation from the orchestrator, pause, resume, retire. */
function MyNodes() {
  const { session } = useSession();
  const nodes = useApi<NodeListing[]>('/operator/nodes', { auth: true, refetchInterval: 3_000 });
  return (
    <section className="card" aria-labelledby="my-nodes-heading">
      <h2 id="my-nodes-heading">Your nodes</h2>
      {!session && (
        <p className="muted">
          <Link to="/account">Sign in</Link> to see your nodes, their uptime and the VMs they host.
        </p>
      )}
      {nodes.error && <p className="error">{nodes.error.message}</p>}
      {nodes.data?.length === 0 && <p className="muted">No node yet.</p>}
      {nodes.data?.map((n) => <NodeRow key={n.node_id} node={n} />)}
    </section>
  );
}

function NodeRow({ node }: { node: NodeListing }) {
  const config = useAppConfig();
  const registry = { address: config.contracts.nodeRegistry, abi: nodeRegistryAbi } as const;
  const status = useReadContract({ ...registry, functionName: 'statusOf', args: [node.node_id as Hex], query: { refetchInterval: 3_000 } });
  const tx = useTx();
  const action = (functionName: 'pause' | 'resume' | 'retire', label: string) => () =>
    void tx.prepare({ label: `${label} node ${shortHex(node.node_id)}`, ...registry, abi: nodeRegistryAbi as Abi, functionName, args: [node.node_id] });
  const s = status.data;
  const uptime = node.reputation?.uptime_bps;
  return (
    <div className="node-row" data-testid={`node-${node.node_id}`}>
      <p>
        <Link to={`/nodes/${node.node_id}`} className="mono">
          {shortHex(node.node_id)}
        </Link>{' '}
        · <span data-testid="node-status">{s === undefined ? '…' : NODE_STATUS[s]}</span> · {node.region || 'no region'} ·{' '}
        {node.reputation?.online ? 'online' : 'offline'} · uptime {uptime === null || uptime === undefined ? 'not measured yet' : `${(uptime / 100).toFixed(2)}%`} ·{' '}
        {node.reputation?.vms_hosted ?? 0} VMs hosted
      </p>
      <div className="row">
        {s === 1 && (
          <button type="button" className="secondary" onClick={action('pause', 'Pause')}>
            Pause
          </button>
        )}
        {s === 2 && (
          <button type="button" className="secondary" onClick={action('resume', 'Resume')}>
            Resume
          </button>
        )}
        {(s === 1 || s === 2) && (
          <button type="button" className="secondary" onClick={action('retire', 'Retire (final)')}>
            Retire
          </button>
        )}
      </div>
      <TxPanel tx={tx} />
    </div>
  );
}

/** Optional stake: add (permit or approve), request an unstake, withdraw after the unbonding period. */
function Staking() {
  const config = useAppConfig();
  const client = usePublicClient();
  const { address } = useAccount();
  const { signTypedDataAsync } = useSignTypedData();
  const staking = { address: config.contracts.operatorStaking, abi: operatorStakingAbi } as const;
  const args = address ? ([address] as const) : undefined;
  const active = useReadContract({ ...staking, functionName: 'activeStakeOf', args });
  const unbonding = useReadContract({ ...staking, functionName: 'unbondingOf', args });
  const count = useReadContract({ ...staking, functionName: 'unstakeRequestCount', args });
  const period = useReadContract({ ...staking, functionName: 'unbondingPeriod' });
  const [stake, setStake] = useState('');
  const [unstake, setUnstake] = useState('');
  const [useApprove, setUseApprove] = useState(false);
  const [pendingStake, setPendingStake] = useState<bigint | null>(null);
  const [message, setMessage] = useState<string | null>(null);
  const stakeCall = (micro: bigint) => ({
    label: `Stake ${formatUsdc(micro)}`,
    ...staking,
    abi: operatorStakingAbi as Abi,
    functionName: 'stake',
    args: [micro],
  });
  const tx = useTx(() => {
    if (pendingStake !== null) {
      const micro = pendingStake;
      setPendingStake(null);
      void tx.prepare(stakeCall(micro));
    }
  });

  async function submitStake(e: React.FormEvent) {
    e.preventDefault();
    setMessage(null);
    const parsed = parseUsdc(stake);
    if ('error' in parsed) return setMessage(parsed.error);
    if (!client || !address) return;
    if (useApprove) {
      setPendingStake(parsed.micro);
      await tx.prepare({
        label: `Allow staking to take ${formatUsdc(parsed.micro)}`,
        address: config.contracts.usdc,
        abi: usdcAbi as Abi,
        functionName: 'approve',
        args: [config.contracts.operatorStaking, parsed.micro],
      });
      return;
    }
    try {
      const permit = await signPermit(client, signTypedDataAsync as never, {
        token: config.contracts.usdc,
        owner: address,
        spender: config.contracts.operatorStaking,
        value: parsed.micro,
        chainId: config.chainId,
      });
      await tx.prepare({
        label: `Stake ${formatUsdc(parsed.micro)}`,
        ...staking,
        abi: operatorStakingAbi as Abi,
        functionName: 'stakeWithPermit',
        args: [parsed.micro, permit.deadline, permit.v, permit.r, permit.s],
      });
    } catch (err) {
      setMessage(cannotSignPermits(err) ? 'Your wallet cannot sign permits: choose “Approve, then stake”.' : explainError(err));
    }
  }

  async function submitUnstake(e: React.FormEvent) {
    e.preventDefault();
    setMessage(null);
    const parsed = parseUsdc(unstake);
    if ('error' in parsed) return setMessage(parsed.error);
    await tx.prepare({
      label: `Start unstaking ${formatUsdc(parsed.micro)}`,
      ...staking,
      abi: operatorStakingAbi as Abi,
      functionName: 'requestUnstake',
      args: [parsed.micro],
    });
  }

  const requests = count.data === undefined ? [] : Array.from({ length: Number(count.data) }, (_, i) => BigInt(i));
  return (
    <section className="card" aria-labelledby="stake-heading">
      <h2 id="stake-heading">Stake</h2>
      <p className="muted">
        Optional. Stake above the premium threshold marks your nodes as premium; nothing can take it but your own withdrawal, after an
        unbonding period of {period.data === undefined ? '…' : `${Number(period.data) / 86_400} days`}.
      </p>
      <dl className="figures">
        <div>
          <dt>Active stake</dt>
          <dd data-testid="active-stake">{active.data === undefined ? '…' : formatUsdc(active.data)}</dd>
        </div>
        <div>
          <dt>Unbonding</dt>
          <dd data-testid="unbonding">{unbonding.data === undefined ? '…' : formatUsdc(unbonding.data)}</dd>
        </div>
      </dl>
      <form onSubmit={(e) => void submitStake(e)}>
        <label>
          Stake (USDC)
          <input name="stake" inputMode="decimal" value={stake} onChange={(e) => setStake(e.target.value)} />
        </label>
        <label className="check">
          <input type="checkbox" checked={useApprove} onChange={(e) => setUseApprove(e.target.checked)} />
          Approve, then stake (two transactions)
        </label>
        <button type="submit">Review stake</button>
      </form>
      <form onSubmit={(e) => void submitUnstake(e)}>
        <label>
          Unstake (USDC)
          <input name="unstake" inputMode="decimal" value={unstake} onChange={(e) => setUnstake(e.target.value)} />
        </label>
        <button type="submit">Review unstake</button>
      </form>
      {requests.length > 0 && (
        <ul aria-label="Unstake requests">
          {requests.map((id) => (
            <UnstakeRequestRow key={id.toString()} id={id} owner={address as Address} onWithdraw={(call) => void tx.prepare(call)} />
          ))}
        </ul>
      )}
      {message && (
        <p className="error" role="alert">
          {message}
        </p>
      )}
      <TxPanel tx={tx} />
    </section>
  );
}

function UnstakeRequestRow({
  id,
  owner,
  onWithdraw,
}: {
  id: bigint;
  owner: Address;
  onWithdraw: (call: { label: string; address: Address; abi: Abi; functionName: string; args: readonly unknown[] }) => void;
}) {
  const config = useAppConfig();
  const staking = { address: config.contracts.operatorStaking, abi: operatorStakingAbi } as const;
  const request = useReadContract({ ...staking, functionName: 'unstakeRequest', args: [owner, id] });
  if (!request.data) return <li>…</li>;
  const r = request.data;
  return (
    <li data-testid={`unstake-request-${id}`}>
      {formatUsdc(r.amount)}: {r.withdrawn ? 'withdrawn' : `unlocks ${new Date(Number(r.unlockAt) * 1000).toLocaleString()}`}{' '}
      {!r.withdrawn && (
        <button
          type="button"
          className="secondary"
          onClick={() =>
            onWithdraw({
              label: `Withdraw unstaked ${formatUsdc(r.amount)}`,
              ...staking,
              abi: operatorStakingAbi as Abi,
              functionName: 'withdraw',
              args: [id],
            })
          }
        >
          Withdraw
        </button>
      )}
    </li>
  );
}

interface OperatorLease {
  leaseId: string;
  node: string;
  status: string;
  ratePerHour: string;
  operatorPaid: string;
}

/**
 * What the operator's leases have earned and not yet claimed, per node and lease, read from the
 * escrow contract (the list of leases from the indexer), with one claim for all of them.
 */
function Earnings() {
  const config = useAppConfig();
  const { address } = useAccount();
  const leases = useIndexer<{ leases: OperatorLease[] }>(
    `query($operator: Bytes!) { leases(first: ${INDEXER_PAGE}, where: { operator: $operator }, orderBy: leaseId, orderDirection: asc) { leaseId node status ratePerHour operatorPaid } }`,
    { operator: address ?? '0x' },
  );
  const list = leases.data?.leases ?? [];
  const escrow = { address: config.contracts.leaseEscrow, abi: leaseEscrowAbi } as const;
  const fee = useReadContract({ ...escrow, functionName: 'platformFeeBps' });
  const claimables = useReadContracts(list.map((l) => BigInt(l.leaseId)));
  const tx = useTx();
  const total = claimables.reduce<bigint>((t, c) => t + (c ?? 0n), 0n);
  const claimIds = list.filter((_, i) => (claimables[i] ?? 0n) > 0n).map((l) => BigInt(l.leaseId));
  const byNode = new Map<string, OperatorLease[]>();
  for (const l of list) byNode.set(l.node, [...(byNode.get(l.node) ?? []), l]);
  return (
    <section className="card" aria-labelledby="earnings-heading">
      <h2 id="earnings-heading">Earnings</h2>
      {leases.error && <p className="error">{leases.error.message}</p>}
      {list.length === 0 && <p className="muted">No lease on your nodes yet.</p>}
      {[...byNode.entries()].map(([node, nodeLeases]) => (
        <div key={node}>
          <h3 className="mono">Node {shortHex(node)}</h3>
          <TableWrap label={`Leases on node ${shortHex(node)}`}>
            <table>
              <thead>
                <tr>
                  <th scope="col">Lease</th>
                  <th scope="col">Status</th>
                  <th scope="col">Rate</th>
                  <th scope="col">Paid to you</th>
                  <th scope="col">Claimable now</th>
                </tr>
              </thead>
              <tbody>
                {nodeLeases.map((l) => {
                  const claimable = claimables[list.indexOf(l)];
                  return (
                    <tr key={l.leaseId} data-testid={`earning-${l.leaseId}`}>
                      <td>{l.leaseId}</td>
                      <td>{l.status}</td>
                      <td>{formatUsdc(l.ratePerHour)}/h</td>
                      <td>{formatUsdc(l.operatorPaid)}</td>
                      <td data-testid="claimable">{claimable === undefined ? '…' : formatUsdc(claimable)}</td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </TableWrap>
        </div>
      ))}
      {list.length > 0 && (
        <>
          <p>
            Claimable in total: <strong data-testid="claimable-total">{formatUsdc(total)}</strong>
            {fee.data !== undefined && <span className="muted"> (after the platform fee the leases were opened with)</span>}
          </p>
          <button
            type="button"
            disabled={claimIds.length === 0}
            onClick={() =>
              void tx.prepare({
                label: `Claim ${formatUsdc(total)} from ${claimIds.length} lease${claimIds.length === 1 ? '' : 's'}`,
                ...escrow,
                abi: leaseEscrowAbi as Abi,
                functionName: 'claim',
                args: [claimIds],
              })
            }
          >
            Claim all
          </button>
          <TxPanel tx={tx} />
        </>
      )}
    </section>
  );
}

/** `claimableOf` of each lease, refreshed as time accrues. */
function useReadContracts(ids: bigint[]): (bigint | undefined)[] {
  const config = useAppConfig();
  const client = usePublicClient();
  const key = ids.map(String).join(',');
  const result = useQuery({
    queryKey: ['claimable', config.contracts.leaseEscrow, key],
    enabled: !!client && ids.length > 0,
    refetchInterval: 5_000,
    queryFn: () =>
      Promise.all(
        ids.map((id) => client!.readContract({ address: config.contracts.leaseEscrow, abi: leaseEscrowAbi, functionName: 'claimableOf', args: [id] })),
      ),
  });
  return ids.map((_, i) => result.data?.[i]);
}
