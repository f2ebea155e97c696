import { useState } from 'react';
import { type Abi, parseEventLogs } from 'viem';
import { useAccount, useReadContract } from 'wagmi';
import { templateMarketAbi } from '../abi/generated';
import { ApiError, apiFetch } from '../lib/api';
import { useAppConfig } from '../lib/appConfig';
import { explainError } from '../lib/errors';
import { formatUsdc, parseUsdc } from '../lib/format';
import { INDEXER_PAGE, useIndexer } from '../lib/indexer';
import { useSession } from '../lib/session';
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

/** `POST /templates/drafts`: the bundle stored in the orchestrator's content store under its CID. */
interface DraftView {
  cid: string;
  author: string;
  slug: string;
  name: string;
  created_at: number;
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
  const { session } = useSession();
  const [storing, setStoring] = useState(false);
  const [stored, setStored] = useState<string | null>(null);
  const [armed, setArmed] = useState<string | null>(null);
  const tx = useTx((receipt) => {
    const [event] = parseEventLogs({ abi: templateMarketAbi, logs: receipt.logs, eventName: 'TemplatePublished' });
    if (event) setCreated(event.args.templateId.toString());
    onDone?.();
  });
  const suffix = templateId ? `-${templateId}` : '';

  async function read(file: File | undefined, set: (text: string | null) => void) {
    setVerdict(null);
    setStored(null);
    setArmed(null);
    tx.cancel();
    set(file ? await file.text() : null);
  }

  async function check(e: React.FormEvent) {
    e.preventDefault();
    setError(null);
    setVerdict(null);
    setStored(null);
    setArmed(null);
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

  /**
   * Stores the checked bundle as the author's draft: the orchestrator keeps it in its content
   * store under its CID, which is how nodes get a published template's bundle. Storing the same
   * bundle again changes nothing. Returns whether it is stored.
   */
  async function storeDraft(): Promise<boolean> {
    if (!verdict?.valid) return false;
    if (stored === verdict.cid) return true;
    if (!session) {
      setError('Sign in on the Account page first: the orchestrator stores the bundle for your session, so that nodes can fetch it by its content id.');
      return false;
    }
    setStoring(true);
    try {
      const draft = await apiFetch<DraftView>(config.apiUrl, '/templates/drafts', { method: 'POST', body: verdict.content, token: session.token });
      if (draft.cid !== verdict.cid) {
        setError(`The orchestrator stored the bundle as ${draft.cid}, not the ${verdict.cid} the validator named: check the bundle again before publishing.`);
        return false;
      }
      setStored(draft.cid);
      return true;
    } catch (e) {
      setError(e instanceof ApiError && e.status === 401 ? 'Your session has ended: sign in again on the Account page.' : `The bundle was not stored: ${explainError(e)}`);
      return false;
    } finally {
      setStoring(false);
    }
  }

  async function testDeploy() {
    setError(null);
    setArmed(null);
    if (!verdict?.valid || !(await storeDraft())) return;
    try {
      const answer = await apiFetch<{ cid: string; next: string }>(config.apiUrl, `/templates/drafts/${encodeURIComponent(verdict.cid)}/test`, {
        method: 'POST',
        token: session?.token,
      });
      setArmed(`Draft ${answer.cid} is armed: ${answer.next}.`);
    } catch (e) {
      setError(`The draft cannot be test-deployed: ${explainError(e)}`);
    }
  }

  async function review() {
    setError(null);
    const parsed = parseUsdc(price);
    if ('error' in parsed) return setError(`Price: ${parsed.error}`);
    if (!verdict?.valid) return;
    // Published content nobody can fetch would leave the template undeployable: the bundle is
    // stored first, and nothing is signed unless that worked.
    if (!(await storeDraft())) return;
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
                Content id <span className="mono" data-testid={`verdict-cid${suffix}`}>{verdict.cid}</span>. Before anything is signed, the
                bundle is stored as your draft in the orchestrator’s content store, from which nodes fetch it by this id.{' '}
                {download && (
                  <a href={download} download={`${verdict.slug}.bundle.json`}>
                    Download the bundle
                  </a>
                )}{' '}
                to pin it elsewhere too (e.g. <code>ipfs add --cid-version=1</code>).
              </p>
              {stored === verdict.cid && (
                <p className="ok" role="status" data-testid={`draft-stored${suffix}`}>
                  Stored as your draft {stored}.
                </p>
              )}
              {armed && (
                <p role="status" data-testid={`draft-armed${suffix}`}>
                  {armed}
                </p>
              )}
              <div className="row">
                <button type="button" className="secondary" onClick={() => void testDeploy()} disabled={storing}>
                  Test-deploy this draft
                </button>
                <button type="button" onClick={() => void review()} disabled={storing || tx.phase === 'simulating' || tx.phase === 'sending'}>
                  {templateId ? 'Review update' : 'Review publication'}
                </button>
              </div>
              <p className="muted">Test-deploy: your next lease opened without a template runs this draft, before anyone else can deploy it.</p>
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
