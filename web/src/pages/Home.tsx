import { useAppConfig } from '../lib/appConfig';
import { formatUsdc, shortHex } from '../lib/format';
import { INDEXER_PAGE, useIndexer } from '../lib/indexer';
import { useNodes } from '../lib/queries';

export function HomePage() {
  const config = useAppConfig();
  const nodes = useNodes();
  const online = nodes.data?.nodes.filter((n) => n.reputation?.online).length;
  const chain = useIndexer<{
    leases: { ratePerHour: string }[];
    accounts: { balance: string }[];
    templates: { id: string }[];
    _meta: { block: { number: number } };
  }>(
    `{ leases(first: ${INDEXER_PAGE}, where: { status: "Active" }) { ratePerHour }
       accounts(first: ${INDEXER_PAGE}, where: { balance_gt: "0" }) { balance }
       templates(first: ${INDEXER_PAGE}) { id }
       _meta { block { number } } }`,
  );
  const count = (list: unknown[] | undefined) => (list === undefined ? '…' : `${list.length >= INDEXER_PAGE ? 'at least ' : ''}${list.length}`);
  const sum = (values: string[] | undefined) => (values === undefined ? undefined : values.reduce((t, v) => t + BigInt(v), 0n));
  const hourly = sum(chain.data?.leases.map((l) => l.ratePerHour));
  const escrowed = sum(chain.data?.accounts.map((a) => a.balance));
  return (
    <>
      <h1>The DeCloud network</h1>
      <p>Rent virtual machines from independent operators, paid by the second in USDC from an escrow only you and the contracts control.</p>
      <dl className="figures">
        <div>
          <dt>Chain</dt>
          <dd>{config.chainId}</dd>
        </div>
        <div>
          <dt>Active nodes</dt>
          <dd data-testid="total-nodes">{nodes.data ? nodes.data.total : '…'}</dd>
        </div>
        <div>
          <dt>Online now</dt>
          <dd>{online ?? '…'}</dd>
        </div>
        <div>
          <dt>Active leases</dt>
          <dd data-testid="active-leases">{count(chain.data?.leases)}</dd>
        </div>
        <div>
          <dt>Paid per hour, all leases</dt>
          <dd data-testid="hourly-spend">{hourly === undefined ? '…' : formatUsdc(hourly)}</dd>
        </div>
        <div>
          <dt>Free balances in escrow</dt>
          <dd data-testid="escrowed">{escrowed === undefined ? '…' : formatUsdc(escrowed)}</dd>
        </div>
        <div>
          <dt>Templates on-chain</dt>
          <dd>{count(chain.data?.templates)}</dd>
        </div>
      </dl>
      {nodes.error && <p className="error">{nodes.error.message}</p>}
      {chain.error && <p className="error">{chain.error.message}</p>}
      {chain.data && <p className="muted">Chain state from the indexer, at block {chain.data._meta.block.number}.</p>}
      <section className="card" aria-labelledby="contracts-heading">
        <h2 id="contracts-heading">Contracts</h2>
        <dl>
          {Object.entries(config.contracts).map(([name, address]) => (
            <div key={name} className="kv">
              <dt>{name}</dt>
              <dd className="mono" title={address}>
                {shortHex(address)}
              </dd>
            </div>
          ))}
        </dl>
      </section>
    </>
  );
}
