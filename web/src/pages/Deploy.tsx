import { useQuery } from '@tanstack/react-query';
import { useMemo, useState } from 'react';
import { useNavigate } from 'react-router-dom';
import { type Abi, type Hex, parseEventLogs } from 'viem';
import { useAccount, useReadContract } from 'wagmi';
import { leaseEscrowAbi, templateMarketAbi } from '../abi/generated';
import { ProfilePanel } from '../components/ProfilePanel';
import { apiFetch, type TemplateRecord } from '../lib/api';
import { useAppConfig } from '../lib/appConfig';
import { useBalances } from '../lib/contracts';
import { explainError } from '../lib/errors';
import { formatDuration, formatUsdc, parseUsdc, shortHex } from '../lib/format';
import { useApi, useNodes } from '../lib/queries';
import { BANDWIDTH_TIERS, QUALITY_TIERS } from '../lib/tiers';
import { TxPanel, useTx } from '../lib/tx';

const SCHEDULER = 'scheduler';

/** `POST /scheduler/plan`: where the VM goes, and why that node (`why`, compared in this order). */
interface Placement {
  node_id: string;
  price_per_hour: number;
  compute_units: number;
  why: {
    uptime_bps?: number | null;
    free_compute_units_after: number;
    considered: number;
    fitting: number;
  };
}

export function DeployPage() {
  const config = useAppConfig();
  const navigate = useNavigate();
  const { isConnected } = useAccount();
  const { escrow } = useBalances();
  const nodes = useNodes('online_only=true&sort=price');
  const templates = useApi<{ templates: TemplateRecord[] } | TemplateRecord[]>('/templates');
  const [node, setNode] = useState<string>(SCHEDULER);
  const [template, setTemplate] = useState<string>('');
  const [vcpus, setVcpus] = useState('1');
  const [memory, setMemory] = useState('1');
  const [storage, setStorage] = useState('2');
  const [quality, setQuality] = useState(3);
  const [bandwidth, setBandwidth] = useState(0);
  const [funding, setFunding] = useState('5');
  const [message, setMessage] = useState<string | null>(null);

  const onChainTemplates = useMemo(() => {
    const list = Array.isArray(templates.data) ? templates.data : (templates.data?.templates ?? []);
    return list.filter((t) => t.template_id !== null && t.template_id !== undefined);
  }, [templates.data]);

  const resources = useMemo(() => {
    const n = [vcpus, memory, storage].map((v) => Number(v));
    if (!n.every((x) => Number.isInteger(x) && x >= 1 && x <= 4096)) return null;
    return { vcpus: n[0], memoryGiB: n[1], storageGiB: n[2], gpus: 0 };
  }, [vcpus, memory, storage]);

  // Letting the scheduler choose: the orchestrator's plan for these resources.
  const plan = useQuery({
    queryKey: ['plan', resources, quality],
    enabled: node === SCHEDULER && resources !== null,
    queryFn: () =>
      apiFetch<Placement>(config.apiUrl, '/scheduler/plan', {
        method: 'POST',
        body: JSON.stringify({
          vcpus: resources!.vcpus,
          memory_gib: resources!.memoryGiB,
          disk_gib: resources!.storageGiB,
          tier: QUALITY_TIERS[quality].key,
        }),
      }),
    retry: false,
  });
  const chosenNode = node === SCHEDULER ? plan.data?.node_id : node;

  // The live rate, from the contract itself: what the lease will pay if opened now.
  const quote = useReadContract({
    address: config.contracts.leaseEscrow,
    abi: leaseEscrowAbi,
    functionName: 'quoteRate',
    args: chosenNode && resources ? [chosenNode as Hex, resources, quality, bandwidth] : undefined,
    query: { enabled: !!chosenNode && !!resources, refetchInterval: 10_000 },
  });
  const templateId = template ? BigInt(template) : 0n;
  const templateOnChain = useReadContract({
    address: config.contracts.templateMarket,
    abi: templateMarketAbi,
    functionName: 'getTemplate',
    args: [templateId],
    query: { enabled: templateId > 0n },
  });
  const templatePrice = templateId > 0n ? templateOnChain.data?.price : 0n;
  const parsedFunding = parseUsdc(funding);
  const fundingMicro = 'micro' in parsedFunding ? parsedFunding.micro : null;
  const rate = quote.data;

  const tx = useTx((receipt) => {
    const [opened] = parseEventLogs({ abi: leaseEscrowAbi, logs: receipt.logs, eventName: 'LeaseOpened' });
    if (opened) navigate(`/leases/${opened.args.leaseId.toString()}`);
  });

  async function submit(e: React.FormEvent) {
    e.preventDefault();
    setMessage(null);
    if (!resources) return setMessage('vCPUs, memory and storage must be whole numbers of at least 1.');
    if (!chosenNode) return setMessage('Choose a node, or wait for the scheduler to find one.');
    if ('error' in parsedFunding) return setMessage(`Funding: ${parsedFunding.error}`);
    if (rate === undefined || templatePrice === undefined) return setMessage('The price is still loading.');
    await tx.prepare({
      label: `Open a lease on ${shortHex(chosenNode)} at ${formatUsdc(rate)} per hour, funded with ${formatUsdc(parsedFunding.micro)}`,
      address: config.contracts.leaseEscrow,
      abi: leaseEscrowAbi as Abi,
      functionName: 'openLease',
      // The quoted rate is the most the tenant accepts: if the node's price rises before the
      // transaction lands, the contract refuses instead of charging more.
      args: [chosenNode, resources, quality, bandwidth, templateId, templatePrice, rate, parsedFunding.micro],
    });
  }

  if (!isConnected) return <p className="muted">Connect a wallet to deploy a VM.</p>;
  const nodeList = nodes.data?.nodes ?? [];
  return (
    <>
      <h1>Deploy a VM</h1>
      <section className="card" aria-label="VM access">
        <ProfilePanel />
      </section>
      <form className="card" onSubmit={(e) => void submit(e)} aria-label="Deploy a VM">
        <div className="grid2">
          <label>
            Node
            <select name="node" value={node} onChange={(e) => setNode(e.target.value)}>
              <option value={SCHEDULER}>Let the scheduler choose</option>
              {nodeList.map((n) => (
                <option key={n.node_id} value={n.node_id}>
                  {shortHex(n.node_id)} · {n.region || 'no region'} · {n.reputation?.online ? 'online' : 'offline'}
                </option>
              ))}
            </select>
          </label>
          <label>
            Template
            <select name="template" value={template} onChange={(e) => setTemplate(e.target.value)}>
              <option value="">None (a plain VM)</option>
              {onChainTemplates.map((t) => (
                <option key={String(t.template_id)} value={String(t.template_id)}>
                  {t.name ?? t.slug} (#{String(t.template_id)})
                </option>
              ))}
            </select>
          </label>
          <label>
            vCPUs
            <input name="vcpus" inputMode="numeric" value={vcpus} onChange={(e) => setVcpus(e.target.value)} />
          </label>
          <label>
            Memory (GiB)
            <input name="memory" inputMode="numeric" value={memory} onChange={(e) => setMemory(e.target.value)} />
          </label>
          <label>
            Storage (GiB)
            <input name="storage" inputMode="numeric" value={storage} onChange={(e) => setStorage(e.target.value)} />
          </label>
          <label>
            Funding (USDC)
            <input name="funding" inputMode="decimal" value={funding} onChange={(e) => setFunding(e.target.value)} />
          </label>
        </div>
        <fieldset>
          <legend>Quality tier</legend>
          {QUALITY_TIERS.map((t) => (
            <label key={t.value} className="check">
              <input type="radio" name="quality" checked={quality === t.value} onChange={() => setQuality(t.value)} />
              <span>
                <strong>{t.name}</strong>: {t.words}
              </span>
            </label>
          ))}
        </fieldset>
        <fieldset>
          <legend>Bandwidth tier</legend>
          {BANDWIDTH_TIERS.map((t) => (
            <label key={t.value} className="check">
              <input type="radio" name="bandwidth" checked={bandwidth === t.value} onChange={() => setBandwidth(t.value)} />
              <span>
                <strong>{t.name}</strong>: {t.words}
              </span>
            </label>
          ))}
        </fieldset>
        <div className="review" aria-live="polite" data-testid="quote">
          {node === SCHEDULER && plan.error && <p className="error">No node fits: {explainError(plan.error)}</p>}
          {node === SCHEDULER && plan.data && <PlanWhy plan={plan.data} />}
          {quote.error && <p className="error">{explainError(quote.error)}</p>}
          {rate !== undefined && (
            <>
              <p>
                Rate: <strong data-testid="rate">{formatUsdc(rate)}</strong> per hour (from the contract, now).
              </p>
              {templateId > 0n && templatePrice !== undefined && <p>Template: {formatUsdc(templatePrice)}, paid once.</p>}
              {fundingMicro !== null && rate > 0n && (
                <p>
                  {formatUsdc(fundingMicro)} lasts {formatDuration(Number((fundingMicro * 3600n) / rate))}.
                </p>
              )}
            </>
          )}
          {escrow !== undefined && <p className="muted">Your escrow balance: {formatUsdc(escrow)}.</p>}
        </div>
        <button type="submit" disabled={tx.phase === 'simulating' || tx.phase === 'sending'}>
          Review lease
        </button>
        {message && (
          <p className="error" role="alert">
            {message}
          </p>
        )}
        <TxPanel tx={tx} />
      </form>
    </>
  );
}

/**
 * The scheduler's choice in words. It prefers the lowest price, then the highest uptime, then
 * the most compute left free: the numbers shown are the ones it compared.
 */
function PlanWhy({ plan }: { plan: Placement }) {
  const { why } = plan;
  const uptime = why.uptime_bps == null ? 'not measured yet' : `${(why.uptime_bps / 100).toFixed(2)}%`;
  return (
    <div data-testid="plan">
      <p>The scheduler chose node {shortHex(plan.node_id)}.</p>
      <p className="muted" data-testid="plan-why">
        Why: of {why.considered} node{why.considered === 1 ? '' : 's'} considered, {why.fitting} fit{why.fitting === 1 ? 's' : ''} this VM; this one
        asks the lowest price ({formatUsdc(plan.price_per_hour)} per hour), then has the best 30-day uptime ({uptime}), then keeps the most
        compute free ({why.free_compute_units_after} compute units after this VM).
      </p>
    </div>
  );
}
