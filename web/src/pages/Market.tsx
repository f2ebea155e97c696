import { useState } from 'react';
import { Link, useParams } from 'react-router-dom';
import { Rating, ReviewList } from '../components/Reviews';
import type { NodeListing, NodeSearchResponse, RatingSummary, TemplateRecord } from '../lib/api';
import { formatUsdc, parseUsdc, shortHex } from '../lib/format';
import { useApi } from '../lib/queries';
import { TableWrap } from '../components/TableWrap';

const uptime = (bps: number | null | undefined) => (bps === null || bps === undefined ? 'not measured yet' : `${(bps / 100).toFixed(2)}%`);

/** The node marketplace: every filter and sort `/nodes` has, and the featured nodes. */
export function NodesPage() {
  const [filters, setFilters] = useState({ tags: '', region: '', maxPrice: '', minUptime: '', minPoints: '', gpu: '', online: false, sort: 'uptime' });
  const [error, setError] = useState<string | null>(null);
  const [query, setQuery] = useState('sort=uptime');
  const nodes = useApi<NodeSearchResponse>(`/nodes?${query}`);
  const featured = useApi<NodeListing[] | NodeSearchResponse>('/nodes/featured');
  const featuredList = Array.isArray(featured.data) ? featured.data : (featured.data?.nodes ?? []);
  const set = (key: keyof typeof filters) => (e: React.ChangeEvent<HTMLInputElement | HTMLSelectElement>) =>
    setFilters({ ...filters, [key]: e.target instanceof HTMLInputElement && e.target.type === 'checkbox' ? e.target.checked : e.target.value });

  function apply(e: React.FormEvent) {
    e.preventDefault();
    setError(null);
    const params = new URLSearchParams();
    if (filters.tags.trim()) params.set('tags', filters.tags.trim());
    if (filters.region.trim()) params.set('region', filters.region.trim());
    if (filters.maxPrice.trim()) {
      const parsed = parseUsdc(filters.maxPrice);
      if ('error' in parsed) return setError(`Highest CPU price: ${parsed.error}`);
      params.set('max_price', parsed.micro.toString());
    }
    if (filters.minUptime.trim()) {
      const pct = Number(filters.minUptime);
      if (!(pct >= 0 && pct <= 100)) return setError('Lowest uptime is a percentage from 0 to 100.');
      params.set('min_uptime', Math.round(pct * 100).toString());
    }
    if (filters.minPoints.trim()) {
      const points = Number(filters.minPoints);
      if (!Number.isInteger(points) || points < 0) return setError('Lowest compute points is a whole number.');
      params.set('min_compute_points', String(points));
    }
    if (filters.gpu) params.set('gpu', filters.gpu);
    if (filters.online) params.set('online_only', 'true');
    params.set('sort', filters.sort);
    setQuery(params.toString());
  }

  return (
    <>
      <h1>Nodes</h1>
      {featuredList.length > 0 && (
        <section className="card" aria-labelledby="featured-heading">
          <h2 id="featured-heading">Featured (above 95% uptime)</h2>
          <ul>
            {featuredList.map((n) => (
              <li key={n.node_id}>
                <Link to={`/nodes/${n.node_id}`} className="mono">
                  {shortHex(n.node_id)}
                </Link>{' '}
                {n.region} · {uptime(n.reputation?.uptime_bps)}
              </li>
            ))}
          </ul>
        </section>
      )}
      <form className="card" onSubmit={apply} aria-label="Filter nodes">
        <div className="grid2">
          <label>
            Tags (all of, comma-separated)
            <input name="tags" value={filters.tags} onChange={set('tags')} />
          </label>
          <label>
            Region
            <input name="region" value={filters.region} onChange={set('region')} />
          </label>
          <label>
            Highest CPU price (USDC per vCPU-hour)
            <input name="max-price" inputMode="decimal" value={filters.maxPrice} onChange={set('maxPrice')} />
          </label>
          <label>
            Lowest 30-day uptime (%)
            <input name="min-uptime" inputMode="decimal" value={filters.minUptime} onChange={set('minUptime')} />
          </label>
          <label>
            Lowest compute points
            <input name="min-points" inputMode="numeric" value={filters.minPoints} onChange={set('minPoints')} />
          </label>
          <label>
            GPU
            <select name="gpu" value={filters.gpu} onChange={set('gpu')}>
              <option value="">Any</option>
              <option value="true">With a GPU</option>
              <option value="false">Without</option>
            </select>
          </label>
          <label>
            Sort by
            <select name="sort" value={filters.sort} onChange={set('sort')}>
              <option value="uptime">Uptime</option>
              <option value="price">Price</option>
              <option value="capacity">Free capacity</option>
            </select>
          </label>
        </div>
        <label className="check">
          <input type="checkbox" checked={filters.online} onChange={set('online')} />
          Online now only
        </label>
        <button type="submit">Search</button>
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
      </form>
      {nodes.error && <p className="error">{nodes.error.message}</p>}
      {nodes.data && (
        <section aria-labelledby="results-heading">
          <h2 id="results-heading">
            <span data-testid="node-total">{nodes.data.total}</span> node{nodes.data.total === 1 ? '' : 's'}
          </h2>
          <TableWrap label="Nodes found">
            <table>
              <thead>
                <tr>
                  <th scope="col">Node</th>
                  <th scope="col">Region</th>
                  <th scope="col">CPU price</th>
                  <th scope="col">Free</th>
                  <th scope="col">Uptime</th>
                </tr>
              </thead>
              <tbody>
                {nodes.data.nodes.map((n) => (
                  <tr key={n.node_id}>
                    <td>
                      <Link to={`/nodes/${n.node_id}`} className="mono">
                        {shortHex(n.node_id)}
                      </Link>
                      {n.reputation?.online ? ' · online' : ' · offline'}
                    </td>
                    <td>{n.region}</td>
                    <td>{formatUsdc(n.prices.cpu_per_hour)}/h</td>
                    <td>
                      {n.free.memory_gib} GiB · {n.free.disk_gib} GiB disk
                    </td>
                    <td>{uptime(n.reputation?.uptime_bps)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </TableWrap>
        </section>
      )}
    </>
  );
}

export function NodePage() {
  const { id = '' } = useParams();
  const node = useApi<NodeListing>(`/nodes/${encodeURIComponent(id)}`);
  const n = node.data;
  return (
    <>
      <h1>
        Node <span className="mono">{shortHex(id)}</span>
      </h1>
      {node.error && <p className="error">{node.error.message}</p>}
      {n && (
        <div className="grid2">
          <section className="card" aria-labelledby="prices-heading">
            <h2 id="prices-heading">Prices</h2>
            <dl>
              <div className="kv">
                <dt>CPU</dt>
                <dd>{formatUsdc(n.prices.cpu_per_hour)} per vCPU-hour</dd>
              </div>
              <div className="kv">
                <dt>Memory</dt>
                <dd>{formatUsdc(n.prices.memory_gib_per_hour)} per GiB-hour</dd>
              </div>
              <div className="kv">
                <dt>Storage</dt>
                <dd>{formatUsdc(n.prices.storage_gib_per_hour)} per GiB-hour</dd>
              </div>
              <div className="kv">
                <dt>GPU</dt>
                <dd>{formatUsdc(n.prices.gpu_per_hour)} per GPU-hour</dd>
              </div>
            </dl>
          </section>
          <section className="card" aria-labelledby="capacity-heading">
            <h2 id="capacity-heading">Capacity and record</h2>
            <dl>
              <div className="kv">
                <dt>Status</dt>
                <dd>{n.status}</dd>
              </div>
              <div className="kv">
                <dt>Region</dt>
                <dd>{n.region}</dd>
              </div>
              <div className="kv">
                <dt>Host</dt>
                <dd>
                  {n.vcpus} vCPUs ({n.compute_points} compute points) · {n.memory_gib} GiB memory · {n.disk_gib} GiB disk · {n.gpus} GPUs
                </dd>
              </div>
              <div className="kv">
                <dt>Free</dt>
                <dd>
                  {n.free.memory_gib} GiB memory · {n.free.disk_gib} GiB disk · {n.free.gpus} GPUs
                </dd>
              </div>
              <div className="kv">
                <dt>30-day uptime</dt>
                <dd>{uptime(n.reputation?.uptime_bps)}</dd>
              </div>
              <div className="kv">
                <dt>Online</dt>
                <dd>{n.reputation?.online ? 'yes' : 'no'}</dd>
              </div>
              <div className="kv">
                <dt>VMs hosted</dt>
                <dd>
                  {n.reputation?.vms_hosted ?? 0} ({n.reputation?.vms_completed ?? 0} completed)
                </dd>
              </div>
              <div className="kv">
                <dt>Operator</dt>
                <dd className="mono">{n.operator}</dd>
              </div>
              <div className="kv">
                <dt>Tenants’ rating</dt>
                <dd>
                  <Rating rating={n.rating} />
                </dd>
              </div>
            </dl>
          </section>
        </div>
      )}
      {n && <ReviewList node={n.node_id} />}
    </>
  );
}

interface TemplateList {
  total: number;
  templates: TemplateRecord[];
}

/** The template catalog: categories, search, GPU, sort. */
export function TemplatesPage() {
  const [category, setCategory] = useState('');
  const [search, setSearch] = useState('');
  const [sort, setSort] = useState('name');
  const [query, setQuery] = useState('sort=name');
  const all = useApi<TemplateList>('/templates?limit=100');
  const templates = useApi<TemplateList>(`/templates?${query}`);
  const categories = [...new Set((all.data?.templates ?? []).map((t) => String(t.category ?? '')).filter(Boolean))].sort();
  function apply(e: React.FormEvent) {
    e.preventDefault();
    const params = new URLSearchParams();
    if (category) params.set('category', category);
    if (search.trim()) params.set('q', search.trim());
    params.set('sort', sort);
    setQuery(params.toString());
  }
  return (
    <>
      <h1>Templates</h1>
      <form className="card" onSubmit={apply} aria-label="Filter templates">
        <div className="grid2">
          <label>
            Search
            <input name="q" value={search} onChange={(e) => setSearch(e.target.value)} />
          </label>
          <label>
            Category
            <select name="category" value={category} onChange={(e) => setCategory(e.target.value)}>
              <option value="">All</option>
              {categories.map((c) => (
                <option key={c} value={c}>
                  {c}
                </option>
              ))}
            </select>
          </label>
          <label>
            Sort by
            <select name="sort" value={sort} onChange={(e) => setSort(e.target.value)}>
              <option value="name">Name</option>
              <option value="newest">Newest</option>
              <option value="price">Price</option>
            </select>
          </label>
        </div>
        <button type="submit">Search</button>
      </form>
      {templates.error && <p className="error">{templates.error.message}</p>}
      {templates.data && (
        <section aria-labelledby="template-results">
          <h2 id="template-results">
            <span data-testid="template-total">{templates.data.total}</span> template{templates.data.total === 1 ? '' : 's'}
          </h2>
          <div className="grid2">
            {templates.data.templates.map((t) => (
              <article className="card" key={String(t.slug)}>
                <h3>
                  <Link to={`/templates/${t.slug}`}>{String(t.name)}</Link>
                </h3>
                <p className="muted">
                  {String(t.category)} · {t.template_id ? `on-chain #${String(t.template_id)}` : 'not published on-chain'} ·{' '}
                  {formatUsdc(Number(t.price ?? 0))}
                </p>
                <p>{String(t.description ?? '')}</p>
              </article>
            ))}
          </div>
        </section>
      )}
    </>
  );
}

export function TemplatePage() {
  const { key = '' } = useParams();
  const template = useApi<TemplateRecord>(`/templates/${encodeURIComponent(key)}`);
  const t = template.data;
  return (
    <>
      <h1>{t ? String(t.name) : 'Template'}</h1>
      {template.error && <p className="error">{template.error.message}</p>}
      {t && (
        <section className="card" aria-label="Template details">
          <p>{String(t.description ?? '')}</p>
          <dl>
            {(
              [
                ['Category', t.category],
                ['On-chain id', t.template_id ?? 'not published'],
                ['Price per deploy', formatUsdc(Number(t.price ?? 0))],
                ['Minimum', `${String(t.min_vcpus)} vCPU · ${String(t.min_memory_gib)} GiB memory · ${String(t.min_disk_gib)} GiB disk`],
                ['Tags', Array.isArray(t.tags) ? t.tags.join(', ') : ''],
                ['Content id', t.cid],
              ] as [string, unknown][]
            ).map(([k, v]) => (
              <div className="kv" key={k}>
                <dt>{k}</dt>
                <dd className={k === 'Content id' ? 'mono' : undefined}>{String(v)}</dd>
              </div>
            ))}
            <div className="kv">
              <dt>Tenants’ rating</dt>
              <dd>
                <Rating rating={t.rating as RatingSummary | undefined} />
              </dd>
            </div>
          </dl>
        </section>
      )}
      {t && t.template_id != null && <ReviewList template={String(t.template_id)} />}
    </>
  );
}
