import { useState } from 'react';
import { type Abi, parseEventLogs } from 'viem';
import { useAccount, useReadContract } from 'wagmi';
import { templateMarketAbi } from '../abi/generated';
import { apiFetch } from '../lib/api';
import { useAppConfig } from '../lib/appConfig';
import { explainError } from '../lib/errors';
import { formatUsdc, parseUsdc } from '../lib/format';
import { INDEXER_PAGE, useIndexer } from '../lib/indexer';
import { TxPanel, useTx } from '../lib/tx';

/** The validator's verdict (`POST /templates/validate`). */
interface Verdict {
  valid: boolean;
  rejections: { rule: string; reason: string; file: string; line: number | null; path: string | null }[];
  name: string;
  slug: string;
  category: string;
  cid: string;
  content: string;
  metadata: string;
}

interface AuthoredTemplate {
  templateId: string;
  cid: string;
  price: string;
  metadata: string;
  deprecated: boolean;
  purchaseCount: string;
  authorEarnings: string;
}

export function AuthorPage() {
  const { isConnected } = useAccount();
  return (
    <>
      <h1>Publish templates</h1>
      {isConnected ? (
        <>
          <BundleForm />
          <MyTemplates />
          <Earnings />
        </>
      ) : (
        <p className="muted">Connect a wallet to publish templates and withdraw their earnings.</p>
      )}
    </>
  );
}

/**
 * A bundle from the author's files checked by the orchestrator's validator; only a bundle that
 * passes can be signed. Publishes a new template, or updates `templateId` when one is given.
 */
function BundleForm({ templateId, onDone }: { templateId?: string; onDone?: () => void }) {
  const config = useAppConfig();
  const market = { address: config.contracts.templateMarket, abi: templateMarketAbi } as const;
  const [manifest, setManifest] = useState<string | null>(null);
  const [userData, setUserData] = useState<string | null>(null);
  const [published, setPublished] = useState<string | null>(null);
  const [price, setPrice] = useState('0');
  const [verdict, setVerdict] = useState<Verdict | null>(null);
  const [checking, setChecking] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [created, setCreated] = useState<string | null>(null);
  const tx = useTx((receipt) => {
    const [event] = parseEventLogs({ abi: templateMarketAbi, logs: receipt.logs, eventName: 'TemplatePublished' });
    if (event) setCreated(event.args.templateId.toString());
    onDone?.();
  });
  const suffix = templateId ? `-${templateId}` : '';

  async function read(file: File | undefined, set: (text: string | null) => void) {
    setVerdict(null);
    tx.cancel();
    set(file ? await file.text() : null);
  }

  async function check(e: React.FormEvent) {
    e.preventDefault();
    setError(null);
    setVerdict(null);
    tx.cancel();
    const body = published !== null ? { content: published } : manifest !== null && userData !== null ? { manifest, user_data: userData } : null;
    if (!body) return setError('Choose template.toml and user-data, or a published bundle file.');
    setChecking(true);
    try {
      setVerdict(await apiFetch<Verdict>(config.apiUrl, '/templates/validate', { method: 'POST', body: JSON.stringify(body) }));
    } catch (e) {
      setError(explainError(e));
    } finally {
      setChecking(false);
    }
  }

  async function review() {
    setError(null);
    const parsed = parseUsdc(price);
    if ('error' in parsed) return setError(`Price: ${parsed.error}`);
    if (!verdict?.valid) return;
    await tx.prepare(
      templateId
        ? {
            label: `Update template ${templateId} to ${verdict.slug} at ${formatUsdc(parsed.micro)} per deploy`,
            ...market,
            abi: templateMarketAbi as Abi,
            functionName: 'update',
            args: [BigInt(templateId), verdict.cid, parsed.micro, verdict.metadata],
          }
        : {
            label: `Publish ${verdict.slug} at ${formatUsdc(parsed.micro)} per deploy`,
            ...market,
            abi: templateMarketAbi as Abi,
            functionName: 'publish',
            args: [verdict.cid, parsed.micro, verdict.metadata],
          },
    );
  }

  const download = verdict ? `data:application/json;charset=utf-8,${encodeURIComponent(verdict.content)}` : null;
  return (
    <form
      className={templateId ? '' : 'card'}
      onSubmit={(e) => void check(e)}
      aria-label={templateId ? `Update template ${templateId}` : 'Publish a template'}
      data-testid={`bundle-form${suffix}`}
    >
      {!templateId && <h2>Publish a template</h2>}
      <div className="grid2">
        <label>
          template.toml
          <input name={`manifest${suffix}`} type="file" accept=".toml,text/plain" onChange={(e) => void read(e.target.files?.[0], setManifest)} />
        </label>
        <label>
          user-data (cloud-init)
          <input name={`user-data${suffix}`} type="file" onChange={(e) => void read(e.target.files?.[0], setUserData)} />
        </label>
        <label>
          Or a published bundle file (.json)
          <input name={`bundle${suffix}`} type="file" accept=".json,application/json" onChange={(e) => void read(e.target.files?.[0], setPublished)} />
        </label>
        <label>
          Price per deploy (USDC)
          <input name={`price${suffix}`} inputMode="decimal" value={price} onChange={(e) => setPrice(e.target.value)} />
        </label>
      </div>
      <button type="submit" disabled={checking}>
        {checking ? 'Checking…' : 'Check with the validator'}
      </button>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      {verdict && (
        <div className="review" data-testid={`verdict${suffix}`} aria-live="polite">
          {verdict.valid ? (
            <>
              <p className="ok">
                <strong>Passes the validator:</strong> {verdict.name} ({verdict.slug}, {verdict.category})
              </p>
              <p>
                Content id <span className="mono" data-testid={`verdict-cid${suffix}`}>{verdict.cid}</span>.{' '}
                {download && (
                  <a href={download} download={`${verdict.slug}.bundle.json`}>
                    Download the bundle
                  </a>
                )}{' '}
                to pin it under this id (e.g. <code>ipfs add --cid-version=1</code>): nodes fetch it by its id.
              </p>
              <button type="button" onClick={() => void review()} disabled={tx.phase === 'simulating' || tx.phase === 'sending'}>
                {templateId ? 'Review update' : 'Review publication'}
              </button>
            </>
          ) : (
            <>
              <p className="error" role="alert">
                <strong>Refused by the validator</strong>: nothing can be signed until every reason is fixed.
              </p>
              <ul data-testid={`rejections${suffix}`}>
                {verdict.rejections.map((r, i) => (
                  <li key={i}>
                    <span className="mono">
                      {r.file}
                      {r.line ? `:${r.line}` : ''}
                      {r.path ? ` (${r.path})` : ''}
                    </span>{' '}
                    [{r.rule}] {r.reason}
                  </li>
                ))}
              </ul>
            </>
          )}
        </div>
      )}
      <TxPanel tx={tx} />
      {created && (
        <p className="ok" role="status" data-testid="published-id">
          Published as template {created}.
        </p>
      )}
    </form>
  );
}

/** The connected author's templates, from the indexer, with update and deprecate. */
function MyTemplates() {
  const { address } = useAccount();
  const templates = useIndexer<{ templates: AuthoredTemplate[] }>(
    `query($author: Bytes!) { templates(first: ${INDEXER_PAGE}, where: { author: $author }, orderBy: templateId, orderDirection: asc) { templateId cid price metadata deprecated purchaseCount authorEarnings } }`,
    { author: (address ?? '0x').toLowerCase() },
  );
  const list = templates.data?.templates ?? [];
  return (
    <section className="card" aria-labelledby="mine-heading">
      <h2 id="mine-heading">Your templates</h2>
      {templates.error && <p className="error">{templates.error.message}</p>}
      {list.length === 0 && !templates.error && <p className="muted">None published from this wallet yet.</p>}
      {list.map((t) => (
        <AuthoredRow key={t.templateId} template={t} />
      ))}
    </section>
  );
}

function AuthoredRow({ template }: { template: AuthoredTemplate }) {
  const config = useAppConfig();
  const market = { address: config.contracts.templateMarket, abi: templateMarketAbi } as const;
  const id = BigInt(template.templateId);
  // The chain is the truth; the indexer's row may be a block behind.
  const onChain = useReadContract({ ...market, functionName: 'getTemplate', args: [id], query: { refetchInterval: 5_000 } });
  const [updating, setUpdating] = useState(false);
  const tx = useTx();
  let name = `template ${template.templateId}`;
  try {
    name = (JSON.parse(template.metadata) as { name?: string }).name ?? name;
  } catch {
    // Metadata written by another client may not be JSON: the id names it then.
  }
  const t = onChain.data;
  return (
    <div className="node-row" data-testid={`template-${template.templateId}`}>
      <h3>
        #{template.templateId} {name} · <span data-testid="template-status">{t ? (t.deprecated ? 'deprecated' : 'listed') : '…'}</span>
      </h3>
      {t && (
        <p className="muted">
          {formatUsdc(t.price)} per deploy · {t.purchaseCount.toString()} deploy(s) · content <span className="mono">{t.cid}</span>
        </p>
      )}
      {t && !t.deprecated && (
        <div className="row">
          <button type="button" className="secondary" onClick={() => setUpdating(!updating)} aria-expanded={updating}>
            Update
          </button>
          <button
            type="button"
            className="secondary"
            onClick={() =>
              void tx.prepare({ label: `Deprecate template ${template.templateId}`, ...market, abi: templateMarketAbi as Abi, functionName: 'deprecate', args: [id] })
            }
          >
            Deprecate
          </button>
        </div>
      )}
      <TxPanel tx={tx} />
      {updating && t && !t.deprecated && <BundleForm templateId={template.templateId} onDone={() => setUpdating(false)} />}
    </div>
  );
}

/** What the author's templates earned (TemplateMarket's `earningsOf`), withdrawn to the wallet. */
function Earnings() {
  const config = useAppConfig();
  const { address } = useAccount();
  const market = { address: config.contracts.templateMarket, abi: templateMarketAbi } as const;
  const earned = useReadContract({ ...market, functionName: 'earningsOf', args: address ? [address] : undefined, query: { enabled: !!address, refetchInterval: 5_000 } });
  const tx = useTx();
  return (
    <section className="card" aria-labelledby="author-earnings-heading">
      <h2 id="author-earnings-heading">Template earnings</h2>
      <p>
        Withdrawable: <strong data-testid="author-earnings">{earned.data !== undefined ? formatUsdc(earned.data) : '…'}</strong>
      </p>
      <button
        type="button"
        disabled={!address || !earned.data}
        onClick={() =>
          void tx.prepare({
            label: `Withdraw ${formatUsdc(earned.data ?? 0n)} of template earnings`,
            ...market,
            abi: templateMarketAbi as Abi,
            functionName: 'withdrawEarnings',
            args: [address!],
          })
        }
      >
        Withdraw earnings
      </button>
      <TxPanel tx={tx} />
    </section>
  );
}
